"""Remix in the reference training loop: a short real run (`python -m pipelines.train --method
remix`) on tiny AV-MNIST shards, its loss worked by hand, and heads whose loss reaches the
encoders."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from pipelines.models import small
from pipelines.training.losses import remix_loss


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.avmnist import main

    out = tmp_path_factory.mktemp("avmnist")
    argv = ["--out", str(out), "--n", "20", "--samples-per-shard", "8", "--workers", "1"]
    assert main(argv) == 0
    return out / "shards"


@pytest.mark.parametrize("loader", ["shards", "wrap"])
def test_a_short_remix_run_trains_each_sample_once_on_one_modality(
    shards: Path, tmp_path: Path, loader: str
) -> None:
    from pipelines.training import main

    argv = ["--data", str(shards), "--out", str(tmp_path), "--method", "remix"]
    argv += ["--loader", loader, "--mode", "indexed", "--epochs", "3", "--remix-warmup", "1"]
    assert main([*argv, "--batch-size", "3", "--trace", "--no-progress"]) == 0
    stats, metrics = jsonl(tmp_path / "stats.jsonl"), jsonl(tmp_path / "metrics.jsonl")
    ids = stats[0]["ids"]
    assert [s["warmup"] for s in stats] == [1.0, 0.0, 0.0]
    assert stats[0]["items/audio"] == stats[0]["items/video"] == ids  # warm-up: both
    for s, m in zip(stats, metrics):
        assert s["items"] == m["train/items"] == ids  # every sample once per epoch
    for s in stats[1:]:
        assert s["share/audio"] + s["share/video"] == pytest.approx(1.0)
        assert s["items/audio"] + s["items/video"] == ids  # one modality per sample
    # the last epoch's assignment (the method's saved state) against the trace: every batch
    # holds one modality, the video group (the authors' tie-winner) first
    state = torch.load(tmp_path / "checkpoint" / "rank0.pt", weights_only=False)["loader"]
    trace = [t["ids"] for t in jsonl(tmp_path / "trace-0.jsonl") if t["epoch"] == 2]
    order = sorted(i for batch in trace for i in batch)
    assigned = dict(zip(order, state["method"]["saved"]["_assigned"].tolist()))
    kinds = [{assigned[i] for i in batch} for batch in trace]
    assert all(len(k) == 1 for k in kinds)
    firsts = [k.pop() for k in kinds]
    assert firsts == sorted(firsts, reverse=True)  # video (1) batches, then audio (0)
    assert firsts.count(1) == math.ceil(stats[2]["items/video"] / 3)


def test_remix_loss_by_hand() -> None:
    y = torch.tensor([0, 1])
    fused = torch.tensor([[math.log(3), 0.0], [0.0, 0.0]], dtype=torch.float64)
    a = torch.tensor([[0.0, 0.0], [0.0, math.log(3)]], dtype=torch.float64)
    v = torch.tensor([[math.log(3), 0.0], [0.0, 0.0]], dtype=torch.float64)
    ce_fused = (-math.log(3 / 4) - math.log(1 / 2)) / 2
    both = torch.ones(2, 2, dtype=torch.bool)
    warm = argparse.Namespace(remix_warmup=2, remix_gamma=3.0)
    # warm-up: CE(fused) + 0.5 (CE(audio) + CE(video)), each a batch mean
    ce_a = (-math.log(1 / 2) - math.log(3 / 4)) / 2
    ce_v = (-math.log(3 / 4) - math.log(1 / 2)) / 2
    got = remix_loss(fused, [a, v], y, both, 1, warm).item()
    assert got == pytest.approx(ce_fused + 0.5 * (ce_a + ce_v), abs=1e-12)
    # remixed, a batch of one modality (video only): CE(fused) + gamma CE(video)
    video = torch.tensor([[False, True], [False, True]])
    got = remix_loss(fused, [a, v], y, video, 2, warm).item()
    assert got == pytest.approx(ce_fused + 3.0 * ce_v, abs=1e-12)
    # a mixed batch (streamed): each row's assigned head, over the B rows
    mixed = torch.tensor([[False, True], [True, False]])
    got = remix_loss(fused, [a, v], y, mixed, 2, warm).item()
    assert got == pytest.approx(ce_fused + 3.0 * (-math.log(3 / 4) - math.log(3 / 4)) / 2)


def test_remix_heads_train_the_encoders_and_the_probes_do_not() -> None:
    model = small(10).model
    frames = torch.randint(0, 255, (2, 4, 3, 28, 28), dtype=torch.uint8)
    for train_heads in (False, True):
        model.zero_grad()
        model.train_heads = train_heads
        feats = [torch.randn(2, 32, requires_grad=True), model.encoders["video"](frames)]
        torch.stack([u.sum() for u in model.unimodal(feats)]).sum().backward()
        grad = model.encoders["video"].out.weight.grad
        reached = grad is not None and bool(grad.abs().sum() > 0)
        assert reached == train_heads
