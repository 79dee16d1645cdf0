"""How the sharding tool writes into its output directory: atomic renames, stale temporaries.

Place in the data flow: every file the tool (`mmsample.sharding.tool`) and `mmsample index`
(`mmsample.sharding.rebuild`) leave in a dataset directory (sidecars, manifest.json, the
skipped-row reports) appears under its final name only once complete, through a uniquely named
temporary file, so concurrent `--part` jobs and killed runs never leave a half-written file.
"""

from __future__ import annotations

import glob
import os
import secrets
from pathlib import Path

__all__ = ["remove_stale", "unlink_all", "write_atomic"]


def unlink_all(*paths: Path) -> None:
    """Remove each of `paths` that exists."""
    for p in paths:
        p.unlink(missing_ok=True)


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write `content` (text as UTF-8, or bytes) through a new, uniquely named temporary file
    and an atomic rename: O_EXCL never follows a planted link, and concurrent `--part` jobs
    never share a temporary file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale(out: Path, name: str) -> None:
    """Remove the temporary files a killed run left for file `name`."""
    unlink_all(out / (name + ".tmp"), *out.glob(f".{glob.escape(name)}.*.tmp"))
