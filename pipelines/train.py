"""The reference training loop: a late-fusion model trained through a balancing method.

Place in the data flow: all of it. shards -> `balanced_loader` (or `wrap` around a plain
DataLoader) -> MultimodalBatch -> model (features, subset logits, unimodal probes) -> loss,
OGM-GE hook, step -> `ledger.observe(...)` -> the method plans the next epoch. Public API only.

    python -m pipelines.train --data runs/demo/data/shards --out runs/demo/dus --method dus
    torchrun --nproc_per_node 2 -m pipelines.train --data ... --out ... --method smv

Methods (`--method`): plain, dus, dus-rl, bss, bss-learned, smv, smv-modality, ogmge,
ogmge+dus. Any device (`--device auto`: CUDA with bf16 autocast and non-blocking copies from
pinned batches, else CPU); DDP under torchrun (gloo on CPU, NCCL on GPU). Every
`--checkpoint-every` steps and at each epoch's end every rank saves `OUT/checkpoint/rank<r>.pt`
(model, optimizer, loader state with the method's and the ledger's, OGM-GE); a rerun with the
same arguments resumes from it. Writes `OUT/config.json`, `OUT/stats.jsonl` (the loader's
`method.stats(e)` per epoch), `OUT/metrics.jsonl` (train loss and accuracy, test accuracy of the
fused head and of each modality alone, Shapley contribution per modality, time and throughput
per epoch) and, when the run ends, `OUT/done.json`.

`--model resnet18` trains on its preset's "train" specs (a few random frames per step, OGM-GE's
crop and flip on the device, drawn from (seed, epoch, step, rank)) and evaluates on the "test"
specs (all frames).

Evaluation reads the `--test-split` with an `IndexedDataset`; under DDP each rank scores a
disjoint share of the test ids and the counts are summed, so every test sample counts once
(the training reader's padding never reaches it).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mmsample.batch import Collate, MultimodalBatch
from mmsample.ledger import Ledger
from mmsample.loader import BalancedLoader, balanced_loader, wrap
from mmsample.methods import BSS, DUS, OGMGE, SMV
from mmsample.scoring import VALUES, Scorer, model_pass, pass_ids
from mmsample.shards.format import Manifest
from mmsample.shards.indexed import IndexedDataset
from mmsample.shards.streamed import StreamedDataset
from mmsample.signals import shapley, subset_logits

from .models import MODELS, LateFusion

METHODS = ("plain", "dus", "dus-rl", "bss", "bss-learned", "smv", "smv-modality", "ogmge")
METHOD_CHOICES = (*METHODS, "ogmge+dus")
LOADERS = ("shards", "wrap")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring); ValueError-free: argparse reports misuse."""
    p = argparse.ArgumentParser(prog="python -m pipelines.train", description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="shard folder (manifest.json)")
    p.add_argument("--out", type=Path, required=True, help="run folder (logs, checkpoints)")
    p.add_argument("--method", choices=METHOD_CHOICES, default="plain")
    p.add_argument("--model", choices=sorted(MODELS), default="small")
    p.add_argument(
        "--preset",
        default=None,
        help="--model resnet18: the papers' input settings (vggsound, kinetics_sounds, cremad)",
    )
    p.add_argument("--size", type=int, default=None, help="--model resnet18: frame size (224)")
    p.add_argument(
        "--audio-seconds", type=float, default=None, help="--model resnet18: the audio crop"
    )
    p.add_argument("--only", nargs="+", default=None, help="train on these modalities alone")
    p.add_argument("--loader", choices=LOADERS, default="shards", help="balanced_loader or wrap")
    p.add_argument("--mode", choices=("streamed", "indexed"), default="streamed")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers per rank")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test", help="'' to skip evaluation")
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps (0: epoch ends only)")
    p.add_argument(
        "--stop-after",
        type=int,
        default=0,
        help="checkpoint and end after N steps of this run (a preemption); rerun to resume",
    )
    p.add_argument("--trace", action="store_true", help="write each batch's ids to trace-r.jsonl")
    p.add_argument("--no-progress", action="store_true")
    # schedules, shortened to the epochs a demo runs (stated in its report)
    p.add_argument("--dus-beta", type=float, default=0.5)
    p.add_argument("--bss-lambda0", type=float, default=0.25)
    p.add_argument("--bss-t-grow", type=float, default=None, help="default: epochs - 1")
    p.add_argument("--bss-interval", type=int, default=1)
    p.add_argument("--smv-warmup", type=int, default=1)
    p.add_argument("--smv-fraction", type=float, default=0.2)
    p.add_argument("--ogm-alpha", type=float, default=0.5)
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    return args


# ---- distributed context ---------------------------------------------------------------------
def setup(device_arg: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); starts the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg == "auto":
        device_arg = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_arg)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_sum(x: Tensor) -> Tensor:
    """Sum over ranks (identity outside DDP); gloo needs CPU tensors, NCCL CUDA ones."""
    if distributed():
        dist.all_reduce(x)
    return x


# ---- methods ---------------------------------------------------------------------------------
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
                values=VALUES["smv"](logits, batch.labels),
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


# ---- evaluation ------------------------------------------------------------------------------
def evaluate(
    model: LateFusion, reader: IndexedDataset, device: torch.device, batch_size: int, workers: int
) -> dict[str, float]:
    """Test metrics over every id of `reader`, each counted once across ranks (this rank's
    share of `mmsample.scoring.pass_ids`, read by `model_pass`, the counts summed): `test/acc`
    (fused), `test/acc/<m>` (the fusion head on modality m alone, the others zeroed),
    `test/probe/<m>` (the unimodal probe), `test/contribution/<m>` (Shapley value of m with
    v(C) = accuracy of the head on subset C), `test/n`."""
    names = model.names
    m = len(names)
    counts = torch.zeros((1 << m) + m + 1, dtype=torch.float64)

    def tally(batch: MultimodalBatch, feats: list[Tensor]) -> None:
        y = batch.labels
        logits = subset_logits(feats, model.head)
        right = (logits.argmax(-1) == y[:, None]).double().sum(0).cpu()
        uni = model.unimodal(feats)
        probes = torch.stack([(u.argmax(-1) == y).double().sum() for u in uni]).cpu()
        counts.add_(torch.cat([right, probes, torch.tensor([float(len(y))])]))

    _, mine = pass_ids(reader, None, "evaluate")
    was_training = model.training
    model.eval()
    with autocast(device):  # bf16 as in training; model_pass's own autocast is off
        model_pass(
            model,
            reader,
            mine,
            tally,
            batch_size=batch_size,
            num_workers=workers,
            device=device,
            progress=False,
            autocast=False,
            desc="evaluate",
        )
    model.train(was_training)
    dev = device if device.type == "cuda" else torch.device("cpu")
    counts = all_sum(counts.to(dev)).cpu()
    n = float(counts[-1])
    acc = counts[: 1 << m] / max(n, 1.0)
    phi = shapley(acc.unsqueeze(0))[0]
    full = (1 << m) - 1
    out = {"test/acc": float(acc[full]), "test/n": n}
    for j, name in enumerate(names):
        out[f"test/acc/{name}"] = float(acc[1 << j])
        out[f"test/probe/{name}"] = float(counts[(1 << m) + j] / max(n, 1.0))
        out[f"test/contribution/{name}"] = float(phi[j])
    return out


# ---- training --------------------------------------------------------------------------------
def autocast(device: torch.device) -> AbstractContextManager[Any]:
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def write_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append `record` unless its epoch is already in the file (a resumed run repeats none)."""
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip() and json.loads(line).get("epoch") == record.get("epoch"):
                return
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


class Run:
    """One training run's state and steps (see the module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rank, self.world, self.device = setup(args.device)
        torch.manual_seed(args.seed)
        manifest = Manifest.load(args.data)
        self.num_classes = len(manifest.classes)
        given = (
            ("preset", args.preset),
            ("size", args.size),
            ("audio_seconds", args.audio_seconds),
        )
        options = {k: v for k, v in given if v is not None}
        if options and args.model == "small":
            raise ValueError(f"--model small takes no {sorted(options)}; they are resnet18's")
        choice = MODELS[args.model](self.num_classes, only=args.only, **options)
        self.modalities = choice.modalities
        self.names = list(self.modalities)
        self.model = choice.model.to(self.device)
        self.augment = choice.augment
        self.ddp: nn.Module = self.model
        if distributed():
            # device_ids=None: batches are moved by MultimodalBatch.to, not by DDP; unused
            # parameters happen when a DUS / SMV batch carries no row of a modality
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=None, find_unused_parameters=True
            )
        self.optim = torch.optim.Adam(self.model.parameters(), lr=args.lr)
        args.out.mkdir(parents=True, exist_ok=True)
        self.loader = build_loader(args, self.modalities, self.num_classes, self.device, self.model)
        self.ledger: Ledger | None = self.loader.ledger  # None: no data-side method
        self.ogm = None
        if args.method in ("ogmge", "ogmge+dus"):
            gen = torch.Generator(self.device).manual_seed(args.seed)
            encoders = {n: self.model.encoders[n] for n in self.names}
            self.ogm = OGMGE(encoders, args.ogm_alpha, end=args.epochs - 1, generator=gen)
        self.test = (
            IndexedDataset(
                args.data, choice.test_modalities or self.modalities, split=args.test_split
            )
            if args.test_split
            else None
        )
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

    def train_step(self, batch: MultimodalBatch) -> tuple[float, int, int]:
        """Forward, loss, backward, OGM-GE, step, ledger; (loss sum, fused right, full rows)."""
        batch = batch.to(self.device, non_blocking=True)
        self.augment_batch(batch)
        y = batch.labels
        present = torch.stack([batch.present(n) for n in self.names], 1)
        full = (1 << len(self.names)) - 1
        with autocast(self.device):
            logits, uni = self.ddp(batch)
        logits, uni = logits.float(), [u.float() for u in uni]
        fused = logits[:, full]
        loss = F.cross_entropy(fused, y)
        for j, u in enumerate(uni):
            rows = present[:, j]
            if bool(rows.any()):
                loss = loss + F.cross_entropy(u[rows], y[rows])
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
            self.ogm(scores, self.epoch)
        self.optim.step()
        if self.ledger is not None:
            values = VALUES["smv"](logits.detach(), y)  # v[C] = |C| if subset C alone is right
            self.ledger.observe(
                batch.ids,
                y,
                [u.detach() for u in uni],
                fused.detach(),
                values=values,
                present=present,
            )
        paired = present.all(1)
        right = int(((fused.argmax(-1) == y) & paired).sum())
        return float(loss.detach()) * len(y), right, int(paired.sum())

    def batches(self) -> Iterator[MultimodalBatch]:
        """The epoch's batches with a progress bar on rank 0."""
        bar = tqdm(
            total=len(self.loader),
            initial=self.step,
            desc=f"{self.args.method} epoch {self.epoch}",
            unit="batch",
            disable=self.args.no_progress or self.rank != 0,
            leave=False,
        )
        for batch in self.loader:
            yield batch
            bar.update(1)
        bar.close()

    def run_epoch(self) -> dict[str, Any] | None:
        """Train one epoch (from `self.step` when resumed); None if stopped by --stop-after."""
        args = self.args
        if self.fresh_epoch:
            self.loader.set_epoch(self.epoch)
        self.fresh_epoch = True
        trace_path = args.out / f"trace-{self.rank}.jsonl"
        trace = trace_path.open("a") if args.trace else nullcontext(None)
        loss_sum, right, rows, items, waited = 0.0, 0, 0, 0, 0.0
        start = time.perf_counter()
        with trace as tr:
            it = iter(self.batches())
            while True:
                t0 = time.perf_counter()
                batch = next(it, None)
                waited += time.perf_counter() - t0
                if batch is None:
                    break
                if tr is not None:
                    rec = {"epoch": self.epoch, "step": self.step, "ids": batch.ids.tolist()}
                    tr.write(json.dumps(rec) + "\n")
                    tr.flush()
                loss, r, n = self.train_step(batch)
                loss_sum, right, rows, items = (
                    loss_sum + loss,
                    right + r,
                    rows + n,
                    items + len(batch),
                )
                self.step += 1
                self.steps_this_run += 1
                every = args.checkpoint_every
                if every and self.step % every == 0:
                    self.save(end_of_epoch=False)
                if args.stop_after and self.steps_this_run >= args.stop_after:
                    self.save(end_of_epoch=False)  # a preemption: checkpoint, then stop
                    return None
        seconds = time.perf_counter() - start
        totals = all_sum(torch.tensor([loss_sum, right, rows, items], dtype=torch.float64))
        record: dict[str, Any] = {
            "epoch": self.epoch,
            "method": args.method,
            "steps": self.step,
            "train/loss": float(totals[0] / max(float(totals[3]), 1.0)),
            "train/acc": float(totals[1] / max(float(totals[2]), 1.0)),
            "train/items": float(totals[3]),
            "time/epoch_s": seconds,
            "time/data_s": waited,
            "throughput/items_per_s": float(totals[3]) / max(seconds, 1e-9),
        }
        if self.test is not None:
            t0 = time.perf_counter()
            record.update(evaluate(self.model, self.test, self.device, 64, args.workers))
            record["time/eval_s"] = time.perf_counter() - t0
        self.save(end_of_epoch=True)
        self.epoch, self.step = self.epoch + 1, 0
        return record

    def run(self) -> int:
        args = self.args
        if self.rank == 0:
            config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
            config.update(world_size=self.world, device=str(self.device))
            (args.out / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
        self.restore()
        while self.epoch < args.epochs:
            record = self.run_epoch()
            if record is None:
                return 0
            if self.rank == 0:
                write_jsonl(args.out / "metrics.jsonl", record)
                shown = {k: round(v, 4) for k, v in record.items() if k.startswith("test/acc")}
                if not args.no_progress:
                    print(f"[{args.method}] epoch {record['epoch']}: {shown}", flush=True)
        if self.rank == 0:
            (args.out / "done.json").write_text(json.dumps({"epochs": args.epochs}))
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Train (or resume) one run; see the module docstring."""
    run = Run(parse_args(argv))
    try:
        return run.run()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
