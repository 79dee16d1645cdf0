"""A tiny real model for the active-learning tests and `mmsample query --model
tests.active_model:build`: audio features (the first 6 spectrogram bins averaged over time),
the 8 npy floats, and a seeded linear fusion head (6 + 8 -> 3) behind a dropout layer."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmsample.batch import MultimodalBatch

from .loader_helpers import modalities


class TinyActiveModel(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.linear = nn.Linear(14, 3)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(3, 14, generator=gen))
            self.linear.bias.copy_(torch.randn(3, generator=gen))
        self.drop = nn.Dropout(0.5)
        self.modalities: dict[str, Any] = modalities()

    @staticmethod
    def audio_features(spec: torch.Tensor) -> torch.Tensor:
        return spec.reshape(spec.shape[0], -1, spec.shape[-1])[:, :6, :].mean(-1)

    def features(self, batch: MultimodalBatch) -> list[torch.Tensor]:
        return [self.audio_features(batch.dense("audio")).float(), batch.dense("feat").float()]

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(x))


def build() -> TinyActiveModel:
    return TinyActiveModel()
