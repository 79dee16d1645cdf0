"""The report for one seed (bootstrap intervals over per-clip outcomes written with `RunLog`),
unimodal ceilings joining the runs they bound, and methods that never acted flagged, from run
folders written through the public logger."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from mmsample.report import RunLog, group_runs, load_runs, write_report

N, K = 40, 4  # test clips, classes
LABELS = np.arange(N) % K
SETTINGS = {"epochs": 2, "batch_size": 8, "num_classes": K}


def predictions(right: int, seed: int) -> np.ndarray:
    """Predictions right on the first `right` clips of a fixed permutation, wrong elsewhere."""
    order = np.random.default_rng(seed).permutation(N)
    pred = (LABELS + 1) % K
    pred[order[:right]] = LABELS[order[:right]]
    return pred


def log_run(
    folder: Path,
    method: str,
    fused: int,
    audio: int,
    video: int,
    *,
    only: list[str] | None = None,
    stats: list[dict[str, float]] | None = None,
    extra: list[dict[str, float]] | None = None,
    **settings: object,
) -> None:
    """A two-epoch run whose last epoch is right on `fused` / `audio` / `video` of N clips."""
    config = {**SETTINGS, **settings}
    if only is not None:
        config["only"] = only
    log = RunLog(folder, method=method, seed=0, **config)
    preds = {
        "audio": predictions(audio, 1),
        "video": predictions(video, 2),
        "audio+video": predictions(fused, 3),
    }
    for epoch in (0, 1):
        metrics = {
            "test/acc": fused / N,
            "test/acc/audio": audio / N,
            "test/acc/video": video / N,
            "test/n": float(N),
            "train/items": 100.0,
            **(extra[epoch] if extra else {}),
        }
        log.epoch(epoch, metrics, stats[epoch] if stats else None)
        log.outcomes(epoch, ["audio", "video"], np.arange(N), LABELS, preds)
    log.done(2)


def bracket(cell: str) -> tuple[float, float, float]:
    point, low, high = map(float, re.match(r"(\S+) \[(\S+), (\S+)\]", cell).groups())  # type: ignore[union-attr]
    return point, low, high


def cells(report: str, method: str) -> list[str]:
    line = next(x for x in report.splitlines() if x.startswith(f"| {method} |"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_one_seed_gets_bootstrap_intervals_and_utilisation_from_its_clips(tmp_path: Path) -> None:
    log_run(tmp_path / "plain", "plain", 28, 12, 20)
    log_run(tmp_path / "dus", "dus", 36, 12, 30)
    log_run(tmp_path / "only-audio", "plain", 16, 16, 10, only=["audio"])
    log_run(tmp_path / "only-video", "plain", 34, 10, 34, only=["video"])
    report_path, table = write_report(tmp_path)
    report = report_path.read_text()
    assert "not pooled" not in report and "2 unimodal ceiling run(s); K = 4 classes" in report
    assert "40 test clips, so one clip = 2.5 points" in report
    plain = cells(report, "plain")
    point, low, high = bracket(plain[2])
    assert point == 0.7 and low <= point <= high
    # a 95% interval of a proportion 0.7 on 40 clips is about ± 1.96 * sqrt(.21 / 40) = ± 0.14
    assert 0.2 < high - low < 0.4
    # utilisation of video for plain: (0.5 - 0.25) / (0.85 - 0.25) = 0.4167, raw 0.5 / 0.85
    util = cells(report, "plain")[7]
    assert util.startswith("0.42 [") and util.endswith("(raw 0.59)")
    _, u_low, u_high = bracket(util)
    assert u_low <= 0.4167 <= u_high
    # dus: video alone 30 of 40 -> (0.75 - 0.25) / 0.6 = 0.83; +8 clips fused on the same clips
    assert cells(report, "dus")[7].startswith("0.83 [")
    said = next(x for x in report.splitlines() if x.startswith("- dus:"))
    assert "fused accuracy: above plain (the 95% interval of the difference" in said
    # audio alone equal on the same clips: the paired difference is exactly 0
    assert (
        "audio alone: no detectable difference at this size ([+0.000, +0.000] includes 0)" in said
    )
    assert table[0].startswith("| method | seeds | fused acc | macro-F1 |")
    assert (tmp_path / "utilisation.png").exists() and "](utilisation_epochs.png)" in report


def test_ceilings_join_only_the_runs_whose_other_settings_match(tmp_path: Path) -> None:
    log_run(tmp_path / "a" / "plain", "plain", 28, 12, 20)
    log_run(tmp_path / "a" / "only-audio", "plain", 16, 16, 10, only=["audio"])
    log_run(tmp_path / "b" / "only-audio", "plain", 16, 16, 10, only=["audio"], lr=0.1)
    groups = group_runs(load_runs(tmp_path))
    assert [len(g) for _, g in groups] == [2, 1]
    assert groups[1][0] == {"lr": 0.1, "only": ["audio"]}  # named by what differs
    assert groups[0][0] == {"lr": None, "only": None}


@pytest.mark.parametrize(
    ("method", "stats", "extra", "said"),
    [
        (
            "smv",
            [{"ids": 40, "items": 40, "warmup": 1}, {"ids": 40, "items": 40, "warmup": 1}],
            None,
            "never acted: SMV never passed its warm-up (2 epoch(s)) in 2 epochs",
        ),
        (
            "smv",
            [{"ids": 40, "items": 40, "warmup": 1}, {"ids": 40, "items": 52, "warmup": 0}],
            None,
            "re-sampled in epoch 1 of 2",
        ),
        (
            "dus",
            [{f"batch_size/{m}": 8.0 for m in ("audio", "video")}] * 2,
            None,
            "never acted: DUS batch sizes never changed (audio 8, video 8 rows per batch",
        ),
        (
            "ogmge",
            None,
            [{"ogm/coeff/audio": 1.0, "ogm/modulated/audio": 0.0, "ogm/coeff/video": 1.0}] * 2,
            "never acted: OGM-GE coefficients were 1 throughout (no gradient was scaled)",
        ),
        (
            "remix",
            [{"warmup": 1.0}, {"warmup": 1.0}],
            None,
            "never acted: Remix never passed its warm-up (2 epoch(s)) in 2 epochs",
        ),
        (
            "remix",
            [{"warmup": 1.0}, {"warmup": 0.0, "share/audio": 0.25, "share/video": 0.75}],
            None,
            "remixed in epoch 1 of 2",
        ),
        (
            "bss",
            [{"pacing": 0.5}, {"pacing": 1.0}],
            None,
            "paced in epoch 0 of 2; read streamed: the plan's items were trained but not in its "
            "easy-to-hard order",
        ),
    ],
)
def test_a_method_that_never_acted_is_flagged(
    tmp_path: Path,
    method: str,
    stats: list[dict[str, float]] | None,
    extra: list[dict[str, float]] | None,
    said: str,
) -> None:
    log_run(tmp_path / "plain", "plain", 28, 12, 20)
    settings = {"smv_warmup": 2, "remix_warmup": 2, "mode": "streamed"}
    log_run(tmp_path / method, method, 28, 12, 20, stats=stats, extra=extra, **settings)
    report = write_report(tmp_path)[0].read_text()
    assert said in cells(report, method)[-1]
    assert cells(report, "plain")[-1] == ""  # the plain loader has nothing to act
