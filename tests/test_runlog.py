"""`mmsample.report.RunLog` from a user's own loop: the own-loop example's model and data,
trained 2 epochs with a balancer, logged with `RunLog`, and `mmsample report` reads the folder."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from torch.nn.functional import cross_entropy
from torch.utils.data import DataLoader

import mmsample
from mmsample.report import RunLog, data_fingerprint, load_run

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_loop_balanced.py"


def example() -> types.ModuleType:
    module = types.ModuleType("own_loop_balanced")
    exec(compile(EXAMPLE.read_text(), str(EXAMPLE), "exec"), module.__dict__)
    return module


@torch.no_grad()
def accuracies(model: torch.nn.Module, data: torch.utils.data.Dataset) -> dict[str, float]:
    """Fused test accuracy and each modality alone (the other's input zeroed)."""
    model.eval()
    audio, video, labels = data.audio, data.video, data.labels  # type: ignore[attr-defined]
    out = {}
    for key, a, v in [
        ("test/acc", audio, video),
        ("test/acc/audio", audio, torch.zeros_like(video)),
        ("test/acc/video", torch.zeros_like(audio), video),
    ]:
        out[key] = float((model(a, v).argmax(1) == labels).float().mean())
    model.train()
    return out


def test_own_loop_logged_with_runlog_is_reported(tmp_path: Path) -> None:
    ex, epochs = example(), 2
    torch.manual_seed(0)
    loader = DataLoader(ex.AudioVisual(64), batch_size=16, shuffle=True)
    model = ex.LateFusion()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method = mmsample.methods.SMV(level="sample", warmup=1)
    balancer = mmsample.Balancer(method, epochs=epochs)
    loader = balancer.setup(loader, model, optimizer)
    log = RunLog(tmp_path / "run", method="smv", seed=0, epochs=epochs, batch_size=16)
    for epoch in range(epochs):
        for batch in loader:
            loss = balancer.loss(batch, cross_entropy)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        log.epoch(epoch, accuracies(model, ex.AudioVisual(64, seed=1)), method.stats(epoch))
    log.done(epochs)
    run = load_run(tmp_path / "run")
    assert run.config["run_format"] == 1 and run.modalities == ["audio", "video"]
    assert [m["epoch"] for m in run.metrics] == [0, 1] and len(run.stats) == 2
    done = subprocess.run(
        [sys.executable, "-m", "mmsample", "report", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert f"| smv | 1 | {run.final('test/acc'):.3f} |" in done.stdout
    with pytest.raises(ValueError, match="already holds a run"):
        RunLog(tmp_path / "run", method="smv")


def test_runlog_refuses_a_non_number_and_writes_nan_as_null(tmp_path: Path) -> None:
    log = RunLog(tmp_path, method="plain")
    with pytest.raises(ValueError, match=r"test/acc='0.5' is not a number"):
        log.epoch(0, {"test/acc": "0.5"})  # type: ignore[dict-item]
    log.epoch(0, {"test/acc": 0.5, "test/contribution/audio": float("nan")})
    line = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert line == {"epoch": 0, "test/acc": 0.5, "test/contribution/audio": None}
    assert json.loads((tmp_path / "config.json").read_text())["method"] == "plain"


def test_the_data_fingerprint_follows_the_data_not_its_place(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text('{"classes": ["x", "y"]}')
        (tmp_path / name / "shard-000000.tar").write_bytes(b"0" * 512)
    assert data_fingerprint(tmp_path / "a") == data_fingerprint(tmp_path / "b")
    (tmp_path / "b" / "manifest.json").write_text('{"classes": ["x", "z"]}')
    assert data_fingerprint(tmp_path / "a") != data_fingerprint(tmp_path / "b")
    with pytest.raises(ValueError, match="is not a folder"):
        data_fingerprint(tmp_path / "missing")
