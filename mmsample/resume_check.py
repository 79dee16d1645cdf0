"""The one round-trip check every stateful loader piece is tested with (and users may reuse).

It runs a loader uninterrupted, then stops it after k batches, saves `state_dict()`, restores a
fresh loader from that state and finishes the epoch; the two halves together must equal the
uninterrupted run: nothing missing, nothing duplicated, same order. It also checks that loading a
state never mutates the caller's dict, that a state taken after an epoch's last batch (inside the
loop, after the loop ended, or after `set_epoch` of the next) restores to "that epoch done" (the
restored loader's next pass is the next epoch, as the uninterrupted loader's is), and resumes
across an epoch boundary. (What a state holds and when it is refused is the one contract of
`mmsample.stateful.Stateful`.)
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Protocol


class ResumableLoader(Protocol):
    """What the check needs: iteration plus torchdata's `state_dict` / `load_state_dict`."""

    def set_epoch(self, epoch: int) -> None: ...

    def __iter__(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _take(
    loader: ResumableLoader, items: Callable[[Any], Sequence[Hashable]], stop: int | None = None
) -> tuple[list[Hashable], dict[str, Any]]:
    out: list[Hashable] = []
    if stop == 0:
        return out, loader.state_dict()
    for n, batch in enumerate(loader):
        out.extend(items(batch))
        if stop is not None and n + 1 == stop:
            break
    return out, loader.state_dict()


def compare_runs(reference: Sequence[Hashable], got: Sequence[Hashable], where: str) -> None:
    """Raise AssertionError naming what is missing, duplicated or out of order in `got`."""
    missing = Counter(reference) - Counter(got)
    extra = Counter(got) - Counter(reference)
    if missing:
        raise AssertionError(f"{where}: missing items {sorted(missing.elements(), key=repr)[:10]}")
    if extra:
        raise AssertionError(f"{where}: duplicated items {sorted(extra.elements(), key=repr)[:10]}")
    if list(got) != list(reference):
        first = next(i for i, (a, b) in enumerate(zip(reference, got)) if a != b)
        raise AssertionError(f"{where}: order differs from position {first}")


def check_resume(
    make: Callable[[int], ResumableLoader],
    items: Callable[[Any], Sequence[Hashable]] = list,
    stops: Iterable[int] | None = None,
    epoch_boundary: bool = True,
) -> list[Hashable]:
    """Round-trip a loader's state at several points of an epoch; return the reference items.

    `make(epoch)` builds a fresh loader positioned at the start of `epoch`; `items(batch)` turns
    a batch into hashable items (e.g. sample ids). `stops` are batch counts at which to save
    (default: 0, 1, the middle and the end).
    """
    reference, _ = _take(make(0), items)
    batches = sum(1 for _ in make(0))
    following: list[Hashable] | None = None  # epoch 1's items, computed when first needed
    points = sorted({0, min(1, batches), batches // 2, batches}) if stops is None else stops
    for stop in points:
        first, state = _take(make(0), items, stop)
        saved = copy.deepcopy(state)
        fresh = make(0)
        fresh.load_state_dict(state)
        rest, _ = _take(fresh, items)
        if repr(state) != repr(saved):
            raise AssertionError(f"resume at batch {stop}: load_state_dict mutated its argument")
        if stop < batches:
            compare_runs(reference, first + rest, f"resume at batch {stop}")
            continue
        # the state was taken after the epoch's last batch: the next pass is epoch 1
        following = _take(make(1), items)[0] if following is None else following
        compare_runs(reference, first, f"resume at batch {stop}")
        compare_runs(following, rest, f"resume at batch {stop} (the epoch's last)")
    if epoch_boundary:
        following = _take(make(1), items)[0] if following is None else following
        for when in ("after the loop ended", "after set_epoch of the next"):
            loader = make(0)
            _take(loader, items)
            if when == "after set_epoch of the next":
                loader.set_epoch(1)
            fresh = make(0)
            fresh.load_state_dict(loader.state_dict())
            compare_runs(following, _take(fresh, items)[0], f"resume from a state taken {when}")
        loader = make(0)
        _take(loader, items)
        loader.set_epoch(1)
        first, state = _take(loader, items, max(1, batches // 2))
        expected, _ = _take(make(1), items)
        fresh = make(0)  # built at epoch 0: the state must carry epoch 1
        fresh.load_state_dict(state)
        rest, _ = _take(fresh, items)
        compare_runs(expected, first + rest, "resume across the epoch boundary")
    return reference
