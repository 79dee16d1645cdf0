"""The decoded test set, kept in memory and reused across epochs and runs of one process.

Place in the data flow: between the test split's `IndexedDataset` and `evaluate`. The test set
is fixed (same clips, same specs, and the evaluation reader's draws are epoch 0's), so its
decoded batches do not change from one evaluation to the next: the first evaluation of a
process decodes this rank's share of the test ids (`mmsample.scoring.pass_ids`) into CPU
`MultimodalBatch`es, and every later evaluation with the same key (data folder and its
fingerprint, split, modality specs, batch size, rank and world size) reuses them. The demo runs
all its runs in one process, so it decodes its test set once. A test set larger than
`limit_bytes` is not kept: it is decoded at every evaluation, and a warning says so once.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from mmsample.batch import Collate, MultimodalBatch
from mmsample.errors import MmsampleWarning
from mmsample.report.runlog import data_fingerprint
from mmsample.schedule import resolve_world
from mmsample.scoring import pass_ids
from mmsample.shards.indexed import IdSubset, IndexedDataset
from mmsample.storage import parse_location

__all__ = ["TEST_SETS", "TestKey", "TestSets", "test_key"]


@dataclass(frozen=True)
class TestKey:
    """What decides a test set's decoded batches."""

    data: str
    fingerprint: str
    split: str
    specs: str
    batch_size: int
    rank: int
    world: int


def test_key(
    data: str | os.PathLike[str],
    split: str,
    specs: dict[str, Any],
    batch_size: int,
    fingerprint: str | None = None,
) -> TestKey:
    """The cache key of the test split `split` of the shard folder `data` read with `specs`
    (`{modality: Spec}`) in batches of `batch_size` by this rank; `fingerprint`: the data's
    `data_fingerprint` when the caller has it (else computed here: a listing for a URL)."""
    rank, world = resolve_world(None, None, "evaluate")
    where = parse_location(data)
    return TestKey(
        str(where.local_path().resolve()) if where.is_local else where.display,
        data_fingerprint(data) if fingerprint is None else fingerprint,
        split,
        repr(sorted(specs.items())),
        batch_size,
        rank,
        world,
    )


def _nbytes(batch: MultimodalBatch) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(batch))


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    if hasattr(value, "__dict__"):
        return _tensors(vars(value))
    return []


class TestSets:
    """Decoded test batches by `TestKey`, up to `limit_bytes` each (see the module docstring)."""

    def __init__(self, limit_bytes: int = 2 << 30) -> None:
        if limit_bytes < 0:
            raise ValueError(
                f"The 'limit_bytes' parameter of TestSets must be >= 0; got {limit_bytes}"
            )
        self.limit_bytes = limit_bytes
        self.kept: dict[TestKey, list[MultimodalBatch]] = {}
        self.warned: set[TestKey] = set()

    def clear(self) -> None:
        """Forget every decoded test set."""
        self.kept.clear()

    def batches(
        self, reader: IndexedDataset, key: TestKey, workers: int
    ) -> tuple[list[MultimodalBatch], int]:
        """(this rank's test batches on the CPU, clips decoded now: 0 when reused)."""
        if key in self.kept:
            return self.kept[key], 0
        _, mine = pass_ids(reader, None, "evaluate")
        loader = DataLoader(
            IdSubset(reader, mine),
            batch_size=key.batch_size,
            num_workers=workers,
            collate_fn=Collate(tuple(reader.decoder.names)),
        )
        batches = list(loader)
        size = sum(_nbytes(b) for b in batches)
        if size <= self.limit_bytes:
            self.kept[key] = batches
        elif key not in self.warned:
            self.warned.add(key)
            warnings.warn(
                f"The decoded test set of {key.data} (split {key.split!r}) takes "
                f"{size / 2**30:.2f} GiB, more than the {self.limit_bytes / 2**30:.2f} GiB kept "
                "in memory: it is decoded again at every evaluation.",
                MmsampleWarning,
                stacklevel=2,
            )
        return batches, len(mine)


TEST_SETS = TestSets()
"""The process's decoded test sets (`evaluate` reads through it)."""
