"""When each balancing method acted, read from a run's logs, so that a no-op is never silent.

Place in the data flow: after training, inside the report. A method that did not act in an
epoch trained that epoch exactly as the plain loader would; the report says which epochs each
method was active and flags a method that never acted, with the reason. Per method family
(`ACTIVITY`, keyed by the `method` names of `pipelines.train`), an epoch counts as active when:

- SMV (`smv`, `smv-modality`): past its warm-up (`warmup` stat 0) and re-sampling: the plan
  held items beyond one per id (`items` > `ids`);
- DUS (`dus`, `dus-rl`): the per-modality batch sizes (`batch_size/<m>`) differ from an even
  split (not all equal) or from the run's first epoch's sizes;
- BSS (`bss`, `bss-learned`): pacing < 1 (part of the ids held back). A BSS run read by the
  streamed reader (`mode` "streamed") keeps the plan's items but not its order: flagged;
- OGM-GE (`ogmge`): some step scaled a modality's gradients (`ogm/modulated/<m>` > 0, or the
  mean coefficient `ogm/coeff/<m>` < 1 when the share is not logged);
- `ogmge+dus`: either of its two.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from .runs import Run

__all__ = ["ACTIVITY", "Activity", "activity", "epochs_text"]


@dataclass
class Activity:
    """What a run's method did: the `epochs` logged, the `active` ones (sorted), `never` (why
    it never acted; "" when it did), `flag` (a caveat even when it acted) and `unknown` (why
    the logs cannot tell; then `active` is empty and `never` "")."""

    mechanism: str
    epochs: list[int]
    active: list[int] = field(default_factory=list)
    never: str = ""
    flag: str = ""
    unknown: str = ""

    @property
    def inactive(self) -> list[int]:
        """The logged epochs the method did not act in (empty when unknown)."""
        return [] if self.unknown else [e for e in self.epochs if e not in self.active]

    def text(self) -> str:
        """One line: which epochs the method acted in, or that it never did and why."""
        if self.unknown:
            return f"{self.mechanism}: unknown ({self.unknown})"
        if self.never:
            line = f"never acted: {self.never}"
        else:
            line = f"{self.mechanism} in {epochs_text(self.active)} of {len(self.epochs)}"
        return f"{line}; {self.flag}" if self.flag else line


def epochs_text(epochs: list[int]) -> str:
    """ "epoch 3", "epochs 0-2, 4" (ranges collapsed)."""
    if not epochs:
        return "no epoch"
    spans: list[list[int]] = []
    for e in sorted(epochs):
        if spans and e == spans[-1][1] + 1:
            spans[-1][1] = e
        else:
            spans.append([e, e])
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in spans]
    return ("epoch " if len(epochs) == 1 else "epochs ") + ", ".join(parts)


def _stat(row: dict[str, object], key: str) -> float:
    value = row.get(key)
    return math.nan if value is None else float(value)  # type: ignore[arg-type]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _still_warming(run: Run, method: str, setting: str, epochs: int) -> str:
    """Why a method with a warm-up never acted: it never passed it (its length from config)."""
    warmup = run.config.get(setting, "its")
    return f"{method} never passed its warm-up ({warmup} epoch(s)) in {_plural(epochs, 'epoch')}"


def smv(run: Run) -> Activity:
    """SMV: past its warm-up and re-sampling."""
    rows = [r for r in run.stats if "ids" in r and "items" in r]
    epochs = [int(r["epoch"]) for r in rows]
    done = Activity("re-sampled", epochs)
    if not rows:
        done.unknown = "no items/ids in stats.jsonl"
        return done
    warm = [_stat(r, "warmup") == 1 for r in rows]
    more = [_stat(r, "items") > _stat(r, "ids") for r in rows]
    done.active = [e for e, w, x in zip(epochs, warm, more) if not w and x]
    if done.active:
        return done
    if all(warm):
        done.never = _still_warming(run, "SMV", "smv_warmup", len(rows))
    else:
        done.never = "SMV never re-sampled (no epoch had items beyond one per id)"
    return done


def dus(run: Run) -> Activity:
    """DUS: batch sizes off the even split or off the first epoch's."""
    names = run.modalities or sorted(
        {k.split("/", 1)[1] for r in run.stats for k in r if k.startswith("batch_size/")}
    )
    rows = [r for r in run.stats if all(f"batch_size/{m}" in r for m in names)]
    epochs = [int(r["epoch"]) for r in rows]
    done = Activity("batch sizes changed", epochs)
    if not rows or not names:
        done.unknown = "no batch_size/<m> in stats.jsonl"
        return done
    sizes = [tuple(_stat(r, f"batch_size/{m}") for m in names) for r in rows]
    done.active = [e for e, s in zip(epochs, sizes) if len(set(s)) > 1 or s != sizes[0]]
    if not done.active:
        rows_text = ", ".join(f"{m} {v:g}" for m, v in zip(names, sizes[0]))
        done.never = (
            f"DUS batch sizes never changed ({rows_text} rows per batch in every one of "
            f"{_plural(len(rows), 'epoch')})"
        )
    return done


def bss(run: Run) -> Activity:
    """BSS: pacing below 1; streamed reading flagged."""
    rows = [r for r in run.stats if r.get("pacing") is not None]
    epochs = [int(r["epoch"]) for r in rows]
    done = Activity("paced", epochs)
    if not rows:
        done.unknown = "no pacing in stats.jsonl"
        return done
    done.active = [e for e, r in zip(epochs, rows) if _stat(r, "pacing") < 1]
    if not done.active:
        done.never = "BSS pacing was 1 from the start (every id in every epoch)"
    if run.config.get("mode") == "streamed" and run.config.get("loader", "shards") == "shards":
        done.flag = (
            "read streamed: the plan's items were trained but not in its easy-to-hard order "
            "(run with --mode indexed for the curriculum's order)"
        )
    return done


def ogm(run: Run) -> Activity:
    """OGM-GE: some step's coefficient below 1."""
    names = run.modalities
    rows = [r for r in run.metrics if any(f"ogm/coeff/{m}" in r for m in names)]
    epochs = [int(r["epoch"]) for r in rows]
    done = Activity("scaled gradients", epochs)
    if not rows:
        done.unknown = "no ogm/coeff/<m> in metrics.jsonl"
        return done

    def acted(row: dict[str, object]) -> bool:
        for m in names:
            share = _stat(row, f"ogm/modulated/{m}")
            if share > 0 or (math.isnan(share) and _stat(row, f"ogm/coeff/{m}") < 1):
                return True
        return False

    done.active = [e for e, r in zip(epochs, rows) if acted(r)]
    if not done.active:
        done.never = "OGM-GE coefficients were 1 throughout (no gradient was scaled)"
    return done


def ogm_and_dus(run: Run) -> Activity:
    """OGM-GE with DUS: active when either acted."""
    parts = [ogm(run), dus(run)]
    known = [p for p in parts if not p.unknown]
    epochs = sorted({e for p in parts for e in p.epochs})
    done = Activity("OGM-GE or DUS acted", epochs)
    if not known:
        done.unknown = "; ".join(p.unknown for p in parts)
        return done
    done.active = sorted({e for p in known for e in p.active})
    if not done.active:
        done.never = "; ".join(p.never for p in known)
    done.flag = "; ".join(
        f"OGM-GE {epochs_text(p.active)}" if i == 0 else f"DUS {epochs_text(p.active)}"
        for i, p in enumerate(parts)
        if not p.unknown
    )
    return done


def remix(run: Run) -> Activity:
    """Data Remixing: past its warm-up (each sample then trains its assigned modality only)."""
    rows = [r for r in run.stats if r.get("warmup") is not None]
    epochs = [int(r["epoch"]) for r in rows]
    done = Activity("remixed", epochs)
    if not rows:
        done.unknown = "no warmup in stats.jsonl"
        return done
    done.active = [e for e, r in zip(epochs, rows) if _stat(r, "warmup") == 0]
    if not done.active:
        done.never = _still_warming(run, "Remix", "remix_warmup", len(rows))
    return done


ACTIVITY: dict[str, Callable[[Run], Activity]] = {
    "smv": smv,
    "smv-modality": smv,
    "dus": dus,
    "dus-rl": dus,
    "bss": bss,
    "bss-learned": bss,
    "ogmge": ogm,
    "ogmge+dus": ogm_and_dus,
    "remix": remix,
}
"""Method name -> the check of when it acted (see the module docstring)."""


def activity(run: Run) -> Activity | None:
    """When `run`'s method acted; None for the plain loader or a method without a check."""
    check = ACTIVITY.get(run.method)
    return None if check is None else check(run)
