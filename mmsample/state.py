"""The one check every stateful piece runs when it loads a state: does it fit?

Place in the data flow: readers, loaders and methods save what they are compatible with (class,
seed, rank, world size, modalities, settings) beside their position; `check_compatible` compares
that with the loading object and refuses a mismatch with one message naming every difference.
`mmsample.resume_check.check_resume` is the round trip that tests them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def check_compatible(
    where: str,
    state: Mapping[str, Any],
    mine: Mapping[str, Any],
    what: str,
    fix: str,
    keys: Iterable[str] | None = None,
) -> None:
    """Raise ValueError unless `state[k] == mine[k]` for every key (default: all of `mine`):
    "`where`: the state was saved by a differently configured `what` (k: saved a, now b; ...);
    `fix`"."""
    wrong = {
        k: (state.get(k), mine[k])
        for k in (mine if keys is None else keys)
        if state.get(k) != mine[k]
    }
    if wrong:
        detail = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in wrong.items())
        raise ValueError(
            f"{where}: the state was saved by a differently configured {what} ({detail}); {fix}"
        )
