"""Every runnable block of README.md runs as written (issue 17, item 5), in a folder holding
tiny stand-ins for what the README calls the user's own: the demo data `make demo` builds
(`runs/demo/data`), a clip table (`clips.csv`: mp4 with an audio track, a caption), a text table
with a split column (`table.csv`), a tokenizer folder (`tok/`), an active-learning pool
(`pool/shards`), a model module (`mypkg.models:build`) and a first round's ids (`round1.json`).
Blocks run in README order, so a later block reads what an earlier one wrote (`shards/`,
`round2.json`). Only the full demo and the torchrun command stay syntax-only."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmsample.demo.avmnist import build_avmnist
from mmsample.testing import make_tokenizer, tiny_sample_fields

from .loader_helpers import write_dataset
from .test_demo import env

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(
    r"(?:<!-- readme: (?P<mark>[^>]*)-->\n)?```(?P<lang>sh|python)\n(?P<body>.*?)```", re.S
)
# the only blocks that may stay syntax-only: the full demo (minutes) and torchrun (two processes;
# tests/test_demo.py runs both at a tiny size)
SYNTAX_ONLY = ("make demo", "torchrun")


def readme_blocks() -> list[tuple[str, str, str]]:
    """(language, marker or "", body) of every sh / python block of README.md."""
    text = (REPO / "README.md").read_text()
    return [(m["lang"], (m["mark"] or "").strip(), m["body"]) for m in FENCE.finditer(text)]


def write_stand_ins(root: Path) -> None:
    """The files the README's blocks name as the user's own, tiny and real."""
    build_avmnist(
        root / "runs" / "demo" / "data", n=20, samples_per_shard=8, workers=0, test_fraction=0.2
    )
    (root / "clips").mkdir()
    rows = []
    for i in range(6):
        (root / "clips" / f"{i}.mp4").write_bytes(tiny_sample_fields(i, ["mp4"])["mp4"])
        rows.append([f"c{i}", "cat" if i % 2 else "dog", f"clips/{i}.mp4", f"clip {i} of a dog"])
    with open(root / "clips.csv", "w", newline="") as f:
        csv.writer(f).writerows([["key", "label", "mp4", "txt"], *rows])
    with open(root / "table.csv", "w", newline="") as f:
        texts = [
            [f"t{i}", i % 3, "test" if i % 4 == 0 else "train", f"a text {i}"] for i in range(8)
        ]
        csv.writer(f).writerows([["key", "label", "split", "text"], *texts])
    make_tokenizer(root / "tok")
    write_dataset(root / "pool" / "shards")
    (root / "mypkg").mkdir()
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "models.py").write_text("from tests.active_model import build  # noqa\n")
    (root / "round1.json").write_text("[0, 1, 2, 3]")
    if (REPO / "examples").is_dir():
        shutil.copytree(REPO / "examples", root / "examples")


def test_readme_blocks_are_runnable_but_the_full_demo_and_torchrun() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 10
    for _, mark, body in blocks:
        if mark.startswith("syntax-only"):
            assert any(s in body for s in SYNTAX_ONLY), f"a syntax-only block must run:\n{body}"
            assert len(mark) > len("syntax-only") + 3, "say why a block cannot run here"


@pytest.mark.slow
def test_readme_examples_run_as_written(tmp_path: Path) -> None:
    write_stand_ins(tmp_path)
    ran = 0
    for lang, mark, body in readme_blocks():
        if lang == "sh":
            check = subprocess.run(["bash", "-n"], input=body, text=True, capture_output=True)
            assert check.returncode == 0, (body, check.stderr)
        else:
            compile(body, "README.md", "exec")
        if mark.startswith("syntax-only"):
            continue
        cmd = (
            ["bash", "-euo", "pipefail", "-c", body]
            if lang == "sh"
            else [sys.executable, "-c", body]
        )
        done = subprocess.run(
            cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, (body, done.stdout[-2000:], done.stderr[-3000:])
        ran += 1
    assert ran >= 10
    assert (tmp_path / "round2.json").exists() and (tmp_path / "labeled").is_dir()
