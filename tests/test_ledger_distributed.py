"""Ledger.sync across two real processes (torch.distributed, gloo): the merge worked by hand."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmsample.ledger import Ledger

N, K = 6, 3


def prob(rank: int, sample: int, step: int) -> float:
    """The label probability rank `rank` observes for `sample` at its `step` (all distinct)."""
    return 0.4 + 0.2 * rank + 0.03 * sample + 0.01 * step


def observe(led: Ledger, ids: list[int], rank: int, step: int, fused: bool = True) -> None:
    """Both modalities put prob(...) on label id % 3 (the rest split evenly); fused 0.9 - p."""
    rows = []
    for i in ids:
        p = prob(rank, i, step)
        row = [(1 - p) / 2] * K
        row[i % K] = p
        rows.append(row)
    logits = torch.tensor(rows, dtype=torch.float64).log().float()
    fused_rows = [[(1 - (0.9 - r[i % K])) / 2] * K for r, i in zip(rows, ids)]
    for r, i, src in zip(fused_rows, ids, rows):
        r[i % K] = 0.9 - src[i % K]
    fused_logits = torch.tensor(fused_rows, dtype=torch.float64).log().float()
    led.observe(
        torch.tensor(ids),
        torch.tensor([i % K for i in ids]),
        [logits, logits],
        fused_logits if fused else None,
    )


# What each rank observes, per step (step numbers start at 1): id 3 is seen by both ranks at
# different steps, id 5 by both at the same step (tie: rank 0 wins), id 2 by rank 0 with fused
# logits at step 1 and by rank 1 without them at step 2 (fused group from rank 0, the rest from 1).
PLAN = {
    0: [([0, 2, 5], True), ([3], True)],
    1: [([1, 3, 5], True), ([2, 4], False)],
}
# after the first sync both ranks observe once more, then sync again
SECOND = {0: [0], 1: [0, 4]}


def worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        led = Ledger(N, 2, K)
        for step, (ids, fused) in enumerate(PLAN[rank], start=1):
            observe(led, ids, rank, step, fused)
        led.sync()
        first = led.snapshot()
        led.set_epoch(1)
        observe(led, SECOND[rank], rank, 3)
        led.sync()
        torch.save({"first": first, "second": led.snapshot(), "step": led.step}, out + f"{rank}.pt")
        dist.barrier()  # no rank tears gloo down while its peer still talks to it
    finally:
        dist.destroy_process_group()


def test_sync_merges_two_ranks_by_latest_stamp(tmp_path: Path) -> None:
    init = f"file://{tmp_path / 'init'}"
    mp.spawn(worker, args=(2, init, str(tmp_path / "rank")), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for key in results[0]["first"]:
        for phase in ("first", "second"):
            torch.testing.assert_close(
                results[1][phase][key], results[0][phase][key], equal_nan=True
            )
    first = results[0]["first"]
    # id: (rank, step) whose unimodal entry wins; fused winners differ for id 2 only
    core = {0: (0, 1), 1: (1, 1), 2: (1, 2), 3: (0, 2), 4: (1, 2), 5: (0, 1)}
    fused = {0: (0, 1), 1: (1, 1), 2: (0, 1), 3: (0, 2), 5: (0, 1)}
    tp = torch.tensor([prob(r, i, s) for i, (r, s) in core.items()])
    torch.testing.assert_close(first["true_prob"], tp.view(-1, 1).expand(-1, 2))
    torch.testing.assert_close(first["unimodal_loss"], -tp.log().view(-1, 1).expand(-1, 2))
    ftp = [0.9 - prob(fused[i][0], i, fused[i][1]) if i in fused else math.nan for i in range(N)]
    torch.testing.assert_close(first["fused_true_prob"], torch.tensor(ftp), equal_nan=True)
    assert first["fused_seen"].tolist() == [True, True, True, True, False, True]
    assert first["labels"].tolist() == [i % K for i in range(N)]
    assert first["seen_count"].tolist() == [1, 1, 2, 2, 1, 2]
    assert first["last_seen"].tolist() == [0] * N
    # every probability is > 1/3 on the label, so every modality is correct
    assert first["correct"].all()
    second = results[0]["second"]
    # step 3, epoch 1: id 0 by both ranks (tie: rank 0), id 4 by rank 1
    tp[0], tp[4] = prob(0, 0, 3), prob(1, 4, 3)
    torch.testing.assert_close(second["true_prob"], tp.view(-1, 1).expand(-1, 2))
    assert second["seen_count"].tolist() == [3, 1, 2, 2, 2, 2]
    assert second["last_seen"].tolist() == [1, 0, 0, 0, 1, 0]
    assert results[0]["step"] == results[1]["step"] == 3
