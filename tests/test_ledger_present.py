"""Ledger `present` masks and DUS's cumulative discrepancy, worked by hand; two gloo ranks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmsample.ledger import Ledger

K = 3


def logits_for(probs: list[list[float]]) -> torch.Tensor:
    """Logits whose softmax is exactly `probs` (rows summing to 1)."""
    return torch.tensor(probs, dtype=torch.float64).log()


def row(p: float, label: int) -> list[float]:
    out = [(1 - p) / (K - 1)] * K
    out[label] = p
    return out


def test_present_writes_only_carried_modalities() -> None:
    led = Ledger(4, 2, K, staging=4)
    labels = torch.tensor([0, 1])
    # call 1: both rows carry both modalities
    a1, v1, f1 = (
        logits_for([row(0.5, 0), row(0.6, 1)]),
        logits_for([row(0.4, 0), row(0.3, 1)]),
        None,
    )
    f1 = logits_for([row(0.7, 0), row(0.8, 1)])
    values1 = torch.tensor([[0.0, 1, 1, 2], [0.0, 0, 1, 2]], dtype=torch.float64)
    led.observe(torch.tensor([0, 1]), labels, [a1, v1], f1, values=values1)
    # call 2: id 0 carries only modality 0, id 1 only modality 1 (the other input zeroed)
    a2, v2 = logits_for([row(0.9, 0), row(0.2, 1)]), logits_for([row(0.1, 0), row(0.95, 1)])
    f2 = logits_for([row(0.05, 0), row(0.05, 1)])
    values2 = torch.full((2, 4), 7.0, dtype=torch.float64)
    present = torch.tensor([[True, False], [False, True]])
    led.observe(torch.tensor([0, 1]), labels, [a2, v2], f2, values=values2, present=present)
    tp = led.true_prob
    # id 0: modality 0 from call 2 (0.9), modality 1 still from call 1 (0.4)
    assert tp[0].tolist() == pytest.approx([0.9, 0.4], abs=1e-6)
    assert tp[1].tolist() == pytest.approx([0.6, 0.95], abs=1e-6)
    assert led.unimodal_loss[0].tolist() == pytest.approx([-math.log(0.9), -math.log(0.4)], 1e-5)
    # fused statistics, similarity and values only from full rows: call 1
    assert led.fused_true_prob.tolist()[:2] == pytest.approx([0.7, 0.8], abs=1e-6)
    assert led.values[:2].tolist() == values1.tolist()
    cos0 = torch.nn.functional.cosine_similarity(
        torch.tensor([row(0.5, 0)]), torch.tensor([row(0.4, 0)])
    )
    assert led.similarity[0].item() == pytest.approx(cos0.item(), abs=1e-6)
    snap = led.snapshot()
    assert snap["modality_seen"][:3].tolist() == [[True, True], [True, True], [False, False]]
    assert led.seen_count[:2].tolist() == [2, 2]


def test_present_partial_row_never_marks_fused_seen() -> None:
    led = Ledger(3, 3, K)
    z = logits_for([row(0.5, 0)])
    present = torch.tensor([[True, True, False]])
    led.observe(torch.tensor([2]), torch.tensor([0]), [z, z, z], z, present=present)
    snap = led.snapshot()
    assert snap["modality_seen"][2].tolist() == [True, True, False]
    assert not snap["fused_seen"][2] and not snap["paired_seen"][2]
    assert math.isnan(led.true_prob[2, 2].item()) and math.isnan(led.fused_loss[2].item())


@pytest.mark.parametrize("staging", [1, 16])
def test_cumulative_discrepancy_is_the_mean_of_per_call_sums(staging: int) -> None:
    led = Ledger(5, 2, K, staging=staging)
    assert led.cumulative_discrepancy.tolist() == [0.0, 0.0]
    calls = [
        # (ids, labels, p_mod0 per row, p_mod1 per row, present)
        ([0, 1], [0, 1], [0.5, 0.25], [0.2, 0.3], None),
        ([2, 3, 4], [2, 0, 1], [0.9, 0.1, 0.6], [0.4, 0.5, 0.7], [[1, 0], [1, 1], [0, 1]]),
        ([1], [1], [0.8], [0.35], [[0, 1]]),
    ]
    sums = []
    for ids, labels, pa, pv, pres in calls:
        a = logits_for([row(p, y) for p, y in zip(pa, labels)])
        v = logits_for([row(p, y) for p, y in zip(pv, labels)])
        present = None if pres is None else torch.tensor(pres, dtype=torch.bool)
        led.observe(torch.tensor(ids), torch.tensor(labels), [a, v], present=present)
        carried = [[1, 1]] * len(ids) if pres is None else pres
        sums.append(
            [
                sum(p for p, c in zip(pa, carried) if c[0]),
                sum(p for p, c in zip(pv, carried) if c[1]),
            ]
        )
    # S_t = (t-1)/t S_{t-1} + s_t / t, worked step by step
    s = [0.0, 0.0]
    for t, st in enumerate(sums, start=1):
        s = [(t - 1) / t * s[j] + st[j] / t for j in range(2)]
    assert led.cumulative_discrepancy.tolist() == pytest.approx(s, abs=1e-9)
    state = led.state_dict()
    other = Ledger(5, 2, K)
    other.load_state_dict(state)
    assert other.cumulative_discrepancy.tolist() == pytest.approx(s, abs=1e-9)


def test_present_is_checked() -> None:
    led = Ledger(3, 2, K)
    z = logits_for([row(0.5, 0)])
    with pytest.raises(ValueError, match="'present'"):
        led.observe(torch.tensor([0]), torch.tensor([0]), [z, z], present=torch.ones(1, 3).bool())
    with pytest.raises(ValueError, match="'present'"):
        led.observe(torch.tensor([0]), torch.tensor([0]), [z, z], present=torch.ones(1, 2))


def _worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        led = Ledger(4, 2, K)
        # rank 0: two calls, rank 1: one call; sums worked out in the test
        if rank == 0:
            z0 = logits_for([row(0.5, 0), row(0.7, 1)])
            z1 = logits_for([row(0.1, 0), row(0.3, 1)])
            led.observe(torch.tensor([0, 1]), torch.tensor([0, 1]), [z0, z1])
            # id 0 carries only modality 1 at the later step
            led.observe(
                torch.tensor([0]),
                torch.tensor([0]),
                [logits_for([row(0.9, 0)]), logits_for([row(0.2, 0)])],
                present=torch.tensor([[False, True]]),
            )
        else:
            z = logits_for([row(0.4, 2), row(0.6, 0)])
            led.set_epoch(1)  # later stamps than any of rank 0's
            led.observe(
                torch.tensor([2, 0]),
                torch.tensor([2, 0]),
                [z, z],
                present=torch.tensor([[True, True], [True, False]]),
            )
        led.sync()
        torch.save(
            {"S": led.cumulative_discrepancy, "tp": led.true_prob.clone()}, out + f"{rank}.pt"
        )
        dist.barrier()  # no rank tears gloo down while its peer still talks to it
    finally:
        dist.destroy_process_group()


def test_sync_sums_discrepancy_and_merges_per_modality(tmp_path: Path) -> None:
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.start_processes(_worker, args=(2, init, str(tmp_path / "r")), nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"r{r}.pt") for r in (0, 1))
    # rank 0: calls (0.5+0.7, 0.1+0.3) and (0, 0.2) -> mean (0.6, 0.3)
    # rank 1: one call, modality 0 rows {2, 0}: 0.4 + 0.6, modality 1 row {2}: 0.4 -> (1.0, 0.4)
    expected = [0.6 + 1.0, 0.3 + 0.4]
    for r in (r0, r1):
        assert r["S"].tolist() == pytest.approx(expected, abs=1e-6)
        tp = r["tp"]
        # id 0: modality 0 from rank 1 (epoch 1 stamp, 0.6); modality 1 from rank 0 (0.2)
        assert tp[0].tolist() == pytest.approx([0.6, 0.2], abs=1e-6)
        assert tp[2].tolist() == pytest.approx([0.4, 0.4], abs=1e-6)
        assert tp[1].tolist() == pytest.approx([0.7, 0.3], abs=1e-6)
        assert math.isnan(tp[3, 0].item())
