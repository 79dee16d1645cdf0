"""The command lines as people expect them (issue 17, item 6): `mmsample --help` lists every
command on whole lines and imports no torch; every option of `mmsample`, `pipelines.train` and
`pipelines.avmnist` has help text; errors name the flag; `mmsample query --split` picks the
dataset split and a budget over the pool is refused before any scoring; `pipelines.avmnist`
builds a train/test split by default; `--no-progress` keeps the metrics line."""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmsample.active.rounds import RoundState
from mmsample.cli import COMMANDS, DESCRIPTION, STRATEGY_NAMES, build_parser, main, name_the_flags
from mmsample.shards.format import Manifest
from mmsample.testing import encode_npy, encode_wav, write_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchcodec", "av")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def words(text: str) -> str:
    return " ".join(text.split())


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_help_lists_every_command_on_a_whole_line() -> None:
    done = run("-m", "mmsample", "--help")
    assert done.returncode == 0, done.stderr
    out = words(done.stdout)
    assert words(DESCRIPTION) in out and DESCRIPTION.endswith(".")
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in action._choices_actions}
    assert set(helps) == set(COMMANDS) == set(subparsers(build_parser()))
    for name, text in helps.items():
        assert text and f"{name} {words(text)}" in out, name  # the whole line, not cut


def test_the_command_line_imports_no_torch() -> None:
    """`mmsample --help` prints in a fraction of a second because it imports no heavy module:
    checked on the console entry (`-X importtime` lists every import) and on the module."""
    done = run("-X", "importtime", "-m", "mmsample", "--help")
    assert done.returncode == 0 and "usage: mmsample" in done.stdout
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "mmsample.cli" in imported
    assert not {m for m in imported if m.split(".")[0] in HEAVY}
    code = (
        "import sys, mmsample.cli as c; c.build_parser().format_help(); "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = run("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def the_parsers() -> dict[str, argparse.ArgumentParser]:
    from pipelines.avmnist import build_parser as avmnist_parser
    from pipelines.training import build_parser as train_parser

    parsers = {f"mmsample {n}": p for n, p in subparsers(build_parser()).items()}
    parsers["python -m pipelines.train"] = train_parser()
    parsers["python -m pipelines.avmnist"] = avmnist_parser()
    return parsers


@pytest.mark.parametrize("command", sorted(the_parsers()))
def test_every_option_has_help_text(command: str) -> None:
    parser = the_parsers()[command]
    options = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    assert options
    missing = [a.option_strings or [a.dest] for a in options if not (a.help or "").strip()]
    assert not missing, f"{command}: options without help: {missing}"


def test_the_help_names_the_library_values() -> None:
    """Help texts name library constants without importing them; they must stay equal."""
    from mmsample.active import STRATEGIES
    from mmsample.cli_shard import DEFAULT_MAX_PIXELS, SKIPPED_REPORT
    from mmsample.decoding.image_header import DEFAULT_MAX_PIXELS as LIBRARY_MAX_PIXELS
    from mmsample.sharding.table import SKIPPED_REPORT as LIBRARY_SKIPPED

    assert tuple(sorted(STRATEGIES)) == STRATEGY_NAMES
    assert (DEFAULT_MAX_PIXELS, SKIPPED_REPORT) == (LIBRARY_MAX_PIXELS, LIBRARY_SKIPPED)


def test_a_library_error_is_printed_with_its_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "t.csv").write_text("key,label,npy\nk0,x,a.npy\n")
    (tmp_path / "a.npy").write_bytes(encode_npy(np.zeros(3, np.float32)))
    argv = ["shard", str(tmp_path / "t.csv"), str(tmp_path / "out"), "--max-pixels", "-1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("mmsample shard: error: --max-pixels: The 'max_pixels' parameter")
    usage = subparsers(build_parser())["shard"].format_usage()
    message = "The 'samples_per_shard' parameter of shard_dataset must be >= 1; got 0."
    assert name_the_flags(message, usage) == f"--samples-per-shard: {message}"
    # a parameter with no flag of that name (a positional, or another command's) is left alone
    for other in ("The 'input' parameter must be an existing file", "The 'budget' argument"):
        assert name_the_flags(other, usage) == other
    assert name_the_flags("The 'part' parameter", usage) == "--part: The 'part' parameter"


# ---- mmsample query: the dataset split and the budget ------------------------------------


@pytest.fixture(scope="module")
def split_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten samples (0.25 s wav + 8-float npy, what tests.active_model decodes), ids 0-6 in
    "train" and 7-9 in "test", sharded by `mmsample shard`."""
    src = tmp_path_factory.mktemp("splitpool")
    rows = []
    for i in range(10):
        tone = 0.3 * np.sin(2 * np.pi * (200 + 30 * i) * np.arange(4000) / 16000)
        (src / f"{i}.wav").write_bytes(encode_wav(tone))
        (src / f"{i}.npy").write_bytes(encode_npy(np.arange(8, dtype=np.float32) * (i + 1)))
        split = "train" if i < 7 else "test"
        rows.append([f"s{i}", "abc"[i % 3], split, f"{i}.wav", f"{i}.npy"])
    with open(src / "pool.csv", "w", newline="") as f:
        csv.writer(f).writerows([["key", "label", "split", "wav", "npy"], *rows])
    out = src / "shards"
    argv = ["shard", str(src / "pool.csv"), str(out), "--workers", "1", "--quiet"]
    assert main(argv) == 0
    assert Manifest.load(out).split_counts() == {"test": 3, "train": 7}
    return out


def query(pool: Path, out: Path, *extra: str) -> int:
    argv = ["query", str(pool), "--model", "tests.active_model:build", "--out", str(out)]
    return main([*argv, "--quiet", *extra])


def test_query_pools_the_train_split_unless_told(split_pool: Path, tmp_path: Path) -> None:
    assert query(split_pool, tmp_path / "r1.json", "--budget", "5") == 0
    picked = RoundState.load(tmp_path / "r1.json").rounds[0]
    assert len(picked) == 5 and set(picked) <= set(range(7))  # never a test sample
    assert query(split_pool, tmp_path / "r2.json", "--budget", "3", "--split", "test") == 0
    assert sorted(RoundState.load(tmp_path / "r2.json").rounds[0]) == [7, 8, 9]
    # --parts is the pool splitting; the state file's `split` field counts the parts
    assert query(split_pool, tmp_path / "r3.json", "--budget", "4", "--parts", "2") == 0
    state = RoundState.load(tmp_path / "r3.json")
    assert state.split == 2 and set(state.rounds[0]) <= set(range(7))


def test_query_refuses_a_budget_over_the_pool_before_scoring(
    split_pool: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import mmsample.active.command as command

    def no_pass(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the pool pass ran")

    monkeypatch.setattr(command, "pool_pass", no_pass)
    assert query(split_pool, tmp_path / "x.json", "--budget", "8") == 1
    err = capsys.readouterr().err
    assert "mmsample query: error: --budget is 8 but only 7 of the pool's 7 samples" in err
    assert "(split 'train')" in err and "the pool pass ran" not in err
    (tmp_path / "labeled.json").write_text("[0, 1, 8]")
    labeled = ["--labeled", str(tmp_path / "labeled.json")]
    assert query(split_pool, tmp_path / "x.json", "--budget", "6", *labeled) == 1
    assert "--budget is 6 but only 5 of the pool's 7 samples" in capsys.readouterr().err
    assert query(split_pool, tmp_path / "x.json", "--budget", "1", "--split", "val") == 1
    err = capsys.readouterr().err
    assert "--split 'val': the shards have the splits ['test', 'train']" in err
    assert not (tmp_path / "x.json").exists()


# ---- the pipelines: a test split by default, errors by flag, the metrics line --------------


@pytest.fixture(scope="module")
def avmnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.avmnist import main as build

    out = tmp_path_factory.mktemp("avmnist")
    assert (
        build(["--out", str(out), "--n", "20", "--samples-per-shard", "8", "--workers", "0"]) == 0
    )
    return out / "shards"


def test_avmnist_builds_a_train_test_split_by_default(avmnist: Path) -> None:
    from pipelines.avmnist import build_parser as avmnist_parser

    assert avmnist_parser().parse_args([]).test_fraction > 0
    assert Manifest.load(avmnist).split_counts() == {"test": 10, "train": 10}


def test_avmnist_errors_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.avmnist import main as build

    for flag, value in (("--n", "0"), ("--test-fraction", "1")):
        with pytest.raises(SystemExit) as caught:
            build(["--out", str(tmp_path), flag, value])
        assert caught.value.code == 2
        name = flag[2:].replace("-", "_")
        assert f"error: {flag}: The '{name}' parameter" in capsys.readouterr().err


def test_no_progress_keeps_the_metrics_line(
    avmnist: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mmsample.decoding.backends import diagnosis
    from pipelines.training import main as train

    monkeypatch.setattr(diagnosis, "_ANNOUNCED", set())  # as in a new process: said once
    argv = ["--data", str(avmnist), "--out", str(tmp_path), "--epochs", "1", "--batch-size", "4"]
    assert train([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "[plain] epoch 0: {" in out and "'test/acc': " in out and "'train/loss': " in out
    assert "decoder: " in out.splitlines()[0]  # the decoder per modality, first (issue 16, item 7)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["decoder"] == out.splitlines()[0]  # and in the run's config, for the report
    assert train([*argv, "--no-progress", "--out", str(tmp_path / "again")]) == 0
    assert "decoder: " not in capsys.readouterr().out  # a second run in one process: not again


def test_train_names_the_split_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Shards without a split column: the default --train-split / --test-split are refused by
    their flags, with the fix, before any reading."""
    from pipelines.training import main as train

    write_tiny_dataset(tmp_path / "shards", n=6, fields=("mp4",))
    argv = ["--data", str(tmp_path / "shards"), "--out", str(tmp_path / "run")]
    for extra, flag in (([], "--train-split 'train'"), (["--train-split", ""], "--test-split")):
        with pytest.raises(SystemExit) as caught:
            train([*argv, *extra])
        assert caught.value.code == 2
        err = capsys.readouterr().err
        assert f"error: {flag}" in err and "it has no split column" in err
        assert "The 'split' parameter" not in err
    with pytest.raises(SystemExit):
        train([*argv, "--dus-beta", "2"])
    assert "argument --dus-beta: must be > 0 and <= 1" in capsys.readouterr().err
