"""The report's PNG plots, drawn with matplotlib (Agg backend, no display needed).

Each function takes the runs (or their summaries) and a folder, writes one PNG and returns its
path, or None when no run logged what the plot shows (e.g. no DUS run: no batch-size plot).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .runs import Run, Summary

__all__ = ["PLOTS", "extra_items"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise ModuleNotFoundError(
            "mmsample report draws its plots with matplotlib: pip install matplotlib"
        ) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)
    return path


def accuracy(summaries: Sequence[Summary], runs: Sequence[Run], out: Path) -> Path | None:
    """Grouped bars: fused and per-modality (head on that modality alone) test accuracy per
    method; error bars are the standard deviation over seeds when there are several."""
    if not summaries:
        return None
    plt = _pyplot()
    modalities = summaries[0].runs[0].modalities
    keys = ["test/acc", *(f"test/acc/{m}" for m in modalities)]
    labels = ["fused", *(f"{m} alone" for m in modalities)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(summaries)), 3.6))
    width = 0.8 / len(keys)
    for k, (key, label) in enumerate(zip(keys, labels)):
        xs = [i + (k - (len(keys) - 1) / 2) * width for i in range(len(summaries))]
        means = [s.values[key][0] for s in summaries]
        errs = [0.0 if math.isnan(s.values[key][1]) else s.values[key][1] for s in summaries]
        ax.bar(xs, means, width, yerr=errs if any(errs) else None, label=label, capsize=2)
    ax.set_xticks(range(len(summaries)), [s.method for s in summaries], rotation=30)
    ax.set_ylabel("test accuracy (last epoch)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="small")
    return _save(fig, out / "accuracy.png")


def _lines(
    runs: Sequence[Run],
    keys: Callable[[Run], list[tuple[str, str]]],
    source: str,
    ylabel: str,
    path: Path,
    transform: Callable[[Run, str, float, int], float] | None = None,
) -> Path | None:
    """One subplot per series label, one line per run (seed shown when a method has several)."""
    series: dict[str, list[tuple[str, list[tuple[int, float]]]]] = {}
    for run in runs:
        for label, key in keys(run):
            points = run.series(key, source)
            if transform is not None:
                points = [(e, transform(run, key, v, e)) for e, v in points]
            if points:
                tag = run.method + (f" s{run.config['seed']}" if "seed" in run.config else "")
                series.setdefault(label, []).append((tag, points))
    if not series:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.2), squeeze=False)
    for ax, (label, lines) in zip(axes[0], series.items()):
        for tag, points in lines:
            ax.plot([e for e, _ in points], [v for _, v in points], marker="o", label=tag)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
    axes[0][-1].legend(fontsize="x-small")
    return _save(fig, path)


def contribution(summaries: Sequence[Summary], runs: Sequence[Run], out: Path) -> Path | None:
    """Shapley contribution of each modality to the fused test accuracy, per epoch."""

    def keys(run: Run) -> list[tuple[str, str]]:
        return [(m, f"test/contribution/{m}") for m in run.modalities]

    return _lines(runs, keys, "metrics", "contribution", out / "contribution.png")


def dus_batch_sizes(summaries: Sequence[Summary], runs: Sequence[Run], out: Path) -> Path | None:
    """DUS per-modality batch sizes per epoch (the `batch_size/<m>` stats)."""

    def keys(run: Run) -> list[tuple[str, str]]:
        return [(m, f"batch_size/{m}") for m in run.modalities]

    return _lines(runs, keys, "stats", "rows per batch", out / "dus_batch_size.png")


def bss_pacing(summaries: Sequence[Summary], runs: Sequence[Run], out: Path) -> Path | None:
    """BSS pacing per epoch: the share of the ranked ids trained on (the `pacing` stat)."""
    bss = [r for r in runs if r.method.startswith("bss")]
    return _lines(bss, lambda r: [("pacing", "pacing")], "stats", "pacing", out / "bss_pacing.png")


def extra_items(run: Run, key: str, value: float, epoch: int) -> float:
    """Items carrying modality m beyond one per id: `items/<m>` minus `ids` of that epoch."""
    row = next(r for r in run.stats if int(r.get("epoch", -1)) == epoch)
    return value - float(row.get("ids", 0.0))


def smv_items(summaries: Sequence[Summary], runs: Sequence[Run], out: Path) -> Path | None:
    """SMV extra items per modality per epoch (`items/<m>` minus the ids)."""
    smv = [r for r in runs if r.method.startswith("smv")]

    def keys(run: Run) -> list[tuple[str, str]]:
        return [(m, f"items/{m}") for m in run.modalities]

    return _lines(smv, keys, "stats", "extra items", out / "smv_items.png", extra_items)


def throughput(summaries: Sequence[Summary], runs: Sequence[Run], out: Path) -> Path | None:
    """Training items per second per method (decode + step, mean over epochs)."""
    if not summaries:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(summaries)), 3.2))
    means = [s.values["items_per_s"][0] for s in summaries]
    errs = [
        0.0 if math.isnan(s.values["items_per_s"][1]) else s.values["items_per_s"][1]
        for s in summaries
    ]
    ax.bar(range(len(summaries)), means, yerr=errs, capsize=2)
    ax.set_xticks(range(len(summaries)), [s.method for s in summaries], rotation=30)
    ax.set_ylabel("items / s (train loop)")
    return _save(fig, out / "throughput.png")


PLOTS: dict[str, Callable[[Sequence[Summary], Sequence[Run], Path], Path | None]] = {
    "fused and per-modality test accuracy": accuracy,
    "modality contribution over epochs": contribution,
    "DUS per-modality batch sizes": dus_batch_sizes,
    "BSS pacing": bss_pacing,
    "SMV extra items per modality": smv_items,
    "loader throughput": throughput,
}
