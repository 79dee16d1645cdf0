"""The demo's cost summary (issue 16 item 6): the work read from runs' logs and the efficiency
computed from it, checked against numbers worked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.demo_cost import cost_lines, run_work


def write_run(folder: Path, epochs: list[dict[str, float]]) -> Path:
    folder.mkdir(parents=True)
    lines = [json.dumps({"epoch": e, **r}) for e, r in enumerate(epochs)]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_run_work_sums_the_logged_epochs(tmp_path: Path) -> None:
    epoch = {
        "work/decoded_train": 900.0,  # 800 trained + a 100-id scoring pass
        "work/decoded_eval": 200.0,
        "train/items": 800.0,
        "time/epoch_s": 4.0,
        "time/eval_s": 1.0,
        "time/set_epoch_s": 0.5,
    }
    run = write_run(tmp_path / "seed0" / "bss", [epoch, {**epoch, "time/set_epoch_s": 0.0}])
    work = run_work(run, tmp_path)
    assert work.name == "seed0/bss"
    assert (work.decoded_train, work.decoded_eval, work.decodes) == (1800, 400, 2200)
    assert work.wall_s == pytest.approx(4 + 1 + 0.5 + 4 + 1)
    assert work.items_per_s == pytest.approx(1600 / 8)


def test_a_run_without_counts_is_refused_naming_the_file(tmp_path: Path) -> None:
    run = write_run(tmp_path / "old", [{"train/items": 800.0, "time/epoch_s": 4.0}])
    with pytest.raises(ValueError, match=r"old/metrics\.jsonl.*work/decoded_train"):
        run_work(run, tmp_path)


def test_efficiency_is_wall_time_over_decodes_times_decode_only_time(tmp_path: Path) -> None:
    epoch = {
        "work/decoded_train": 1000.0,
        "work/decoded_eval": 0.0,
        "train/items": 1000.0,
        "time/epoch_s": 5.0,
    }
    works = [run_work(write_run(tmp_path / n, [epoch]), tmp_path) for n in ("a", "b")]
    # 2,000 decodes at 4 ms each = 8 s of decoding; the demo took 12 s -> 1.50; the runs
    # logged 10 s -> 1.25. Each run: 200 items/s against 250 clips/s decode-only = 0.80.
    text = "\n".join(cost_lines(works, 12.0, 0.004, 20.0, "machine"))
    assert "2000 clip decodes in 2 runs" in text
    assert "decoding alone would take 8.0 s" in text
    assert "efficiency 1.50 (runs alone 1.25; goal <= 1.3)" in text
    assert text.count("| 200 | 0.80 (goal >= 0.8) |") == 2
    assert "softmax baseline 20.0 us, decode-only 4.00 ms per clip = 250 clips/s" in text
