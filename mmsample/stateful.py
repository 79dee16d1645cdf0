"""`Stateful`: the one state contract of every stateful piece (loader, ledger, methods, OGM-GE).

Place in the data flow: the `BalancedLoader` nests the method's and the ledger's states in its
own; a training loop saves that (and OGM-GE's) in its checkpoint and loads it into freshly built
objects. Every state is a plain dict

    {"format": <name>, "version": <int>, <compatibility fields>, <saved fields>}

where the compatibility fields are what the loading object must match (seed, rank, world size,
modalities, settings...) and the saved fields are its position (what it cannot recompute).
`load_state_dict` runs one check for all of them and refuses, before changing anything:
- anything but a mapping, or a state of another format: "X.load_state_dict expects a dict from
  X.state_dict() (format 'f', version v); got ...";
- another version: "X.load_state_dict: the state is version a of format 'f'; this X reads
  version v ...";
- a state of a differently configured object, naming every field that differs: "X.load_state_dict:
  the state was saved by a differently configured X (field: saved a, now b; ...); <fix>";
- a state lacking saved fields.
Loading never modifies the caller's dict. `mmsample.resume_check.check_resume` is the round trip
that tests the loader (and through it the rest).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = ["Stateful", "state_differences"]


def _plain(value: Any) -> Any:
    """Tuples compare as lists (a state read back from JSON or torch.save holds lists)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def state_differences(state: Mapping[str, Any], mine: Mapping[str, Any]) -> dict[str, Any]:
    """`{field: (saved, now)}` for every field of `mine` whose value in `state` differs (a
    missing field counts as saved None; tuples equal lists)."""
    return {k: (state.get(k), v) for k, v in mine.items() if _plain(state.get(k)) != _plain(v)}


class Stateful:
    """Base of every class with `state_dict()` / `load_state_dict()`.

    A subclass declares:
    - `STATE_FORMAT` (str) and `STATE_VERSION` (int): what its `state_dict()` is; a state of
      another format or version is refused;
    - `SAVED_FIELDS`: the keys of its state beyond the compatibility fields (its position);
    - `STATE_FIX`: the sentence that tells the user how to load a refused state;
    - `compatibility()`: `{field: value}` a state must match to be loaded (seed, modalities,
      settings...);
    - `_save_fields()` -> `{field: copy}` for every name of `SAVED_FIELDS`, and
      `_load_fields(state)`, which restores them from a checked state (copying, never
      aliasing the caller's objects) and may refuse malformed entries before changing anything.
    """

    STATE_FORMAT: ClassVar[str]
    STATE_VERSION: ClassVar[int]
    SAVED_FIELDS: ClassVar[tuple[str, ...]] = ()
    STATE_FIX: ClassVar[str] = "build it with the settings it had when the state was saved."

    # ---- what a subclass gives -----------------------------------------------------------
    def compatibility(self) -> dict[str, Any]:
        """`{field: value}` a state must match to be loaded into this object."""
        return {}

    def _save_fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_fields(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError

    # ---- the contract --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """`{"format", "version", compatibility fields, saved fields}`: a new dict of copies."""
        saved = self._save_fields()
        if set(saved) != set(self.SAVED_FIELDS):
            raise RuntimeError(
                f"{type(self).__name__}._save_fields gave {sorted(saved)}; its SAVED_FIELDS are "
                f"{sorted(self.SAVED_FIELDS)}."
            )
        return {
            "format": self.STATE_FORMAT,
            "version": self.STATE_VERSION,
            **self.compatibility(),
            **saved,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from `state_dict()` output after `check_state(state)`; `state` is never
        modified. Raises ValueError (see `check_state`)."""
        self.check_state(state)
        self._load_fields(state)

    def check_state(self, state: Any) -> None:
        """Raise ValueError unless `state` is a mapping of this format and version, saved by an
        object with the same `compatibility()`, holding every saved field. The message names
        the format, version, or every field that differs (saved and current values) and the fix.
        """
        owner, fmt, version = type(self).__name__, self.STATE_FORMAT, self.STATE_VERSION
        if not isinstance(state, Mapping) or state.get("format") != fmt:
            got = (
                f"a dict with format {state.get('format')!r}"
                if isinstance(state, Mapping)
                else f"a {type(state).__name__}"
            )
            raise ValueError(
                f"{owner}.load_state_dict expects a dict from {owner}.state_dict() (format "
                f"{fmt!r}, version {version}); got {got}."
            )
        if state.get("version") != version:
            raise ValueError(
                f"{owner}.load_state_dict: the state is version {state.get('version')!r} of "
                f"format {fmt!r}; this {owner} reads version {version} only. Resume with the "
                f"mmsample that saved it, or start from a state this version saved."
            )
        wrong = state_differences(state, self.compatibility())
        if wrong:
            detail = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in wrong.items())
            raise ValueError(
                f"{owner}.load_state_dict: the state was saved by a differently configured "
                f"{owner} ({detail}); {self.STATE_FIX}"
            )
        missing = [k for k in self.SAVED_FIELDS if k not in state]
        if missing:
            raise ValueError(
                f"{owner}.load_state_dict: the state lacks the entries {missing} that "
                f"{owner}.state_dict() saves; pass the whole dict it returned."
            )
