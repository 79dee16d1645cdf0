"""Main-process decoding limits torch's intra-op threads inside each item only (issue 7 item 16):
the caller's `torch.get_num_threads()` is the same after a num_workers=0 epoch."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from mmsample.decoding import Array
from mmsample.errors import SampleError
from mmsample.sharding import write_samples
from mmsample.shards import IndexedDataset, StreamedDataset
from mmsample.testing import encode_npy, write_tiny_dataset

N = 6


@dataclass
class ThreadsSeen:
    """A real spec: decodes the npy payload and appends the torch thread count it ran with."""

    field: str = "npy"

    def decode(self, data: bytes, *, generator: torch.Generator | None = None) -> torch.Tensor:
        values = Array(field=self.field).decode(data)
        return torch.cat([values.float(), torch.tensor([float(torch.get_num_threads())])])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("threads")
    write_tiny_dataset(path, n=N, fields=("npy",), samples_per_shard=4)
    return path


@pytest.fixture
def caller_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _make(reader: str, root: Path, **kw: Any) -> Any:
    cls = StreamedDataset if reader == "streamed" else IndexedDataset
    return cls(root, {"x": ThreadsSeen()}, **kw)


def _seen(ds: Any, workers: int = 0) -> list[int]:
    gc.collect()
    return [int(s["x"][-1]) for s in DataLoader(ds, batch_size=None, num_workers=workers)]


@pytest.mark.parametrize("reader", ["streamed", "indexed"])
@pytest.mark.usefixtures("caller_threads")
def test_decoding_runs_with_one_thread_and_restores_the_callers_count(
    root: Path, reader: str
) -> None:
    for caller in (2, 3):
        torch.set_num_threads(caller)
        assert _seen(_make(reader, root)) == [1] * N  # the default: one thread per decode
        assert torch.get_num_threads() == caller  # the caller's setting survives the epoch
        assert _seen(_make(reader, root, decode_threads=None)) == [caller] * N
        assert _seen(_make(reader, root, decode_threads=2)) == [2] * N
        assert torch.get_num_threads() == caller
    torch.set_num_threads(1)  # a limit above the caller's count never raises it
    assert _seen(_make(reader, root, decode_threads=2)) == [1] * N
    assert torch.get_num_threads() == 1


@pytest.mark.usefixtures("caller_threads")
def test_workers_and_failing_decodes_leave_the_count_alone(root: Path, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    assert _seen(_make("streamed", root), workers=2) == [1] * N  # torch's worker default
    assert torch.get_num_threads() == 2
    bad = tmp_path / "bad"
    samples = [(f"b{i}", 0, {"npy": encode_npy(torch.zeros(2).numpy())}) for i in range(2)]
    samples.append(("b2", 0, {"npy": b"\x93NUMPY garbage"}))
    write_samples(bad, samples, ["a"], samples_per_shard=4)
    with pytest.raises(SampleError, match=r"shard-000000\.tar:b2: cannot decode modality 'x'"):
        _seen(_make("indexed", bad))
    assert torch.get_num_threads() == 2


def test_decode_threads_is_validated(root: Path) -> None:
    for reader, name in (("streamed", "StreamedDataset"), ("indexed", "IndexedDataset")):
        for value in (0, -1, 1.5, True):
            with pytest.raises(
                ValueError, match=rf"The 'decode_threads' parameter of {name} must be None"
            ):
                _make(reader, root, decode_threads=value)
