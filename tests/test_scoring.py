"""The scoring pass on real shards: ledger entries equal the model's outputs computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmsample.batch import MultimodalBatch
from mmsample.ledger import Ledger
from mmsample.loader import balanced_loader
from mmsample.methods import BSS, SMV
from mmsample.scoring import Scorer, score
from mmsample.shards import IndexedDataset

from .loader_helpers import NAMES, N, modalities, write_dataset


class TinyModel:
    """Audio: the first 6 spectrogram bins averaged over time; feat: the 8 npy floats; a fixed
    linear fusion head (6 + 8 -> 3)."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.w = torch.randn(3, 14, generator=gen)
        self.b = torch.randn(3, generator=gen)

    def audio_features(self, spec: torch.Tensor) -> torch.Tensor:
        return spec.reshape(spec.shape[0], -1, spec.shape[-1])[:, :6, :].mean(-1)

    def features(self, batch: MultimodalBatch) -> list[torch.Tensor]:
        return [self.audio_features(batch.dense("audio")).float(), batch.dense("feat").float()]

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w.T + self.b


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shards")
    write_dataset(path)
    return path


def test_scoring_records_the_models_outputs(root: Path) -> None:
    model = TinyModel()
    reader = IndexedDataset(root, modalities())
    led = Ledger(N, 2, 3, names=list(NAMES))
    assert score(model, reader, led, batch_size=5, progress=False) == N
    snap = led.snapshot()
    assert bool(snap["fused_seen"].all()) and bool(snap["values_seen"].all())
    for i in (0, 7, 21):
        s = reader.get(i)
        fa = model.audio_features(s["audio"].unsqueeze(0)).float()[0]
        fv = s["feat"].float()
        x = torch.cat([fa, fv])
        label = int(s["label"])
        fused = torch.softmax(model.head(x), -1)
        alone = [torch.cat([fa, torch.zeros(8)]), torch.cat([torch.zeros(6), fv])]
        uni = [torch.softmax(model.head(a), -1) for a in alone]
        assert led.fused_true_prob[i].item() == pytest.approx(fused[label].item(), rel=1e-4)
        for j in range(2):
            assert led.true_prob[i, j].item() == pytest.approx(uni[j][label].item(), rel=1e-4)
        subsets = [torch.zeros(14), alone[0], alone[1], x]
        right = [int(model.head(c).argmax()) == label for c in subsets]
        expected = [0.0, 1.0 * right[1], 1.0 * right[2], 2.0 * right[3]]
        assert led.values[i].tolist() == expected


def test_scoring_a_subset_and_bad_arguments(root: Path) -> None:
    led = Ledger(N, 2, 3, names=list(NAMES))
    score(TinyModel(), root, led, ids=[3, 4], modalities=modalities(), progress=False)
    assert np.flatnonzero(led.snapshot()["fused_seen"].numpy()).tolist() == [3, 4]
    with pytest.raises(ValueError, match="'ids' argument of score holds 1 ids"):
        score(TinyModel(), root, led, ids=[N + 3], modalities=modalities())
    with pytest.raises(ValueError, match="'values' parameter of score"):
        score(TinyModel(), root, led, modalities=modalities(), values="shapley")
    with pytest.raises(ValueError, match="'modalities' parameter of score is required"):
        score(TinyModel(), root, led)


@pytest.mark.parametrize("mode", ["streamed", "indexed"])
def test_the_loader_runs_the_scoring_pass_bss_asks_for(root: Path, mode: str) -> None:
    led = Ledger(N, 2, 3, names=list(NAMES))
    bss = BSS(led, lambda0=0.5, t_grow=2)
    scorer = Scorer(TinyModel(), IndexedDataset(root, modalities()), led, progress=False)
    loader = balanced_loader(root, bss, modalities=modalities(), mode=mode, scorer=scorer)
    loader.set_epoch(0)  # unscored ids: the scoring pass runs first, then the ranking
    got = sorted(i for b in loader for i in b.ids.tolist())
    assert got == sorted(bss.plan(0).order().tolist())
    assert len(got) == int(N * 0.5)
    # without a scorer, the unscored ids are named
    with pytest.raises(ValueError, match="never scored"):
        balanced_loader(
            root, BSS(Ledger(N, 2, 3, names=list(NAMES))), modalities=modalities()
        ).set_epoch(0)


def test_smv_reference_revaluates_each_epoch(root: Path) -> None:
    led = Ledger(N, 2, 3, names=list(NAMES))
    calls = []

    class Counting(Scorer):
        def __call__(self, ids: np.ndarray) -> None:
            calls.append(len(ids))
            super().__call__(ids)

    smv = SMV(led, warmup=1, variant="reference")
    scorer = Counting(TinyModel(), IndexedDataset(root, modalities()), led, progress=False)
    loader = balanced_loader(root, smv, modalities=modalities(), scorer=scorer)
    for epoch in range(3):
        loader.set_epoch(epoch)
    assert calls == [N, N]  # no valuation pass in the warm-up epoch, then every epoch


class NormModel(torch.nn.Module):
    """Audio features through BatchNorm and dropout (p=0.5), feat as is, a linear head; the
    feat branch's own BatchNorm is kept in eval mode by its user (frozen statistics)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(6)
        self.drop = torch.nn.Dropout(0.5)
        self.frozen = torch.nn.BatchNorm1d(8)
        self.linear = torch.nn.Linear(14, 3)
        self.modes: list[tuple[bool, bool]] = []

    def features(self, batch: MultimodalBatch) -> list[torch.Tensor]:
        self.modes.append((self.norm.training, self.drop.training))
        spec = batch.dense("audio").float()
        audio = spec.reshape(spec.shape[0], -1, spec.shape[-1])[:, :6, :].mean(-1)
        return [self.drop(self.norm(audio)), self.frozen(batch.dense("feat").float())]

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def test_the_scoring_pass_runs_the_model_in_eval_mode_and_restores_each_modules_mode(
    root: Path,
) -> None:
    """BatchNorm's running statistics are used, not updated; dropout is off (two passes record
    the same values); every module's own mode comes back, also when the pass raises."""
    model = NormModel()
    model.train()
    model.frozen.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reader = IndexedDataset(root, modalities())
    leds = [Ledger(N, 2, 3, names=list(NAMES)) for _ in range(2)]
    for led in leds:
        Scorer(model, reader, led, batch_size=5, progress=False)(np.arange(N))
    assert model.modes and all(m == (False, False) for m in model.modes)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # running_mean, running_var, num_batches_tracked
    assert torch.equal(leds[0].true_prob, leds[1].true_prob)  # no dropout draw
    assert model.training and model.norm.training and model.drop.training
    assert not model.frozen.training  # the user's eval-mode module stays so

    def broken(batch: MultimodalBatch) -> list[torch.Tensor]:
        raise RuntimeError("model failed")

    model.features = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="model failed"):
        score(model, reader, leds[0], progress=False)
    assert model.training and model.norm.training and not model.frozen.training
