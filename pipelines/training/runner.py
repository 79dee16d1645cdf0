"""One training run's objects, checkpoint and step: model, optimizer, loader, OGM-GE.

Place in the data flow: `Run` holds what the loop drives: the loader (with the method and the
ledger), the model (DDP-wrapped under torchrun), the optimizer, OGM-GE and the test reader;
`train_step` is MultimodalBatch -> forward, loss, backward, OGM-GE, step -> `ledger.observe`.
`save` / `restore` write and read `OUT/checkpoint/rank<r>.pt`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mmsample.batch import MultimodalBatch
from mmsample.ledger import Ledger
from mmsample.methods import OGMGE
from mmsample.report.runlog import data_fingerprint
from mmsample.scoring import VALUES
from mmsample.shards.format import Manifest, read_manifest
from mmsample.shards.indexed import IndexedDataset
from mmsample.storage import redact

from ..models import MODELS
from .data import build_loader, remote
from .device import all_sum, autocast, distributed, setup
from .losses import LOSSES
from .test_set import test_key


def check_splits(args: argparse.Namespace, manifest: Manifest) -> None:
    """ValueError naming `--train-split` / `--test-split` when the shards lack that split, with
    the fix (a dataset built with a test split, or '' to read every sample / skip evaluation)."""
    known = manifest.split_counts()
    have = f"its splits are {sorted(known)}" if known else "it has no split column"
    if args.train_split and args.train_split not in known:
        raise ValueError(
            f"--train-split {args.train_split!r}: {redact(args.data)} has no such split ({have}); "
            "pass --train-split '' to train on every sample."
        )
    if args.test_split and args.test_split not in known:
        raise ValueError(
            f"--test-split {args.test_split!r}: {redact(args.data)} has no such split ({have}); build "
            "the data with a held-out split (e.g. `python -m pipelines.avmnist --test-fraction "
            "0.2`) or pass --test-split '' to skip evaluation."
        )


def read_only(specs: dict[str, Any], only: Sequence[str] | None) -> dict[str, Any]:
    """`specs` restricted to the modalities of `only` (all of them when None): a unimodal
    baseline decodes nothing of the modalities its model zeroes."""
    return {n: s for n, s in specs.items() if not only or n in only}


def presence(batch: MultimodalBatch, names: Sequence[str]) -> Tensor:
    """Bool `[B, M]`: which rows carry each of the model's modalities `names`; all False for a
    modality the batch's reader does not decode (a `--only` run)."""
    return torch.stack(
        [
            batch.present(n)
            if n in batch.names
            else torch.zeros_like(batch.labels, dtype=torch.bool)
            for n in names
        ],
        1,
    )


class Run:
    """One training run's state and steps (see `pipelines.training`)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        if args.threads is not None:  # the step's threads; DataLoader workers run one each
            torch.set_num_threads(args.threads)
        self.rank, self.world, self.device = setup(args.device)
        torch.manual_seed(args.seed)
        manifest = read_manifest(args.data)
        check_splits(args, manifest)
        self.num_classes = len(manifest.classes)
        # what data this is (config.json, the test-set cache key): once per run (for a URL a
        # listing and the metadata files)
        self.fingerprint = data_fingerprint(args.data)
        given = (
            ("preset", args.preset),
            ("size", args.size),
            ("audio_seconds", args.audio_seconds),
        )
        options = {k: v for k, v in given if v is not None}
        if options and args.model == "small":
            raise ValueError(f"--model small takes no {sorted(options)}; they are resnet18's")
        if args.only and args.method != "plain":
            raise ValueError(
                f"--only {' '.join(args.only)} trains a unimodal baseline (the ceiling of "
                f"{', '.join(args.only)}), which has nothing to balance: use it with --method "
                f"plain, not --method {args.method}"
            )
        choice = MODELS[args.model](self.num_classes, only=args.only, **options)
        self.names = list(choice.modalities)  # the model's modalities, in model order
        # what the training reader decodes: a unimodal baseline (`--only`) its modalities only
        self.modalities = read_only(choice.modalities, args.only)
        self.model = choice.model.to(self.device)
        # Remix's unimodal heads train the encoders (the authors' heads are not detached)
        self.model.train_heads = args.method == "remix"
        self.loss_fn = LOSSES["remix" if args.method == "remix" else "plain"]
        self.augment = choice.augment
        self.ddp: nn.Module = self.model
        if distributed():
            # device_ids=None: batches are moved by MultimodalBatch.to, not by DDP. Every
            # parameter takes part in every step (`idle_term` ties the parameters a batch leaves
            # unused to the loss with weight 0), so DDP needs no search for unused parameters
            # (with find_unused_parameters=True every rank warned that it found none).
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=None, find_unused_parameters=False
            )
        self.optim = torch.optim.Adam(self.model.parameters(), lr=args.lr)
        args.out.mkdir(parents=True, exist_ok=True)
        self.loader = build_loader(
            args,
            self.modalities,
            self.num_classes,
            self.device,
            self.model,
            scoring_modalities=choice.test_modalities,
        )
        self.ledger: Ledger | None = self.loader.ledger  # None: no data-side method
        self.ogm = None
        if args.method in ("ogmge", "ogmge+dus"):
            gen = torch.Generator(self.device).manual_seed(args.seed)
            encoders = {n: self.model.encoders[n] for n in self.names}
            self.ogm = OGMGE(encoders, args.ogm_alpha, end=args.epochs - 1, generator=gen)
        # every modality, also for a unimodal baseline (its model zeroes the others): the test
        # set's decode is the same for every run of the process, and kept once decoded
        test_specs = choice.test_modalities or choice.modalities
        self.test = (
            IndexedDataset(args.data, test_specs, split=args.test_split, **remote(args))
            if args.test_split
            else None
        )
        self.test_key = (
            test_key(args.data, args.test_split, test_specs, 64, self.fingerprint)
            if args.test_split
            else None
        )
        # OGM-GE's coefficients this epoch, per encoder (on the device: no sync per step):
        # their sum and the count of steps with k < 1, over `ogm_steps` steps
        self.ogm_sum: Tensor | None = None
        self.ogm_scaled: Tensor | None = None
        self.ogm_steps = 0
        self.ckpt = args.out / "checkpoint" / f"rank{self.rank}.pt"
        self.epoch, self.step, self.fresh_epoch = 0, 0, True
        self.steps_this_run = 0

    # ---- checkpoint ----
    def save(self, end_of_epoch: bool) -> None:
        state = {
            "epoch": self.epoch,
            "step": self.step,
            "end_of_epoch": end_of_epoch,
            "world": self.world,
            "model": self.model.state_dict(),
            "optim": self.optim.state_dict(),
            "loader": self.loader.state_dict(),
            "ogm": None if self.ogm is None else self.ogm.state_dict(),
            "rng": torch.get_rng_state(),
        }
        self.ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.ckpt)

    def restore(self) -> bool:
        """Load this rank's checkpoint if there is one; True if it did."""
        if not self.ckpt.exists():
            return False
        state = torch.load(self.ckpt, map_location="cpu")
        if state["world"] != self.world:
            raise ValueError(
                f"{self.ckpt} was saved by a run of {state['world']} ranks; this run has "
                f"{self.world}. Resume with the same --nproc_per_node, or use a new --out."
            )
        self.model.load_state_dict(state["model"])
        self.optim.load_state_dict(state["optim"])
        # a state taken after an epoch's last batch restores to "that epoch done": the next
        # set_epoch plans from the ledger and the method exactly as an uninterrupted run does
        self.loader.load_state_dict(state["loader"])
        if self.ogm is not None and state["ogm"] is not None:
            self.ogm.load_state_dict(state["ogm"])
        torch.set_rng_state(state["rng"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        if state["end_of_epoch"]:
            self.epoch, self.step = self.epoch + 1, 0
        self.fresh_epoch = bool(state["end_of_epoch"])
        return True

    def ogm_record(self) -> dict[str, float]:
        """This epoch's OGM-GE coefficients per encoder m (empty without OGM-GE), then reset:
        `ogm/coeff/<m>` the mean coefficient over the steps this process ran, `ogm/modulated/<m>`
        the share of those steps whose coefficient was < 1 (gradients scaled down). The
        coefficients are equal on every rank (the scores are summed over ranks first)."""
        out: dict[str, float] = {}
        if self.ogm_sum is not None and self.ogm_scaled is not None:
            means = (self.ogm_sum / self.ogm_steps).tolist()
            shares = (self.ogm_scaled / self.ogm_steps).tolist()
            for j, name in enumerate(self.names):
                out[f"ogm/coeff/{name}"] = means[j]
                out[f"ogm/modulated/{name}"] = shares[j]
        self.ogm_sum, self.ogm_scaled, self.ogm_steps = None, None, 0
        return out

    # ---- one step ----
    def augment_batch(self, batch: MultimodalBatch) -> None:
        """The model's training-time augmentation, in place, on the device; its draws come from
        a generator seeded by (seed, epoch, step, rank), so a resumed run draws the same."""
        if not self.augment:
            return
        key = (self.args.seed, self.epoch, self.step, self.rank)
        seed = int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0] >> 1)
        gen = torch.Generator(self.device).manual_seed(seed)
        for name, fn in self.augment.items():
            if name in batch:
                part = batch.modalities[name]
                part.data = fn(part.data, gen)  # type: ignore[arg-type]

    def idle_term(self, present: Tensor) -> Tensor | None:
        """Under DDP, when a step leaves a modality out (no row of the batch carries it, as in
        some DUS / SMV batches, or `--only` drops it), 0 times the sum of every parameter: the
        encoder and probe of that modality then get zero gradients on this rank instead of
        none, so every rank reduces every parameter and DDP needs no unused-parameter search.
        None outside DDP or when every modality takes part. `present`: bool `[B, M]`."""
        if self.ddp is self.model:
            return None
        runs = getattr(self.model, "only", self.names)
        if all(n in runs for n in self.names) and bool(present.any(0).all()):
            return None
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.stack([p.sum() for p in params]).sum() * 0.0

    def train_step(self, batch: MultimodalBatch) -> tuple[float, int, int]:
        """Forward, loss, backward, OGM-GE, step, ledger; (loss sum, fused right, full rows)."""
        batch = batch.to(self.device, non_blocking=True)
        self.augment_batch(batch)
        y = batch.labels
        present = presence(batch, self.names)
        full = (1 << len(self.names)) - 1
        with autocast(self.device):
            logits, uni = self.ddp(batch)
        logits, uni = logits.float(), [u.float() for u in uni]
        fused = logits[:, full]
        loss = self.loss_fn(fused, uni, y, present, self.epoch, self.args)
        idle = self.idle_term(present)
        if idle is not None:
            loss = loss + idle
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        if self.ogm is not None:
            scores = torch.stack(
                [
                    (
                        torch.softmax(u.detach(), -1).gather(1, y[:, None])[:, 0] * present[:, j]
                    ).sum()
                    for j, u in enumerate(uni)
                ]
            )
            dev = self.device if self.device.type == "cuda" else torch.device("cpu")
            scores = all_sum(scores.to(dev, torch.float64))
            applied = self.ogm(scores, self.epoch)
            k = torch.stack([applied[n] for n in self.names]).detach().double()
            self.ogm_sum = k if self.ogm_sum is None else self.ogm_sum + k
            scaled = (k < 1).double()
            self.ogm_scaled = scaled if self.ogm_scaled is None else self.ogm_scaled + scaled
            self.ogm_steps += 1
        self.optim.step()
        if self.ledger is not None:
            values = VALUES["smv"](logits.detach(), y, batch.ids)  # v[C] = |C| if C alone is right
            self.ledger.observe(
                batch.ids,
                y,
                [u.detach() for u in uni],
                fused.detach(),
                values=values,
                present=present,
            )
        read = [j for j, n in enumerate(self.names) if n in self.modalities]
        paired = present[:, read].all(1)  # rows carrying every modality the run reads
        right = int(((fused.argmax(-1) == y) & paired).sum())
        return float(loss.detach()) * len(y), right, int(paired.sum())
