"""Scoring over any dataset: BSS's ranking, BSS-learned's rescoring and SMV-reference's
re-valuation run over a user's plain map-style Dataset with the user's collate_fn
(`mmsample.position_scoring.PositionScorer`, given to `wrap` as its scorer)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

from mmsample.ledger import Ledger
from mmsample.loader import wrap
from mmsample.methods import BSS, SMV
from mmsample.position_scoring import PositionScorer
from mmsample.signals import subset_logits

N, K = 20, 3
FIELDS = {"audio": 0, "video": 1, "label": 2}


class Plain(Dataset):
    """(audio [K], video [K], label): audio is informative for even ids, video never is."""

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        y = i % K
        g = torch.Generator().manual_seed(i)
        audio = torch.randn(K, generator=g) + (3.0 if i % 2 == 0 else 0.0) * torch.eye(K)[y]
        return audio, torch.randn(K, generator=g), y


class Collate:
    """The user's collate_fn: torch's, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, items: list[Any]) -> Any:
        self.calls += 1
        return default_collate(items)


def forward(batch: Any) -> torch.Tensor:
    """A fixed model: the features are the inputs, the head sums them."""
    audio, video, _ = batch
    return subset_logits([audio.float(), video.float()], lambda x: x[:, :K] + x[:, K:])


def ledger() -> Ledger:
    return Ledger(N, 2, K, names=["audio", "video"])


def test_bss_ranks_a_plain_dataset_through_the_users_collate() -> None:
    led, collate = ledger(), Collate()
    bss = BSS(led, lambda0=0.5, t_grow=4)
    scorer = PositionScorer(forward, Plain(), led, fields=FIELDS, collate_fn=collate, batch_size=6)
    dl = DataLoader(Plain(), batch_size=4, collate_fn=collate)
    loader = wrap(dl, bss, fields=FIELDS, scorer=scorer)
    served = [i for b in loader for i in b.ids.tolist()]  # no "never scored" error
    assert collate.calls >= -(-N // 6)  # the scoring pass went through the user's collate
    assert bool((led.seen_count > 0).all()) and bool(led.snapshot()["fused_seen"].all())
    assert served == bss.plan(0).order().tolist() and len(served) == bss.kept(0) < N
    # the ranking is the ledger's balance score: the first ids kept are the best scored
    scores = dict(zip(bss.ids.tolist(), bss.scores().tolist()))
    kept = set(served)
    assert min(scores[i] for i in kept) >= max(scores[i] for i in range(N) if i not in kept)


def test_without_a_scorer_bss_names_the_scoring_pass() -> None:
    loader = wrap(DataLoader(Plain(), batch_size=4), BSS(ledger()), fields=FIELDS)
    with pytest.raises(ValueError, match="never scored"):
        list(loader)


def test_smv_reference_revaluates_over_a_plain_dataset_each_epoch() -> None:
    led = ledger()
    asked: list[np.ndarray] = []
    scorer = PositionScorer(forward, Plain(), led, fields=FIELDS, batch_size=8)

    def recording(ids: np.ndarray) -> None:
        asked.append(np.asarray(ids).copy())
        scorer(ids)

    smv = SMV(led, warmup=1, variant="reference")
    loader = wrap(DataLoader(Plain(), batch_size=4), smv, fields=FIELDS, scorer=recording)
    first = [i for b in loader for i in b.ids.tolist()]
    assert sorted(first) == list(range(N)) and asked == []  # warm-up: no valuation pass
    second = [(i, m) for b in loader for i, m in zip(b.ids.tolist(), b.mask.tolist())]
    assert len(asked) == 1 and asked[0].tolist() == list(range(N))
    assert bool(led.snapshot()["values_seen"].all())  # the pass valuated every id
    assert len(second) > N and any(m != 3 for _, m in second)  # and SMV acted on it


def test_a_multimodal_forward_and_its_refusals() -> None:
    led = ledger()

    def multimodal(batch: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = [batch.dense("audio").float(), batch.dense("video").float()]
        logits = subset_logits(feats, lambda x: x[:, :K] + x[:, K:])
        return logits, [logits[:, 1], logits[:, 2]]

    PositionScorer(multimodal, Plain(), led, fields=FIELDS, output="multimodal")(np.arange(5))
    assert (led.seen_count > 0).tolist() == [True] * 5 + [False] * (N - 5)
    with pytest.raises(ValueError, match="'output' parameter of PositionScorer"):
        PositionScorer(forward, Plain(), led, fields=FIELDS, output="rows")
    with pytest.raises(ValueError, match="'batch_size' parameter of PositionScorer"):
        PositionScorer(forward, Plain(), led, fields=FIELDS, batch_size=0)


def test_the_pass_puts_the_given_model_in_eval_mode_and_restores_it() -> None:
    """A forward closing over a model with BatchNorm: with `model=` its statistics stay as they
    were and the model is back in training mode after; an nn.Module given as `forward` is
    switched by itself."""
    norm = torch.nn.BatchNorm1d(2 * K)
    seen: list[bool] = []

    def normed(batch: Any) -> torch.Tensor:
        audio, video, _ = batch
        seen.append(norm.training)
        x = norm(torch.cat([audio.float(), video.float()], 1))
        return subset_logits([x[:, :K], x[:, K:]], lambda z: z[:, :K] + z[:, K:])

    norm.train()
    stats = norm.running_mean.clone(), norm.running_var.clone()
    PositionScorer(normed, Plain(), ledger(), fields=FIELDS, model=norm)(np.arange(N))
    assert seen and not any(seen) and norm.training
    assert torch.equal(norm.running_mean, stats[0]) and torch.equal(norm.running_var, stats[1])

    class Module(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = torch.nn.BatchNorm1d(2 * K)

        def forward(self, batch: Any) -> torch.Tensor:
            audio, video, _ = batch
            seen.append(self.norm.training)
            x = self.norm(torch.cat([audio.float(), video.float()], 1))
            return subset_logits([x[:, :K], x[:, K:]], lambda z: z[:, :K] + z[:, K:])

    module, seen[:] = Module(), []
    PositionScorer(module, Plain(), ledger(), fields=FIELDS)(np.arange(N))
    assert seen and not any(seen) and module.training
    assert int(module.norm.num_batches_tracked) == 0
