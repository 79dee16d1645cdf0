"""The training data: the balancing method of `--method` and the loader that applies it.

Place in the data flow: shards -> `balanced_loader` (streamed or indexed reader) or `wrap`
around an ordinary DataLoader (`--loader wrap`) -> MultimodalBatch, with the Ledger the method
reads and, for BSS, the scoring pass it ranks from.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from mmsample.batch import Collate
from mmsample.ledger import Ledger
from mmsample.loader import BalancedLoader, balanced_loader, wrap
from mmsample.methods import BSS, DUS, SMV
from mmsample.scoring import VALUES, Scorer
from mmsample.shards.format import Manifest
from mmsample.shards.indexed import IndexedDataset
from mmsample.shards.streamed import StreamedDataset

from ..models import LateFusion
from .device import autocast, distributed


def build_method(args: argparse.Namespace, ledger: Ledger) -> Any:
    """The data-side method of `--method` on `ledger` (None for plain and OGM-GE alone)."""
    name = args.method
    t_grow = args.bss_t_grow if args.bss_t_grow is not None else max(1, args.epochs - 1)
    if name in ("dus", "dus-rl", "ogmge+dus"):
        policy = "rl" if name == "dus-rl" else "heuristic"
        return DUS(ledger, args.batch_size, args.epochs, args.dus_beta, policy, args.seed)
    if name in ("bss", "bss-learned"):
        scheduler = "learned" if name == "bss-learned" else "heuristic"
        return BSS(
            ledger,
            scheduler,
            lambda0=args.bss_lambda0,
            t_grow=t_grow,
            interval=args.bss_interval,
            seed=args.seed,
        )
    if name in ("smv", "smv-modality"):
        level = "modality" if name == "smv-modality" else "sample"
        return SMV(ledger, level, args.smv_warmup, seed=args.seed, fraction=args.smv_fraction)
    return None


class TupleView(Dataset[tuple[Any, ...]]):
    """An ordinary map-style dataset (what a user already has): index k -> (one tensor per
    modality..., label) of the k-th sample of `reader`."""

    def __init__(self, reader: IndexedDataset, names: Sequence[str]) -> None:
        self.reader, self.names = reader, tuple(names)
        self.ids = np.unique(np.asarray(reader.table.ids, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int) -> tuple[Any, ...]:
        sample = self.reader.get(int(self.ids[k]))
        return (*(sample[n] for n in self.names), int(sample["label"]))


class PositionScorer:
    """The scoring pass for `wrap`, whose sample ids are dataset positions: `scorer(positions)`
    runs the model over those items of `view` and records them in `ledger` under their
    positions (as `mmsample.scoring.score` does for a reader's global ids)."""

    def __init__(
        self, model: LateFusion, view: TupleView, ledger: Ledger, device: torch.device
    ) -> None:
        self.model, self.view, self.ledger, self.device = model, view, ledger, device
        self.collate = Collate(view.names)

    @torch.no_grad()
    def __call__(self, positions: np.ndarray) -> None:
        full = (1 << len(self.view.names)) - 1
        if distributed():  # each rank scores a contiguous share, then the ledgers sync
            rank, world, n = dist.get_rank(), dist.get_world_size(), len(positions)
            positions = positions[rank * n // world : (rank + 1) * n // world]
        for start in range(0, len(positions), 64):
            chunk = [int(p) for p in positions[start : start + 64]]
            batch = self.collate([self.view.reader.get(int(self.view.ids[p])) for p in chunk])
            batch = batch.to(self.device, non_blocking=True)
            with autocast(self.device):
                logits, uni = self.model(batch)
            logits = logits.float()
            self.ledger.observe(
                torch.tensor(chunk),
                batch.labels,
                [u.float() for u in uni],
                logits[:, full],
                values=VALUES["smv"](logits, batch.labels, batch.ids),
            )
        self.ledger.flush()
        if distributed():
            self.ledger.sync()


def build_loader(
    args: argparse.Namespace,
    modalities: dict[str, Any],
    num_classes: int,
    device: torch.device,
    model: LateFusion,
) -> BalancedLoader:
    """`balanced_loader` over the train split's shards (streamed or indexed), or `wrap` around
    an ordinary DataLoader (`--loader wrap`). The Ledger is sized by the id space (wrap: the
    dataset's length); BSS gets its scoring pass through `scorer=`."""
    names = list(modalities)
    split = args.train_split or None
    log = args.out / "stats.jsonl"
    indexed = IndexedDataset(args.data, modalities, split=split, seed=args.seed)
    if args.loader == "wrap":
        view = TupleView(indexed, names)
        plain = DataLoader(
            view,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
        )
        ledger = Ledger(len(view), len(names), num_classes, names=names)
        fields: dict[str, int | str] = {n: j for j, n in enumerate(names)}
        fields["label"] = len(names)
        method = build_method(args, ledger)
        by_position = (
            PositionScorer(model, view, ledger, device) if isinstance(method, BSS) else None
        )
        return wrap(plain, method, fields=fields, seed=args.seed, log=log, scorer=by_position)
    ledger = Ledger(Manifest.load(args.data).id_space, len(names), num_classes, names=names)
    method = build_method(args, ledger)
    scorer = None
    if isinstance(method, BSS):  # BSS ranks every id once before training: a scoring pass
        scorer = Scorer(model, indexed, ledger, device=device, progress=not args.no_progress)
    source: StreamedDataset | IndexedDataset = indexed
    if args.mode == "streamed":
        source = StreamedDataset(args.data, modalities, shuffle=1000, seed=args.seed, split=split)
    return balanced_loader(
        source,
        method,
        batch_size=args.batch_size,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        log=log,
        scorer=scorer,
    )
