"""The loader-to-GPU path: pinned MultimodalBatches from real shards, async copies to CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from mmsample.batch import Collate, MultimodalBatch
from mmsample.decoding import Array, Text
from mmsample.shards import StreamedDataset
from mmsample.testing import write_tiny_dataset

NAMES = ["features", "text"]


def _dataset(root: Path) -> StreamedDataset:
    # Sample 1 lacks its caption: the batch must carry text only for the rows that have it.
    write_tiny_dataset(root, n=10, fields=("npy", "txt"), samples_per_shard=4, missing={"txt": {1}})
    return StreamedDataset(
        root,
        {"features": Array(field="npy"), "text": Text(field="txt", max_length=16, byte_ids=True)},
    )


def test_collate_is_picklable_and_validates() -> None:
    import pickle

    c = pickle.loads(pickle.dumps(Collate(NAMES)))
    assert c.names == tuple(NAMES)
    with pytest.raises(ValueError, match="'names'"):
        Collate("video")


def test_loader_batches_on_cpu(tmp_path: Path) -> None:
    loader = DataLoader(_dataset(tmp_path), batch_size=4, num_workers=2, collate_fn=Collate(NAMES))
    batches = list(loader)
    assert all(isinstance(b, MultimodalBatch) for b in batches)
    ids = torch.cat([b.ids for b in batches]).tolist()
    assert sorted(ids) == list(range(10))
    first = next(b for b in batches if 1 in b.ids.tolist())
    row = first.ids.tolist().index(1)
    assert not bool(first.present("text")[row]) and bool(first.present("features")[row])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pinned_batches_copy_asynchronously_to_cuda(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    cpu = list(DataLoader(ds, batch_size=4, num_workers=2, collate_fn=Collate(NAMES)))
    loader = DataLoader(ds, batch_size=4, num_workers=2, pin_memory=True, collate_fn=Collate(NAMES))
    stream = torch.cuda.Stream()
    for ref, batch in zip(cpu, loader, strict=True):
        feats = batch["features"]
        assert isinstance(feats, torch.Tensor) and feats.is_pinned()
        assert batch.ids.is_pinned() and batch.rows("features").is_pinned()
        with torch.cuda.stream(stream):
            gpu = batch.to("cuda", non_blocking=True)
        stream.synchronize()
        assert gpu.ids.is_cuda and gpu.rows("text").is_cuda
        assert torch.equal(gpu.ids.cpu(), ref.ids)
        dense = gpu.dense("text")
        assert isinstance(dense, dict) and dense["input_ids"].is_cuda
        ref_dense = ref.dense("text")
        assert isinstance(ref_dense, dict)
        assert torch.equal(dense["input_ids"].cpu(), ref_dense["input_ids"])
        assert torch.equal(gpu.dense("features").cpu(), ref.dense("features"))  # type: ignore[union-attr]
