"""Shared pieces of the recipe tests: tiny real clips and a one-epoch training run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmsample.ledger import Ledger
from mmsample.loader import balanced_loader
from mmsample.shards.format import Manifest
from mmsample.shards.indexed import IndexedDataset
from mmsample.testing import moving_square_clip
from pipelines.augment import random_resized_crop_flip
from pipelines.paper_models import build


def clip_bytes(seed: int) -> bytes:
    """A real 2 s, 32x32, 10 fps mp4 with a 16 kHz tone (audio and video tracks)."""
    return moving_square_clip(seed, frames=20, size=32, fps=10.0, seconds_audio=2.0)


def corrupt_bytes(seed: int) -> bytes:
    """The first third of a real clip: a truncated mp4 no decoder reads to the end."""
    data = clip_bytes(seed)
    return data[: len(data) // 3]


def shard_args(out: Path, *, skip_bad: bool, part: tuple[int, int] = (0, 1)) -> argparse.Namespace:
    """The options a recipe's command line gives `pipelines.recipe.run`."""
    return argparse.Namespace(
        out=out, samples_per_shard=3, workers=1, part=part, skip_bad=skip_bad, quiet=True
    )


def read_back(root: Path, specs: dict[str, Any], split: str) -> dict[str, dict[str, Any]]:
    """Every sample of `split`, decoded with `specs`, by key."""
    reader = IndexedDataset(root, specs, split=split)
    return {s["key"]: s for s in (reader[i] for i in range(len(reader)))}


def train_one_epoch(
    root: Path, specs: dict[str, Any], method_factory: Any, *, batch_size: int = 4
) -> dict[str, Any]:
    """One epoch of the paper model on the train split through `balanced_loader`: frames
    augmented as OGM-GE's loaders do, forward,
    cross-entropy on the fused and unimodal logits, backward, SGD step, `ledger.observe`.
    Returns the ids seen, the losses, the ledger and whether every weight group moved."""
    manifest = Manifest.load(root)
    k = len(manifest.classes)
    torch.manual_seed(0)
    model = build(k)
    ledger = Ledger(int(manifest.id_space), 2, k, names=["audio", "visual"])
    method = method_factory(ledger)
    reader = IndexedDataset(root, specs, split="train", seed=0)
    loader = balanced_loader(reader, method, batch_size=batch_size, num_workers=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ids: list[int] = []
    losses: list[float] = []
    loader.set_epoch(0)
    crops = torch.Generator().manual_seed(0)
    for batch in loader:
        if "visual" in batch:  # OGM-GE's per-frame random resized crop and flip
            part = batch.modalities["visual"]
            part.data = random_resized_crop_flip(batch["visual"], crops)  # type: ignore[arg-type]
        fused, uni, _ = model(batch)
        loss = torch.nn.functional.cross_entropy(fused, batch.labels)
        loss = loss + sum(torch.nn.functional.cross_entropy(u, batch.labels) for u in uni)
        opt.zero_grad()
        loss.backward()
        opt.step()
        present = torch.stack([batch.present(n) for n in ("audio", "visual")], 1)
        ledger.observe(
            batch.ids,
            batch.labels,
            [u.detach() for u in uni],
            fused.detach(),
            present=present,
        )
        ids.extend(batch.ids.tolist())
        losses.append(float(loss.detach()))
    ledger.flush()
    moved = {
        part: any(
            not torch.equal(before[n], p.detach())
            for n, p in model.named_parameters()
            if n.startswith(part)
        )
        for part in ("audio_net", "visual_net", "fc_out")
    }
    train_ids = sorted(int(i) for i in np.unique(reader.table.ids))
    return {
        "ids": ids,
        "losses": losses,
        "ledger": ledger,
        "moved": moved,
        "train": train_ids,
        "model": model,
    }


def reference_loop_one_epoch(
    root: Path, out: Path, preset_name: str, method: str, *extra: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`python -m pipelines.train --model resnet18 --preset NAME` for one epoch at 32x32 on a
    recipe's shards (the issue's "one-epoch run of pipelines/train.py with the paper model");
    returns its metrics.jsonl and stats.jsonl rows."""
    from pipelines import training

    argv = ["--data", str(root), "--out", str(out), "--model", "resnet18", "--preset"]
    argv += [preset_name, "--size", "32", "--epochs", "1", "--batch-size", "2", "--method"]
    assert training.main([*argv, method, "--mode", "indexed", "--no-progress", *extra]) == 0
    rows = [
        [json.loads(x) for x in (out / name).read_text().splitlines()]
        for name in ("metrics.jsonl", "stats.jsonl")
    ]
    return rows[0], rows[1]
