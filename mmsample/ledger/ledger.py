"""The per-sample Ledger: what the training pass saw of each sample, keyed by global sample id.

Place in the data flow: after the forward pass the training step calls
`ledger.observe(ids, labels, unimodal_logits, fused_logits, values=v, present=p)`; balancing
methods read
`ledger.snapshot()` at the next epoch (DUS: the next step) to make their plan; DataLoader workers
read the same table through shared memory; `sync()` merges the tables of all ranks.

Storage (all CPU, in shared memory, written in place so workers started earlier see updates):
float32 statistics (NaN = never observed), bool correctness, int64 labels / epochs / stamps.
Every observation carries a stamp `(epoch + 1) << 40 | step` (step = observe calls so far), kept
separately for three groups of columns: the unimodal statistics, the fused statistics and the
subset values. An observe without `fused_logits` (or `values`) leaves that group as it was.

Deferral: `observe` only checks a batch and copies it into a staging ring (staging.py;
from CUDA asynchronously, without a host sync); the statistics of all staged batches are computed
at once (stats.py) and written to the table when the ledger is flushed: on any read
through the ledger (accessors, `snapshot`, `staleness`), `flush()`, `set_epoch()`, `sync()`,
`state_dict()`, pickling, or when an observe finds `staging` batches waiting. Flushing gives the
same table as applying each batch on its own, in observation order: for an id observed several
times (within a batch or across batches) the last occurrence wins; `seen_count` counts every one.
DataLoader workers and views taken earlier see a batch once it is flushed (`staging=1`: at the
next observe); call `flush()` or `set_epoch()` before the workers should read it.

The Ledger's parts: checks.py (argument checks), staging.py (the ring), stats.py (per-row
statistics), table.py (the shared tables), sync.py (merging ranks), discrepancy.py (DUS's
cumulative discrepancy), checkpoint.py (the saved entries; the state contract is
`mmsample.stateful.Stateful`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..stateful import Stateful
from . import checkpoint
from .checks import check_batch, check_int, check_names, check_present, checked_ints
from .discrepancy import CumulativeDiscrepancy
from .staging import StagingRing
from .stats import (
    head_statistics,
    mean_pairwise_cosine,
    per_sample_statistics,
)
from .sync import merge_tables
from .table import STEP_BITS, Tables

__all__ = ["Ledger", "head_statistics", "mean_pairwise_cosine", "per_sample_statistics"]

_MAX_EPOCH = (1 << (63 - STEP_BITS)) - 2
# the per-sample tables `snapshot()` copies (plus the masks seen, fused_seen, values_seen)
_SNAPSHOT_KEYS = (
    "labels true_prob unimodal_loss correct similarity fused_true_prob fused_loss fused_correct "
    "values uniform_kl last_seen seen_count"
)


class _Column:
    """A read accessor: a live view of columns of a shared table (floats never observed are
    NaN, bools False); reading in the owning process first flushes the staged batches."""

    def __init__(self, table: str, cols: Callable[[int], slice | int] | None, doc: str) -> None:
        self.table, self.cols, self.__doc__ = table, cols, doc

    def __get__(self, ledger: Ledger | None, owner: type | None = None) -> Tensor:
        if ledger is None:
            return self  # type: ignore[return-value]
        t: Tensor = getattr(ledger._read()._t, self.table)
        return t if self.cols is None else t[:, self.cols(ledger.num_modalities)]


class Ledger(Stateful):
    """Per-sample statistics table keyed by global sample id, shared with loader workers.

    `names` labels the modalities (default "m0", "m1", ...). `device`, if given, is where
    `observe` expects the logits (None: wherever they are). `staging` is how many observed
    batches wait in the staging ring (at most 8 MiB of logits, unless one batch needs more)
    before they are reduced together and applied; 1 applies each batch at the next observe.

    State (`mmsample.stateful.Stateful`): compatible with (num_samples, num_modalities,
    num_classes, names); saves the tables, epoch, step and the cumulative discrepancy.
    """

    STATE_FORMAT = "mmsample.Ledger"
    STATE_VERSION = 4
    SAVED_FIELDS = checkpoint.SAVED
    STATE_FIX = "build the Ledger with the same settings."

    def __init__(
        self,
        num_samples: int,
        num_modalities: int,
        num_classes: int,
        *,
        device: torch.device | str | None = None,
        names: Sequence[str] | None = None,
        staging: int = 16,
    ) -> None:
        check_int("num_samples", num_samples, 1)
        check_int("num_modalities", num_modalities, 2)
        check_int("num_classes", num_classes, 2)
        check_int("staging", staging, 1)
        names = [f"m{j}" for j in range(num_modalities)] if names is None else names
        self.names: tuple[str, ...] = check_names(names, num_modalities)
        self.num_samples, self.num_modalities = num_samples, num_modalities
        self.num_classes = num_classes
        self.device = None if device is None else torch.device(device)
        self.staging = staging
        m = num_modalities
        self._t = Tables.empty(num_samples, m)  # shared memory; layout in table.py
        self._epoch = 0
        self._step = 0
        self._owner = os.getpid()
        self._heads = [f"unimodal_logits[{j}]" for j in range(m)] + ["fused_logits"]
        self._ring = StagingRing(m + 1, num_classes, 1 << m, staging)
        self._scratch = torch.zeros(num_samples, dtype=torch.int64)
        self._disc = CumulativeDiscrepancy(m)  # DUS's S^(j), see discrepancy.py

    # ---- reading -------------------------------------------------------------------------
    # Accessors return live views of the shared table (clone to keep a copy; never write them).

    true_prob = _Column("f", lambda m: slice(0, m), "`[N, M]` label probability per modality")
    fused_true_prob = _Column("f", lambda m: m, "`[N]` label probability of the fused head")
    unimodal_loss = _Column("f", lambda m: slice(m + 1, 2 * m + 1), "`[N, M]` CE per modality")
    fused_loss = _Column("f", lambda m: 2 * m + 1, "`[N]` cross-entropy of the fused head")
    similarity = _Column("f", lambda m: 2 * m + 2, "`[N]` mean pairwise cosine of softmaxes")
    values = _Column("f", lambda m: slice(2 * m + 3, 2 * m + 3 + 2**m), "`[N, 2**M]` values")
    uniform_kl = _Column("f", lambda m: slice(-m, None), "`[N, M]` KL(softmax || uniform), bits")
    correct = _Column("b", lambda m: slice(0, m), "`[N, M]` bool: modality argmax == label")
    fused_correct = _Column("b", lambda m: m, "`[N]` bool: fused argmax == label")
    labels = _Column("i", lambda m: 0, "`[N]` int64 label (-1: never observed)")
    last_seen = _Column("i", lambda m: 1, "`[N]` int64 epoch last observed (-1: never)")
    seen_count = _Column("count", None, "`[N]` int64 observations (all ranks once synced)")

    @property
    def epoch(self) -> int:
        """Epoch stamped on observations that do not name one (see `set_epoch`)."""
        return self._epoch

    @property
    def step(self) -> int:
        """Number of `observe` calls that recorded something (after `sync`: the max over ranks)."""
        return self._step

    @property
    def cumulative_discrepancy(self) -> Tensor:
        """`[M]` float64: DUS's cumulative discrepancy `S^(j)` (DUS paper): the running mean over
        observe calls of each call's `s^(j) = sum_i p^(j)_{i, y_i}` over the rows carrying j
        (`S_t = (t-1)/t S_{t-1} + s_t / t`, i.e. the mean of the calls' sums; zeros before any
        call). After `sync()` under torch.distributed: the sum over ranks of each rank's running
        mean, as of that sync (every rank holds the same value)."""
        self._read()
        return self._disc.value()

    def staleness(self, epoch: int) -> Tensor:
        """`[N]` int64 epochs since each sample was last observed: `epoch - last_seen`
        (never observed: `epoch + 1`)."""
        check_int("epoch", epoch, 0, where="Ledger.staleness")
        return epoch - self.last_seen

    def snapshot(self) -> dict[str, Tensor]:
        """A consistent copy of the whole table as a plain dict of CPU tensors, plus masks
        `modality_seen` `[N, M]` (modality j's statistics were written), `seen` (any modality),
        `paired_seen` (the similarity, from a row carrying every modality), `fused_seen`,
        `values_seen`: what a method reads to make its plan."""
        self._read()
        out = {k: getattr(self, k).clone() for k in _SNAPSHOT_KEYS.split()}
        m = self.num_modalities
        stamped = self._t.i[:, 2:] > 0
        out.update(modality_seen=stamped[:, :m].clone(), seen=stamped[:, :m].any(1))
        out.update(paired_seen=stamped[:, m].clone(), fused_seen=stamped[:, m + 1].clone())
        out["values_seen"] = stamped[:, m + 2].clone()
        return out

    # ---- writing -------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch stamped on later observations (staleness is counted in epochs); flushes
        the staged batches, so loader workers of the new epoch read everything observed so far."""
        check_int("epoch", epoch, 0, where="Ledger.set_epoch", high=_MAX_EPOCH)
        self._epoch = epoch
        self.flush()

    def observe(
        self,
        ids: Tensor,
        labels: Tensor,
        unimodal_logits: Sequence[Tensor],
        fused_logits: Tensor | None = None,
        values: Tensor | None = None,
        epoch: int | None = None,
        present: Tensor | None = None,
    ) -> None:
        """Record one batch of the training forward pass: ids `[B]`, labels `[B]`, M unimodal
        logits `[B, K]`, optional fused logits `[B, K]` and subset values `[B, 2**M]`.

        `present` (bool `[B, M]`, default all True; `MultimodalBatch.present(name)` gives each
        column) says which modalities each row carried: modality j's statistics are written only
        for rows that carry j; the similarity, fused statistics and `values` only for rows that
        carry every modality, so a row whose other inputs were zeroed (a DUS row, an SMV extra
        item) never overwrites a sample's statistics with outputs of zeroed input. It also
        feeds `cumulative_discrepancy` (rows carrying j count for modality j).

        Checks the batch and copies it into the staging ring; the statistics are computed at the
        next flush (see the module docstring). CPU batches are checked at once (one reduction
        for NaN / inf); CUDA batches are copied without a host sync and checked at flush, where
        a failed check names the argument and the ids. When observe raises, its batch is not
        recorded (the error may be a deferred one of an earlier CUDA batch, flushed here).
        """
        if os.getpid() != self._owner:
            self._require_owner("observe")
        if epoch is None:
            epoch = self._epoch
        else:
            check_int("epoch", epoch, 0, where="Ledger.observe", high=_MAX_EPOCH)
        heads, ids, labels = check_batch(
            ids,
            labels,
            unimodal_logits,
            fused_logits,
            values,
            self.num_classes,
            self.names,
            self.device,
        )
        if present is not None:
            present = check_present(present, ids, self.num_modalities, heads[0].device)
        if ids.shape[0] != 0:
            self._stage(heads, ids, labels, values, epoch, present)

    def flush(self) -> None:
        """Compute and apply the statistics of every staged batch (waits for their copies only).

        Raises the first deferred validation error after applying every valid batch."""
        ring = self._ring
        if os.getpid() != self._owner or not ring.batches:
            return
        rows = ring.drain(self.num_samples, self.num_classes, self._heads)
        if rows.ids.shape[0] != 0:
            log_true, correct, sim, kl = head_statistics(
                rows.z, rows.labels, self.num_modalities, overwrite=True
            )
            true_prob = log_true.exp()
            record = torch.cat([true_prob, log_true.neg(), sim.unsqueeze(1), kl], 1)
            self._disc.add(true_prob[:, : self.num_modalities], rows.present, rows.stamp)
            self._t.write(rows, record.float(), correct, self._scratch)
        if rows.error is not None:
            raise rows.error

    # ---- distributed ---------------------------------------------------------------------

    def sync(self, group: Any = None) -> None:
        """Merge the tables of all ranks (a collective: every rank calls it), so every rank
        holds the same table: per id and column group, the entry with the latest stamp wins
        (ties: the lowest rank); `seen_count` sums the ranks' observations since the last sync.
        A no-op without torch.distributed or with one process."""
        self._require_owner("sync")
        self.flush()
        ranks = dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1
        if ranks:
            self._step = merge_tables(self._t, self._step, group)
        self._disc.sync(group, distributed=ranks)

    # ---- checkpoints ---------------------------------------------------------------------

    def compatibility(self) -> dict[str, Any]:
        """What a state must match: num_samples, num_modalities, num_classes, names."""
        return {
            "num_samples": self.num_samples,
            "num_modalities": self.num_modalities,
            "num_classes": self.num_classes,
            "names": list(self.names),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as a new dict of copies (checkpoint after `sync()` so
        every rank saves the same table)."""
        self._require_owner("state_dict")
        self.flush()
        return super().state_dict()

    def _save_fields(self) -> dict[str, Any]:
        table = checkpoint.table_state(self._t)
        return {**table, "epoch": self._epoch, "step": self._step, **self._disc.state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from `state_dict()` output in place (workers keep seeing the table); refuses a
        state of another shape of ledger (ValueError naming each differing setting) or with a
        malformed entry. The caller's dict is never modified."""
        self._require_owner("load_state_dict")
        super().load_state_dict(state)

    def _load_fields(self, state: Mapping[str, Any]) -> None:
        checkpoint.check_saved(state, self._t, self.num_modalities)
        self._ring.discard()  # superseded by the loaded table
        checkpoint.load_tables(state, self._t)
        self._epoch, self._step = int(state["epoch"]), int(state["step"])
        self._disc.load(state)

    # ---- pickling: a copy in another process (a loader worker) is a reader -------------------

    def __getstate__(self) -> dict[str, Any]:
        self.flush()
        state = dict(self.__dict__)
        del state["_ring"], state["_scratch"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._t.share_memory_()
        m = self.num_modalities
        self._ring = StagingRing(m + 1, self.num_classes, 1 << m, self.staging)
        self._scratch = torch.zeros(self.num_samples, dtype=torch.int64)

    # ---- internals -----------------------------------------------------------------------

    def _read(self) -> Ledger:
        if self._ring.batches and os.getpid() == self._owner:
            self.flush()
        return self

    def _require_owner(self, what: str) -> None:
        if os.getpid() != self._owner:
            raise RuntimeError(
                f"Ledger.{what} must run in the process that created the ledger (pid "
                f"{self._owner}); this is pid {os.getpid()}, e.g. a DataLoader worker. Workers "
                f"only read the shared table; observe in the training process."
            )

    def _stage(
        self,
        heads: list[Tensor],
        ids: Tensor,
        labels: Tensor,
        values: Tensor | None,
        epoch: int,
        present: Tensor | None,
    ) -> None:
        """Check a batch as far as its device allows without a host sync, copy it into the
        staging ring and keep it there (flushing the ring first when it is full)."""
        b, ring = ids.shape[0], self._ring
        id_rows = checked_ints("ids", ids, ids, self.num_samples) if ids.is_cpu else None
        label_rows = None
        if labels.is_cpu:
            label_rows = checked_ints("labels", labels, ids, self.num_classes)
        wide = any(h.dtype == torch.float64 for h in heads)
        dtype = torch.float64 if wide else torch.float32
        pinned = not heads[0].is_cpu
        if not ring.fits(b, dtype, pinned=pinned):
            self.flush()
            ring.fits(b, dtype, pinned=pinned)
        stamp = ((epoch + 1) << STEP_BITS) | (self._step + 1)
        ring.stage(heads, values, present, ids, labels, (id_rows, label_rows), stamp, self._heads)
        self._step += 1
