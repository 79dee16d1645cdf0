"""MultimodalBatch and collate: rows per modality, dense filling, device moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmsample.batch import MultimodalBatch, collate
from mmsample.plan import Plan, TablePlan


def _sample(i: int, mask: int) -> dict:
    s: dict = {"id": i, "label": i % 3, "key": f"k{i}", "mask": mask}
    if mask & 1:
        s["video"] = torch.full((2, 3), float(i))
    if mask & 2:
        s["text"] = {"input_ids": torch.tensor([i, i + 1]), "attention_mask": torch.tensor([1, 0])}
    return s


def test_collate_keeps_only_rows_that_carry_each_modality() -> None:
    masks = [3, 1, 2, 3]
    batch = collate([_sample(i, m) for i, m in enumerate(masks)], ["video", "text"])
    assert batch.ids.tolist() == [0, 1, 2, 3]
    assert batch.labels.tolist() == [0, 1, 2, 0]
    assert batch.rows("video").tolist() == [0, 1, 3]
    assert batch.rows("text").tolist() == [0, 2, 3]
    assert batch["video"].shape == (3, 2, 3)
    assert batch["video"][:, 0, 0].tolist() == [0.0, 1.0, 3.0]
    text = batch["text"]
    assert isinstance(text, dict)
    assert text["input_ids"].tolist() == [[0, 1], [2, 3], [3, 4]]
    assert batch.present("text").tolist() == [True, False, True, True]
    assert batch.paired().tolist() == [True, False, False, True]


def test_dense_fills_absent_rows_with_zeros() -> None:
    batch = collate([_sample(i, m) for i, m in enumerate([2, 1, 3])], ["video", "text"])
    dense = batch.dense("video")
    assert isinstance(dense, torch.Tensor)
    assert dense.shape == (3, 2, 3)
    assert dense[0].abs().sum() == 0
    assert torch.equal(dense[1], torch.full((2, 3), 1.0))
    assert torch.equal(dense[2], torch.full((2, 3), 2.0))
    dense_text = batch.dense("text")
    assert isinstance(dense_text, dict)
    assert dense_text["input_ids"].tolist() == [[0, 1], [0, 0], [2, 3]]


def test_modality_absent_from_whole_batch_is_not_in_batch() -> None:
    batch = collate([_sample(0, 1), _sample(1, 1)], ["video", "text"])
    assert "text" not in batch and "video" in batch
    assert batch.present("text").tolist() == [False, False]


def test_collate_refuses_mask_without_value_and_empty_input() -> None:
    bad = _sample(0, 1)
    bad["mask"] = 3
    with pytest.raises(ValueError, match="text"):
        collate([bad], ["video", "text"])
    with pytest.raises(ValueError, match="empty"):
        collate([], ["video"])


def test_to_copies_every_tensor() -> None:
    batch = collate([_sample(i, 3) for i in range(2)], ["video", "text"])
    moved = batch.to("cpu")
    assert isinstance(moved, MultimodalBatch)
    assert torch.equal(moved["video"], batch["video"])  # type: ignore[arg-type]
    assert moved.names == batch.names and moved.keys == batch.keys


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pinned_non_blocking_transfer_to_cuda() -> None:
    batch = collate([_sample(i, m) for i, m in enumerate([3, 1, 2])], ["video", "text"])
    pinned = batch.pin_memory()
    assert pinned["video"].is_pinned()  # type: ignore[union-attr]
    gpu = pinned.to("cuda", non_blocking=True)
    torch.cuda.synchronize()
    assert gpu.ids.is_cuda and gpu["video"].is_cuda  # type: ignore[union-attr]
    dense = gpu.dense("video")
    assert isinstance(dense, torch.Tensor) and dense.is_cuda
    assert torch.equal(dense.cpu(), batch.dense("video"))  # type: ignore[arg-type]


def test_plain_plan_and_table_plan_layout() -> None:
    plan = Plan.every(np.array([2, 0, 5]), 6, 7)  # 3 modalities: mask 0b111
    assert [plan.items(i) for i in range(7)] == [(7,), (), (7,), (), (), (7,), ()]
    assert plan.counts(np.arange(6)).tolist() == [1, 0, 1, 0, 0, 1]
    assert plan.order() is None

    # a table lists only the ids it changes: 0 twice, 1 dropped, 3 dropped; 2 keeps one full item
    table = TablePlan({0: (3, 1), 1: (), 3: ()}, full=0b11)
    laid = table.to_plan(np.array([3, 0, 2, 1]), 5)
    assert [laid.items(i) for i in range(5)] == [(3, 1), (), (3,), (), ()]
    assert laid.masks.tolist() == [3, 1, 3]  # ids ascending, items in order
    with pytest.raises(ValueError, match=r"'full' parameter of Plan\.every must be an int >= 1"):
        Plan.every(np.array([0]), 1, 0)
    with pytest.raises(ValueError, match=r"'ids' parameter of Plan.every must hold ids in \[0, "):
        Plan.every(np.array([0, 4]), 4, 1)


def test_collate_with_a_collate_fn_collates_each_modality_itself() -> None:
    """The one Collate serves wrap too: a user's collate_fn gets each modality's values."""
    from torch.utils.data import default_collate

    from mmsample.batch import Collate

    masks = [3, 1, 2]
    seen: list[int] = []

    def count(values: list) -> list:
        seen.append(len(values))
        return list(values)

    batch = Collate(["video", "text"], collate_fn=count)(
        [_sample(i, m) for i, m in enumerate(masks)]
    )
    assert seen == [2, 2]
    assert batch.rows("video").tolist() == [0, 1] and batch.rows("text").tolist() == [0, 2]
    assert isinstance(batch["video"], list) and batch.modalities["video"].sizes is None
    stacked = Collate(["video", "text"], collate_fn=default_collate)([_sample(0, 3), _sample(1, 1)])
    assert stacked["video"].shape == (2, 2, 3)
    with pytest.raises(ValueError, match="'pad' and 'collate_fn' parameters of Collate"):
        Collate(["video"], pad={"video": 0}, collate_fn=default_collate)
    with pytest.raises(ValueError, match="'collate_fn' parameter of Collate"):
        Collate(["video"], collate_fn=3)  # type: ignore[arg-type]
