"""The loader's set_epoch reaches persistent DataLoader workers (fork and spawn), streamed and
indexed: readers hold no epoch, the loader publishes it to its workers."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from mmsample.decoding import Array
from mmsample.loader import BalancedLoader, balanced_loader
from mmsample.plan import TablePlan
from mmsample.shards import IndexedDataset, StreamedDataset
from mmsample.testing import write_tiny_dataset

N = 12


def _ids(loader: BalancedLoader) -> list[int]:
    # Collect garbage before workers fork: a CUDA object left unreachable by an earlier test
    # (on a GPU machine) must not be finalised inside a forked child, where CUDA cannot run.
    gc.collect()
    return [i for batch in loader for i in batch.ids.tolist()]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("epochs")
    write_tiny_dataset(path, n=N, fields=("npy",), samples_per_shard=3)
    return path


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_streamed_order_follows_set_epoch_in_persistent_workers(root: Path, context: str) -> None:
    def make(**kwargs: Any) -> BalancedLoader:
        ds = StreamedDataset(root, {"x": Array(field="npy")}, shuffle=4, seed=3)
        return balanced_loader(ds, None, batch_size=2, num_workers=2, **kwargs)

    # Reference: a fresh reader and a fresh (non-persistent) 2-worker loader per epoch.
    expected = []
    for epoch in range(3):
        ref = make()
        ref.set_epoch(epoch)
        expected.append(_ids(ref))
    assert expected[0] != expected[1] != expected[2]  # the epochs really differ
    assert all(sorted(e) == list(range(N)) for e in expected)

    loader = make(persistent_workers=True, multiprocessing_context=context)
    for epoch in range(3):
        loader.set_epoch(epoch)
        assert _ids(loader) == expected[epoch]


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_indexed_plan_follows_set_epoch_in_persistent_workers(root: Path, context: str) -> None:
    def plan(epoch: int) -> TablePlan:  # epoch-dependent plan: drop ids of the other parity
        return TablePlan({i: (1,) if i % 2 == epoch % 2 else () for i in range(N)}, full=1)

    loader = balanced_loader(
        IndexedDataset(root, {"x": Array(field="npy")}),
        None,
        plan=plan,
        shuffle=False,  # the plan's items in id order
        batch_size=2,
        num_workers=2,
        persistent_workers=True,
        multiprocessing_context=context,
    )
    for epoch in range(3):
        loader.set_epoch(epoch)
        assert _ids(loader) == [i for i in range(N) if i % 2 == epoch % 2]
