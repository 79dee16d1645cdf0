"""The training data: the balancing method of `--method` and the loader that applies it.

Place in the data flow: shards -> `balanced_loader` (streamed or indexed reader) or `wrap`
around an ordinary DataLoader (`--loader wrap`) -> MultimodalBatch, with the Ledger the method
reads and, for BSS and Remix, the scoring pass they plan from.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mmsample.batch import MultimodalBatch
from mmsample.ledger import Ledger
from mmsample.loader import BalancedLoader, balanced_loader, wrap
from mmsample.methods import BSS, DUS, SMV, Remix
from mmsample.position_scoring import PositionScorer
from mmsample.scoring import Scorer
from mmsample.shards.format import read_manifest
from mmsample.shards.indexed import IndexedDataset
from mmsample.shards.streamed import StreamedDataset
from mmsample.storage import ShardCache

from ..models import LateFusion
from .device import autocast

UNPLANNED = ("plain", "ogmge")
"""`--method` values with no data-side method (the loader serves the plain plan, no Ledger)."""


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
    if name == "remix":  # the authors' two-modality code gives a tie to the visual modality
        tie = next((j for j, n in enumerate(ledger.names) if n in ("video", "visual")), None)
        remix = Remix(ledger, args.remix_warmup, tie=tie, seed=args.seed)
        remix.set_run(epochs=args.epochs)  # warns when every epoch would be warm-up
        return remix
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


class ModelForward:
    """`forward(batch)` of the scoring pass for `wrap`: the model's subset and unimodal logits
    on `device`, under autocast there."""

    def __init__(self, model: LateFusion, device: torch.device) -> None:
        self.model, self.device = model, device

    def __call__(self, batch: MultimodalBatch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with autocast(self.device):
            logits, uni = self.model(batch)
        return logits.float(), [u.float() for u in uni]


def remote(args: argparse.Namespace) -> dict[str, Any]:
    """The readers' remote-reading keywords: a `ShardCache` for `--cache-dir` (with `--data` a
    URL), else none (credentials and endpoints come from the backend's own configuration)."""
    if args.cache_dir is None:
        return {}
    return {"cache": ShardCache(args.cache_dir, max_bytes=int(args.cache_gb * 1e9))}


def build_loader(
    args: argparse.Namespace,
    modalities: dict[str, Any],
    num_classes: int,
    device: torch.device,
    model: LateFusion,
    scoring_modalities: dict[str, Any] | None = None,
) -> BalancedLoader:
    """`balanced_loader` over the train split's shards (streamed or indexed), or `wrap` around
    an ordinary DataLoader (`--loader wrap`). The Ledger is sized by the id space (wrap: the
    dataset's length); BSS and Remix get their scoring pass through `scorer=` (Remix's in eval
    mode and, on shards, with `scoring_modalities`, the test-time specs, when given)."""
    names = list(modalities)
    split = args.train_split or None
    log = args.out / "stats.jsonl"

    def indexed() -> IndexedDataset:  # opened only where needed (a pipe: source cannot be)
        return IndexedDataset(args.data, modalities, split=split, seed=args.seed, **remote(args))

    if args.loader == "wrap":
        view = TupleView(indexed(), names)
        plain = DataLoader(
            view,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
        )
        fields: dict[str, int | str] = {n: j for j, n in enumerate(names)}
        fields["label"] = len(names)
        method = None
        if args.method not in UNPLANNED:
            ledger = Ledger(len(view), len(names), num_classes, names=names)
            method = build_method(args, ledger)
        by_position = (  # every scoring pass is inference: the model in eval mode
            PositionScorer(
                ModelForward(model, device),
                view,
                ledger,
                fields=fields,
                output="multimodal",
                device=device,
                model=model,
            )
            if isinstance(method, BSS | Remix)
            else None
        )
        return wrap(
            plain,
            method,
            fields=fields,
            seed=args.seed,
            log=log,
            scorer=by_position,
            output="multimodal",
        )
    method = None
    if args.method not in UNPLANNED:
        ledger = Ledger(read_manifest(args.data).id_space, len(names), num_classes, names=names)
        method = build_method(args, ledger)
    scorer: Scorer | None = None
    if isinstance(method, BSS):  # BSS ranks every id once before training: a scoring pass,
        # in eval mode like every inference (BatchNorm's running statistics stay the training's)
        scorer = Scorer(model, indexed(), ledger, device=device, progress=not args.no_progress)
    if isinstance(method, Remix):  # Remix scores the training split every epoch, in eval mode
        specs = scoring_modalities or modalities
        reader = IndexedDataset(args.data, specs, split=split, seed=args.seed, **remote(args))
        scorer = Scorer(model, reader, ledger, device=device, progress=not args.no_progress)
    if args.mode == "streamed" and isinstance(method, Remix):
        warnings.warn(
            "--method remix with --mode streamed: the streamed reader keeps each sample's one "
            "item and its modality but not Remix's order, so batches mix modalities (the loss "
            "is computed per row). Pass --mode indexed for the authors' one-modality batches.",
            stacklevel=2,
        )
    source: StreamedDataset | IndexedDataset
    if args.mode == "streamed":
        source = StreamedDataset(
            args.data, modalities, shuffle=1000, seed=args.seed, split=split, **remote(args)
        )
    else:
        source = indexed()
    return balanced_loader(
        source,
        method,
        batch_size=args.batch_size,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        log=log,
        scorer=scorer,
    )
