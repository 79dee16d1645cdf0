"""Remix (Data Remixing) through the plan contract, on real shards: plain warm-up epochs, each
sample exactly once with its assigned modality after, grouped batches in indexed mode, the
scoring pass, stats shares and exact resume (mid-epoch and at an epoch's end)."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mmsample.errors import MmsampleWarning, ShortRunWarning
from mmsample.ledger import Ledger
from mmsample.loader import balanced_loader
from mmsample.methods import Remix
from mmsample.resume_check import check_resume
from mmsample.signals import remix_assignment

from .loader_helpers import NAMES, N, items, modalities, write_dataset

K = 3


def logits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Audio confident on about half the ids, feat on the others (well apart: no float32 tie)."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.where(torch.arange(N) % 2 == 0, 4.0, 0.5)[:, None]
    audio = torch.randn(N, K, generator=g, dtype=torch.float64) * scale
    feat = torch.randn(N, K, generator=g, dtype=torch.float64) * (4.5 - scale)
    return audio, feat


def ledger(seed: int = 0) -> Ledger:
    led = Ledger(N, 2, K, names=list(NAMES))
    audio, feat = logits(seed)
    led.observe(torch.arange(N), torch.arange(N) % K, [audio, feat], audio + feat)
    return led


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shards")
    write_dataset(path)
    return path


def test_warmup_epochs_are_plain_then_each_id_once_with_its_assigned_modality() -> None:
    remix = Remix(ledger(), warmup=2, source="ledger", seed=1)
    for e in (0, 1):
        plan = remix.plan(e)
        assert plan.order() is None and plan.groups() is None
        assert plan.counts(np.arange(N)).tolist() == [1] * N
        assert set(plan.masks.tolist()) == {0b11}
        assert remix.stats(e)["warmup"] == 1.0 and "share/audio" not in remix.stats(e)
    want = remix_assignment(list(logits()))  # computed from the logits, not from the ledger
    assert 0 < int(want.sum()) < N  # both modalities get some ids
    for e in (2, 3):
        plan = remix.plan(e)
        assert plan.counts(np.arange(N)).tolist() == [1] * N  # exactly once per epoch
        assert plan.masks.tolist() == (1 << want).tolist()  # only the assigned modality
        order, groups = plan.order(), plan.groups()
        assert order is not None and groups is not None
        assert sorted(order.tolist()) == list(range(N))
        # the groups: modality 0's ids first (tie=None), then modality 1's
        first = order[: groups[0]].tolist()
        assert set(first) == set(np.flatnonzero(want == 0).tolist())
        assert groups.tolist() == [int((want == 0).sum()), int((want == 1).sum())]
    assert remix.plan(2).order().tolist() != remix.plan(3).order().tolist()  # reshuffled
    assert remix.plan(2) == Remix(ledger(), warmup=2, source="ledger", seed=1).plan(2)


def test_stats_give_the_share_assigned_to_each_modality() -> None:
    remix = Remix(ledger(), warmup=0, source="ledger")
    want = remix_assignment(list(logits()))
    stats = remix.stats(0)
    assert stats["share/feat"] == pytest.approx(int(want.sum()) / N)
    assert stats["share/audio"] == pytest.approx(1 - int(want.sum()) / N)
    assert stats["items/feat"] == int(want.sum()) and stats["items"] == N
    assert stats["warmup"] == 0.0


def test_tie_wins_ties_and_its_group_comes_first() -> None:
    led = Ledger(N, 2, K, names=list(NAMES))
    same = torch.randn(N, K, generator=torch.Generator().manual_seed(3))
    led.observe(torch.arange(N), torch.arange(N) % K, [same, same.clone()], same)
    assert set(Remix(led, warmup=0, source="ledger").plan(0).masks.tolist()) == {0b01}
    plan = Remix(led, warmup=0, source="ledger", tie=1).plan(0)
    assert set(plan.masks.tolist()) == {0b10} and plan.groups().tolist() == [N]
    remix = Remix(ledger(), warmup=0, source="ledger", tie=1)
    want = remix_assignment(list(logits()), tie=1)
    groups = remix.plan(0).groups()
    assert set(remix.plan(0).order()[: groups[0]].tolist()) == set(np.flatnonzero(want == 1))


def test_indexed_batches_carry_one_modality_and_follow_the_plan(root: Path) -> None:
    remix = Remix(ledger(), warmup=1, source="ledger", seed=2)
    loader = balanced_loader(root, remix, modalities=modalities(), batch_size=4, mode="indexed")
    warm = [items(b) for b in loader]  # epoch 0: warm-up, every row carries both
    assert {m for b in warm for _, m in b} == {0b11} and sorted(i for b in warm for i, _ in b) == [
        *range(N)
    ]
    batches = [items(b) for b in loader]  # epoch 1
    plan = remix.plan(1)
    assert [i for b in batches for i, _ in b] == plan.order().tolist()
    assert all(len({m for _, m in b}) == 1 for b in batches)
    # no batch straddles the groups: each group ends in its own (maybe short) batch
    sizes = [len(b) for b in batches]
    assert sizes == [min(4, n - s) for n in plan.groups().tolist() for s in range(0, n, 4)]


def test_streamed_mode_keeps_each_ids_one_item_and_mask(root: Path) -> None:
    remix = Remix(ledger(), warmup=0, source="ledger", seed=2)
    loader = balanced_loader(root, remix, modalities=modalities(), batch_size=4, mode="streamed")
    got = Counter(x for b in loader for x in items(b))
    plan = remix.plan(0)
    assert got == Counter((i, plan.items(i)[0]) for i in range(N))


def test_the_scoring_pass_runs_every_epoch_after_warmup(root: Path) -> None:
    led = ledger()
    audio, feat = logits(1)  # the scoring pass sees other logits than the training pass
    asked: list[tuple[int, list[int]]] = []

    def scorer(ids: np.ndarray) -> None:  # a user's scoring pass: observe every id it is given
        asked.append((led.epoch, ids.tolist()))
        t = torch.from_numpy(ids.copy())
        led.observe(t, t % K, [audio[t], feat[t]], audio[t] + feat[t])

    remix = Remix(warmup=1, seed=3)  # source="scoring", bound by the loader's ledger
    remix.bind(led)
    loader = balanced_loader(
        root, remix, modalities=modalities(), batch_size=4, mode="indexed", scorer=scorer
    )
    for e in range(3):
        loader.set_epoch(e)
    assert asked == [(1, list(range(N))), (2, list(range(N)))]  # none during warm-up
    want = remix_assignment([audio, feat])
    assert remix.plan(2).masks.tolist() == (1 << want).tolist()


def test_without_a_scoring_pass_it_says_so_once(root: Path) -> None:
    remix = Remix(ledger(), warmup=0, seed=3)  # source="scoring", but no scorer given
    loader = balanced_loader(root, remix, modalities=modalities(), batch_size=4, mode="indexed")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader.set_epoch(0)
        loader.set_epoch(1)
    said = [w for w in caught if issubclass(w.category, MmsampleWarning)]
    assert len(said) == 1 and "no scoring pass ran" in str(said[0].message)
    assert "scorer=" in str(said[0].message)


@pytest.mark.parametrize("mode", ["indexed", "streamed"])
@pytest.mark.parametrize("workers", [0, 2])
def test_exact_resume_mid_epoch_and_at_epoch_end(root: Path, mode: str, workers: int) -> None:
    def maker(warmup: int) -> Any:
        def make(epoch: int) -> Any:
            remix = Remix(ledger(), warmup=warmup, source="ledger", seed=5)
            loader = balanced_loader(
                root,
                remix,
                modalities=modalities(),
                batch_size=4,
                mode=mode,
                num_workers=workers,
                seed=7,
            )
            for e in range(epoch + 1):
                loader.set_epoch(e)
            return loader

        return make

    # remixed epochs 0 and 1; then a warm-up epoch 0 whose end leads into remixed epoch 1
    total = len(maker(0)(0))
    check_resume(maker(0), items, stops=[0, 1, total // 2 + 1, total])
    end = len(maker(1)(0))
    check_resume(maker(1), items, stops=[end - 1, end])


def test_bad_settings_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="'warmup' parameter of Remix"):
        Remix(warmup=-1)
    with pytest.raises(ValueError, match="'source' parameter of Remix"):
        Remix(source="training")
    with pytest.raises(ValueError, match="'tie' parameter of Remix"):
        Remix(ledger(), tie=2)
    led = Ledger(N, 2, K, names=list(NAMES))  # never observed: no KL to assign from
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"never observed with some modality.*ids \[0, 1"):
            Remix(led, warmup=0, source="ledger").plan(0)
    # the suggestion fits the run: a quarter of it, at least 1 epoch if the run has 2
    for warmup, epochs, fits in ((5, 5, 1), (1, 1, 0), (12, 8, 2), (2, 2, 1)):
        with pytest.warns(ShortRunWarning, match=rf"every epoch is warm-up.*\(e\.g\. {fits}\)"):
            Remix(ledger(), warmup=warmup).set_run(epochs=epochs)
