"""What every data-side method shares: the Ledger it reads, the ids it plans over, the epoch
snapshot, the plan cache and the one state contract.

Place in the data flow: ledger -> **method** -> plan -> reader. The loader calls `ledger.sync()`
and then `method.set_epoch(e)` on every rank; the method takes what it needs from the ledger
there (or at the first `plan(e)` if `set_epoch(e)` was not called) and from then on its plan of
epoch e is a pure function of (seed, epoch, its state), identical on every rank. Subclasses
implement `_take(epoch)` (reading `ledger.snapshot()` only when they need the table),
`_plan(epoch)`, `_stats(epoch)` and list the fields they save.
"""

from __future__ import annotations

import copy
import hashlib
import math
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import UnobservedWarning
from ..ledger import Ledger
from ..plan import ArrayPlan
from ..stateful import Stateful


def check_choice(owner: str, name: str, value: object, choices: Mapping[str, Any]) -> None:
    """ValueError unless `value` is a key of the registry `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"The '{name}' parameter of {owner} must be one of {sorted(choices)}; got {value!r}."
        )


def check_number(
    owner: str,
    name: str,
    value: object,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    integer: bool = False,
) -> None:
    """ValueError unless `value` is a (finite) number in the range, naming the parameter."""
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = math.isfinite(v) or (high == math.inf and v == math.inf)
        ok = ok and (v > low if low_open else v >= low) and v <= high
    if not ok:
        lo = f"({low}" if low_open else f"[{low}"
        hi = "inf)" if high == math.inf else f"{high}]"
        what = "an int" if integer else "a number"
        raise ValueError(
            f"The '{name}' parameter of {owner} must be {what} in {lo}, {hi}; got {value!r}."
        )


def ids_digest(ids: np.ndarray) -> str:
    """A short digest of an id set, saved in states so a state refuses another id set."""
    return hashlib.sha1(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]


class Method(Stateful):
    """Base of DUS, BSS and SMV (see the module docstring for the life cycle).

    State (`mmsample.stateful.Stateful`): compatible with (class, seed, samples, modalities, ids
    digest and the subclass's `_COMPAT` settings); saves `taken` (the epoch taken) and `saved`
    (the subclass's `_SAVED` attributes)."""

    STATE_FORMAT = "mmsample.methods.Method"
    STATE_VERSION = 2
    SAVED_FIELDS = ("taken", "saved")
    STATE_FIX = "build the method (and call set_ids) as when it was saved."

    # attributes of the subclass saved under "saved" (tensors and arrays are copied)
    _SAVED: ClassVar[tuple[str, ...]] = ()
    _COMPAT: ClassVar[tuple[str, ...]] = ()  # constructor settings a state must match
    _ARRAYS: ClassVar[frozenset[str]] = frozenset()  # saved fields held as numpy arrays

    def __init__(self, ledger: Ledger | None, seed: int) -> None:
        owner = type(self).__name__
        if ledger is not None and not isinstance(ledger, Ledger):
            raise ValueError(
                f"The 'ledger' parameter of {owner} must be a mmsample.ledger.Ledger sized with "
                f"the dataset's manifest.id_space, or None (bound later by mmsample.Balancer or "
                f"`bind`); got {type(ledger).__name__}."
            )
        check_number(owner, "seed", seed, low=0, integer=True)
        self.seed = int(seed)
        self._ledger: Ledger | None = None
        self._taken: int | None = None
        self._cache: tuple[int, ArrayPlan] | None = None
        self._warned_unobserved = False

    # ---- the ledger (given at construction or bound later) ---------------------------------
    @property
    def ledger(self) -> Ledger:
        """The Ledger the method reads. Raises RuntimeError before one is bound."""
        if self._ledger is None:
            raise RuntimeError(
                f"{type(self).__name__} has no Ledger yet: build it on one "
                f"({type(self).__name__}(Ledger(...), ...)), call bind(ledger), or hand it to "
                "mmsample.Balancer, which binds one sized for your dataset."
            )
        return self._ledger

    @property
    def bound(self) -> bool:
        """Whether the method has its Ledger (see `bind`)."""
        return self._ledger is not None

    def bind(self, ledger: Ledger) -> None:
        """Read `ledger` from now on (late binding: `mmsample.Balancer` and `wrap` build the
        Ledger for a method constructed without one). Binding the ledger it already has does
        nothing; ValueError for another ledger or a non-Ledger."""
        owner = type(self).__name__
        if not isinstance(ledger, Ledger):
            raise ValueError(
                f"{owner}.bind takes a mmsample.ledger.Ledger; got {type(ledger).__name__}."
            )
        if self._ledger is ledger:
            return
        if self._ledger is not None:
            raise ValueError(
                f"{owner}.bind: the method already reads another Ledger; build a new method."
            )
        self._ledger = ledger
        self.names: tuple[str, ...] = tuple(ledger.names)
        self.num_modalities = len(self.names)
        self.full = (1 << self.num_modalities) - 1
        self._ids = np.arange(ledger.num_samples, dtype=np.int64)
        self._taken, self._cache = None, None
        self._bind()

    def set_run(self, *, epochs: int | None = None, batch_size: int | None = None) -> None:
        """Tell the method about the run: `epochs` it lasts, the DataLoader's `batch_size`.
        Settings left None at construction are taken from them (DUS: its schedule and rows);
        a method that cannot act within `epochs` warns (`mmsample.errors.ShortRunWarning`)."""
        if epochs is not None:
            check_number(type(self).__name__, "epochs", epochs, low=1, integer=True)
        if batch_size is not None:
            check_number(type(self).__name__, "batch_size", batch_size, low=1, integer=True)
        self._set_run(epochs, batch_size)

    # ---- ids -----------------------------------------------------------------------------
    @property
    def ids(self) -> np.ndarray:
        """int64 `[N]`, ascending: the ids the reader yields (default: every id of the ledger).
        "N" in every formula is `len(ids)`."""
        view = self._ids.view()
        view.flags.writeable = False
        return view

    def set_ids(self, ids: np.ndarray | torch.Tensor | list[int]) -> None:
        """Plan over these ids (the loader passes the reader's ids: shard holes and a split
        filter leave ids out). Raises ValueError for ids outside the ledger or repeated ids."""
        owner = type(self).__name__
        arr = np.asarray(ids, dtype=np.int64).ravel()
        if arr.size == 0:
            raise ValueError(f"The 'ids' argument of {owner}.set_ids must not be empty.")
        arr = np.sort(arr)
        if int(arr[0]) < 0 or int(arr[-1]) >= self.ledger.num_samples:
            raise ValueError(
                f"The 'ids' argument of {owner}.set_ids holds ids outside the ledger's "
                f"[0, {self.ledger.num_samples}) (ids {int(arr[0])}..{int(arr[-1])}); size the "
                f"Ledger with the dataset's manifest.id_space."
            )
        if np.any(arr[1:] == arr[:-1]):
            raise ValueError(f"The 'ids' argument of {owner}.set_ids repeats some id.")
        if not np.array_equal(arr, self._ids):
            self._ids = arr
            self._taken = None
            self._cache = None
            self._reset()

    # ---- life cycle ----------------------------------------------------------------------
    @property
    def taken_epoch(self) -> int | None:
        """The last epoch whose ledger statistics `set_epoch` took (None before the first, and
        after `set_ids` changed the ids). The loader runs a scoring pass only before a take."""
        return self._taken

    def set_epoch(self, epoch: int) -> None:
        """Take what epoch `epoch` needs from the ledger (once per epoch; a repeated call for
        the same epoch, or one after `load_state_dict` restored it, changes nothing)."""
        check_number(type(self).__name__, "epoch", epoch, low=0, integer=True)
        if self._taken == epoch:
            return
        if not self._warned_unobserved and self._reads_observations(epoch):
            self._warned_unobserved = warn_unobserved(self, epoch)
        self._take(epoch)
        self._taken = epoch
        self._cache = None

    def plan(self, epoch: int) -> ArrayPlan:
        """The plan of `epoch`: which ids, how many items each and their modality masks (and
        the sequence, where the method fixes one). Equal plans for equal calls."""
        self.set_epoch(epoch)
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self._plan(epoch))
        return self._cache[1]

    def stats(self, epoch: int) -> dict[str, float]:
        """A flat dict for the JSONL log: `items/<modality>` and what the method adds."""
        plan = self.plan(epoch)
        masks = plan.masks
        out = {f"items/{n}": float(((masks >> j) & 1).sum()) for j, n in enumerate(self.names)}
        out["items"] = float(len(masks))
        out["ids"] = float(len(self._ids))
        out.update(self._stats(epoch))
        return out

    def scoring_ids(self, epoch: int) -> np.ndarray | None:
        """Ids the method wants scored by a scoring pass before `set_epoch(epoch)` (None: none);
        the loader runs `mmsample.scoring.score` on them when it is given a scorer."""
        return None

    # ---- state ---------------------------------------------------------------------------
    def compatibility(self) -> dict[str, Any]:
        """What a state must match: class, seed, samples, modalities, ids digest, settings."""
        return {
            "class": type(self).__name__,
            "seed": self.seed,
            "samples": self.ledger.num_samples,
            "modalities": list(self.names),
            "ids": ids_digest(self._ids),
            **{k: getattr(self, k) for k in self._COMPAT},
        }

    def state_dict(self) -> dict[str, Any]:
        """What the ledger cannot give back later (the epoch's snapshot-derived state), plus what
        the state is compatible with (class, seed, samples, modalities, ids, settings). Tensors,
        numbers, strings and lists only: `torch.load` reads it with `weights_only=True`."""
        return super().state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from `state_dict()`; refuses a state of another class, seed, ledger, id set
        or setting (ValueError naming each). Never modifies `state`."""
        super().load_state_dict(state)

    def _save_fields(self) -> dict[str, Any]:
        saved = {k: _to_state(getattr(self, k)) for k in self._SAVED}
        return {"taken": self._taken, "saved": saved}

    def _load_fields(self, state: Mapping[str, Any]) -> None:
        owner = type(self).__name__
        saved = state["saved"]
        if not isinstance(saved, Mapping) or set(saved) != set(self._SAVED):
            raise ValueError(
                f"{owner}.load_state_dict: the state's 'saved' entry must hold {list(self._SAVED)};"
                f" got {sorted(saved) if isinstance(saved, Mapping) else type(saved).__name__}."
            )
        for k in self._SAVED:
            value = _copy(saved[k])
            if k in self._ARRAYS and isinstance(value, torch.Tensor):
                value = value.numpy()
            setattr(self, k, value)
        taken = state["taken"]
        self._taken = None if taken is None else int(taken)
        self._cache = None

    # ---- subclass hooks ------------------------------------------------------------------
    def _bind(self) -> None:
        """Set up what depends on the ledger's modalities (called once, by `bind`)."""
        self._reset()

    def _set_run(self, epochs: int | None, batch_size: int | None) -> None:
        """Fill run-dependent settings and warn when the method cannot act (see `set_run`)."""

    def _reads_observations(self, epoch: int) -> bool:
        """Whether taking `epoch` reads what the training pass observed (then an empty ledger
        is warned about): every epoch after the first, unless the subclass says otherwise."""
        return epoch > 0

    def _reset(self) -> None:
        """Forget snapshot-derived state (the id set changed)."""

    def _take(self, epoch: int) -> None:
        raise NotImplementedError

    def _plan(self, epoch: int) -> ArrayPlan:
        raise NotImplementedError

    def _stats(self, epoch: int) -> dict[str, float]:
        return {}

    def _every_id_once(self, mask: int | None = None, order: np.ndarray | None = None) -> ArrayPlan:
        """The plan yielding each of `ids` once with `mask` (default: every modality)."""
        counts = np.zeros(self.ledger.num_samples, dtype=np.int64)
        counts[self._ids] = 1
        masks = np.full(len(self._ids), self.full if mask is None else mask, dtype=np.int64)
        return ArrayPlan(counts, masks, order)


def warn_unobserved(method: Method, epoch: int) -> bool:
    """Warn (`UnobservedWarning`) when the ledger holds no observation for any id `method`
    plans over; True when it warned (the method warns once)."""
    ledger = method.ledger
    seen = ledger.seen_count
    if bool((seen[torch.from_numpy(np.array(method.ids))] > 0).any()):
        return False
    owner = type(method).__name__
    other = int((seen > 0).sum())
    why = (
        f"observe was called for {other} other ids (pass the batch's ids: `batch.ids`)"
        if other
        else "observe was never called"
    )
    warnings.warn(
        f"{owner} is planning epoch {epoch} from a Ledger with no observation for any of its "
        f"{len(method.ids)} ids ({why}), so it cannot balance anything. Add, after "
        "loss.backward() in your loop: `ledger.observe(batch.ids, labels, unimodal_logits, "
        "fused_logits, values=values, present=present)` (or let mmsample.Balancer's "
        "`loss = balancer.loss(batch, criterion)` record it).",
        UnobservedWarning,
        stacklevel=4,
    )
    return True


def _to_state(value: Any) -> Any:
    """A copy for a state dict: numpy arrays become tensors, so `torch.load` reads the state
    with its default `weights_only=True`."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    return _copy(value)


def _copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    return copy.deepcopy(value)
