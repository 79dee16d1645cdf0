"""The Ledger's saved fields: copying its tables and counters into a state and checking a state's
entries before any of them is restored.

Place in the data flow: `Ledger.state_dict()` (through `mmsample.stateful.Stateful`) saves the
shared tables (table.py), the epoch and step, and DUS's cumulative discrepancy; the
`BalancedLoader` nests that under its "ledger" key. `Ledger.load_state_dict` runs the common
format / version / compatibility check, then `check_saved` here (every entry's type, dtype and
shape), and only then copies the entries into the live tables (workers keep seeing them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from . import discrepancy
from .checks import check_int
from .table import Tables

TABLES = ("float", "bool", "int", "count", "count_base")  # state key of each shared table
COUNTERS = ("epoch", "step", "discrepancy_count")  # int entries >= 0
DISCREPANCY = ("discrepancy_mean", "discrepancy_synced")  # float64 [M] or None
SAVED = (*TABLES, "epoch", "step", *discrepancy.SAVED)


def _tables(t: Tables) -> dict[str, Tensor]:
    return {"float": t.f, "bool": t.b, "int": t.i, "count": t.count, "count_base": t.count_base}


def table_state(t: Tables) -> dict[str, Tensor]:
    """Copies of the shared tables, under their state keys."""
    return {key: table.clone() for key, table in _tables(t).items()}


def check_saved(state: Mapping[str, Any], t: Tables, m: int) -> None:
    """Raise ValueError naming the first malformed entry of a Ledger state: a table that is not
    a tensor of the live table's dtype and shape, a counter that is not an int >= 0, or a
    discrepancy that is not a float tensor `[m]` (the synced one and, before any observe call,
    the mean may be None)."""
    for key, target in _tables(t).items():
        given = state[key]
        if not isinstance(given, Tensor):
            got = type(given).__name__
        elif given.shape != target.shape or given.dtype != target.dtype:
            got = str((given.dtype, tuple(given.shape)))
        else:
            continue
        raise ValueError(
            f"Ledger state entry {key!r} must be a {target.dtype} tensor of shape "
            f"{tuple(target.shape)}; got {got}."
        )
    for key in COUNTERS:
        check_int(key, state[key], 0, where="Ledger.load_state_dict (state entry)")
    for key in DISCREPANCY:
        given = state[key]
        if given is None:
            if key == "discrepancy_mean" and state["discrepancy_count"] != 0:
                raise ValueError(
                    f"Ledger state entry {key!r} is None but 'discrepancy_count' is "
                    f"{state['discrepancy_count']}: the state is inconsistent."
                )
            continue
        if not isinstance(given, Tensor) or not given.is_floating_point() or given.shape != (m,):
            raise ValueError(
                f"Ledger state entry {key!r} must be a float64 tensor of shape [{m}] or None; "
                f"got {type(given).__name__}."
            )


def load_tables(state: Mapping[str, Any], t: Tables) -> None:
    """Copy the checked tables of `state` into the live (shared) tables, in place."""
    for key, target in _tables(t).items():
        target.copy_(state[key])
