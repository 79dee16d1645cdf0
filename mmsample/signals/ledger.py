"""The per-sample Ledger: what the training pass saw of each sample, keyed by global sample id.

Place in the data flow: after the forward pass the training step calls
`ledger.observe(ids, labels, unimodal_logits, fused_logits)`; balancing methods read
`ledger.snapshot()` at the next epoch (DUS: the next step) to make their plan; DataLoader workers
read the same table through shared memory; `sync()` merges the tables of all ranks.

Storage (all CPU, in shared memory, written in place so workers started earlier see updates):
float32 statistics (NaN = never observed), bool correctness, int64 labels / epochs / stamps.
Every observation carries a stamp `(epoch + 1) << 40 | step` (step = observe calls so far), kept
separately for three groups of columns: the unimodal statistics, the fused statistics and the
subset values. An observe without `fused_logits` (or `values`) leaves that group as it was.
Duplicate ids within one batch: the last occurrence wins (deterministically); `seen_count`
counts every occurrence. CUDA batches are staged (asynchronous copies to pinned memory) and
checked and applied on the CPU at the next read, `flush()`, `sync()`, or when `staging` wait.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Ledger", "batch_statistics", "mean_pairwise_cosine", "per_sample_statistics"]

_FORMAT = "mmsample.signals.Ledger"
_VERSION = 1
_STEP_BITS = 40  # stamp = (epoch + 1) << 40 | step: epochs below 2**23 - 1, steps below 2**40
_MAX_EPOCH = (1 << (63 - _STEP_BITS)) - 2
_LOG_TINY = -69.0  # below log(1e-30) a float32 probability has lost precision
_SHOWN = 8  # ids named in an error message
# attributes `_make_views` rebuilds after unpickling (not pickled)
_DERIVED = "_scratch _arange _ones _writes _f_values _b_cols _i_label _i_epoch _i_values _i_stamps"
_SMALL = 512  # batches up to this size are range-checked and de-duplicated in Python (faster)
# the per-sample tables `snapshot()` copies (plus the masks seen, fused_seen, values_seen)
_SNAPSHOT_KEYS = (
    "labels true_prob unimodal_loss correct similarity fused_true_prob fused_loss fused_correct "
    "values last_seen seen_count"
)


def batch_statistics(z: Tensor, labels: Tensor, m: int) -> tuple[Tensor, Tensor, Tensor]:
    """For stacked logits `z` `[B, R, K]` (the first `m` heads unimodal) and labels `[B]`: log
    softmax at the label `[B, R]`, argmax == label `[B, R]` (the first maximal index, as
    `torch.argmax`), and the mean pairwise cosine of the first m softmaxes `[B]`."""
    at = labels.view(-1, 1, 1).expand(-1, z.shape[1], 1)
    if z.device.type != "cpu":  # fewest kernels, no host sync
        log_p = z.log_softmax(-1)
        sim = mean_pairwise_cosine(log_p[:, :m].exp())
        return log_p.gather(-1, at).squeeze(-1), z.argmax(-1) == labels.view(-1, 1), sim
    p = torch.softmax(z, -1)  # fewest passes: one fused softmax serves everything
    sim = mean_pairwise_cosine(p[:, :m])
    p_at = p.gather(-1, at)
    # argmax == label iff the label's probability beats every other class's (softmax is monotone);
    # a tie, exact or by rounding, is decided by an exact argmax
    others = p.scatter_(-1, at, 0.0).amax(-1, keepdim=True)
    correct = (p_at > others).squeeze(-1)
    if bool(torch.eq(p_at, others).any()):
        correct = z.argmax(-1) == labels.view(-1, 1)
    log_true = p_at.log_().squeeze(-1)
    tiny = log_true < _LOG_TINY
    if bool(tiny.any()):  # p underflowed (or nearly): take those from the log-softmax
        log_true = torch.where(tiny, z.log_softmax(-1).gather(-1, at).squeeze(-1), log_true)
    return log_true, correct, sim


def mean_pairwise_cosine(x: Tensor) -> Tensor:
    """Mean cosine similarity over the M*(M-1)/2 pairs of vectors in `x` `[..., M, K]` -> `[...]`.

    The BSS measurer on modality softmaxes (M = 2: the plain cosine). Scale-invariant per vector.
    """
    m = x.shape[-2]
    gram = torch.bmm(x, x.mT) if x.dim() == 3 else x @ x.mT
    diag = gram.diagonal(dim1=-2, dim2=-1)
    if m == 2:
        return gram[..., 0, 1] * diag.prod(-1).rsqrt()
    inv = diag.rsqrt()
    cos = gram * inv.unsqueeze(-1) * inv.unsqueeze(-2)
    off = cos.sum((-2, -1)) - cos.diagonal(dim1=-2, dim2=-1).sum(-1)
    return off / (m * (m - 1))


def per_sample_statistics(
    unimodal_logits: Sequence[Tensor], labels: Tensor, fused_logits: Tensor | None = None
) -> dict[str, Tensor]:
    """The numbers the Ledger stores for one batch (int64 labels), as a dict of `[B]` / `[B, M]`
    tensors: true-class probability, cross-entropy and argmax correctness per head, similarity."""
    m = len(unimodal_logits)
    heads = [*unimodal_logits] if fused_logits is None else [*unimodal_logits, fused_logits]
    with torch.no_grad():
        log_true, correct, sim = batch_statistics(torch.stack(heads, 1), labels, m)
        out = {
            "true_prob": log_true[:, :m].exp(),
            "unimodal_loss": -log_true[:, :m],
            "correct": correct[:, :m],
            "similarity": sim,
        }
        if fused_logits is not None:
            out.update(
                fused_true_prob=log_true[:, m].exp(),
                fused_loss=-log_true[:, m],
                fused_correct=correct[:, m],
            )
    return out


class _Column:
    """A read accessor: a live view of columns of a shared table (floats never observed are
    NaN, bools False); reading in the owning process first applies staged CUDA batches."""

    def __init__(self, table: str, cols: Callable[[int], slice | int] | None, doc: str) -> None:
        self.table, self.cols, self.__doc__ = table, cols, doc

    def __get__(self, ledger: Ledger | None, owner: type | None = None) -> Tensor:
        if ledger is None:
            return self  # type: ignore[return-value]
        t: Tensor = getattr(ledger._read(), self.table)
        return t if self.cols is None else t[:, self.cols(ledger.num_modalities)]


@dataclass
class _Pending:
    """One CUDA batch on its way to pinned host memory; applied once `event` has completed."""

    event: torch.cuda.Event
    z: Tensor  # pinned [B, R, K] stacked logits
    values: Tensor | None  # pinned [B, 2**M]
    ints: Tensor | None  # pinned [B, 1 or 2]: the ids and/or labels that were on the device
    ids: Tensor | None  # given on the CPU (checked, copied), else the first column of `ints`
    labels: Tensor | None  # given on the CPU (checked, copied), else the last column of `ints`
    epoch: int | Tensor  # Tensor [B] once batches are merged
    step: int | Tensor


def _kind(p: _Pending) -> tuple[object, ...]:
    return p.z.dtype, p.z.shape[1], p.values is None


def _merge(group: list[_Pending]) -> _Pending:
    """Several staged batches of one kind as one, with per-row epochs and steps."""
    sizes = torch.tensor([p.z.shape[0] for p in group])
    ids, labels = zip(*(_ids_labels(p) for p in group))
    values = [p.values for p in group if p.values is not None]
    return _Pending(
        event=group[-1].event,
        z=torch.cat([p.z for p in group]),
        values=torch.cat(values) if values else None,
        ints=None,
        ids=torch.cat(ids),
        labels=torch.cat(labels),
        epoch=torch.tensor([p.epoch for p in group]).repeat_interleave(sizes),
        step=torch.tensor([p.step for p in group]).repeat_interleave(sizes),
    )


def _ids_labels(p: _Pending) -> tuple[Tensor, Tensor]:
    ids = p.ids if p.ids is not None else p.ints[:, 0]  # type: ignore[index]
    labels = p.labels if p.labels is not None else p.ints[:, -1]  # type: ignore[index]
    return ids, labels


class Ledger:
    """Per-sample statistics table keyed by global sample id, shared with loader workers.

    `names` labels the modalities (default "m0", "m1", ...). `device`, if given, is where
    `observe` expects the logits (None: wherever they are). `staging` bounds how many CUDA batches
    wait in pinned memory before they are applied.
    """

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
        _check_int("num_samples", num_samples, 1)
        _check_int("num_modalities", num_modalities, 2)
        _check_int("num_classes", num_classes, 2)
        _check_int("staging", staging, 1)
        if names is None:
            names = [f"m{j}" for j in range(num_modalities)]
        if (
            not isinstance(names, Sequence)
            or isinstance(names, str)
            or len(names) != num_modalities
        ):
            raise ValueError(
                f"The 'names' parameter of Ledger must be a sequence of {num_modalities} "
                f"modality names; got {names!r}."
            )
        if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(
                f"The 'names' parameter of Ledger must hold distinct non-empty strings; "
                f"got {list(names)!r}."
            )
        self.num_samples, self.num_modalities = num_samples, num_modalities
        self.num_classes = num_classes
        self.names: tuple[str, ...] = tuple(names)
        self.device = None if device is None else torch.device(device)
        self.staging = staging
        m, n, r = num_modalities, num_samples, num_modalities + 1
        # float columns: true_prob M | fused_true_prob | unimodal_loss M | fused_loss |
        # similarity | values 2**M. The record of a batch with fused logits is the first 2R+1.
        self._f = torch.full((n, 2 * r + 1 + (1 << m)), math.nan).share_memory_()
        self._b = torch.zeros((n, r), dtype=torch.bool).share_memory_()  # correct M | fused
        # label | last_seen | stamp of the unimodal, fused and values column groups
        self._i = torch.zeros((n, 5), dtype=torch.int64)
        self._i[:, :2] = -1
        self._i.share_memory_()
        self._count = torch.zeros(n, dtype=torch.int64).share_memory_()
        self._count_base = torch.zeros(n, dtype=torch.int64).share_memory_()
        self._fgroup = torch.tensor([0] * m + [1] + [0] * m + [1, 0] + [2] * (1 << m))
        self._epoch = 0
        self._step = 0
        self._pending: list[_Pending] = []
        self._owner = os.getpid()
        self._make_views()

    def _make_views(self) -> None:
        """Cached views the hot path writes through (rebuilt after unpickling)."""
        m, r, f = self.num_modalities, self.num_modalities + 1, self._f
        self._scratch = torch.zeros(self.num_samples, dtype=torch.int64)
        self._arange = torch.arange(256)
        self._ones = torch.ones(256, dtype=torch.int64)
        # (table view, record columns) written per batch, without / with fused logits
        self._writes = (
            [
                (f[:, :m], 0, m),
                (f[:, r : r + m], m, 2 * m),
                (f[:, 2 * r : 2 * r + 1], 2 * m, 2 * m + 1),
            ],
            [(f[:, : 2 * r + 1], 0, 2 * r + 1)],
        )
        self._f_values = f[:, 2 * r + 1 :]
        self._b_cols = (self._b[:, :m], self._b)
        self._i_label, self._i_epoch, self._i_values = self._i[:, 0], self._i[:, 1], self._i[:, 4]
        self._i_stamps = (self._i[:, 2:3], self._i[:, 2:4])

    # ---- reading -------------------------------------------------------------------------
    # Accessors return live views of the shared table (clone to keep a copy; never write them).

    true_prob = _Column("_f", lambda m: slice(0, m), "`[N, M]` label probability per modality")
    fused_true_prob = _Column("_f", lambda m: m, "`[N]` label probability of the fused head")
    unimodal_loss = _Column("_f", lambda m: slice(m + 1, 2 * m + 1), "`[N, M]` CE per modality")
    fused_loss = _Column("_f", lambda m: 2 * m + 1, "`[N]` cross-entropy of the fused head")
    similarity = _Column("_f", lambda m: 2 * m + 2, "`[N]` mean pairwise cosine of softmaxes")
    values = _Column("_f", lambda m: slice(2 * m + 3, None), "`[N, 2**M]` subset values")
    correct = _Column("_b", lambda m: slice(0, m), "`[N, M]` bool: modality argmax == label")
    fused_correct = _Column("_b", lambda m: m, "`[N]` bool: fused argmax == label")
    labels = _Column("_i", lambda m: 0, "`[N]` int64 label (-1: never observed)")
    last_seen = _Column("_i", lambda m: 1, "`[N]` int64 epoch last observed (-1: never)")
    seen_count = _Column("_count", None, "`[N]` int64 observations (all ranks once synced)")

    @property
    def epoch(self) -> int:
        """Epoch stamped on observations that do not name one (see `set_epoch`)."""
        return self._epoch

    @property
    def step(self) -> int:
        """Number of `observe` calls that recorded something (after `sync`: the max over ranks)."""
        return self._step

    def staleness(self, epoch: int) -> Tensor:
        """`[N]` int64 epochs since each sample was last observed: `epoch - last_seen`
        (never observed: `epoch + 1`)."""
        _check_int("epoch", epoch, 0, where="Ledger.staleness")
        return epoch - self.last_seen

    def snapshot(self) -> dict[str, Tensor]:
        """A consistent copy of the whole table as a plain dict of CPU tensors, plus masks
        `seen`, `fused_seen`, `values_seen`: what a method reads to make its plan."""
        self._read()
        out = {k: getattr(self, k).clone() for k in _SNAPSHOT_KEYS.split()}
        seen = self._i[:, 2:5] > 0
        out.update(seen=seen[:, 0].clone(), fused_seen=seen[:, 1].clone())
        out["values_seen"] = seen[:, 2].clone()
        return out

    # ---- writing -------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch stamped on later observations (staleness is counted in epochs)."""
        _check_int("epoch", epoch, 0, where="Ledger.set_epoch", high=_MAX_EPOCH)
        self._epoch = epoch

    def observe(
        self,
        ids: Tensor,
        labels: Tensor,
        unimodal_logits: Sequence[Tensor],
        fused_logits: Tensor | None = None,
        values: Tensor | None = None,
        epoch: int | None = None,
    ) -> None:
        """Record one batch of the training forward pass: ids `[B]`, labels `[B]`, M unimodal
        logits `[B, K]`, optional fused logits `[B, K]` and subset values `[B, 2**M]`.

        CPU inputs are checked and applied at once. CUDA inputs are copied to pinned memory
        without a host sync (a few asynchronous copies per call); they are checked, reduced and
        applied on the CPU at the next read, `flush()`, `sync()`, or when `staging` batches wait.
        """
        self._require_owner("observe")
        if epoch is None:
            epoch = self._epoch
        else:
            _check_int("epoch", epoch, 0, where="Ledger.observe", high=_MAX_EPOCH)
        heads, ids, labels, values = self._check_shapes(
            ids, labels, unimodal_logits, fused_logits, values
        )
        if ids.shape[0] == 0:
            return
        with torch.no_grad():
            z = torch.stack(heads, 1)
            if z.device.type == "cpu":
                if self._pending:
                    self.flush()
                self._observe_cpu(ids, labels, z, values, epoch, self._step + 1)
                self._step += 1
            else:
                self._stage(ids, labels, z, values, epoch)

    def flush(self) -> None:
        """Apply the CUDA batches still waiting in pinned memory (waits for their copies only).

        Raises the first deferred validation error after applying every valid batch."""
        if os.getpid() != self._owner or not self._pending:
            return
        pending, self._pending = self._pending, []
        for p in pending:
            p.event.synchronize()
        groups: list[list[_Pending]] = []  # runs of batches of one kind are reduced together
        for p in pending:
            if groups and _kind(groups[-1][-1]) == _kind(p):
                groups[-1].append(p)
            else:
                groups.append([p])
        first: Exception | None = None
        for group in groups:
            if len(group) > 1:
                try:
                    self._apply_pending(_merge(group))
                    continue
                except ValueError:
                    pass  # the group failed its checks and wrote nothing: batch by batch
            for p in group:
                try:
                    self._apply_pending(p)
                except ValueError as err:
                    first = first or err
        if first is not None:
            raise first

    # ---- distributed ---------------------------------------------------------------------

    def sync(self, group: Any = None) -> None:
        """Merge the tables of all ranks (a collective: every rank calls it), so every rank
        holds the same table: per id and column group, the entry with the latest stamp wins
        (ties: the lowest rank); `seen_count` sums the ranks' observations since the last sync.
        A no-op without torch.distributed or with one process."""
        self._require_owner("sync")
        self.flush()
        if not (dist.is_available() and dist.is_initialized()):
            return
        world = dist.get_world_size(group)
        if world == 1:
            return
        rank = dist.get_rank(group)
        dev = self._collective_device(group)
        stamps = self._i[:, 2:5].to(dev, copy=True)
        newest = stamps.clone()
        dist.all_reduce(newest, op=dist.ReduceOp.MAX, group=group)
        owner = torch.where(stamps == newest, rank, world)
        dist.all_reduce(owner, op=dist.ReduceOp.MIN, group=group)
        mine = (owner == rank).cpu()  # [N, 3]: this rank holds the winning entry of the group
        m = self.num_modalities
        floats = torch.where(mine[:, self._fgroup], self._f, 0.0).to(dev)
        igroup = torch.tensor([0, 0] + [0] * m + [1])
        ints = torch.where(mine[:, igroup], torch.cat([self._i[:, :2], self._b.long()], 1), 0)
        delta = (self._count - self._count_base).unsqueeze(1)
        ints = torch.cat([ints, delta], 1).to(dev)
        step = torch.tensor([self._step], dtype=torch.int64, device=dev)
        dist.all_reduce(floats, group=group)
        dist.all_reduce(ints, group=group)
        dist.all_reduce(step, op=dist.ReduceOp.MAX, group=group)
        ints = ints.cpu()
        self._f.copy_(floats)
        self._i[:, :2].copy_(ints[:, :2])
        self._i[:, 2:5].copy_(newest)
        self._b.copy_(ints[:, 2 : 3 + m] != 0)
        self._count.copy_(self._count_base + ints[:, 3 + m])
        self._count_base.copy_(self._count)
        self._step = int(step.item())

    # ---- checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as a new dict of copies (checkpoint after `sync()` so
        every rank saves the same table)."""
        self._require_owner("state_dict")
        self.flush()
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "num_samples": self.num_samples,
            "num_modalities": self.num_modalities,
            "num_classes": self.num_classes,
            "names": list(self.names),
            "epoch": self._epoch,
            "step": self._step,
            "float": self._f.clone(),
            "bool": self._b.clone(),
            "int": self._i.clone(),
            "count": self._count.clone(),
            "count_base": self._count_base.clone(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from `state_dict()` output in place (workers keep seeing the table); refuses a
        state of another shape of ledger. The caller's dict is never modified."""
        self._require_owner("load_state_dict")
        if not isinstance(state, Mapping) or state.get("format") != _FORMAT:
            raise ValueError(
                f"Ledger.load_state_dict expects a dict from Ledger.state_dict() "
                f"(format {_FORMAT!r}); got {type(state).__name__} with format "
                f"{state.get('format') if isinstance(state, Mapping) else None!r}."
            )
        if state.get("version") != _VERSION:
            raise ValueError(
                f"Ledger state version {state.get('version')!r} is not supported; this Ledger "
                f"reads version {_VERSION}."
            )
        mine = {
            "num_samples": self.num_samples,
            "num_modalities": self.num_modalities,
            "num_classes": self.num_classes,
            "names": list(self.names),
        }
        for key, value in mine.items():
            theirs = list(state.get(key, ())) if key == "names" else state.get(key)
            if theirs != value:
                raise ValueError(
                    f"Ledger state is incompatible: it was saved with {key}={theirs!r}, this "
                    f"Ledger has {key}={value!r}. Build the Ledger with the same settings."
                )
        targets = {
            "float": self._f,
            "bool": self._b,
            "int": self._i,
            "count": self._count,
            "count_base": self._count_base,
        }
        for key, target in targets.items():
            t = state.get(key)
            if not isinstance(t, Tensor) or t.shape != target.shape or t.dtype != target.dtype:
                got = (t.dtype, tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(
                    f"Ledger state entry {key!r} must be a {target.dtype} tensor of shape "
                    f"{tuple(target.shape)}; got {got}."
                )
        for key in ("epoch", "step"):
            _check_int(key, state.get(key), 0, where="Ledger.load_state_dict (state entry)")
        for p in self._pending:  # superseded; let their copies finish before dropping them
            p.event.synchronize()
        self._pending = []
        for key, target in targets.items():
            target.copy_(state[key])
        self._epoch, self._step = int(state["epoch"]), int(state["step"])

    # ---- pickling: a copy in another process (a loader worker) is a reader -------------------

    def __getstate__(self) -> dict[str, Any]:
        self.flush()
        state = dict(self.__dict__)
        state["_pending"] = []
        for key in _DERIVED.split():
            del state[key]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for t in (self._f, self._b, self._i, self._count, self._count_base):
            t.share_memory_()
        self._make_views()

    # ---- internals -----------------------------------------------------------------------

    def _read(self) -> Ledger:
        if self._pending and os.getpid() == self._owner:
            self.flush()
        return self

    def _require_owner(self, what: str) -> None:
        if os.getpid() != self._owner:
            raise RuntimeError(
                f"Ledger.{what} must run in the process that created the ledger (pid "
                f"{self._owner}); this is pid {os.getpid()}, e.g. a DataLoader worker. Workers "
                f"only read the shared table; observe in the training process."
            )

    def _collective_device(self, group: Any) -> torch.device:
        if dist.get_backend(group) == dist.Backend.NCCL:
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _check_shapes(
        self,
        ids: Tensor,
        labels: Tensor,
        unimodal_logits: Sequence[Tensor],
        fused_logits: Tensor | None,
        values: Tensor | None,
    ) -> tuple[list[Tensor], Tensor, Tensor, Tensor | None]:
        """Metadata checks only (shapes, dtypes, devices): no reads of device memory."""
        if not isinstance(ids, Tensor) or ids.ndim != 1 or not _is_int(ids):
            raise _arg_error("ids", "an integer tensor of shape [B]", ids)
        b, k, m = ids.shape[0], self.num_classes, self.num_modalities
        if not isinstance(labels, Tensor) or labels.shape != (b,) or not _is_int(labels):
            raise _arg_error("labels", f"an integer tensor of shape [{b}] (like 'ids')", labels)
        if isinstance(unimodal_logits, Tensor) or len(unimodal_logits) != m:
            got = "a tensor" if isinstance(unimodal_logits, Tensor) else len(unimodal_logits)
            raise ValueError(
                f"The 'unimodal_logits' argument of Ledger.observe must be a sequence of "
                f"{m} tensors (one per modality: {', '.join(self.names)}); got {got}."
            )
        heads = [*unimodal_logits]
        named = [f"unimodal_logits[{j}]" for j in range(m)]
        if fused_logits is not None:
            heads.append(fused_logits)
            named.append("fused_logits")
        for name, h in zip(named, heads):
            if not isinstance(h, Tensor) or h.shape != (b, k) or not h.is_floating_point():
                raise _arg_error(name, f"a floating tensor of shape [{b}, {k}]", h)
        dev = heads[0].device
        want = self.device
        if want is not None and (dev.type != want.type or want.index not in (None, dev.index)):
            raise ValueError(
                f"The 'unimodal_logits' argument of Ledger.observe must be on {self.device} "
                f"(the Ledger's 'device'); got {dev}."
            )
        for name, h in zip(named, heads):
            if h.device != dev:
                raise ValueError(
                    f"The '{name}' argument of Ledger.observe must be on {dev} like "
                    f"'unimodal_logits[0]'; got {h.device}."
                )
        if values is not None:
            shape = f"[{b}, {1 << m}]"
            if not isinstance(values, Tensor) or values.shape != (b, 1 << m):
                raise _arg_error("values", f"a floating tensor of shape {shape}", values)
            if not values.is_floating_point() or values.device != dev:
                raise _arg_error("values", f"a floating tensor on {dev}", values)
        for name, t in (("ids", ids), ("labels", labels)):
            if t.device != dev and t.device.type != "cpu":
                raise ValueError(
                    f"The '{name}' argument of Ledger.observe must be on the CPU or on {dev} "
                    f"(with the logits); got {t.device}."
                )
        ids = ids if ids.dtype == torch.int64 else ids.long()
        return heads, ids, labels if labels.dtype == torch.int64 else labels.long(), values

    def _observe_cpu(
        self,
        ids: Tensor,
        labels: Tensor,
        z: Tensor,
        values: Tensor | None,
        epoch: int | Tensor,
        step: int | Tensor,
    ) -> None:
        """Check (ids and labels in range, logits and values finite) and write a CPU batch;
        `epoch` and `step` are per batch, or per row `[B]` for merged batches."""
        duplicates = self._check_ids_labels(ids, labels)
        if z.dtype not in (torch.float32, torch.float64):
            z = z.float()
        lo, hi = torch.aminmax(z)  # NaN and inf show in the extremes: one reduction
        if not (math.isfinite(lo.item()) and math.isfinite(hi.item())):
            raise self._finite_error(ids, torch.isfinite(z).all(-1), "")
        if values is not None:
            lo, hi = torch.aminmax(values)
            if not (math.isfinite(lo.item()) and math.isfinite(hi.item())):
                raise self._finite_error(ids, torch.isfinite(values).all(-1, keepdim=True), "v")
        floats, correct = self._record(z, labels, values)
        stamp = ((epoch + 1) << _STEP_BITS) | step
        has_fused = z.shape[1] > self.num_modalities
        self._apply(
            ids, labels, floats, correct, has_fused, values is not None, epoch, stamp, duplicates
        )

    def _check_ids_labels(self, ids: Tensor, labels: Tensor) -> bool | None:
        """Range checks; for a small batch also whether ids repeat (None: not looked at)."""
        if ids.shape[0] > _SMALL:
            self._check_range("ids", ids, ids, self.num_samples)
            self._check_range("labels", labels, ids, self.num_classes)
            return None
        id_list, label_list = ids.tolist(), labels.tolist()
        if min(id_list) < 0 or max(id_list) >= self.num_samples:
            raise self._range_error("ids", ids, ids, self.num_samples)
        if min(label_list) < 0 or max(label_list) >= self.num_classes:
            raise self._range_error("labels", labels, ids, self.num_classes)
        return len(set(id_list)) < len(id_list)

    def _record(self, z: Tensor, labels: Tensor, values: Tensor | None) -> tuple[Tensor, Tensor]:
        """Per-sample float32 record and argmax correctness `[B, R]` of a batch: with fused
        logits the record is [true_prob R | loss R | similarity | values?], else M for R."""
        log_true, correct, sim = batch_statistics(z, labels, self.num_modalities)
        parts = [log_true.exp(), log_true.neg(), sim.unsqueeze(1)]
        if values is not None:
            parts.append(values.to(log_true.dtype))
        floats = torch.cat(parts, 1)
        return floats if floats.dtype == torch.float32 else floats.float(), correct

    def _apply(
        self,
        ids: Tensor,
        labels: Tensor,
        floats: Tensor,
        correct: Tensor,
        has_fused: bool,
        has_values: bool,
        epoch: int | Tensor,
        stamp: int | Tensor,
        duplicates: bool | None = None,
    ) -> None:
        """Write one validated batch into the shared table (CPU tensors); `duplicates` says
        whether ids repeat (None: find out)."""
        b = ids.shape[0]
        if self._arange.shape[0] < b:
            self._arange, self._ones = torch.arange(b), torch.ones(b, dtype=torch.int64)
        pos = self._arange[:b]
        self._count.index_add_(0, ids, self._ones[:b])
        if duplicates is None:
            scattered = self._scratch.index_copy_(0, ids, pos).index_select(0, ids)
            duplicates = not torch.equal(scattered, pos)
        if duplicates:
            # duplicates: keep each id's last occurrence (scatter max is order-independent)
            self._scratch.index_fill_(0, ids, -1).scatter_reduce_(0, ids, pos, "amax")
            keep = self._scratch.index_select(0, ids) == pos
            ids, labels, floats, correct = ids[keep], labels[keep], floats[keep], correct[keep]
            if isinstance(stamp, Tensor):
                epoch, stamp = epoch[keep], stamp[keep]  # type: ignore[index]
        for view, start, stop in self._writes[has_fused]:
            view.index_copy_(0, ids, floats[:, start:stop])
        self._b_cols[has_fused].index_copy_(0, ids, correct)
        self._i_label.index_copy_(0, ids, labels)
        _put(self._i_epoch, ids, epoch)
        _put(self._i_stamps[has_fused], ids, stamp)
        if has_values:
            self._f_values.index_copy_(0, ids, floats[:, -self._f_values.shape[1] :])
            _put(self._i_values, ids, stamp)

    def _stage(
        self, ids: Tensor, labels: Tensor, z: Tensor, values: Tensor | None, epoch: int
    ) -> None:
        """CUDA batch: start asynchronous copies to pinned memory and record an event.

        ids and labels given on the CPU are checked at once; the rest at flush time."""
        if len(self._pending) >= self.staging:
            self.flush()
        on_device = [t for t in (ids, labels) if t.device.type != "cpu"]
        if ids.device.type == "cpu":
            self._check_range("ids", ids, ids, self.num_samples)
        if labels.device.type == "cpu":
            self._check_range("labels", labels, ids, self.num_classes)
        ints = torch.stack(on_device, 1) if on_device else None
        self._step += 1
        self._pending.append(
            _Pending(
                event=torch.cuda.Event(),
                z=_to_pinned(z),
                values=None if values is None else _to_pinned(values),
                ints=None if ints is None else _to_pinned(ints),
                ids=ids.clone() if ids.device.type == "cpu" else None,
                labels=labels.clone() if labels.device.type == "cpu" else None,
                epoch=epoch,
                step=self._step,
            )
        )
        self._pending[-1].event.record(torch.cuda.current_stream(z.device))

    def _apply_pending(self, p: _Pending) -> None:
        """Check, reduce and write a staged CUDA batch (its copies have completed)."""
        ids, labels = _ids_labels(p)
        self._observe_cpu(ids, labels, p.z, p.values, p.epoch, p.step)

    def _check_range(self, name: str, t: Tensor, ids: Tensor, high: int) -> None:
        lo, hi = torch.aminmax(t)
        if lo.item() < 0 or hi.item() >= high:
            raise self._range_error(name, t, ids, high)

    def _range_error(self, name: str, t: Tensor, ids: Tensor, high: int) -> ValueError:
        t, ids = t.cpu(), ids.cpu()
        bad = (t < 0) | (t >= high)
        what = "global sample ids" if name == "ids" else "class indices"
        shown = t[bad][:_SHOWN].tolist()
        where = "" if name == "ids" else f" at ids {ids[bad][:_SHOWN].tolist()}"
        return ValueError(
            f"The '{name}' argument of Ledger.observe must hold {what} in [0, {high}); got "
            f"{int(bad.sum())} out of range: {shown}{where}."
        )

    def _finite_error(self, ids: Tensor, finite: Tensor, kind: str) -> ValueError:
        """`finite` `[B, R]`: which head (column) of which row was finite."""
        if kind == "v":
            names = ["values"]
        else:
            names = [f"unimodal_logits[{j}]" for j in range(self.num_modalities)]
            names += ["fused_logits"]
        col = int((~finite).any(0).nonzero()[0])
        bad = ~finite[:, col].cpu()
        return ValueError(
            f"The '{names[col]}' argument of Ledger.observe holds NaN or inf for "
            f"{int(bad.sum())} sample(s), ids {ids[bad][:_SHOWN].tolist()}; check the model's "
            f"outputs (a diverged loss, an fp16 overflow) before observing."
        )


def _put(view: Tensor, ids: Tensor, value: int | Tensor) -> None:
    """`view[ids] = value`: one value, or one per id (`[B]`, repeated across the view's columns)."""
    if not isinstance(value, Tensor):
        view.index_fill_(0, ids, value)
    elif view.dim() == 1:
        view.index_copy_(0, ids, value)
    else:
        view.index_copy_(0, ids, value.view(-1, 1).expand(-1, view.shape[1]))


def _to_pinned(t: Tensor) -> Tensor:
    """Start an asynchronous device-to-host copy of `t` into pinned memory (no host sync)."""
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    return host.copy_(t, non_blocking=True)


def _is_int(t: Tensor) -> bool:
    return not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool


def _arg_error(name: str, expected: str, got: object) -> ValueError:
    if isinstance(got, Tensor):
        desc = f"{got.dtype} tensor of shape {list(got.shape)} on {got.device}"
    else:
        desc = type(got).__name__
    return ValueError(f"The '{name}' argument of Ledger.observe must be {expected}; got {desc}.")


def _check_int(
    name: str, value: object, low: int, *, where: str = "Ledger", high: int | None = None
) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):  # type: ignore[operator]
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        kind = "parameter" if where == "Ledger" else "argument"
        raise ValueError(f"The '{name}' {kind} of {where} must be an int {bound}; got {value!r}.")
