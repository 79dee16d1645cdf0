"""Issue 18, point 7: an epoch whose plan holds items but gives a rank no batch warns once per
epoch (NoBatchWarning naming the planned items, the rank, the batch size and drop_last), for
every method, none, both modes and `wrap`; DUS honours drop_last (one sample and 8 rows: no
batch rather than one batch of 7 repeats)."""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from mmsample.ledger import Ledger
from mmsample.loader import NoBatchWarning, balanced_loader, wrap
from mmsample.methods import BSS, DUS, SMV
from mmsample.resume_check import check_resume
from mmsample.testing import write_tiny_dataset

from .loader_helpers import items, make_loader, modalities, write_dataset

BATCH = 8


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    out = {}
    for n in (1, 3, 12):
        out[n] = tmp_path_factory.mktemp(f"n{n}")
        write_tiny_dataset(out[n], n=n, fields=("wav", "npy"), samples_per_shard=4)
    return out


def method(name: str, n: int) -> Any:
    """`name` on a ledger where every one of the n ids was observed once."""
    led = Ledger(n, 2, 3, names=["audio", "feat"])
    gen = torch.Generator().manual_seed(n)
    a, f = torch.randn(n, 3, generator=gen), torch.randn(n, 3, generator=gen)
    values = torch.tensor([[0.0, 1.0, 0.0, 2.0]]).repeat(n, 1)
    led.observe(torch.arange(n), torch.arange(n) % 3, [a, f], a + f, values=values)
    return {
        "none": lambda: None,
        "dus": lambda: DUS(led, batch_size=BATCH, epochs=3),
        "bss": lambda: BSS(led, lambda0=1.0, t_grow=1),
        "bss-learned": lambda: BSS(led, scheduler="learned"),
        "smv": lambda: SMV(led, warmup=0),
    }[name]()


def loader(root: Path, n: int, name: str, mode: str, drop_last: bool = True, **kw: Any) -> Any:
    return balanced_loader(
        root,
        method(name, n),
        modalities=modalities(),
        mode=mode,
        batch_size=None if name == "dus" else BATCH,
        drop_last=drop_last,
        seed=1,
        **kw,
    )


def epochs_warned(build: Any, epochs: int = 2) -> tuple[list[list[int]], list[str]]:
    """Batch sizes per epoch (set_epoch called twice each) and the NoBatchWarning texts."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        lo = build()
        sizes = []
        for e in range(epochs):
            lo.set_epoch(e)
            lo.set_epoch(e)  # again: nothing new to say
            sizes.append([len(b) for b in lo])
            assert len(lo) == len(sizes[-1])
    return sizes, [str(w.message) for w in seen if w.category is NoBatchWarning]


@pytest.mark.parametrize("mode", ["streamed", "indexed"])
@pytest.mark.parametrize("name", ["none", "dus", "bss", "bss-learned", "smv"])
def test_planned_items_and_no_batch_warn_once_per_epoch(
    roots: dict[int, Path], name: str, mode: str
) -> None:
    for n in (1, 3):
        sizes, texts = epochs_warned(partial(loader, roots[n], n, name, mode))
        assert sizes == [[], []], (n, name, mode)
        assert len(texts) == 2, (n, name, mode, texts)
        for e, text in enumerate(texts):
            planned = n * (2 if name == "smv" else 1)  # SMV adds one audio item per id here
            assert text.startswith(f"BalancedLoader: epoch {e} yields no batch on rank 0: ")
            assert f"the plan holds {planned} item(s) ({planned} on this rank)" in text
            assert f"a batch is {BATCH} rows with drop_last=True" in text
            assert "Use drop_last=False, a smaller batch_size" in text


def test_twelve_samples_over_two_ranks_and_two_workers_streamed(roots: dict[int, Path]) -> None:
    for rank in (0, 1):
        sizes, texts = epochs_warned(
            partial(
                loader, roots[12], 12, "none", "streamed", rank=rank, world_size=2, num_workers=2
            )
        )
        assert sizes == [[], []] and len(texts) == 2
        assert (
            f"epoch 1 yields no batch on rank {rank}: the plan holds 12 item(s) (6 on rank "
            in (texts[1])
        )
        assert f"rank {rank} of 2, read as [3, 3] by its 2 DataLoader workers" in texts[1]
        # indexed mode batches the rank's 6 items in one place: still no full batch of 8
        sizes, texts = epochs_warned(
            partial(loader, roots[12], 12, "none", "indexed", rank=rank, world_size=2), 1
        )
        assert sizes == [[]] and len(texts) == 1 and f"(6 on rank {rank} of 2)" in texts[0]


def test_no_warning_when_a_batch_comes(roots: dict[int, Path]) -> None:
    for name in ("none", "dus", "smv"):
        for mode in ("streamed", "indexed"):
            sizes, texts = epochs_warned(partial(loader, roots[3], 3, name, mode, drop_last=False))
            assert texts == [] and all(len(s) == 1 for s in sizes), (name, mode, sizes)
            sizes, texts = epochs_warned(
                partial(loader, roots[12], 12, name, mode, drop_last=False)
            )
            assert texts == [] and all(len(s) >= 1 for s in sizes), (name, mode, sizes)


def test_wrap_warns_too() -> None:
    ds = TensorDataset(torch.randn(3, 2), torch.randn(3, 3), torch.arange(3) % 3)

    def build() -> Any:
        dl = DataLoader(ds, batch_size=BATCH, drop_last=True)
        return wrap(dl, None, fields={"a": 0, "b": 1, "label": 2})

    sizes, texts = epochs_warned(build, 1)
    assert sizes == [[]] and len(texts) == 1
    assert "the plan holds 3 item(s) (3 on this rank) and a batch is 8 rows" in texts[0]


@pytest.mark.parametrize("mode", ["streamed", "indexed"])
def test_dus_honours_drop_last(roots: dict[int, Path], tmp_path: Path, mode: str) -> None:
    # one sample, 8 rows: one batch of the sample and 7 repeats, or none with drop_last
    sizes, texts = epochs_warned(lambda: loader(roots[1], 1, "dus", mode, drop_last=False), 1)
    assert sizes == [[BATCH]] and texts == []
    sizes, texts = epochs_warned(lambda: loader(roots[1], 1, "dus", mode), 1)
    assert sizes == [[]] and len(texts) == 1
    # 22 samples, 6 rows: 4 whole batches (2 repeats), 3 with drop_last (4 items left out)
    write_dataset(tmp_path)
    workers = 2 if mode == "streamed" else 0  # each worker reads whole batches
    kept = make_loader(tmp_path, "dus", mode=mode, workers=workers)
    dropped = make_loader(tmp_path, "dus", mode=mode, workers=workers, drop_last=True)
    assert [len(b) for b in kept] == [6] * 4 and len(kept) == 4
    assert [len(b) for b in dropped] == [6] * 3 and len(dropped) == 3
    ids = [i for b in dropped for i in b.ids.tolist()]
    assert len(set(ids)) == len(ids) == 18  # no repeat fills a batch

    def make(epoch: int) -> Any:
        return make_loader(tmp_path, "dus", mode=mode, workers=workers, epoch=epoch, drop_last=True)

    check_resume(make, items, stops=[0, 1, 3])
