"""Merging the Ledger's tables across ranks with torch.distributed (gloo on CPU, or NCCL).

Place in the data flow: each rank observes its own share of the samples; `Ledger.sync()` calls
`merge_tables` (a collective) so that every rank ends with the same table, e.g. before the
balancing methods read `snapshot()` at an epoch boundary.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from .table import Tables, stamp_groups

__all__ = ["merge_tables"]


def merge_tables(tables: Tables, step: int, group: Any = None) -> int:
    """Merge a Ledger's tables (in place) with those of the other ranks of `group`: per sample
    and column group (each modality, similarity, fused, values; label and last_seen go with
    the newest of them) the entry with the latest stamp wins, ties to the
    lowest rank; `count` adds every rank's observations since the last merge (`count_base`).
    Returns the largest `step` of any rank."""
    floats, bools, ints = tables.f, tables.b, tables.i
    count, count_base = tables.count, tables.count_base
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    m = bools.shape[1] - 1
    g = stamp_groups(m)  # M modalities, similarity, fused, values
    dev = collective_device(group)
    stamps = ints[:, 2:].to(dev, copy=True)
    # one more group for the label and last_seen: the newest observation of any group
    stamps = torch.cat([stamps, stamps.amax(1, keepdim=True)], 1)
    newest = stamps.clone()
    dist.all_reduce(newest, op=dist.ReduceOp.MAX, group=group)
    owner = torch.where(stamps == newest, rank, world)
    dist.all_reduce(owner, op=dist.ReduceOp.MIN, group=group)
    mine = (owner == rank).cpu()  # [N, g + 1]: this rank holds the winning entry of the group
    sim, fused, values, anyg = m, m + 1, m + 2, g
    modality = list(range(m))
    fgroup = torch.tensor(
        [*modality, fused, *modality, fused, sim, *[values] * (1 << m), *modality]
    )
    merged_f = torch.where(mine[:, fgroup], floats, 0.0).to(dev)
    igroup = torch.tensor([anyg, anyg, *modality, fused])
    merged_i = torch.where(mine[:, igroup], torch.cat([ints[:, :2], bools.long()], 1), 0)
    delta = (count - count_base).unsqueeze(1)
    merged_i = torch.cat([merged_i, delta], 1).to(dev)
    steps = torch.tensor([step], dtype=torch.int64, device=dev)
    dist.all_reduce(merged_f, group=group)
    dist.all_reduce(merged_i, group=group)
    dist.all_reduce(steps, op=dist.ReduceOp.MAX, group=group)
    merged_i = merged_i.cpu()
    floats.copy_(merged_f)
    ints[:, :2].copy_(merged_i[:, :2])
    ints[:, 2:].copy_(newest[:, :g])
    bools.copy_(merged_i[:, 2 : 3 + m] != 0)
    count.copy_(count_base + merged_i[:, 3 + m])
    count_base.copy_(count)
    return int(steps.item())


def collective_device(group: Any) -> torch.device:
    if dist.get_backend(group) == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
