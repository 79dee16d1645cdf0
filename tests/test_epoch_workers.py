"""set_epoch reaches persistent DataLoader workers (fork and spawn) for both readers."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from mmsample.shards import IndexedDataset, StreamedDataset
from mmsample.spec import Array
from mmsample.testing import write_tiny_dataset


def _ids(loader: DataLoader) -> list[int]:
    # Collect garbage before workers fork: a CUDA object left unreachable by an earlier test
    # (on a GPU machine) must not be finalised inside a forked child, where CUDA cannot run.
    gc.collect()
    return [int(s["id"]) for s in loader]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("epochs")
    write_tiny_dataset(path, n=12, fields=("npy",), samples_per_shard=3)
    return path


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_streamed_order_follows_set_epoch_in_persistent_workers(root: Path, context: str) -> None:
    def make() -> StreamedDataset:
        return StreamedDataset(root, {"x": Array(field="npy")}, shuffle=4, seed=3)

    # Reference: a fresh dataset and a fresh (non-persistent) 2-worker loader per epoch.
    expected = []
    for epoch in range(3):
        ref = make()
        ref.set_epoch(epoch)
        expected.append(_ids(DataLoader(ref, batch_size=None, num_workers=2)))
    assert expected[0] != expected[1] != expected[2]  # the epochs really differ
    assert all(sorted(e) == list(range(12)) for e in expected)

    ds = make()
    loader = DataLoader(
        ds,
        batch_size=None,
        num_workers=2,
        persistent_workers=True,
        multiprocessing_context=context,
    )
    for epoch in range(3):
        ds.set_epoch(epoch)
        assert _ids(loader) == expected[epoch]


def test_indexed_plan_follows_set_epoch_in_persistent_workers(root: Path) -> None:
    def plan(epoch: int):  # epoch-dependent plan: drop ids of the other parity
        class Parity:
            def items(self, sample_id: int) -> tuple[int, ...]:
                return (1,) if sample_id % 2 == epoch % 2 else ()

        return Parity()

    ds = IndexedDataset(root, {"x": Array(field="npy")}, plan=plan)
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    for epoch in range(3):
        ds.set_epoch(epoch)
        assert _ids(loader) == [i for i in range(12) if i % 2 == epoch % 2]
