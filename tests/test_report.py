"""`mmsample report` over several seeds (what `make demo SEEDS=3` writes): the headline cells
and the verdicts against the plain loader, checked against means and spreads worked out by
hand from hand-written run logs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmsample.report import write_report

# method -> fused test accuracy of seeds 0, 1, 2 (last epoch); worked out by hand:
# plain 0.750 ± 0.050; smv 0.960 ± 0.010 (+0.210 > 0.050: beat); dus 0.780 ± 0.020
# (+0.030 <= 0.050: within the spread); bss 0.650 ± 0.050 (-0.100: did not beat)
ACC = {
    "plain": (0.70, 0.75, 0.80),
    "smv": (0.95, 0.96, 0.97),
    "dus": (0.76, 0.78, 0.80),
    "bss": (0.60, 0.65, 0.70),
}
# contributions of audio / video per seed (the same for every method): gaps 0.3, 0.1, 0.2
# -> 0.200 ± 0.100; audio 0.300 ± 0.100, video 0.500 ± 0.100
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
                "time/epoch_s": 2.0,
                "time/eval_s": 0.5,
                "throughput/items_per_s": 100.0 + 10 * seed + 20 * epoch,
            }
        )
    lines = [json.dumps(e) for e in reversed(epochs)]  # order on disk does not matter
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "stats.jsonl").write_text(json.dumps({"epoch": 1, "ids": 10, "items": 10}) + "\n")


def test_several_seeds_give_mean_spread_and_honest_verdicts(tmp_path: Path) -> None:
    for method in ACC:
        for seed in range(3):
            write_run(tmp_path / f"seed{seed}" / method, method, seed)
    report_path, table = write_report(tmp_path)
    cells = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in table[2:]}
    assert list(cells) == ["plain", "dus", "bss", "smv"]  # ORDER, not file order
    # method, seeds, fused, audio alone, video alone, contribution a / v, gap, vs plain, time, items/s
    assert cells["plain"][1:9] == [
        "3",
        "0.750 ± 0.050",
        "0.500 ± 0.000",
        "0.600 ± 0.000",
        "0.300 ± 0.100",
        "0.500 ± 0.100",
        "0.200 ± 0.100",
        "",
    ]
    assert cells["smv"][2] == "0.960 ± 0.010" and cells["smv"][8] == "+0.210"
    assert cells["dus"][8] == "+0.030" and cells["bss"][8] == "-0.100"
    # time: 2 epochs x (2.0 + 0.5) s; items/s: mean of 100, 120, 110, 130, 120, 140 (sd 14.1)
    assert cells["plain"][9] == "5.0 ± 0.0" and cells["plain"][10].rstrip(" |") == "120.0 ± 14.1"
    report = report_path.read_text()
    assert "- smv beat the plain loader: fused test accuracy 0.960 vs 0.750" in report
    assert "**dus did not beat the plain loader beyond the spread**" in report
    assert "within one standard deviation (0.050)" in report
    assert "**bss did not beat the plain loader**: fused test accuracy 0.650 vs 0.750" in report
    assert "unknown noise" not in report  # three seeds: judged against the spread


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
    assert table[0] == "epochs=2, world_size=1:" and "| plain | 2 | 0.725 ± 0.035 |" in table[3]
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
