"""Models of the reference training loop (`pipelines/train.py --model NAME`), in a registry.

Every model is a `LateFusion`: one encoder per modality, a linear fusion head on the
concatenated features, and a linear unimodal head per modality on the *detached* features (a
probe: it reports how far each encoder has come, for the ledger and OGM-GE, without adding a
unimodal loss that would itself rebalance the encoders); `train_heads = True` attaches the
heads to the features instead, so their loss trains the encoders (Data Remixing's heads). Its interface is the one
`mmsample.scoring.score` calls: `features(batch) -> [z_0, ..., z_{M-1}]` (`[B, D]` float, zero
for the rows that do not carry the modality), `head(x) -> [B, K]`, `unimodal(features) -> M
logits [B, K]`.

To add a model, write a function `(num_classes, only) -> Choice` that returns the reader specs it
needs and the model (optionally evaluation specs and a training-time augmentation, as
`resnet18` does), and add it to `MODELS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mmsample.batch import MultimodalBatch
from mmsample.decoding import Audio, Video
from mmsample.signals import subset_logits


class LateFusion(nn.Module):
    """Late fusion of `encoders` (`{modality: module mapping its carried rows to [n, dim]}`).

    `forward(batch)` -> `(subset logits [B, 2**M, K], unimodal logits: M x [B, K])`; row
    `2**M - 1` of the subset logits is the fused prediction (`mmsample.signals.subset_logits`).
    `only`, if given, keeps the features of those modalities and zeroes the others (a unimodal
    baseline with the same architecture). A row that does not carry a modality gets zero
    features for it (Remix masks at the pooled features, as its authors' model does).
    `train_heads` (default False): the unimodal heads see the features undetached.
    """

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        dim: int,
        num_classes: int,
        only: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if len(encoders) < 2:
            raise ValueError(f"LateFusion needs M >= 2 encoders; got {list(encoders)}.")
        self.names = tuple(encoders)
        unknown = sorted(set(only or ()) - set(self.names))
        if unknown:
            raise ValueError(
                f"The 'only' parameter of LateFusion names modalities {unknown} the model does "
                f"not have; choose from {list(self.names)}."
            )
        self.only = tuple(only) if only else self.names
        self.dim = dim
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = nn.Linear(dim * len(encoders), num_classes)
        self.probes = nn.ModuleDict({n: nn.Linear(dim, num_classes) for n in self.names})
        self.train_heads = False

    def features(self, batch: MultimodalBatch) -> list[Tensor]:
        """`[B, dim]` float32 per modality; zero where a row does not carry the modality."""
        out = []
        for name in self.names:
            z = torch.zeros(len(batch), self.dim, device=batch.labels.device)
            if name in batch and name in self.only:
                enc = self.encoders[name](batch[name])
                z = z.to(enc.dtype).index_put((batch.rows(name).to(z.device),), enc)
            out.append(z)
        return out

    def head(self, x: Tensor) -> Tensor:
        """Fusion head: `[B', M * dim]` -> logits `[B', K]`."""
        return self.fusion(x)

    def unimodal(self, features: Sequence[Tensor]) -> list[Tensor]:
        """The probes on the features (detached unless `train_heads`): M logits `[B, K]`."""
        return [
            self.probes[n](z if self.train_heads else z.detach())
            for n, z in zip(self.names, features)
        ]

    def forward(self, batch: MultimodalBatch) -> tuple[Tensor, list[Tensor]]:
        feats = self.features(batch)
        return subset_logits(feats, self.head), self.unimodal(feats)


class FrameEncoder(nn.Module):
    """uint8 frames `[n, T, 3, H, W]` -> `[n, dim]`: a small CNN per frame, max over space and
    time (the demo's digit moves, so position is noise)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.AvgPool2d(2),
            nn.Conv2d(1, 16, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.out = nn.Linear(32, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, t = x.shape[:2]
        grey = x.float().mean(2, keepdim=True).flatten(0, 1) / 255.0  # [n*T, 1, H, W]
        per_frame = self.net(grey).view(n, t, -1)
        return torch.relu(self.out(per_frame.amax(1)))


class SpectrogramEncoder(nn.Module):
    """log-mel `[n, F, frames]` -> `[n, dim]`: per-row standardisation, two 1-D convolutions
    over time, max over time."""

    def __init__(self, bands: int, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(bands, 64, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv1d(64, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveMaxPool1d(1),
            nn.Flatten(),
        )
        self.out = nn.Linear(64, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x.float()
        x = (x - x.mean((1, 2), keepdim=True)) / (x.std((1, 2), keepdim=True) + 1e-3)
        return torch.relu(self.out(self.net(x)))


@dataclass
class Choice:
    """What a model name gives: the training reader's specs (`{modality: Spec}`, in model
    order), the model, the evaluation reader's specs (None: the training specs) and the
    training-time augmentation per modality (`{modality: fn(data, generator) -> data}`, applied
    to the batch on the device; empty: none)."""

    modalities: dict[str, Any]
    model: LateFusion
    test_modalities: dict[str, Any] | None = None
    augment: dict[str, Callable[[Tensor, torch.Generator], Tensor]] = field(default_factory=dict)


def small(num_classes: int, only: Sequence[str] | None = None) -> Choice:
    """The demo's model: 4 frames of the mp4's video and its 40-band log-mel audio track."""
    bands = 40
    modalities: dict[str, Any] = {
        "audio": Audio(field="mp4", spectrogram="logmel", n_mels=bands),
        "video": Video(field="mp4", frames=4, fps=None),
    }
    dim = 32
    encoders: dict[str, nn.Module] = {
        "audio": SpectrogramEncoder(bands, dim),
        "video": FrameEncoder(dim),
    }
    return Choice(modalities, LateFusion(encoders, dim, num_classes, only))


def resnet18(
    num_classes: int,
    only: Sequence[str] | None = None,
    *,
    preset: str = "kinetics_sounds",
    size: int = 224,
    audio_seconds: float | None = None,
) -> Choice:
    """The papers' model (OGM-GE's code): ResNet-18 trunks for the spectrogram (one channel)
    and the frames (folded into the batch, pooled over time) from `transformers.ResNetConfig`,
    concatenation fusion. Trains on `pipelines.presets.preset(preset, "train", size=size,
    audio_seconds=audio_seconds)` (a few random frames per step) with OGM-GE's random resized
    crop and flip of the frames (`pipelines.augment`), evaluates on the "test" preset (all
    frames, no augmentation)."""
    from pipelines.augment import random_resized_crop_flip
    from pipelines.paper_models import FEATURE_DIM, AudioTrunk, FrameTrunk
    from pipelines.presets import preset as make_preset

    train = make_preset(preset, "train", size=size, audio_seconds=audio_seconds)
    test = make_preset(preset, "test", size=size, audio_seconds=audio_seconds)
    encoders: dict[str, nn.Module] = {"audio": AudioTrunk(), "visual": FrameTrunk()}
    return Choice(
        dict(train),
        LateFusion(encoders, FEATURE_DIM, num_classes, only),
        test_modalities=dict(test),
        augment={"visual": random_resized_crop_flip},
    )


MODELS: dict[str, Callable[..., Choice]] = {"small": small, "resnet18": resnet18}
