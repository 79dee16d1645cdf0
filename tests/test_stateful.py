"""The one state contract (`mmsample.stateful.Stateful`), checked on every stateful class: the
Ledger, the methods (DUS, BSS, SMV), OGM-GE and the BalancedLoader.

For each: a state from a differently configured object is refused naming the field and both
values; a state of another version or format (or not a dict) is refused; a state loaded into a
fresh object gives back an equal state; loading never modifies the caller's dict.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mmsample.errors import EpochWarning
from mmsample.ledger import Ledger
from mmsample.loader import wrap
from mmsample.methods import BSS, DUS, OGMGE, SMV
from mmsample.stateful import Stateful, state_differences

N, K = 12, 3
NAMES = ["audio", "video"]


def fed_ledger(num_classes: int = K, names: list[str] | None = None) -> Ledger:
    """A ledger with every statistic observed (so BSS can rank and SMV can valuate)."""
    led = Ledger(N, 2, num_classes, names=NAMES if names is None else names)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(N) % K
    a = torch.randn(N, num_classes, generator=g)
    v = torch.randn(N, num_classes, generator=g)
    values = torch.rand(N, 4, generator=g, dtype=torch.float64)
    led.set_epoch(1)
    led.observe(torch.arange(N), y, [a, v], a + v, values=values)
    return led


def taken(method: Any, epoch: int = 1) -> Any:
    method.set_epoch(epoch)
    return method


class Encoders(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.audio, self.video = nn.Linear(2, 2), nn.Linear(2, 2)


ENCODERS = Encoders()


def ogmge(**kw: Any) -> OGMGE:
    args: dict[str, Any] = {"alpha": 0.1, "generator": torch.Generator().manual_seed(1)}
    return OGMGE({"audio": ENCODERS.audio, "video": ENCODERS.video}, **(args | kw))


def loader(batch_size: int = 4, seed: int = 0) -> Any:
    data = TensorDataset(torch.randn(N, 2), torch.randn(N, 3), torch.arange(N) % K)
    method = SMV(fed_ledger(), warmup=0, seed=seed)
    out = wrap(
        DataLoader(data, batch_size=batch_size), method, fields={"audio": 0, "video": 1, "label": 2}
    )
    return out


def advanced(out: Any) -> Any:
    """The loader one batch into epoch 0."""
    out.set_epoch(0)
    next(iter(out))
    return out


@dataclass
class Case:
    """`make()` builds a configured object with some state; `other()` a differently
    configured one whose refusal names `field` (saved and current values)."""

    name: str
    make: Callable[[], Stateful]
    fresh: Callable[[], Stateful]
    other: Callable[[], Stateful]
    field: str


CASES = [
    Case(
        "Ledger",
        fed_ledger,
        lambda: Ledger(N, 2, K, names=NAMES),
        lambda: Ledger(N, 2, K + 1, names=NAMES),
        f"num_classes: saved {K}, now {K + 1}",
    ),
    Case(
        "DUS",
        lambda: taken(DUS(fed_ledger(), batch_size=4, epochs=3, policy="rl")),
        lambda: DUS(fed_ledger(), batch_size=4, epochs=3, policy="rl"),
        lambda: DUS(fed_ledger(), batch_size=5, epochs=3, policy="rl"),
        "batch_size: saved 4, now 5",
    ),
    Case(
        "BSS",
        lambda: taken(BSS(fed_ledger(), scheduler="learned", interval=1)),
        lambda: BSS(fed_ledger(), scheduler="learned", interval=1),
        lambda: BSS(fed_ledger(), scheduler="learned", interval=2),
        "interval: saved 1, now 2",
    ),
    Case(
        "SMV",
        lambda: taken(SMV(fed_ledger(), warmup=0, level="modality")),
        lambda: SMV(fed_ledger(), warmup=0, level="modality"),
        lambda: SMV(fed_ledger(), warmup=0, level="sample"),
        "level: saved 'modality', now 'sample'",
    ),
    Case(
        "OGMGE",
        ogmge,
        lambda: ogmge(generator=torch.Generator().manual_seed(9)),
        lambda: ogmge(alpha=0.2),
        "alpha: saved 0.1, now 0.2",
    ),
    Case(
        "BalancedLoader",
        lambda: advanced(loader()),
        loader,
        lambda: loader(batch_size=3),
        "batch_size: saved 4, now 3",
    ),
]
IDS = [c.name for c in CASES]


def same(a: Any, b: Any) -> bool:
    """Deep equality of states: dicts, lists, tensors (NaN equal to NaN), arrays, scalars."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return (
            isinstance(b, list | tuple)
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(torch.equal(a.nan_to_num(-7.0), b.nan_to_num(-7.0)))
        )
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return type(a) is type(b) and a == b


def test_same_sees_differences() -> None:
    """The deep comparison the other tests rely on can fail."""
    assert same(
        {"a": [torch.tensor([1.0, float("nan")])]}, {"a": [torch.tensor([1.0, float("nan")])]}
    )
    assert not same({"a": [torch.tensor([1.0, 2.0])]}, {"a": [torch.tensor([1.0, 3.0])]})
    assert not same({"a": {"b": 1}}, {"a": {"b": 2}})
    assert not same({"a": 1}, {"a": 1, "b": 2})
    assert not same([1], [1.0])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_stateful_class_is_on_the_base(case: Case) -> None:
    obj = case.make()
    assert isinstance(obj, Stateful)
    state = obj.state_dict()
    assert state["format"] == type(obj).STATE_FORMAT
    assert state["version"] == type(obj).STATE_VERSION
    assert set(obj.compatibility()) | set(type(obj).SAVED_FIELDS) | {"format", "version"} == set(
        state
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_round_trip_gives_back_an_equal_state(case: Case) -> None:
    state = case.make().state_dict()
    fresh = case.fresh()
    assert not same(fresh.state_dict(), state)  # the round trip below has something to restore
    fresh.load_state_dict(state)
    assert same(fresh.state_dict(), state)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_loading_never_modifies_the_argument(case: Case) -> None:
    state = case.make().state_dict()
    before = copy.deepcopy(state)
    fresh = case.fresh()
    fresh.load_state_dict(state)
    assert same(state, before)
    fresh.state_dict()  # nothing the restored object holds aliases the caller's dict
    if isinstance(fresh, Ledger):
        fresh.observe(torch.arange(2), torch.zeros(2, dtype=torch.long), [torch.zeros(2, K)] * 2)
    assert same(state, before)
    with pytest.raises(ValueError):
        case.other().load_state_dict(state)  # a refused load leaves it alone too
    assert same(state, before)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_differently_configured_object_is_refused_naming_the_field(case: Case) -> None:
    state = case.make().state_dict()
    name = type(case.fresh()).__name__
    with pytest.raises(ValueError) as info:
        case.other().load_state_dict(state)
    message = str(info.value)
    assert message.startswith(
        f"{name}.load_state_dict: the state was saved by a differently configured {name} ("
    )
    assert case.field in message


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_another_version_or_format_is_refused(case: Case) -> None:
    obj = case.make()
    state = obj.state_dict()
    name, version = type(obj).__name__, state["version"]
    with pytest.raises(ValueError, match=rf"{name}\.load_state_dict: the state is version "):
        case.fresh().load_state_dict({**state, "version": version + 1})
    with pytest.raises(ValueError, match=rf"{name} reads version {version} only"):
        case.fresh().load_state_dict({**state, "version": version - 1})
    expects = rf"{name}\.load_state_dict expects a dict from {name}\.state_dict\(\)"
    with pytest.raises(ValueError, match=expects + r".*format 'elsewhere'"):
        case.fresh().load_state_dict({**state, "format": "elsewhere"})
    with pytest.raises(ValueError, match=expects + r".*got a list"):
        case.fresh().load_state_dict([state])  # type: ignore[arg-type]
    partial = {k: v for k, v in state.items() if k != type(obj).SAVED_FIELDS[0]}
    with pytest.raises(ValueError, match=rf"lacks the entries \['{type(obj).SAVED_FIELDS[0]}'\]"):
        case.fresh().load_state_dict(partial)


def test_every_differing_field_is_named() -> None:
    state = DUS(fed_ledger(), batch_size=4, epochs=3, seed=1).state_dict()
    with pytest.raises(ValueError) as info:
        DUS(fed_ledger(), batch_size=6, epochs=2, seed=1).load_state_dict(state)
    message = str(info.value)
    assert "(batch_size: saved 4, now 6; epochs: saved 3, now 2)" in message
    assert message.endswith("build the method (and call set_ids) as when it was saved.")
    led = Ledger(N, 2, K, names=NAMES).state_dict()
    with pytest.raises(ValueError, match=r"num_classes: saved 3, now 4; names: saved"):
        Ledger(N, 2, K + 1, names=NAMES[::-1]).load_state_dict(led)


def test_state_differences_treats_tuples_as_lists() -> None:
    assert state_differences({"a": [1, 2], "b": 1}, {"a": (1, 2), "b": 1}) == {}
    assert state_differences({"a": [1, 2]}, {"a": (2, 1), "c": 0}) == {
        "a": ([1, 2], (2, 1)),
        "c": (None, 0),
    }


def test_ogmge_now_checks_its_settings_on_load() -> None:
    state = ogmge(alpha=0.1, start=2, end=9).state_dict()
    with pytest.raises(ValueError, match=r"start: saved 2, now 0; end: saved 9, now 50"):
        ogmge(alpha=0.1).load_state_dict(state)
    with pytest.raises(ValueError, match=r"noise: saved 'all', now 'modulated'"):
        ogmge(alpha=0.1, start=2, end=9, noise="modulated").load_state_dict(state)
    with pytest.raises(ValueError, match=r"generator_device: saved 'cpu', now None"):
        ogmge(alpha=0.1, start=2, end=9, generator=None).load_state_dict(state)


@pytest.mark.parametrize("bad", ["method", "batches"])
def test_a_refused_loader_state_changes_nothing(bad: str) -> None:
    """All or nothing: a loader state whose method part is of another configuration, or whose
    position does not fit the plan, is refused and leaves the ledger, the method and the
    position as they were (the next pass is the one the loader would have served)."""
    source = advanced(loader(seed=0))
    saved = source.state_dict()
    if bad == "method":
        saved["method"] = advanced(loader(seed=5)).state_dict()["method"]  # SMV seed 5
    else:
        saved["batches"] = 10_000
    target = loader(seed=0)
    target.set_epoch(0)
    target.ledger.set_epoch(2)
    target.ledger.observe(
        torch.arange(4), torch.zeros(4, dtype=torch.long), [torch.ones(4, K)] * 2, torch.ones(4, K)
    )
    batches = [b.ids.tolist() for b in target]  # what a pass serves now
    with pytest.warns(EpochWarning, match="epoch 0 was already served"):
        target.set_epoch(0)  # serve epoch 0 again: the pass the refused load must keep
    before = target.state_dict()
    with pytest.raises(ValueError, match="seed: saved 5, now 0" if bad == "method" else "10000"):
        target.load_state_dict(saved)
    assert same(target.state_dict(), before)
    assert [b.ids.tolist() for b in target] == batches
