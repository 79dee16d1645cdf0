"""Sparse tar members (GNU tar `--sparse` of a mostly silent wav) are refused, naming the
member: by `mmsample index` (which then writes no index and no manifest) and by both readers
(given an index of the tar's true byte ranges); every other member kind GNU tar writes (gnu,
oldgnu, pax with and without a global header, posix, ustar, v7) indexes and reads back whole.

The tars are made here with the system tar, which must be GNU tar (skipped otherwise)."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mmsample.cli import main
from mmsample.decoding import Audio
from mmsample.errors import SampleError
from mmsample.sharding import write_samples
from mmsample.shards import IndexedDataset, StreamedDataset
from mmsample.shards.format import Manifest, ShardInfo, index_name, write_index
from mmsample.shards.tar_samples import iter_samples
from mmsample.testing import encode_wav

CLASSES = ["quiet", "tone"]
SHARD = "shard-000000.tar"
SPARSE = [["--format=gnu"], ["--format=oldgnu"]] + [
    ["--format=pax", f"--sparse-version={v}"] for v in ("0.0", "0.1", "1.0")
]
PLAIN = [
    ["--format=gnu"],
    ["--format=oldgnu"],
    ["--format=pax"],
    ["--format=pax", "--pax-option=comment=a global header"],
    ["--format=posix"],
    ["--format=ustar"],
    ["--format=v7"],
]


def gnu_tar() -> str:
    tar = shutil.which("tar")
    if tar is None:
        pytest.skip("no system tar to write sparse members with")
    version = subprocess.run([tar, "--version"], capture_output=True, text=True).stdout
    if "GNU tar" not in version:
        pytest.skip(f"the system tar is not GNU tar ({version.splitlines()[:1]})")
    return tar


def silent_wav() -> bytes:
    """Two seconds of 16 kHz silence ending in a short tone: 64 KB, mostly zero blocks."""
    audio = np.zeros(32000, dtype=np.float32)
    audio[-400:] = 0.5 * np.sin(np.arange(400) / 5)
    return encode_wav(audio)


def write_with_holes(path: Path, data: bytes, block: int = 4096) -> None:
    """Write `data` leaving every all-zero block a hole, as a sparse file on disk."""
    with open(path, "wb") as f:
        for at in range(0, len(data), block):
            chunk = data[at : at + block]
            if chunk.count(0) != len(chunk):
                f.seek(at)
                f.write(chunk)
        f.truncate(len(data))


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], dict[str, bytes]]:
    """(directory of member files, member names in tar order, key -> wav payload): the members
    of a 2-sample shard written by `write_samples`, `song.wav` a sparse file on disk."""
    root = tmp_path_factory.mktemp("sparse")
    wavs = {"song": silent_wav(), "other": encode_wav(np.full(800, 0.3, dtype=np.float32))}
    samples = [(key, i, {"wav": wav}) for i, (key, wav) in enumerate(wavs.items())]
    write_samples(root / "src", samples, CLASSES)
    files = root / "files"
    files.mkdir()
    with tarfile.open(root / "src" / SHARD) as tar:
        names = tar.getnames()
        for m in tar:
            write_with_holes(files / m.name, tar.extractfile(m).read())  # type: ignore[union-attr]
    st = os.stat(files / "song.wav")
    if st.st_blocks * 512 >= st.st_size:
        pytest.skip("the temporary directory's file system leaves no holes in sparse files")
    return files, names, wavs


def make_shard(
    tmp_path: Path, members: tuple[Path, list[str], dict[str, bytes]], *opts: str
) -> Path:
    files, names, _ = members
    root = tmp_path / "ds"
    root.mkdir()
    subprocess.run(
        [gnu_tar(), *opts, "-cf", str(root / SHARD), "-C", str(files), *names], check=True
    )
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def index(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["index", str(root), "--classes", str(root.parent / "classes.txt"), "--verify"])
    return code, capsys.readouterr().err


def index_by_hand(root: Path) -> None:
    """The offset index and manifest of the true stored byte ranges (from tarfile), as a user or
    another tool could write them for a tar that `mmsample index` refuses."""
    tar_path = root / SHARD
    starts: dict[str, int] = {}
    with tarfile.open(tar_path) as tar:
        for m in tar:
            starts.setdefault(m.name.split(".")[0], m.offset)
        end = tar.offset  # the end-of-archive marker
    keys = list(starts)
    bounds = [*starts.values(), end]
    rows = np.array([(i, bounds[i], bounds[i + 1]) for i in range(len(keys))], dtype=np.int64)
    write_index(root / index_name(SHARD), rows, keys)
    info = ShardInfo(SHARD, len(keys), 0, len(keys) - 1, tar_path.stat().st_size,
                     index_name(SHARD), {c: 1 for c in CLASSES})  # fmt: skip
    Manifest(CLASSES, ["wav"], [info], num_rows=len(keys), samples_per_shard=len(keys)).save(root)


def specs() -> dict[str, Audio]:
    return {"audio": Audio(field="wav", spectrogram=None)}


@pytest.mark.parametrize("opts", SPARSE, ids=" ".join)
def test_index_refuses_a_sparse_member_naming_it(
    tmp_path: Path, members: tuple[Path, list[str], dict[str, bytes]], opts: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    root = make_shard(tmp_path, members, "--sparse", *opts)
    code, err = index(root, capsys)
    assert code == 1
    assert f"{SHARD}:song: member 'song.wav' is a sparse file" in err and "--sparse" in err
    assert sorted(p.name for p in root.iterdir()) == [SHARD]  # no index, no manifest


@pytest.mark.parametrize("opts", SPARSE, ids=" ".join)
def test_readers_refuse_a_sparse_member_naming_it(
    tmp_path: Path, members: tuple[Path, list[str], dict[str, bytes]], opts: list[str]
) -> None:
    root = make_shard(tmp_path, members, "--sparse", *opts)
    index_by_hand(root)
    wavs = members[2]
    message = re.escape("member 'song.wav' is a sparse file")
    reader = IndexedDataset(root, specs())
    with pytest.raises(SampleError, match=message) as err:
        reader.get(0)
    assert (err.value.shard, err.value.key) == (SHARD, "song")
    assert reader.get(1)["key"] == "other"  # the plain sample beside it still reads
    with pytest.raises(SampleError, match=message):
        list(StreamedDataset(root, specs()))
    with open(root / SHARD, "rb") as f, pytest.raises(SampleError, match=message):
        list(iter_samples(f, SHARD))
    assert len(wavs["song"]) > (root / SHARD).stat().st_size  # it was stored sparse


def read_wavs(root: Path) -> dict[str, bytes]:
    """key -> the wav bytes the indexed reader's byte range holds, each sample decoded too."""
    reader = IndexedDataset(root, specs())
    streamed = {s["key"]: s for s in StreamedDataset(root, specs())}
    out = {}
    for i in range(2):
        sample = reader.get(i)
        assert sample["audio"].shape == streamed[sample["key"]]["audio"].shape
        assert sample["label"] == i
        raw = reader.table.read(i)
        out[sample["key"]] = raw["fields"]["wav"]
    return out


@pytest.mark.parametrize("opts", PLAIN, ids=" ".join)
def test_other_member_kinds_index_and_read_whole(
    tmp_path: Path, members: tuple[Path, list[str], dict[str, bytes]], opts: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    root = make_shard(tmp_path, members, *opts)
    code, err = index(root, capsys)
    assert code == 0, err
    assert read_wavs(root) == members[2]
    with open(root / SHARD, "rb") as f:
        got = {s["key"]: s["fields"]["wav"] for s in iter_samples(f, SHARD)}
    assert got == members[2]


def test_a_pax_sparse_record_alone_is_refused() -> None:
    """A pax header with `GNU.sparse.*` records marks the next member sparse whatever its type
    flag (what GNU tar's pax formats 0.0 and 0.1 write)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, payload, pax in (
            ("a.id", b"0", {}),
            ("a.cls", b"0", {}),
            ("a.wav", b"RIFF", {"GNU.sparse.size": "9000", "GNU.sparse.numblocks": "1"}),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.pax_headers = len(payload), pax
            tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(SampleError, match=re.escape("member 'a.wav' is a sparse file")) as err:
        list(iter_samples(io.BytesIO(buf.getvalue()), "p.tar"))
    assert err.value.key == "a"
