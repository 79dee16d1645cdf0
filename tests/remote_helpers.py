"""Real local servers for the remote-storage tests: moto's S3 server (`local_s3`) and the GCS
JSON-API emulator of gcp-storage-emulator (`local_gcs`) on 127.0.0.1, each behind a
fault-injecting proxy (`mmsample.storage.local_server.LocalServer`), endpoint and credentials
through each backend's standard environment variables, and helpers to upload a dataset folder."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import patch

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
        self.proxy.reset()


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
    try:
        with patch.dict(os.environ, env):  # restored after, as it was
            s3 = S3(moto, proxy)
            s3.client().create_bucket(Bucket=BUCKET)
            yield s3
    finally:
        proxy.stop()
        moto.stop()


@dataclass
class GCS:
    """A running GCS emulator (in memory): `proxy` (faults, request log) in front of it;
    `url(prefix)`; `fs()` a gcsfs client straight to the emulator (setting up and checking,
    outside the code under test and the proxy's log)."""

    emulator: Any
    endpoint: str  # the emulator itself, http://127.0.0.1:PORT
    proxy: LocalServer

    def url(self, prefix: str) -> str:
        return f"gs://{BUCKET}/{prefix}"

    def fs(self) -> Any:
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(token="anon", endpoint_url=self.endpoint, skip_instance_cache=True)

    def upload(self, folder: Path, prefix: str) -> str:
        """Put every file of `folder` under `prefix`; the folder's URL."""
        fs = self.fs()
        for p in sorted(folder.iterdir()):
            if p.is_file():
                fs.put_file(str(p), f"{BUCKET}/{prefix}/{p.name}")
        return self.url(prefix)

    def names(self, prefix: str) -> list[str]:
        found = self.fs().ls(f"{BUCKET}/{prefix}", detail=False)
        return sorted(str(n).rstrip("/").rsplit("/", 1)[-1] for n in found)

    def reset(self) -> None:
        """No pending faults, an empty request log, no added latency."""
        self.proxy.reset()


@contextmanager
def local_gcs(stall: float = 3.0) -> Iterator[GCS]:
    """Start gcp-storage-emulator (in memory, bucket `BUCKET`) and a proxy on 127.0.0.1, point
    `STORAGE_EMULATOR_HOST` (gcsfs's standard endpoint variable) at the proxy, `NO_GCE_CHECK`
    so the default credential chain ends in anonymous access at once (both restored after)."""
    from gcp_storage_emulator.server import create_server

    logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)
    emulator = create_server("127.0.0.1", 0, in_memory=True, default_bucket=BUCKET)
    emulator.start()
    try:
        # the emulator binds port 0 (a free one) and does not say which: ask its HTTP server
        host, port = emulator._api._httpd.server_address[:2]
        proxy = LocalServer(upstream=(host, port), stall=stall)
    except BaseException:
        emulator.stop()
        raise
    env = {"STORAGE_EMULATOR_HOST": proxy.url, "NO_GCE_CHECK": "true"}
    try:
        with patch.dict(os.environ, env):  # restored after, as it was
            yield GCS(emulator, f"http://{host}:{port}", proxy)
    finally:
        proxy.stop()
        emulator.stop()
