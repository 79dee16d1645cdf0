"""Test metrics and per-clip outcomes of a training run: fused and per-modality accuracy,
macro-F1, probes, Shapley values, and every clip's predictions.

Place in the data flow: after each epoch, on the `--test-split` read by an `IndexedDataset`
whose decoded batches are kept for the process (`test_set.TEST_SETS`: decoded once, reused by
later epochs and runs). Under DDP each rank predicts a disjoint share of the test ids; the
shares are gathered (`all_gather_object`) and ordered by id, so every test clip counts once,
and every metric is computed from the gathered predictions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from mmsample.report.outcomes import Outcomes, check_outcomes, subset_name
from mmsample.report.scores import macro_f1
from mmsample.shards.indexed import IndexedDataset
from mmsample.signals import shapley, subset_logits

from ..models import LateFusion
from .device import autocast, distributed
from .test_set import TEST_SETS, TestKey


def _predict(model: LateFusion, batches: list[Any], device: torch.device) -> dict[str, np.ndarray]:
    """This rank's ids, labels, subset predictions `[n, 2**M]` and probe predictions `[n, M]`."""
    parts: dict[str, list[np.ndarray]] = {"ids": [], "labels": [], "subsets": [], "probes": []}
    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast(device):  # bf16 on CUDA, as in training
        for cpu_batch in batches:
            batch = cpu_batch.to(device, non_blocking=True)
            feats = model.features(batch)
            subsets = subset_logits(feats, model.head).argmax(-1)
            probes = torch.stack([u.argmax(-1) for u in model.unimodal(feats)], 1)
            parts["ids"].append(batch.ids.cpu().numpy())
            parts["labels"].append(batch.labels.cpu().numpy())
            parts["subsets"].append(subsets.cpu().numpy())
            parts["probes"].append(probes.cpu().numpy())
    model.train(was_training)
    m = len(model.names)
    empty = {"ids": (0,), "labels": (0,), "subsets": (0, 1 << m), "probes": (0, m)}
    return {
        k: np.concatenate(v) if v else np.zeros(empty[k], dtype=np.int64) for k, v in parts.items()
    }


def _gather(mine: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every rank's share, concatenated (identity outside DDP)."""
    if not distributed():
        return mine
    shares: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(shares, mine)
    return {k: np.concatenate([s[k] for s in shares]) for k in mine}


def evaluate(
    model: LateFusion,
    reader: IndexedDataset,
    key: TestKey,
    device: torch.device,
    workers: int,
    epoch: int,
) -> tuple[dict[str, float], Outcomes]:
    """Metrics and per-clip outcomes over every id of `reader` (each once across ranks).

    Metrics: `test/acc` (fused), `test/macro_f1` (fused; `mmsample.report.scores.macro_f1`),
    `test/acc/<m>` (the fusion head on modality m alone, the others zeroed), `test/probe/<m>`
    (the unimodal probe), `test/contribution/<m>` (Shapley value of m with v(C) = accuracy of
    the head on subset C, v(empty) the head on zero features), `test/n` (clips) and
    `eval/decoded` (clips decoded for this evaluation, summed over ranks: 0 when the decoded
    test batches were reused). Outcomes: the predictions of every subset and probe per clip,
    ordered by id (`mmsample.report.outcomes`). ValueError if ranks predicted a clip twice.
    """
    batches, decoded = TEST_SETS.batches(reader, key, workers)
    share = _predict(model, batches, device)
    share["decoded"] = np.array([decoded], dtype=np.int64)
    got = _gather(share)
    names = list(model.names)
    m = len(names)
    outcomes = check_outcomes(
        epoch,
        names,
        got["ids"],
        got["labels"],
        {subset_name(c, names): got["subsets"][:, c] for c in range(1 << m)},
        {n: got["probes"][:, j] for j, n in enumerate(names)},
    )
    values = torch.tensor(
        [float(outcomes.correct(subset_name(c, names)).mean()) for c in range(1 << m)],
        dtype=torch.float64,
    )
    phi = shapley(values.unsqueeze(0))[0]
    out = {
        "test/acc": float(values[(1 << m) - 1]),
        "test/macro_f1": macro_f1(outcomes.labels, outcomes.predictions[outcomes.fused]),
        "test/n": float(len(outcomes.ids)),
        "eval/decoded": float(got["decoded"].sum()),
    }
    for j, name in enumerate(names):
        out[f"test/acc/{name}"] = float(values[1 << j])
        out[f"test/probe/{name}"] = float((outcomes.probes[name] == outcomes.labels).mean())
        out[f"test/contribution/{name}"] = float(phi[j])
    return out, outcomes
