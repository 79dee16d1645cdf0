"""Balance your own loop: examples/own_loop_balanced.py differs from own_loop_plain.py by at most
8 lines (difflib.ndiff's count), works with every method by changing only the method's
constructor, and each method acts on the batches the loop trains on."""

from __future__ import annotations

import ast
import difflib
import re
import types
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

import mmsample
import mmsample.loader
from mmsample.balancer import balancer as balancer_module
from mmsample.errors import ShortRunWarning

ROOT = Path(__file__).resolve().parents[1]
PLAIN = ROOT / "examples" / "own_loop_plain.py"
BALANCED = ROOT / "examples" / "own_loop_balanced.py"
SHOWN = 'mmsample.methods.SMV(level="sample", warmup=1)'  # the constructor the example shows
N, BATCH = 48, 8


def changed_lines(a: str, b: str) -> list[str]:
    """ndiff's "+ " and "- " lines (a replaced line counts twice)."""
    diff = difflib.ndiff(a.splitlines(), b.splitlines())
    return [line for line in diff if line.startswith(("+ ", "- "))]


def readme_diff() -> str:
    """The ```diff block of the README's "Balance your own loop" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Balance your own loop", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```diff\n(.*?)```", section, re.S)
    assert match, "the README's 'Balance your own loop' section has no ```diff block"
    return match.group(1)


def load(path: Path, source: str | None = None, **names: Any) -> types.ModuleType:
    module = types.ModuleType(path.stem)
    module.__dict__.update(names, __file__=str(path))
    exec(compile(source or path.read_text(), str(path), "exec"), module.__dict__)
    return module


def test_the_balanced_loop_is_at_most_8_lines_from_the_plain_one() -> None:
    plain, balanced = PLAIN.read_text(), BALANCED.read_text()
    changed = changed_lines(plain, balanced)
    assert 0 < len(changed) <= 8, "\n".join(changed)
    assert SHOWN in balanced
    # the plain loop is an ordinary one: nothing of mmsample, one statement per line
    tree = ast.parse(plain)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m.split(".")[0] == "mmsample" for m in imported) and "mmsample" not in plain
    starts = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.stmt)]
    assert len(starts) == len(set(starts))  # no two statements on one line
    # the README's own-loop section is exactly this diff
    shown = [line.rstrip() for line in readme_diff().splitlines() if line[:1] in "+-"]
    assert sorted(shown) == sorted(f"{c[0]}{c[2:]}".rstrip() for c in changed)
    context = [line[1:] for line in readme_diff().splitlines() if line[:1] == " "]
    both = set(plain.splitlines()) & set(balanced.splitlines())
    assert all(line in both for line in context if line.strip() != "...")


def test_mmsample_wrap_is_the_loader_wrap() -> None:
    assert mmsample.wrap is mmsample.loader.wrap
    assert mmsample.Balancer is balancer_module.Balancer


def test_the_plain_loop_runs() -> None:
    model = load(PLAIN).main(epochs=2, n=N, batch_size=BATCH)
    assert isinstance(model, torch.nn.Module)


# each method's constructor (what a user changes) and what it must have done to the batches
METHODS = {
    "dus": "mmsample.methods.DUS(epochs=3)",
    "dus-rl": 'mmsample.methods.DUS(policy="rl")',
    "bss": "mmsample.methods.BSS(lambda0=0.5, t_grow=1)",  # the whole set by the last epoch
    "bss-learned": 'mmsample.methods.BSS(scheduler="learned", interval=1)',
    "smv": SHOWN,
    "smv-modality": 'mmsample.methods.SMV(level="modality", warmup=1, fraction=0.5)',
    "ogmge": "mmsample.methods.OGMGE(alpha=0.5)",
    "remix": "mmsample.methods.Remix(warmup=1)",  # the Balancer's scoring pass each epoch
}


def run_balanced(constructor: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[dict]]:
    """The balanced example with `constructor` in place of the shown one, 2 epochs; returns the
    method and what each step trained on (epoch, ids, modality masks)."""
    steps: list[dict] = []
    own_loss = balancer_module.Balancer.loss

    def recording(self: Any, batch: Any, criterion: Any = None) -> torch.Tensor:
        steps.append(
            {"epoch": self.loader.epoch, "ids": batch.ids.tolist(), "mask": batch.mask.tolist()}
        )
        return own_loss(self, batch, criterion)

    monkeypatch.setattr(balancer_module.Balancer, "loss", recording)
    method = eval(constructor, {"mmsample": mmsample})
    source = BALANCED.read_text().replace(SHOWN, "METHOD")
    assert source != BALANCED.read_text()
    load(BALANCED, source, METHOD=method).main(epochs=2, n=N, batch_size=BATCH)
    return method, steps


def epoch_items(steps: list[dict], epoch: int) -> list[tuple[int, int]]:
    return [x for s in steps if s["epoch"] == epoch for x in zip(s["ids"], s["mask"])]


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_acts_in_the_balanced_loop(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        method, steps = run_balanced(METHODS[name], monkeypatch)
    short = [w for w in caught if issubclass(w.category, ShortRunWarning)]
    # DUS(epochs=3) in a 2-epoch run acts but says its schedule outlasts the run
    assert bool(short) == (name == "dus"), [str(w.message) for w in short]
    first, second = epoch_items(steps, 0), epoch_items(steps, 1)
    assert first and second and {s["epoch"] for s in steps} == {0, 1}
    if name in ("dus", "dus-rl"):  # sizes changed: rows carrying each modality per batch
        audio = [[sum(m & 1 for m in s["mask"]) for s in steps if s["epoch"] == e] for e in (0, 1)]
        video = [
            [sum(m >> 1 & 1 for m in s["mask"]) for s in steps if s["epoch"] == e] for e in (0, 1)
        ]
        assert (audio[0][0], video[0][0]) != (audio[1][0], video[1][0])
        assert method.batch_sizes(1) == {"audio": audio[1][0], "video": video[1][0]}
    elif name == "bss":  # order changed: the curriculum's order and subset, not the dataset's
        ids = [i for i, _ in first]
        assert len(ids) == N // 2 and ids == method.plan(0).order().tolist()
        assert ids != sorted(ids)
    elif name == "bss-learned":  # items re-sampled: drawn with replacement
        counts = Counter(i for i, _ in second)
        assert len(second) == N and max(counts.values()) > 1
    elif name == "remix":  # one modality per sample after warm-up, one modality per batch
        assert len(first) == N and all(m == 3 for _, m in first)
        assert sorted(i for i, _ in second) == list(range(N))
        assert all(len(set(s["mask"])) == 1 for s in steps if s["epoch"] == 1)
        assigned = {i: m for i, m in second}
        assert [assigned[i] for i in range(N)] == method.plan(1).masks.tolist()
    elif name.startswith("smv"):  # items re-sampled: single-modality extra items after warm-up
        assert len(first) == N and all(m == 3 for _, m in first)
        assert len(second) > N and any(m in (1, 2) for _, m in second)
    else:  # OGM-GE: the dominant encoder's gradients scaled down
        assert len(first) == len(second) == N
        assert min(float(c) for c in method.coefficients.values()) < 1
        assert method.names == ["audio", "video"]
