"""`mmsample report` over hand-written run logs: several seeds (what `make demo SEEDS=3`
writes) with unimodal ceilings, checked against t intervals, utilisations and paired
differences worked out by hand; unlike runs reported apart; the run format's version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmsample.report import write_report

# method -> fused test accuracy of seeds 0, 1, 2 (last epoch)
ACC = {
    "plain": (0.70, 0.75, 0.80),
    "smv": (0.95, 0.96, 0.97),
    "dus": (0.76, 0.78, 0.80),
    "bss": (0.60, 0.65, 0.70),
}
# test Shapley contributions of audio / video per seed (the same for every method)
AUDIO = (0.2, 0.3, 0.4)
VIDEO = (0.5, 0.4, 0.6)


def write_run(folder: Path, method: str, seed: int, **settings: object) -> None:
    folder.mkdir(parents=True)
    config = {"method": method, "seed": seed, **settings}
    (folder / "config.json").write_text(json.dumps(config))
    epochs = []
    for epoch in (0, 1):
        last = epoch == 1
        epochs.append(
            {
                "epoch": epoch,
                "test/acc": ACC[method][seed] if last else 0.1,  # only the last epoch counts
                "test/acc/audio": 0.5 if last else 0.1,
                "test/acc/video": 0.6 if last else 0.1,
                "test/contribution/audio": AUDIO[seed] if last else 0.0,
                "test/contribution/video": VIDEO[seed] if last else 0.0,
                "train/items": 10.0,
                "time/epoch_s": 2.0,
                "time/eval_s": 0.5,
                "throughput/items_per_s": 100.0 + 10 * seed + 20 * epoch,
            }
        )
    lines = [json.dumps(e) for e in reversed(epochs)]  # order on disk does not matter
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "stats.jsonl").write_text(json.dumps({"epoch": 1, "ids": 10, "items": 10}) + "\n")


def write_ceiling(folder: Path, modality: str, seed: int, acc: float, **settings: object) -> None:
    """A unimodal ceiling run: plain, only [modality], test accuracy `acc` in its last epoch."""
    folder.mkdir(parents=True)
    config = {"method": "plain", "seed": seed, "only": [modality], **settings}
    (folder / "config.json").write_text(json.dumps(config))
    rows = [{"epoch": e, "test/acc": acc if e == 1 else 0.1} for e in (0, 1)]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def row(table: list[str], method: str) -> list[str]:
    """The cells of `method`'s row of a markdown table."""
    line = next(x for x in table if x.startswith(f"| {method} |"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_several_seeds_give_t_intervals_and_words_from_paired_differences(
    tmp_path: Path,
) -> None:
    for method in ACC:
        for seed in range(3):
            write_run(tmp_path / f"seed{seed}" / method, method, seed, num_classes=10)
    for seed in range(3):
        write_ceiling(tmp_path / f"seed{seed}" / "only-audio", "audio", seed, 0.55, num_classes=10)
        write_ceiling(tmp_path / f"seed{seed}" / "only-video", "video", seed, 0.82, num_classes=10)
    report_path, table = write_report(tmp_path)
    report = report_path.read_text()
    assert "not pooled" not in report  # the ceilings join the runs they bound
    assert [r.split(" | ")[0].lstrip("| ") for r in table[2:]] == ["plain", "dus", "bss", "smv"]
    # plain 0.70, 0.75, 0.80: mean 0.75, sd 0.05, t(0.975, 2 df) = 4.303: 0.75 ± 0.124
    # utilisation audio (0.5 - 0.1) / (0.55 - 0.1) = 0.889, raw 0.5 / 0.55 = 0.91; video
    # (0.6 - 0.1) / (0.82 - 0.1) = 0.694, raw 0.73; equal over seeds: a zero-width interval
    assert row(table, "plain")[:8] == [
        "plain",
        "3",
        "0.750 [0.626, 0.874]",
        "n/a",
        "0.500 [0.500, 0.500]",
        "0.89 [0.89, 0.89] (raw 0.91)",
        "0.600 [0.600, 0.600]",
        "0.69 [0.69, 0.69] (raw 0.73)",
    ]
    # smv 0.95, 0.96, 0.97: sd 0.01 -> ± 0.025
    assert row(table, "smv")[2] == "0.960 [0.935, 0.985]"
    # paired per seed: smv - plain = 0.25, 0.21, 0.17 (mean 0.21, sd 0.04: ± 0.099);
    # dus - plain = 0.06, 0.03, 0.00 (mean 0.03, sd 0.03: ± 0.075); bss - plain = -0.1 each
    assert (
        "- smv: fused accuracy: above plain (the 95% interval of the difference, "
        "[+0.111, +0.309], excludes 0)" in report
    )
    assert (
        "- dus: fused accuracy: no detectable difference at this size ([-0.045, +0.105]" in report
    )
    assert (
        "- bss: fused accuracy: below plain (the 95% interval of the difference, [-0.100" in report
    )
    assert "did not beat" not in report and "**" not in report  # no bold verdicts
    # Shapley on the test set: audio 0.2, 0.3, 0.4 -> 0.300 ± 0.248; items 2 x 10; wall 2 x 2.5 s
    lines = report.splitlines()
    cost = lines[lines.index(next(x for x in lines if x.startswith("| method | Shapley"))) :]
    assert row(cost, "plain")[1] == "0.300 [0.052, 0.548]"
    assert row(cost, "plain")[3:5] == ["20 [20, 20]", "5.0 [5.0, 5.0]"]
    assert "unimodal ceiling run(s); K = 10 classes" in report and "2 degrees" not in report
    assert "t interval (n - 1 degrees of freedom)" in report


def test_without_ceilings_utilisation_is_unavailable_and_says_how(tmp_path: Path) -> None:
    write_run(tmp_path / "plain", "plain", 0, num_classes=10)
    report = write_report(tmp_path)[0].read_text()
    assert "Utilisation is unavailable for audio, video: no unimodal ceiling run" in report
    assert "--method plain --only audio" in report
    assert row(report.splitlines(), "plain")[5] == "n/a"


def test_the_command_writes_where_asked(tmp_path: Path) -> None:
    write_run(tmp_path / "runs" / "plain", "plain", 0)
    out = tmp_path / "elsewhere"
    done = subprocess.run(
        [sys.executable, "-m", "mmsample", "report", str(tmp_path / "runs"), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "report.md").exists() and not (tmp_path / "runs" / "report.md").exists()
    assert "| plain | 1 | 0.700 |" in done.stdout and f"report: {out / 'report.md'}" in done.stdout


def test_runs_of_unlike_settings_are_reported_apart_never_pooled(tmp_path: Path) -> None:
    # config.json as pipelines.training writes it: every argument plus world_size and device
    base = {"batch_size": 8, "data": "shards", "lr": 0.01, "out": "x", "device": "cpu"}
    for seed in (0, 1):
        write_run(tmp_path / f"e2w1s{seed}", "plain", seed, epochs=2, world_size=1, **base)
    write_run(tmp_path / "e3w1", "plain", 2, epochs=3, world_size=1, **base)
    write_run(tmp_path / "e2w2", "smv", 0, epochs=2, world_size=2, **base)
    report_path, table = write_report(tmp_path)
    report = report_path.read_text()
    assert "differ in epochs, world_size: they are not pooled" in report
    # 0.70, 0.75: mean 0.725, sd 0.0354, t(0.975, 1 df) = 12.706 -> ± 0.318
    assert (
        table[0] == "epochs=2, world_size=1:" and "| plain | 2 | 0.725 [0.407, 1.043] |" in table[3]
    )
    assert "epochs=3, world_size=1:" in table and "| plain | 1 | 0.800 |" in "".join(table)
    assert "epochs=2, world_size=2:" in table and "| smv | 1 | 0.950 |" in "".join(table)
    assert (tmp_path / "epochs=3_world_size=1" / "report.md").exists()
    # same settings, other seeds or out folders: one group, one table, as before
    _, alone = write_report(tmp_path / "e2w1s0")
    assert alone[0].startswith("| method")


def test_an_unknown_run_format_is_refused_by_name(tmp_path: Path) -> None:
    write_run(tmp_path / "run", "plain", 0, run_format=99)
    with pytest.raises(ValueError, match="run_format 99; this mmsample reads run_format 1"):
        write_report(tmp_path)


def test_the_report_says_which_decoder_each_run_used(tmp_path: Path) -> None:
    """The decoder line a run printed at its start is in its config; the report names it (once
    when every run used the same, per method otherwise) and never splits runs by it."""
    torchcodec = "decoder: torchcodec for video, audio, image"
    pyav = "decoder: pyav for video, audio, image (torchcodec: OSError ...; fix: apt-get ...)"
    write_run(tmp_path / "same" / "plain", "plain", 0, decoder=torchcodec)
    write_run(tmp_path / "same" / "smv", "smv", 0, decoder=torchcodec)
    report, _ = write_report(tmp_path / "same")
    text = report.read_text()
    assert text.count(torchcodec) == 1 and "not pooled" not in text
    write_run(tmp_path / "mixed" / "plain", "plain", 0, decoder=torchcodec)
    write_run(tmp_path / "mixed" / "smv", "smv", 0, decoder=pyav)
    text = write_report(tmp_path / "mixed")[0].read_text()
    assert f"- {torchcodec} (plain)" in text and f"- {pyav} (smv)" in text
    assert "not pooled" not in text  # one group: the decoder is not a setting
