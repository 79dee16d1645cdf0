"""Real local servers for the remote-storage tests: moto's S3 server on 127.0.0.1 behind a
fault-injecting proxy (`mmsample.storage.local_server.LocalServer`), credentials and endpoint
through the standard AWS environment variables, and helpers to upload a dataset folder."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsample.storage.local_server import LocalServer

BUCKET = "mmsample-test"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3:
    """A running local S3: `proxy` (faults, request log) in front of moto; `url(prefix)`."""

    moto: Any
    proxy: LocalServer

    def url(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.proxy.url)

    def upload(self, folder: Path, prefix: str) -> str:
        """Put every file of `folder` under `prefix`; the folder's URL."""
        client = self.client()
        for p in sorted(folder.iterdir()):
            if p.is_file():
                client.upload_file(str(p), BUCKET, f"{prefix}/{p.name}")
        return self.url(prefix)

    def names(self, prefix: str) -> list[str]:
        found = self.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")
        return sorted(o["Key"].rsplit("/", 1)[-1] for o in found.get("Contents", []))

    def reset(self) -> None:
        """No pending faults, an empty request log, no added latency."""
        with self.proxy.faults.lock:
            self.proxy.faults.pending.clear()
            self.proxy.faults.log.clear()
            self.proxy.faults.agents.clear()
            self.proxy.faults.injected.clear()
        self.proxy.set_latency(0.0)


@contextmanager
def local_s3(stall: float = 3.0) -> Iterator[S3]:
    """Start moto's ThreadedMotoServer and a proxy on 127.0.0.1, point the AWS environment
    variables at the proxy (restored after), create the bucket."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    proxy = LocalServer(upstream=moto.get_host_and_port(), stall=stall)
    env = {**AWS_ENV, "AWS_ENDPOINT_URL_S3": proxy.url, "AWS_ENDPOINT_URL": proxy.url}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        s3 = S3(moto, proxy)
        s3.client().create_bucket(Bucket=BUCKET)
        yield s3
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proxy.stop()
        moto.stop()
