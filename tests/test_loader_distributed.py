"""Two real ranks (torch.distributed, gloo): every method gives both ranks the same number of
batches, and together they cover the plan."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .loader_helpers import (
    METHODS,
    NAMES,
    N,
    fed_ledger,
    items,
    make_method,
    modalities,
    write_dataset,
)


def _rank(rank: int, world: int, init: str, root: str, out: str) -> None:
    from mmsample.loader import balanced_loader

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        result = {}
        for name in METHODS:
            for mode in ("streamed", "indexed"):
                method = make_method(name, fed_ledger())
                loader = balanced_loader(
                    root,
                    method,
                    modalities=modalities(),
                    batch_size=None if name.startswith("dus") else 4,
                    mode=mode,
                    seed=3,
                )
                loader.set_epoch(1)
                batches = [items(b) for b in loader]
                plan = None
                if method is not None:
                    p = method.plan(1)
                    plan = [(i, m) for i in range(N) for m in p.items(i)]
                sizes = method.batch_sizes(1) if name.startswith("dus") else None
                groups = method.plan(1).groups() if method is not None else None
                result[(name, mode)] = {
                    "batches": batches,
                    "plan": plan,
                    "len": len(loader),
                    "sizes": sizes,
                    "groups": None if groups is None else groups.tolist(),
                }
        torch.save(result, f"{out}{rank}.pt")
        dist.barrier()  # no rank tears gloo down while its peer still talks to it
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_batches_cover_the_plan(tmp_path: Path) -> None:
    root = tmp_path / "shards"
    write_dataset(root)
    init = f"file://{tmp_path / 'rendezvous'}"
    out = str(tmp_path / "rank")
    mp.start_processes(_rank, args=(2, init, str(root), out), nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(f"{out}{r}.pt") for r in (0, 1))
    for key in r0:
        a, b = r0[key], r1[key]
        assert len(a["batches"]) == len(b["batches"]) == a["len"] == b["len"], key
        assert a["plan"] == b["plan"], key  # the plan is global and identical on every rank
        got = Counter(x for batch in a["batches"] + b["batches"] for x in batch)
        name = key[0]
        if name.startswith("dus"):
            # DUS masks rows by position: ids cover the plan, rows per modality follow the sizes
            want_ids = Counter(i for i, _ in a["plan"])
            got_ids = Counter(i for i, _ in got)
            assert set(got_ids) == set(want_ids), key
            assert a["sizes"] == b["sizes"], key
            want_rows = [a["sizes"][n] for n in NAMES]
            for batch in a["batches"] + b["batches"]:
                assert len(batch) == max(want_rows), key
                rows = [sum(m >> j & 1 for _, m in batch) for j in range(len(NAMES))]
                assert rows == want_rows, key  # the scheduled rows of each modality
            continue
        want = Counter(a["plan"]) if a["plan"] is not None else Counter((i, 3) for i in range(N))
        assert not want - got, key  # nothing missing
        extra = got - want
        # padding: at most world_size - 1 items (per group of a grouped plan), copies of items
        # of the plan
        groups = a["groups"] or [0]
        assert sum(extra.values()) <= len(groups) and set(extra) <= set(want), key
        if a["groups"] is not None and key[1] == "indexed":
            # Remix: every batch carries one modality, the same on both ranks at each step, and
            # the ranks go through the groups in the plan's order
            masks = [[{m for _, m in batch} for batch in r["batches"]] for r in (a, b)]
            assert all(len(s) == 1 for s in masks[0] + masks[1]), key
            assert masks[0] == masks[1], key
            per_rank = [-(-n // 2) for n in groups]  # ceil(group / world) items per rank
            sizes = [len(batch) for batch in a["batches"]]
            assert sizes == [min(4, n - s) for n in per_rank for s in range(0, n, 4)], key
