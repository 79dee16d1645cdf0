"""The demo end to end at a tiny size (real clips -> shards -> 1 epoch per method -> report),
the reference loop under torchrun with two gloo ranks (equal steps, exact resume, no DDP
warning). The README's examples run in tests/test_readme.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import f1_score

from mmsample.report.markdown import ORDER
from mmsample.shards.format import Manifest

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--n",
    "20",
    "--samples-per-shard",
    "8",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--no-ceilings",
]


def env() -> dict[str, str]:
    """This checkout first on the path; the venv's scripts (mmsample, torchrun) on PATH."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [out.get("PYTHONPATH")])])
    out["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), out.get("PATH", "")])
    out["HF_HUB_OFFLINE"] = "1"
    out["OMP_NUM_THREADS"] = "1"
    return out


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.demo import main

    out = tmp_path_factory.mktemp("demo")
    assert main(["--out", str(out), *TINY, "--no-progress"]) == 0
    return out


def table(report: str, header: str) -> dict[str, dict[str, str]]:
    """The markdown table whose header row starts with `header`: first cell -> {column: cell}
    (rows keyed by their first cell; the stats table by "method seed"; the ceilings table by
    modality)."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    cols = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        row = dict(zip(cols, cells))
        key = row[cols[0]] + (f" {row['seed']}" if "seed" in row and "epoch" in row else "")
        rows[key] = row
    return rows


def test_demo_report_numbers_equal_the_logs(demo: Path) -> None:
    report = (demo / "report.md").read_text()
    head = table(report, "| method | seeds |")
    assert list(head) == list(ORDER)
    tests = Manifest.load(demo / "data" / "shards").split_counts()["test"]
    assert tests == 10  # 20 samples, 2 per class, 1 per class held out
    finals = {m: jsonl(demo / "seed0" / m / "metrics.jsonl")[-1] for m in ORDER}
    for method, row in head.items():
        runs = jsonl(demo / "seed0" / method / "metrics.jsonl")
        last = finals[method]
        assert len(runs) == 1 and last["epoch"] == 0 and last["method"] == method
        assert last["test/n"] == tests  # every held-out sample counted once
        assert row["seeds"] == "1"
        # one seed: the point value, then its bootstrap interval over the 10 test clips
        assert row["fused acc"].startswith(f"{last['test/acc']:.3f} [")
        assert row["macro-F1"] == f"{last['test/macro_f1']:.3f}"
        for m in ("audio", "video"):
            assert row[f"{m} alone"].startswith(f"{last[f'test/acc/{m}']:.3f} [")
        outcomes = jsonl(demo / "seed0" / method / "outcomes.jsonl")
        assert [o["epoch"] for o in outcomes] == [0] and len(outcomes[0]["ids"]) == tests
        fused = outcomes[0]["predictions"]["audio+video"]
        right = sum(p == y for p, y in zip(fused, outcomes[0]["labels"]))
        assert right / tests == pytest.approx(last["test/acc"])
    # the test set is decoded once per process: by the first run, reused by the others
    assert finals["plain"]["eval/decoded"] == tests
    assert all(finals[m]["eval/decoded"] == 0 for m in ORDER if m != "plain")
    assert "one clip = 10 points" in report
    n = len(ORDER)  # one 1-epoch run per method, one evaluation each, in one process
    assert f"- test set decoding: 10 clips decoded over {n} evaluations of {n} runs" in report
    # the methods' own numbers, through their stats() keys (SMV's `contribution/<m>` stat
    # shown as its train valuation: "contribution" names the test Shapley value only)
    stats = table(report, "| method | seed | epoch |")
    assert set(stats) == {f"{m} 0" for m in ORDER}
    checked = 0
    for key, row in stats.items():
        method = key.split()[0]
        logged = jsonl(demo / "seed0" / method / "stats.jsonl")[-1]
        for col, cell in row.items():
            if col in ("method", "seed", "epoch"):
                continue
            value = logged.get(col.replace("SMV train valuation/", "contribution/"))
            assert cell == ("" if value is None else f"{float(value):.3f}"), (method, col)
            checked += cell != ""
    assert checked >= 12
    dus = jsonl(demo / "seed0" / "dus" / "stats.jsonl")[-1]
    assert dus["items/audio"] == dus["batch_size/audio"] * dus["batches"]
    # one epoch: SMV (warm-up 1) and heuristic DUS cannot act, and the report says so
    assert (
        "never acted: SMV never passed its warm-up (1 epoch(s)) in 1 epoch" in head["smv"]["acted"]
    )
    assert head["dus"]["acted"].startswith("never acted: DUS batch sizes never changed")
    for name in ("accuracy", "contribution", "dus_batch_size", "bss_pacing", "smv_items"):
        png = demo / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({name}.png)" in report
    assert "throughput.png" in report
    # the active-learning demo is its own command, linked from the report (issue 9, item 3)
    assert "python -m pipelines.active_avmnist --data runs/avmnist --out runs/active" in report
    assert "](../active/plot.png)" in report


def test_ceilings_give_utilisation_from_a_tiny_real_demo(demo: Path, tmp_path: Path) -> None:
    """Plain, SMV (warm-up 2 of 2 epochs: never acts) and the two unimodal ceilings trained
    by the reference loop on the demo's clips; the report's utilisation equals
    (alone - 1/K) / (ceiling - 1/K) recomputed from the runs' metrics.jsonl."""
    from mmsample.report import write_report
    from pipelines.training import main

    common = ["--data", str(demo / "data" / "shards"), "--epochs", "2", "--batch-size", "4"]
    common += ["--smv-warmup", "2", "--no-progress"]
    runs = {
        "plain": ["--method", "plain"],
        "smv": ["--method", "smv"],
        "only-audio": ["--method", "plain", "--only", "audio"],
        "only-video": ["--method", "plain", "--only", "video"],
    }
    for name, argv in runs.items():
        assert main([*common, *argv, "--out", str(tmp_path / "seed0" / name)]) == 0
    report = write_report(tmp_path)[0].read_text()
    assert "not pooled" not in report and "2 unimodal ceiling run(s); K = 10 classes" in report
    head = table(report, "| method | seeds |")
    assert list(head) == ["plain", "smv"]  # the ceilings are not methods
    last = {n: jsonl(tmp_path / "seed0" / n / "metrics.jsonl")[-1] for n in runs}
    chance = (
        1 / json.loads((tmp_path / "seed0" / "plain" / "config.json").read_text())["num_classes"]
    )
    for method in ("plain", "smv"):
        for m in ("audio", "video"):
            ceiling = last[f"only-{m}"]["test/acc"]
            cell = head[method][f"{m} utilisation"]
            if ceiling <= chance:  # tiny runs may stay at chance: then no ratio, said so
                assert cell == "undefined (ceiling not above chance)"
                continue
            u = (last[method][f"test/acc/{m}"] - chance) / (ceiling - chance)
            assert cell.startswith(f"{u:.2f}"), (method, m, cell)
            raw = last[method][f"test/acc/{m}"] / ceiling
            assert cell.endswith(f"(raw {raw:.2f})") or "no interval" in cell, cell
    ceilings = table(report, "| modality | seed |")
    assert ceilings["audio"]["ceiling acc"] == f"{last['only-audio']['test/acc']:.3f}"
    assert (
        "never acted: SMV never passed its warm-up (2 epoch(s)) in 2 epochs" in head["smv"]["acted"]
    )
    # the whole run's wall time: the sum of each epoch's time/wall_s
    cost = table(report, "| method | Shapley")
    wall = sum(r["time/wall_s"] for r in jsonl(tmp_path / "seed0" / "plain" / "metrics.jsonl"))
    assert cost["plain"]["wall s"] == f"{wall:.1f}"


def test_a_second_demo_reuses_finished_runs(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.demo import main

    before = {p: p.read_bytes() for p in demo.glob("seed0/*/metrics.jsonl")}
    capsys.readouterr()
    assert main(["--out", str(demo), *TINY, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"0 of {len(ORDER)} runs trained now ({len(ORDER)} reused)" in out
    assert out.startswith("decoder: ")  # which decoder runs, before any run (issue 16, item 7)
    assert f"report: {demo / 'report.md'}" in out and "| plain | 1 |" in out
    assert {p: p.read_bytes() for p in before} == before


def torchrun(data: Path, out: Path, method: str, *extra: str) -> str:
    """Run the reference loop on two gloo ranks; its stderr. Every run is checked for DDP's
    per-rank find_unused_parameters warning (gone: every parameter takes part in every step)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "pipelines.train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--method",
        method,
        "--epochs",
        "2",
        "--batch-size",
        "3",  # DUS: 4 batches of 3 rows per modality over 10 ids, so 2 ids repeat
        "--trace",
        "--checkpoint-every",
        "1",
        "--no-progress",
        *extra,
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "find_unused_parameters" not in done.stderr
    return done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("method", "kind"), [("bss", "drops"), ("dus", "repeats")])
def test_torchrun_two_ranks_equal_steps_and_exact_resume(
    demo: Path, tmp_path: Path, method: str, kind: str
) -> None:
    data = demo / "data" / "shards"
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    torchrun(data, whole, method)
    stats = jsonl(whole / "stats.jsonl")
    ids = stats[0]["ids"]
    if kind == "drops":
        assert stats[0]["items"] < ids
    else:
        assert stats[0]["items/audio"] > ids and stats[0]["items/video"] > ids
    traces = [jsonl(whole / f"trace-{r}.jsonl") for r in (0, 1)]
    for epoch in (0, 1):
        steps = [len([t for t in tr if t["epoch"] == epoch]) for tr in traces]
        assert steps[0] == steps[1] > 0
    # every test sample counted once over the two ranks
    metrics = jsonl(whole / "metrics.jsonl")
    assert [m["test/n"] for m in metrics] == [10.0, 10.0]
    # per-clip outcomes gathered from both ranks: every test clip once, ordered by id (the
    # ids the one-process demo evaluated), and the logged metrics follow from them
    single = jsonl(demo / "seed0" / "plain" / "outcomes.jsonl")[0]["ids"]
    for record, m in zip(jsonl(whole / "outcomes.jsonl"), metrics, strict=True):
        assert record["epoch"] == m["epoch"] and record["ids"] == sorted(single)
        fused, labels = record["predictions"]["audio+video"], record["labels"]
        assert m["test/acc"] == pytest.approx(sum(map(int.__eq__, fused, labels)) / 10)
        assert m["test/macro_f1"] == pytest.approx(f1_score(labels, fused, average="macro"))
    # stop one step into epoch 1 (right after its checkpoint), then rerun to resume
    first = len([t for t in traces[0] if t["epoch"] == 0]) + 1
    torchrun(data, cut, method, "--stop-after", str(first))
    assert not (cut / "done.json").exists()
    assert [len(jsonl(cut / f"trace-{r}.jsonl")) for r in (0, 1)] == [first, first]
    torchrun(data, cut, method)
    assert (cut / "done.json").exists()
    for r in (0, 1):
        assert jsonl(cut / f"trace-{r}.jsonl") == traces[r]
    assert jsonl(cut / "stats.jsonl") == stats
    resumed, straight = jsonl(cut / "metrics.jsonl"), jsonl(whole / "metrics.jsonl")
    assert [m["test/acc"] for m in resumed] == [m["test/acc"] for m in straight]
    assert jsonl(cut / "outcomes.jsonl") == jsonl(whole / "outcomes.jsonl")


@pytest.mark.slow
def test_torchrun_with_a_modality_left_out_needs_no_unused_parameter_search(
    demo: Path, tmp_path: Path
) -> None:
    """`--only audio` (a unimodal baseline) never runs the video encoder, nor decodes video:
    DDP (find_unused_parameters=False) would stop at the next step if a parameter got no
    gradient on a rank; the run ends, and no rank warns."""
    torchrun(demo / "data" / "shards", tmp_path, "plain", "--only", "audio")
    assert (tmp_path / "done.json").exists()
    assert [m["epoch"] for m in jsonl(tmp_path / "metrics.jsonl")] == [0, 1]


# ---- the reference loop around a plain DataLoader -------------------------------------
@pytest.mark.parametrize("method", ["bss", "smv"])
def test_wrap_around_a_plain_dataloader_trains_the_plan(
    demo: Path, tmp_path: Path, method: str
) -> None:
    from pipelines.training import main

    argv = ["--data", str(demo / "data" / "shards"), "--out", str(tmp_path), "--method", method]
    assert (
        main([*argv, "--loader", "wrap", "--epochs", "2", "--batch-size", "3", "--no-progress"])
        == 0
    )
    stats, metrics = jsonl(tmp_path / "stats.jsonl"), jsonl(tmp_path / "metrics.jsonl")
    assert [s["epoch"] for s in stats] == [m["epoch"] for m in metrics] == [0, 1]
    for s, m in zip(stats, metrics):
        assert m["train/items"] == s["items"]  # the loop trained exactly the plan's items
        assert s["ids"] == 10 and m["test/n"] == 10
    if method == "bss":
        assert stats[0]["items"] < 10 and stats[0]["pacing"] < 1  # BSS's curriculum drops


def test_resume_between_epochs_continues_the_same_batches(demo: Path, tmp_path: Path) -> None:
    from pipelines.training import main

    data = ["--data", str(demo / "data" / "shards"), "--method", "smv", "--loader", "wrap"]
    common = [*data, "--batch-size", "3", "--trace", "--no-progress"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main([*common, "--out", str(whole), "--epochs", "2"]) == 0
    assert main([*common, "--out", str(cut), "--epochs", "1"]) == 0  # ends after epoch 0
    assert main([*common, "--out", str(cut), "--epochs", "2"]) == 0  # resumes at epoch 1
    assert jsonl(cut / "trace-0.jsonl") == jsonl(whole / "trace-0.jsonl")
    assert jsonl(cut / "stats.jsonl") == jsonl(whole / "stats.jsonl")
    assert jsonl(whole / "stats.jsonl")[1]["items"] > 10  # SMV repeats items in epoch 1


def test_a_unimodal_baseline_decodes_only_its_modality(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--only audio` is the ceiling run of the demo's report: its training reader decodes audio
    alone, the model keeps both encoders (video's features are zero), and a balancing method
    with `--only` is refused naming the flag."""
    from pipelines.training import main
    from pipelines.training.options import parse_args
    from pipelines.training.runner import Run

    data = ["--data", str(demo / "data" / "shards"), "--batch-size", "3", "--no-progress"]
    run = Run(parse_args([*data, "--out", str(tmp_path / "a"), "--only", "audio"]))
    batch = next(iter(run.loader))
    assert batch.names == ("audio",) and "video" not in batch
    assert run.names == ["audio", "video"] and run.test is not None
    assert "video" in run.test.get(int(run.test.table.ids[0]))  # the test set is every run's
    _loss, _right, full = run.train_step(batch)
    assert full == len(batch)  # every row carries every modality the run reads
    with pytest.raises(SystemExit) as stop:
        main([*data, "--out", str(tmp_path / "b"), "--only", "audio", "--method", "smv"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--only audio" in err and "--method plain" in err


@pytest.mark.parametrize("loader", ["shards", "wrap"])
def test_bss_scoring_pass_runs_in_eval_mode(demo: Path, tmp_path: Path, loader: str) -> None:
    """BSS's scoring pass is inference: the model is in eval mode during it (BatchNorm's running
    statistics untouched, no dropout) and back in training mode after."""
    from pipelines.training.options import parse_args
    from pipelines.training.runner import Run

    argv = ["--data", str(demo / "data" / "shards"), "--out", str(tmp_path), "--method", "bss"]
    run = Run(parse_args([*argv, "--loader", loader, "--batch-size", "3", "--no-progress"]))
    modes: list[bool] = []
    run.model.encoders["audio"].register_forward_pre_hook(lambda m, _: modes.append(m.training))
    run.model.train()
    run.loader.set_epoch(0)  # BSS ranks every id before its first epoch
    assert modes and not any(modes)
    assert run.model.training


def test_the_test_set_is_kept_once_decoded_or_said_when_too_large(demo: Path) -> None:
    """A kept test set is decoded once (then 0 clips) and equals a fresh decode; one over the
    memory limit is decoded at every evaluation, and a warning says so once."""
    import warnings

    import torch

    from mmsample.errors import MmsampleWarning
    from mmsample.shards.indexed import IndexedDataset
    from pipelines.models import small
    from pipelines.training.test_set import TestSets, test_key

    data = demo / "data" / "shards"
    specs = small(10).modalities
    reader = IndexedDataset(data, specs, split="test")
    key = test_key(data, "test", specs, 4)
    kept = TestSets()
    first, decoded = kept.batches(reader, key, 0)
    again, reused = kept.batches(reader, key, 0)
    assert (decoded, reused, len(first)) == (10, 0, 3) and again is first
    small_limit = TestSets(limit_bytes=0)
    with pytest.warns(MmsampleWarning, match="decoded again at every evaluation"):
        fresh, n1 = small_limit.batches(reader, key, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, n2 = small_limit.batches(reader, key, 0)
    assert n1 == n2 == 10
    for a, b in zip(first, fresh, strict=True):
        assert torch.equal(a.ids, b.ids) and torch.equal(a.labels, b.labels)
        for m in ("audio", "video"):
            assert torch.equal(a[m], b[m])
