"""Balancer: a balancing method in a user's own training loop, in a few changed lines.

Place in the data flow: the user's DataLoader and late-fusion model -> **Balancer.setup**
(`wrap` around the DataLoader, a Ledger bound to the method, gates on the model's encoders, the
scoring pass over the dataset, OGM-GE as an optimizer step pre-hook) -> the loop:
`for batch in loader: loss = balancer.loss(batch, criterion)` -> forward with each encoder on
the rows carrying its modality -> the user's criterion on the fused logits -> the subset
logits (fusion and head re-run with modalities' features zeroed, no encoder re-run) ->
`ledger.observe` -> the method plans the next epoch; `optimizer.step()` applies OGM-GE.

Like Accelerate's `prepare` or Lightning Fabric's `setup`: the user's objects are wrapped, not
replaced, and the loop keeps its shape (see examples/own_loop_*.py and the README's "Balance
your own loop").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sized
from typing import Any, cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torch.utils.data._utils.collate import default_collate

from ..loader import BalancedLoader, wrap
from ..loader.wrap import bind_ledger, check_wrapped
from ..methods import OGMGE, Method
from ..position_scoring import PositionScorer
from ..scoring import VALUES
from ..user_batch import BatchInfo
from .fields import LABEL, check_fields, infer_fields, named_encoders
from .gates import EncoderGates, eval_mode

Criterion = Callable[[Tensor, Tensor], Tensor]


def split_methods(method: Any) -> tuple[Method | None, OGMGE | None]:
    """(data-side method, OGM-GE) of `method`: one of DUS / BSS / SMV / OGMGE, a list of one
    data-side method and one OGMGE, or None. ValueError naming `method` otherwise."""
    given = list(method) if isinstance(method, list | tuple) else [method]
    data = [m for m in given if isinstance(m, Method)]
    ogm = [m for m in given if isinstance(m, OGMGE)]
    if len(data) + len(ogm) != len([m for m in given if m is not None]) or len(data) > 1:
        raise ValueError(
            "The 'method' parameter of Balancer must be a DUS, BSS, SMV or OGMGE of "
            "mmsample.methods (or [data-side method, OGMGE]), or None; got "
            f"{[type(m).__name__ for m in given]}."
        )
    if len(ogm) > 1:
        raise ValueError("The 'method' parameter of Balancer takes one OGMGE.")
    return (data[0] if data else None), (ogm[0] if ogm else None)


class Balancer:
    """One object that balances your loop: `setup` wraps your DataLoader and model, `loss` turns
    a batch into your loss while recording what the method needs.

    Args:
        method: `DUS`, `BSS`, `SMV` (built without a Ledger: setup binds one sized for your
            dataset) or `OGMGE` (built without encoders: setup binds your model's), a list of
            one data-side method and one OGMGE, or None (plain: batches as the DataLoader's).
        epochs: the epochs the run lasts, if known: settings left None take it (DUS's
            schedule) and a method that cannot act within it warns here (ShortRunWarning).
        num_classes: K; default: read off the model's output on one dataset item at setup.
        seed: the loader's seed (orders, DUS row positions). log: a JSONL path for the
            method's per-epoch stats.

    Raises ValueError naming the parameter for anything else.
    """

    def __init__(
        self,
        method: Any = None,
        *,
        epochs: int | None = None,
        num_classes: int | None = None,
        seed: int = 0,
        log: str | os.PathLike[str] | None = None,
    ) -> None:
        self.method, self.ogm = split_methods(method)
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)):
            raise ValueError(f"The 'epochs' parameter of Balancer must be an int; got {epochs!r}.")
        if self.method is not None and epochs is not None:
            self.method.set_run(epochs=epochs)
        self.epochs, self.num_classes, self.seed, self.log = epochs, num_classes, seed, log
        self.loader: BalancedLoader | None = None
        self.model: nn.Module | None = None
        self.gates: EncoderGates | None = None
        self.fields: dict[str, int | str] = {}
        self.names: tuple[str, ...] = ()
        self._scores: Tensor | None = None  # OGM-GE: the last step's discrepancy scores

    @property
    def ledger(self) -> Any:
        """The Ledger the data-side method reads (None without one or before setup)."""
        return self.method.ledger if self.method is not None and self.method.bound else None

    # ---- setup -----------------------------------------------------------------------------
    def setup(
        self,
        dataloader: DataLoader[Any],
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        fields: Mapping[str, int | str] | None = None,
        encoders: Mapping[str, nn.Module] | None = None,
    ) -> BalancedLoader:
        """Wrap `dataloader` (map-style dataset of `(modality..., label)` tuples or dicts) and
        gate `model`'s encoders; returns the loader to iterate (its batches keep the dataset's
        structure, with `ids` and `mask`). `fields` default: read off `model.forward`'s
        parameters and one item (`mmsample.balancer.fields.infer_fields`); `encoders` default:
        the submodules named like the modalities. `optimizer` is required with OGM-GE (it runs
        as the optimizer's step pre-hook). Reads one item and runs the model once on it (eval
        mode, no gradients) to learn the classes and the encoders' output shapes."""
        if not isinstance(model, nn.Module):
            raise ValueError(
                f"The 'model' parameter of Balancer.setup must be an nn.Module; got "
                f"{type(model).__name__}."
            )
        check_wrapped(dataloader, None)
        dataset = dataloader.dataset
        item = dataset[0]
        self.fields = dict(fields) if fields is not None else infer_fields(model, item)
        check_fields(self.fields, item)
        self.names = tuple(k for k in self.fields if k != LABEL)
        encoders = dict(encoders) if encoders is not None else named_encoders(model, self.names)
        if tuple(encoders) != self.names:
            raise ValueError(
                f"The 'encoders' parameter of Balancer.setup must name the modalities "
                f"{list(self.names)} in order; got {list(encoders)}."
            )
        self.model, self.gates = model, EncoderGates(encoders)
        collate = dataloader.collate_fn or default_collate
        classes = self.num_classes or self._probe(collate([item, item]))
        if self.ogm is not None:
            if optimizer is None:
                raise ValueError(
                    "Balancer.setup: OGM-GE scales the encoders' gradients between backward and "
                    "step; pass your optimizer: setup(loader, model, optimizer)."
                )
            if not self.ogm.bound:
                self.ogm.bind(encoders)
            optimizer.register_step_pre_hook(self._modulate)
        scorer = None
        if self.method is not None:
            assert dataloader.batch_size is not None  # wrap refuses None below
            size = len(cast(Sized, dataset))  # check_wrapped: a map-style dataset
            bind_ledger(self.method, size, self.names, classes, dataloader.batch_size)
            scorer = PositionScorer(
                self.subset_logits,
                dataset,
                self.method.ledger,
                fields=self.fields,
                collate_fn=collate,
                batch_size=dataloader.batch_size,
                device=self._device(),
                model=model,
            )
        self.loader = wrap(
            dataloader,
            self.method,
            fields=self.fields,
            seed=self.seed,
            log=self.log,
            scorer=scorer,
            num_classes=classes,
        )
        return self.loader

    def _probe(self, batch: Any) -> int:
        """K, from the model's output on a batch of one item twice (eval mode, no gradients);
        also records each encoder's output shape. ValueError when the output is not logits."""
        inputs, _ = self._parts(batch)
        present = torch.ones(2, len(self.names), dtype=torch.bool, device=self._device())
        assert self.model is not None and self.gates is not None
        try:
            with eval_mode(self.model), torch.no_grad(), self.gates.carry(present):
                out = self.model(*inputs)
        except (RuntimeError, ValueError, TypeError) as err:
            order = ", ".join(f"{n}=item[{self.fields[n]!r}]" for n in self.names)
            raise ValueError(
                f"Balancer.setup: {type(self.model).__name__}(...) failed on one dataset item "
                f"given as forward({order}): {err}. If your forward's parameters are not in "
                "the order of your dataset's fields, say which is which: "
                "setup(..., fields={'audio': 0, 'video': 1, 'label': 2})."
            ) from err
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[1] < 2:
            got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"Balancer.setup: {type(self.model).__name__}(...) must return logits [B, K] "
                f"(K >= 2 classes); got {got}."
            )
        return int(out.shape[1])

    # ---- the step ----------------------------------------------------------------------------
    def loss(self, batch: Any, criterion: Criterion = F.cross_entropy) -> Tensor:
        """`criterion(model(*modalities), labels)` for a batch the loader yielded, each encoder
        run on the rows carrying its modality; records the step in the ledger (and OGM-GE's
        scores for the next `optimizer.step()`). Moves the batch to the model's device.
        RuntimeError before `setup`; ValueError for a batch without ids and mask."""
        if self.model is None or self.gates is None:
            raise RuntimeError("Balancer.loss: call setup(dataloader, model, ...) first.")
        if not isinstance(batch, BatchInfo):
            raise ValueError(
                f"Balancer.loss takes the batch the loader yielded (it carries the rows' ids and "
                f"modality masks); got a {type(batch).__name__}. Iterate the loader setup "
                "returned: `for batch in loader: loss = balancer.loss(batch, criterion)`."
            )
        device = self._device()
        if batch.ids.device != device:
            batch = batch.to(device, non_blocking=True)
        inputs, labels = self._parts(batch)
        present = self._present(batch)
        with self.gates.carry(present):
            out = self.model(*inputs)
        loss = criterion(out, labels)
        if self.method is not None or self.ogm is not None:
            self._record(batch.ids, inputs, out.detach(), labels, present)
        return loss

    def subset_logits(self, batch: Any) -> Tensor:
        """`[B, 2**M, K]`: the model's logits on every subset C of the modalities (row C: the
        features of the modalities not in C zeroed; row 2**M - 1: the fused logits), eval mode,
        no gradients: the scoring pass's forward."""
        assert self.model is not None and self.gates is not None
        inputs, _ = self._parts(batch)
        with torch.no_grad(), eval_mode(self.model):
            with self.gates.carry(self._present(batch)):
                fused = self.model(*inputs)
            return self._replay(inputs, fused)

    def _record(
        self, ids: Tensor, inputs: list[Any], fused: Tensor, labels: Tensor, present: Tensor
    ) -> None:
        assert self.model is not None
        with torch.no_grad(), eval_mode(self.model):
            subsets = self._replay(inputs, fused).float()
        m = len(self.names)
        unimodal = [subsets[:, 1 << j] for j in range(m)]
        if self.method is not None:
            self.method.ledger.observe(
                ids,
                labels,
                unimodal,
                subsets[:, (1 << m) - 1],
                values=VALUES["smv"](subsets, labels, ids),
                present=present,
            )
        if self.ogm is not None:
            true = [torch.softmax(u, -1).gather(1, labels[:, None])[:, 0] for u in unimodal]
            scores = torch.stack([(p * present[:, j]).sum() for j, p in enumerate(true)])
            scores = scores.double()
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(scores)
            self._scores = scores

    def _replay(self, inputs: list[Any], fused: Tensor) -> Tensor:
        assert self.model is not None and self.gates is not None
        full = (1 << len(self.names)) - 1
        rows = []
        for subset in range(full + 1):
            if subset == full:
                rows.append(fused)
                continue
            with self.gates.replay(subset):
                rows.append(self.model(*inputs))
        return torch.stack(rows, 1)

    def _modulate(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """The optimizer's step pre-hook: OGM-GE on the encoders' gradients of this step."""
        if self.ogm is None or self._scores is None:
            return
        epoch = 0 if self.loader is None else max(0, self.loader.epoch)
        self.ogm(self._scores, epoch)
        self._scores = None

    # ---- the batch -------------------------------------------------------------------------
    def _parts(self, batch: Any) -> tuple[list[Any], Tensor]:
        inputs = [batch[self.fields[n]] for n in self.names]
        labels = batch[self.fields[LABEL]]
        return inputs, torch.as_tensor(labels, device=self._device()).long()

    def _present(self, batch: Any) -> Tensor:
        b = len(batch[self.fields[LABEL]])
        if not isinstance(batch, BatchInfo):  # the probe: every row carries everything
            return torch.ones(b, len(self.names), dtype=torch.bool, device=self._device())
        return torch.stack([batch.present(n) for n in self.names], 1).to(self._device())

    def _device(self) -> torch.device:
        assert self.model is not None
        first = next(self.model.parameters(), None)
        return torch.device("cpu") if first is None else first.device

    def __repr__(self) -> str:
        parts = [type(m).__name__ for m in (self.method, self.ogm) if m is not None]
        return f"Balancer({' + '.join(parts) or 'plain'}, modalities={list(self.names)})"
