"""Never silent: each warning category of mmsample.errors is provoked and asserted, and each can
be turned into an error by the ordinary warnings filter."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from mmsample.errors import EpochWarning, MmsampleWarning, ShortRunWarning, UnobservedWarning
from mmsample.ledger import Ledger
from mmsample.loader import wrap
from mmsample.methods import BSS, DUS, SMV

N, K = 12, 3
FIELDS = {"audio": 0, "video": 1, "label": 2}


def data() -> TensorDataset:
    return TensorDataset(torch.randn(N, 2), torch.randn(N, 3), torch.arange(N) % K)


def ledger() -> Ledger:
    return Ledger(N, 2, K, names=["audio", "video"])


def test_set_epoch_of_an_epoch_already_served_warns() -> None:
    loader = wrap(DataLoader(data(), batch_size=4), None, fields=FIELDS)
    loader.set_epoch(0)
    loader.set_epoch(0)  # not served yet: no warning
    first = [b.ids.tolist() for b in loader]
    with pytest.warns(EpochWarning, match=r"set_epoch\(0\): epoch 0 was already served"):
        loader.set_epoch(0)
    assert [b.ids.tolist() for b in loader] == first  # served again, as asked
    with warnings.catch_warnings():
        warnings.simplefilter("error", MmsampleWarning)
        loader.set_epoch(1)  # the next epoch: silent
        with pytest.raises(EpochWarning):  # a filter makes it an error
            loader.set_epoch(0)


def test_a_break_then_a_new_pass_warns_and_serves_the_next_epoch() -> None:
    loader = wrap(DataLoader(data(), batch_size=4, shuffle=True), None, fields=FIELDS)
    for _ in loader:
        break
    with pytest.warns(EpochWarning, match="stopped at batch 1 of 3: it serves epoch 1"):
        iter(loader)
    assert loader.epoch == 1


def test_planning_from_an_empty_ledger_warns_once_naming_the_line() -> None:
    loader = wrap(DataLoader(data(), batch_size=4), DUS(ledger(), epochs=4), fields=FIELDS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnobservedWarning)
        list(loader)  # epoch 0: nothing to observe yet, no warning
    with pytest.warns(UnobservedWarning, match=r"observe was never called.*ledger\.observe\("):
        list(loader)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnobservedWarning)
        list(loader)  # once


def test_observations_under_other_ids_are_named() -> None:
    led = Ledger(2 * N, 2, K, names=["audio", "video"])
    smv = SMV(led, warmup=0)
    smv.set_ids(torch.arange(N))
    y = torch.arange(N, 2 * N) % K
    led.observe(torch.arange(N, 2 * N), y, [torch.randn(N, K), torch.randn(N, K)])
    smv.set_epoch(0)  # epoch 0 is skipped
    with pytest.warns(UnobservedWarning, match=f"observe was called for {N} other ids"):
        smv.set_epoch(1)


def test_warm_up_and_scoring_pass_methods_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnobservedWarning)
        smv = SMV(ledger(), warmup=3)
        for e in range(3):
            smv.set_epoch(e)  # warm-up reads nothing
        led = ledger()
        y = torch.arange(N) % K
        z = [torch.randn(N, K), torch.randn(N, K)]
        led.observe(torch.arange(N), y, z, z[0] + z[1])  # a scoring pass, then nothing
        bss = BSS(led, lambda0=0.5, t_grow=3)
        for e in range(3):
            bss.set_epoch(e)  # the heuristic ranks once, from the scoring pass
    with pytest.warns(UnobservedWarning, match="SMV is planning epoch 3"):
        smv.set_epoch(3)


def test_a_method_that_cannot_act_within_the_run_warns_when_told_the_epochs() -> None:
    with pytest.warns(ShortRunWarning, match=r"SMV\(warmup=5\) re-samples nothing in a 3-epoch"):
        SMV(warmup=5).set_run(epochs=3)
    with pytest.warns(ShortRunWarning, match="DUS's schedule spans epochs=10 but the run has 4"):
        DUS(epochs=10).set_run(epochs=4)
    with pytest.warns(ShortRunWarning, match="with a 2-epoch schedule changes no batch size"):
        DUS().set_run(epochs=2)  # the schedule takes the run's 2 epochs
    # lambda(2) = sqrt(0.99 / 40 * 2 + 0.01) = 0.244, lambda(0) = 0.1
    with pytest.warns(ShortRunWarning, match=r"trains on 24% of the ids at the last epoch of a 3-"):
        BSS(lambda0=0.1, t_grow=40).set_run(epochs=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShortRunWarning)
        BSS(lambda0=0.1, t_grow=2).set_run(epochs=3)  # lambda(2) = 1: the whole set at the end
        BSS(scheduler="learned").set_run(epochs=3)  # no pacing function
        SMV(warmup=1).set_run(epochs=3)
        DUS().set_run(epochs=3)
        DUS(policy="rl").set_run(epochs=2)


def test_every_mmsample_warning_is_one_category() -> None:
    """One filter reaches every warning mmsample gives (skips, empty epochs, no batch, subsets
    with no prediction, epochs, unobserved ledgers, short runs)."""
    from mmsample.decoding.decoder import SkippedSampleWarning
    from mmsample.errors import MmsampleWarning
    from mmsample.loader import NoBatchWarning
    from mmsample.methods.bss import EmptyEpochWarning
    from mmsample.signals import NonFiniteSubsetWarning

    for category in (
        SkippedSampleWarning,
        NoBatchWarning,
        EmptyEpochWarning,
        NonFiniteSubsetWarning,
    ):
        assert issubclass(category, MmsampleWarning), category
    assert issubclass(NonFiniteSubsetWarning, RuntimeWarning)  # its filters keep working
