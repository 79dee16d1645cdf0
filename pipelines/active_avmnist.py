"""Active learning on the embedded AV-MNIST demo: rounds of train -> query, Random vs Entropy vs
BADGE vs BMMAL, fused and per-modality test accuracy against the number of labels (the BMMAL
paper's Figure 4) plotted to PNG.

Place in the data flow: demo shards (`python -m pipelines.avmnist --out DIR`) -> pool = ids with
`id % 5 != 0`, test = the rest -> each round: the labeled ids read through the id-filtered
reader (`IndexedDataset(..., ids=labeled)`, no shard rewrite) -> a small two-modality network
(the 8x8 digit image; the spoken digit's MFCCs, mean and std over frames) trained from scratch ->
`mmsample.active.query` over the pool shards -> the round's ids appended to a state file per
(strategy, seed) under `--out` (an interrupted run continues from it) -> metrics.json, plot.png.

    python -m pipelines.active_avmnist --data /tmp/avmnist --out runs/active
        [--initial 40] [--budget 40] [--rounds 5] [--seeds 0 1] [--strategies ...]

Plotting needs matplotlib (the `demo` extra).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from mmsample.active import RoundState, query
from mmsample.batch import Collate, MultimodalBatch
from mmsample.decoding import Array, Image, Spec
from mmsample.shards import IndexedDataset
from mmsample.signals import subset_logits
from mmsample.storage.location import local_path

SPECS: dict[str, Spec] = {"image": Image(field="png"), "audio": Array(field="npy")}
STRATEGIES = ("random", "entropy", "badge", "bmmal")


def inputs(batch: MultimodalBatch) -> tuple[Tensor, Tensor]:
    """(image pixels `[B, 64]` in [0, 1], MFCC mean and std over the real frames `[B, 26]`)."""
    image, audio = batch.dense("image"), batch.dense("audio")
    if not isinstance(image, Tensor) or not isinstance(audio, Tensor):
        raise TypeError("AV-MNIST image and audio decode to tensors")
    img = image.float().reshape(len(batch), -1)[:, :64] / 255.0
    mfcc = audio.float()  # [B, T_max, 13], zero padded
    frames = batch.lengths("audio").clamp(min=1).float()[:, None]
    mean = mfcc.sum(1) / frames
    std = ((mfcc**2).sum(1) / frames - mean**2).clamp(min=0).sqrt()
    return img, torch.cat([mean, std], 1) / 50.0


class AVNet(nn.Module):
    """Two encoders (image 64 -> 32, audio 26 -> 32) and a fusion head on their concatenation,
    with dropout (BALD-ready); `features` / `head` as `mmsample.active.query` calls them."""

    def __init__(self, seed: int, hidden: int = 32) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.image = nn.Sequential(nn.Linear(64, hidden), nn.ReLU())
        self.audio = nn.Sequential(nn.Linear(26, hidden), nn.ReLU())
        self.fuse = nn.Sequential(nn.Dropout(0.2), nn.Linear(2 * hidden, 10))

    def encode(self, img: Tensor, aud: Tensor) -> list[Tensor]:
        return [self.image(img), self.audio(aud)]

    def features(self, batch: MultimodalBatch) -> list[Tensor]:
        return self.encode(*inputs(batch))

    def head(self, x: Tensor) -> Tensor:
        return self.fuse(x)


def read_inputs(root: Path, ids: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
    """(image inputs, audio inputs, labels) of exactly `ids`, through the id-filtered reader."""
    reader = IndexedDataset(root, SPECS, ids=np.asarray(ids, dtype=np.int64))
    loader = DataLoader(reader, batch_size=256, collate_fn=Collate(tuple(SPECS)))
    parts = [(*inputs(b), b.labels) for b in loader]
    return tuple(torch.cat([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def train(data: tuple[Tensor, Tensor, Tensor], seed: int, epochs: int) -> AVNet:
    """A fresh AVNet trained full-batch with Adam on the labeled inputs."""
    model = AVNet(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    img, aud, y = data
    model.train()
    for _ in range(epochs):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model.head(torch.cat(model.encode(img, aud), 1)), y)
        loss.backward()
        opt.step()
    return model.eval()


def accuracy(model: AVNet, data: tuple[Tensor, Tensor, Tensor]) -> dict[str, float]:
    """Test accuracy of the fused head and of each modality alone (the head on that modality's
    features, the other's zeroed: `subset_logits` rows 1 and 2)."""
    img, aud, y = data
    with torch.no_grad():
        logits = subset_logits(model.encode(img, aud), model.head)
    right = (logits.argmax(-1) == y[:, None]).float().mean(0)
    return {"fused": float(right[3]), "image": float(right[1]), "audio": float(right[2])}


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = args.data / "shards" if (args.data / "shards").is_dir() else args.data
    all_ids = np.sort(IndexedDataset(root, SPECS).table.ids)
    test_ids = all_ids[all_ids % 5 == 0]
    pool_ids = all_ids[all_ids % 5 != 0]
    test = read_inputs(root, test_ids.tolist())
    pool_reader = IndexedDataset(root, SPECS, ids=pool_ids)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"pool": len(pool_ids), "test": len(test_ids), "runs": {}}
    for seed in args.seeds:
        first = np.random.default_rng(seed).choice(pool_ids, args.initial, replace=False)
        for name in args.strategies:
            path = args.out / f"state-{name}-s{seed}.json"
            if path.exists():
                state = RoundState.load(path)  # continue an interrupted run
            else:
                state = RoundState(name, seed=seed, budget=args.budget)
                state.add_round(sorted(first.tolist()))
                state.save(path)
            curve = []
            for r in range(args.rounds + 1):
                labeled = state.labeled()
                model = train(read_inputs(root, labeled.tolist()), seed, args.epochs)
                acc = accuracy(model, test)
                curve.append({"labels": len(labeled), **acc})
                print(
                    f"seed {seed} {name:8s} labels {len(labeled):4d}: fused {acc['fused']:.3f} "
                    f"image {acc['image']:.3f} audio {acc['audio']:.3f}",
                    flush=True,
                )
                if r == args.rounds:
                    break
                if len(state.rounds) <= r + 1:
                    picks = query(
                        pool_reader,
                        model,
                        name,
                        args.budget,
                        labeled=labeled,
                        seed=seed * 1000 + r,
                        progress=False,
                    )
                    state.add_round(picks.tolist())
                    state.save(path)
            results["runs"][f"{name}/s{seed}"] = curve
    return results


def mean_curves(results: dict[str, Any], strategies: Sequence[str]) -> dict[str, Any]:
    """Per strategy: labels and the mean over seeds of each accuracy."""
    out = {}
    for name in strategies:
        runs = [c for key, c in results["runs"].items() if key.split("/")[0] == name]
        out[name] = {
            "labels": [p["labels"] for p in runs[0]],
            **{
                m: np.mean([[p[m] for p in c] for c in runs], axis=0).round(4).tolist()
                for m in ("fused", "image", "audio")
            },
        }
    return out


def plot(curves: dict[str, Any], path: Path, seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharex=True)
    for ax, metric in zip(axes, ("fused", "image", "audio")):
        for name, c in curves.items():
            ax.plot(c["labels"], c[metric], marker="o", label=name)
        ax.set_title(f"{metric} test accuracy (mean of {seeds} seeds)")
        ax.set_xlabel("labeled samples")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.active_avmnist", description=__doc__)
    parser.add_argument("--data", type=local_path, default=Path("runs/avmnist"), help="demo folder")
    parser.add_argument("--out", type=local_path, default=Path("runs/active"))
    parser.add_argument("--initial", type=int, default=40, help="random initial labels")
    parser.add_argument("--budget", type=int, default=40, help="labels per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=150, help="full-batch training steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = run(args)
    curves = mean_curves(results, args.strategies)
    results["mean"] = curves
    results["seconds"] = round(time.perf_counter() - start, 1)
    (args.out / "metrics.json").write_text(json.dumps(results, indent=1))
    plot(curves, args.out / "plot.png", len(args.seeds))
    print(
        f"wrote {args.out / 'metrics.json'} and {args.out / 'plot.png'} in {results['seconds']} s"
    )
    for name, c in curves.items():
        print(
            f"{name:8s} final ({c['labels'][-1]} labels): fused {c['fused'][-1]:.3f} "
            f"image {c['image'][-1]:.3f} audio {c['audio'][-1]:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
