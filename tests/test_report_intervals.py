"""The report's interval maths, macro-F1 and per-clip outcomes (`mmsample.report.intervals`,
`scores`, `outcomes`), against values worked out by hand, scikit-learn, and the coverage of
the bootstrap on simulated data of known proportion."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from mmsample.report import RunLog, load_outcomes
from mmsample.report.intervals import (
    Interval,
    bootstrap,
    bootstrap_indices,
    compare,
    paired_difference,
    resolution,
    t_interval,
    utilisation,
)
from mmsample.report.outcomes import check_outcomes
from mmsample.report.scores import accuracy, macro_f1

T_975_2DF = 4.303  # Student t quantile 0.975 with 2 degrees of freedom, from printed tables


def mean(a: np.ndarray) -> np.ndarray:
    return a


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a - b


def test_t_interval_of_three_seeds_by_hand() -> None:
    # mean 0.75, sample sd 0.05: half width = 4.303 * 0.05 / sqrt(3) = 0.12421
    got = t_interval([0.70, 0.75, 0.80])
    assert got.kind == "t" and got.n == 3 and got.point == pytest.approx(0.75)
    assert got.low == pytest.approx(0.75 - 0.12421, abs=2e-4)
    assert got.high == pytest.approx(0.75 + 0.12421, abs=2e-4)
    # paired: differences 0.10, 0.15, 0.05 -> mean 0.10, sd 0.05, same half width
    diff = paired_difference([0.80, 0.90, 0.85], [0.70, 0.75, 0.80])
    assert diff.point == pytest.approx(0.10)
    assert diff.low == pytest.approx(0.10 - T_975_2DF * 0.05 / math.sqrt(3), abs=2e-4)
    one = t_interval([0.6])
    assert one.point == 0.6 and not one.known  # one seed: no t interval


def test_a_paired_difference_where_every_clip_agrees_is_degenerate() -> None:
    right = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 1], dtype=float)
    index = bootstrap_indices(len(right), resamples=500, seed=3)
    got = bootstrap(difference, [right, right.copy()], index)
    assert (got.point, got.low, got.high) == (0.0, 0.0, 0.0)
    assert compare(got) == "no detectable difference at this size ([+0.000, +0.000] includes 0)"
    # one run right on every clip the other misses: the difference is 1 on every resample
    flipped = bootstrap(difference, [np.ones(10), np.zeros(10)], index)
    assert (flipped.low, flipped.high) == (1.0, 1.0)
    assert compare(flipped).startswith("above plain (the 95% interval of the difference, [+1.000")


def test_the_percentile_bootstrap_covers_a_known_proportion() -> None:
    """200 test sets of 200 clips, each clip right with probability 0.7: the 95% interval
    should contain 0.7 in about 95% of them (binomial sd of the rate over 200 sets: 1.5
    points); the percentile bootstrap of a proportion runs slightly below nominal."""
    rng = np.random.default_rng(11)
    index = bootstrap_indices(200, resamples=1000, seed=5)
    covered = 0
    for _ in range(200):
        clips = (rng.random(200) < 0.7).astype(float)
        got = bootstrap(mean, [clips], index)
        assert got.low <= got.point <= got.high
        covered += got.low <= 0.7 <= got.high
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_utilisation_is_chance_corrected_and_undefined_at_chance() -> None:
    # (0.55 - 0.1) / (0.82 - 0.1) = 0.45 / 0.72 = 0.625
    assert float(utilisation(0.55, 0.82, 0.1)) == pytest.approx(0.625)
    assert float(utilisation(0.1, 0.82, 0.1)) == 0.0  # alone at chance
    assert math.isnan(float(utilisation(0.5, 0.1, 0.1)))  # ceiling at chance: no ratio
    # a ceiling at chance on most resamples: no interval, and the reason
    alone = np.array([1.0] * 5 + [0.0] * 15)
    ceiling = np.array([1.0] * 2 + [0.0] * 18)  # 0.1 = chance
    got = bootstrap(
        lambda a, c: utilisation(a, c, 0.1), [alone, ceiling], bootstrap_indices(20, 400)
    )
    assert not got.known and "ceiling not above chance" in got.note
    assert compare(Interval(0.2, note=got.note)).startswith("+0.200 vs plain, no interval")


def test_words_follow_the_interval() -> None:
    assert compare(Interval(0.05, 0.01, 0.09)).startswith("above plain")
    assert compare(Interval(-0.05, -0.09, -0.01)).startswith("below plain")
    said = compare(Interval(0.02, -0.01, 0.05))
    assert said == "no detectable difference at this size ([-0.010, +0.050] includes 0)"
    assert resolution(200) == 0.5  # one clip of 200 = half a point


def test_macro_f1_by_hand_and_against_scikit_learn() -> None:
    # class 0: TP 1, FP 0, FN 1 -> 2/3; class 1: TP 2, FP 1, FN 0 -> 4/5; classes 2..9 absent
    assert macro_f1([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert accuracy([0, 0, 1, 1], [0, 1, 1, 1]) == 0.75
    rng = np.random.default_rng(2)
    for _ in range(20):
        y, p = rng.integers(0, 10, 60), rng.integers(0, 10, 60)
        assert macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro"))
    with pytest.raises(ValueError, match="class indices"):
        macro_f1([0, 1], [0.2, 0.9])


def test_outcomes_are_checked_sorted_by_id_and_read_back(tmp_path: Path) -> None:
    log = RunLog(tmp_path, method="plain", num_classes=3)
    preds = {"audio": [0, 1, 2], "video": [2, 2, 2], "audio+video": [1, 1, 2]}
    log.outcomes(0, ["audio", "video"], [7, 3, 5], [1, 1, 2], preds, {"audio": [0, 0, 0]})
    got = load_outcomes(tmp_path)[0]
    assert got.ids.tolist() == [3, 5, 7] and got.labels.tolist() == [1, 2, 1]
    assert got.predictions["audio+video"].tolist() == [1, 2, 1] and got.fused == "audio+video"
    assert got.correct("audio").tolist() == [True, True, False]  # id 3: 1=1, 5: 2=2, 7: 0!=1
    line = json.loads((tmp_path / "outcomes.jsonl").read_text())
    assert line["epoch"] == 0 and line["modalities"] == ["audio", "video"]
    with pytest.raises(ValueError, match="repeats a clip"):
        log.outcomes(1, ["audio", "video"], [3, 3, 5], [1, 1, 2], preds)
    with pytest.raises(ValueError, match=r"missing \['audio\+video'\]"):
        log.outcomes(
            1, ["audio", "video"], [3, 4, 5], [1, 1, 2], {"audio": [0, 1, 2], "video": [0, 1, 2]}
        )
    with pytest.raises(ValueError, match="has 2 entries; the ids have 3"):
        check_outcomes(1, ["audio", "video"], [3, 4, 5], [1, 1], preds)
