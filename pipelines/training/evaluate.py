"""Test metrics of a training run: fused and per-modality accuracy, probes, Shapley values.

Place in the data flow: after each epoch, on the `--test-split` read by an `IndexedDataset`;
under DDP each rank scores a disjoint share of the test ids and the counts are summed, so every
test sample counts once.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmsample.batch import MultimodalBatch
from mmsample.scoring import model_pass, pass_ids
from mmsample.shards.indexed import IndexedDataset
from mmsample.signals import shapley, subset_logits

from ..models import LateFusion
from .device import all_sum, autocast


def evaluate(
    model: LateFusion, reader: IndexedDataset, device: torch.device, batch_size: int, workers: int
) -> dict[str, float]:
    """Test metrics over every id of `reader`, each counted once across ranks (this rank's
    share of `mmsample.scoring.pass_ids`, read by `model_pass`, the counts summed): `test/acc`
    (fused), `test/acc/<m>` (the fusion head on modality m alone, the others zeroed),
    `test/probe/<m>` (the unimodal probe), `test/contribution/<m>` (Shapley value of m with
    v(C) = accuracy of the head on subset C), `test/n`."""
    names = model.names
    m = len(names)
    counts = torch.zeros((1 << m) + m + 1, dtype=torch.float64)

    def tally(batch: MultimodalBatch, feats: list[Tensor]) -> None:
        y = batch.labels
        logits = subset_logits(feats, model.head)
        right = (logits.argmax(-1) == y[:, None]).double().sum(0).cpu()
        uni = model.unimodal(feats)
        probes = torch.stack([(u.argmax(-1) == y).double().sum() for u in uni]).cpu()
        counts.add_(torch.cat([right, probes, torch.tensor([float(len(y))])]))

    _, mine = pass_ids(reader, None, "evaluate")
    was_training = model.training
    model.eval()
    with autocast(device):  # bf16 as in training; model_pass's own autocast is off
        model_pass(
            model,
            reader,
            mine,
            tally,
            batch_size=batch_size,
            num_workers=workers,
            device=device,
            progress=False,
            autocast=False,
            desc="evaluate",
        )
    model.train(was_training)
    dev = device if device.type == "cuda" else torch.device("cpu")
    counts = all_sum(counts.to(dev)).cpu()
    n = float(counts[-1])
    acc = counts[: 1 << m] / max(n, 1.0)
    phi = shapley(acc.unsqueeze(0))[0]
    full = (1 << m) - 1
    out = {"test/acc": float(acc[full]), "test/n": n}
    for j, name in enumerate(names):
        out[f"test/acc/{name}"] = float(acc[1 << j])
        out[f"test/probe/{name}"] = float(counts[(1 << m) + j] / max(n, 1.0))
        out[f"test/contribution/{name}"] = float(phi[j])
    return out
