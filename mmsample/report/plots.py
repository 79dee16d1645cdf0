"""The report's PNG plots, drawn with matplotlib (Agg backend, no display needed).

Each function takes a report group (`mmsample.report.balance.Group`) and a folder, writes one
PNG and returns its path, or None when no run logged what the plot shows (e.g. no DUS run: no
batch-size plot; no ceiling run: no utilisation plot). Accuracy plots draw chance (1/K); the
panels of one figure share their y-axis; error bars are the report's 95% intervals; the epochs
in which a method did not act are shaded, and a method that never acted says so in its title
or legend.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .activity import Activity
from .balance import BASELINE, Group, MethodSummary, utilisation_series
from .intervals import Interval
from .runs import Run

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


def _integer_epochs(ax: Any) -> None:
    """Epoch ticks at whole numbers."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)
    return path


def _errors(values: list[Interval | None]) -> tuple[list[float], list[list[float]] | None]:
    """Bar heights and asymmetric error bars (None when no value has an interval)."""
    points = [math.nan if v is None else v.point for v in values]
    low = [v.point - v.low if v is not None and v.known else 0.0 for v in values]
    high = [v.high - v.point if v is not None and v.known else 0.0 for v in values]
    return points, ([low, high] if any(low) or any(high) else None)


def _chance(ax: Any, group: Group) -> None:
    if not math.isnan(group.chance):
        ax.axhline(group.chance, color="grey", linestyle=":", linewidth=1, label="chance (1/K)")


def _never(s: MethodSummary) -> bool:
    acts = [a for a in s.activity if a is not None]
    return bool(acts) and all(a.never for a in acts)


def _label(s: MethodSummary) -> str:
    return s.method + ("\n(never acted)" if _never(s) else "")


def _bars(
    group: Group, keys: list[tuple[str, str]], ax: Any, colors: list[str] | None = None
) -> None:
    """Grouped bars per method: one bar per (key, label), interval error bars."""
    width = 0.8 / len(keys)
    n = len(group.summaries)
    for k, (key, label) in enumerate(keys):
        xs = [i + (k - (len(keys) - 1) / 2) * width for i in range(n)]
        points, errs = _errors([s.values.get(key) for s in group.summaries])
        color = colors[k] if colors else None
        ax.bar(xs, points, width, yerr=errs, label=label, capsize=2, color=color)
    ax.set_xticks(range(n), [_label(s) for s in group.summaries], rotation=30)


def accuracy(group: Group, out: Path) -> Path | None:
    """Grouped bars: fused and per-modality (head on that modality alone) test accuracy per
    method, with 95% intervals; the unimodal ceilings as dashed lines; chance dotted."""
    if not group.summaries:
        return None
    plt = _pyplot()
    mods = group.modalities
    keys = [("acc", "fused"), *((f"alone/{m}", f"{m} alone") for m in mods)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(group.summaries)), 3.8))
    _bars(group, keys, ax)
    for j, m in enumerate(mods):
        tops = [r.final("test/acc") for (mod, _), r in group.ceilings.items() if mod == m]
        if tops:
            color = f"C{j + 1}"
            ax.axhline(sum(tops) / len(tops), color=color, linestyle="--", label=f"{m} ceiling")
    _chance(ax, group)
    ax.set_ylabel("test accuracy (last epoch)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, out / "accuracy.png")


def utilisation(group: Group, out: Path) -> Path | None:
    """Bars per method and modality: chance-corrected utilisation with 95% intervals; 0
    (chance) and 1 (the ceiling) drawn."""
    mods = [m for m in group.modalities if any(k[0] == m for k in group.ceilings)]
    if not group.summaries or not mods or group.num_classes is None:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(group.summaries)), 3.6))
    colors = [f"C{group.modalities.index(m) + 1}" for m in mods]  # as in the accuracy plot
    _bars(group, [(f"util/{m}", m) for m in mods], ax, colors)
    ax.axhline(0.0, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="ceiling")
    ax.set_ylabel("utilisation\n(alone - 1/K) / (ceiling - 1/K)")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, out / "utilisation.png")


def _shade(ax: Any, acts: list[Activity | None], shaded: list[bool]) -> None:
    """Shade the epochs in which no run of the panel's method acted."""
    known = [a for a in acts if a is not None and not a.unknown]
    if not known:
        return
    idle = set.intersection(*(set(a.inactive) for a in known))
    for e in sorted(idle):
        label = None if shaded[0] else "method inactive"
        ax.axvspan(e - 0.5, e + 0.5, color="grey", alpha=0.15, label=label)
        shaded[0] = True


def _per_method(
    group: Group,
    series: Callable[[Run, str], list[tuple[int, float]]],
    ylabel: str,
    path: Path,
    references: tuple[float, ...] = (),
) -> Path | None:
    """One panel per method (shared y), one line per modality and seed, inactive epochs
    shaded; None when no run logged the series."""
    panels = []
    for s in group.summaries:
        lines = [
            (f"{m}" + (f" s{r.seed}" if s.seeds > 1 else ""), series(r, m))
            for r in s.runs
            for m in group.modalities
        ]
        lines = [(tag, pts) for tag, pts in lines if pts]
        if lines:
            panels.append((s, lines))
    if not panels:
        return None
    plt = _pyplot()
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.0 * cols, 2.9 * rows), sharey=True, squeeze=False
    )
    shaded = [False]
    for ax, (s, lines) in zip(axes.flat, panels):
        for tag, pts in lines:
            color = f"C{group.modalities.index(tag.split()[0]) + 1}"
            ax.plot([e for e, _ in pts], [v for _, v in pts], marker="o", color=color, label=tag)
        if s.method != BASELINE:
            _shade(ax, s.activity, shaded)
        for ref in references:
            ax.axhline(ref, color="grey", linestyle=":", linewidth=1)
        _integer_epochs(ax)
        ax.set_title(s.method + (" (never acted)" if _never(s) else ""), fontsize="small")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    axes.flat[0].legend(handles.values(), handles.keys(), fontsize="x-small")
    return _save(fig, path)


def utilisation_epochs(group: Group, out: Path) -> Path | None:
    """Utilisation of each modality per epoch (against the ceiling run at the same epoch)."""
    if group.num_classes is None or not group.ceilings:
        return None

    def series(run: Run, m: str) -> list[tuple[int, float]]:
        top = group.ceilings.get((m, run.seed))
        return [(e, u) for e, u in utilisation_series(run, top, m, group.chance)]

    return _per_method(group, series, "utilisation", out / "utilisation_epochs.png", (0.0, 1.0))


def contribution(group: Group, out: Path) -> Path | None:
    """Test Shapley contribution of each modality per epoch, one panel per method."""

    def series(run: Run, m: str) -> list[tuple[int, float]]:
        return run.series(f"test/contribution/{m}")

    return _per_method(group, series, "Shapley (test)", out / "contribution.png", (0.0,))


def _stat_panels(
    group: Group,
    methods: tuple[str, ...],
    key: Callable[[str], str],
    ylabel: str,
    path: Path,
    transform: Callable[[Run, float, int], float] | None = None,
) -> Path | None:
    """One panel per modality (shared y), one line per run of `methods` (by prefix)."""
    runs = [(s, r) for s in group.summaries if s.method.startswith(methods) for r in s.runs]
    panels: dict[str, list[tuple[str, list[tuple[int, float]]]]] = {}
    for s, run in runs:
        for m in group.modalities:
            pts = run.series(key(m), "stats")
            if transform is not None:
                pts = [(e, transform(run, v, e)) for e, v in pts]
            if pts:
                tag = run.method + (f" s{run.seed}" if s.seeds > 1 else "")
                panels.setdefault(m, []).append(
                    (tag + (" (never acted)" if _never(s) else ""), pts)
                )
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 3.2), sharey=True, squeeze=False
    )
    for ax, (m, lines) in zip(axes[0], panels.items()):
        for tag, pts in lines:
            ax.plot([e for e, _ in pts], [v for _, v in pts], marker="o", label=tag)
        ax.set_title(m)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        _integer_epochs(ax)
    axes[0][-1].legend(fontsize="x-small")
    return _save(fig, path)


def dus_batch_sizes(group: Group, out: Path) -> Path | None:
    """DUS per-modality batch sizes per epoch (the `batch_size/<m>` stats)."""
    return _stat_panels(
        group,
        ("dus", "ogmge+dus"),
        lambda m: f"batch_size/{m}",
        "rows per batch",
        out / "dus_batch_size.png",
    )


def bss_pacing(group: Group, out: Path) -> Path | None:
    """BSS pacing per epoch: the share of the ranked ids trained on (the `pacing` stat)."""
    runs = [r for s in group.summaries if s.method.startswith("bss") for r in s.runs]
    lines = [(r, r.series("pacing", "stats")) for r in runs]
    lines = [(r, pts) for r, pts in lines if pts]
    if not lines:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    for run, pts in lines:
        ax.plot(
            [e for e, _ in pts], [v for _, v in pts], marker="o", label=f"{run.method} s{run.seed}"
        )
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    _integer_epochs(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("pacing (share of ids)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize="x-small")
    return _save(fig, out / "bss_pacing.png")


def extra_items(run: Run, value: float, epoch: int) -> float:
    """Items carrying modality m beyond one per id: `items/<m>` minus `ids` of that epoch."""
    row = next(r for r in run.stats if int(r.get("epoch", -1)) == epoch)
    return value - float(row.get("ids", 0.0))


def smv_items(group: Group, out: Path) -> Path | None:
    """SMV extra items per modality per epoch (`items/<m>` minus the ids)."""
    return _stat_panels(
        group,
        ("smv",),
        lambda m: f"items/{m}",
        "extra items",
        out / "smv_items.png",
        extra_items,
    )


def throughput(group: Group, out: Path) -> Path | None:
    """Training items per second per method (decode + step, mean over epochs)."""
    if not group.summaries:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(group.summaries)), 3.2))
    _bars(group, [("items_per_s", "items/s")], ax)
    ax.set_ylabel("items / s (train loop)")
    return _save(fig, out / "throughput.png")


PLOTS: dict[str, Callable[[Group, Path], Path | None]] = {
    "fused and per-modality test accuracy": accuracy,
    "utilisation per method and modality": utilisation,
    "utilisation over epochs": utilisation_epochs,
    "test Shapley contribution over epochs": contribution,
    "DUS per-modality batch sizes": dus_batch_sizes,
    "BSS pacing": bss_pacing,
    "SMV extra items per modality": smv_items,
    "loader throughput": throughput,
}
