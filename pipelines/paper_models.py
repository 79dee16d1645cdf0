"""The papers' audio-visual model: two ResNet-18 encoders and a concatenation head.

Place in the data flow: `MultimodalBatch` from a reader with a `pipelines.presets` preset ->
`AVResNet.features` -> `[z_audio, z_visual]` -> `head` (fused logits) and `unimodal` (per-modality
logits for OGM-GE / DUS / the Ledger). The same `features` / `head` / `unimodal` interface is what
`mmsample.scoring.score` calls.

As in OGM-GE's code (GeWu-Lab/OGM-GE_CVPR2022, `models/basic_model.py`, `models/backbone.py`):
- audio: ResNet-18 with ONE input channel on the spectrogram `[B, 1, F, frames]`, average-pooled
  over frequency and time -> `[B, 512]`;
- visual: ResNet-18 on every frame, the T frames folded into the batch (`[B * T, 3, H, W]`), the
  feature maps average-pooled over time and space -> `[B, 512]`;
- fusion: concatenation `[B, 1024]` -> one linear layer -> logits; the unimodal logits are that
  layer's weight halves with half the bias each (`z_a @ W[:, :512].T + b / 2`), OGM-GE's `out_a`
  and `out_v`.
The encoders are built from scratch from `transformers.ResNetConfig` (basic blocks, depths
2-2-2-2, widths 64-128-256-512): no download, random initialisation as the papers train them.
Rows that do not carry a modality (DUS, SMV masks) are not encoded; their feature is zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mmsample.batch import MultimodalBatch

from .presets import normalize_frames

__all__ = ["FEATURE_DIM", "MODALITIES", "AVResNet", "build", "resnet18"]

MODALITIES = ("audio", "visual")
FEATURE_DIM = 512


def resnet18(in_channels: int) -> nn.Module:
    """A randomly initialised ResNet-18 trunk (no classifier) with `in_channels` input channels,
    from `transformers.ResNetConfig`; `module(pixel_values).last_hidden_state` is
    `[N, 512, H / 32, W / 32]`."""
    from transformers import ResNetConfig, ResNetModel

    config = ResNetConfig(
        num_channels=in_channels,
        embedding_size=64,
        hidden_sizes=[64, 128, 256, 512],
        depths=[2, 2, 2, 2],
        layer_type="basic",
        hidden_act="relu",
        downsample_in_first_stage=False,
    )
    return ResNetModel(config)


class AudioTrunk(nn.Module):
    """Spectrograms float `[n, F, frames]` -> `[n, 512]`: a one-channel ResNet-18, its maps
    averaged over frequency and time."""

    def __init__(self) -> None:
        super().__init__()
        self.net = resnet18(1)

    def forward(self, spec: Tensor) -> Tensor:
        return self.net(spec.unsqueeze(1).float()).last_hidden_state.mean(dim=(2, 3))


class FrameTrunk(nn.Module):
    """Frames uint8 (or float in [0, 1]) `[n, T, 3, H, W]` -> `[n, 512]`: frames folded into
    the batch, normalised as OGM-GE's loaders do, the maps pooled over time and space (OGM-GE's
    `adaptive_avg_pool3d(v, 1)`)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = resnet18(3)

    def forward(self, frames: Tensor) -> Tensor:
        n, t = frames.shape[:2]
        maps = self.net(normalize_frames(frames.flatten(0, 1))).last_hidden_state
        return maps.view(n, t, *maps.shape[1:]).mean(dim=(1, 3, 4))


class AVResNet(nn.Module):
    """OGM-GE's audio-visual classifier (see the module docstring).

    Inputs (a `MultimodalBatch` with modalities "audio" and "visual"): audio float32
    `[n_a, F, frames]` spectrograms, visual uint8 (or float in [0, 1]) `[n_v, T, 3, H, W]`.
    `features(batch)` -> `[z_audio [B, 512], z_visual [B, 512]]` (zeros for rows without the
    modality); `head(x [B', 1024])` -> `[B', num_classes]`; `unimodal(features)` -> the two
    `[B, num_classes]` unimodal logits; `forward(batch)` -> (fused logits, unimodal logits,
    features). H and W must be at least 32 for the five stride-2 stages to leave a feature map.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"The 'num_classes' parameter of AVResNet must be an int >= 2; got {num_classes!r}."
            )
        self.num_classes = num_classes
        self.names = MODALITIES
        self.audio_net = AudioTrunk()
        self.visual_net = FrameTrunk()
        self.fc_out = nn.Linear(2 * FEATURE_DIM, num_classes)

    def encode_audio(self, spec: Tensor) -> Tensor:
        """float `[n, F, frames]` -> `[n, 512]`."""
        return self.audio_net(spec)

    def encode_visual(self, frames: Tensor) -> Tensor:
        """uint8 or float `[n, T, 3, H, W]` -> `[n, 512]` (frames folded, pooled over time)."""
        return self.visual_net(frames)

    def features(self, batch: MultimodalBatch) -> list[Tensor]:
        """`[z_audio, z_visual]`, each `[B, 512]`, zero on rows that do not carry it."""
        out = []
        for name, encode in (("audio", self.encode_audio), ("visual", self.encode_visual)):
            z = self.fc_out.weight.new_zeros(len(batch), FEATURE_DIM)
            if name in batch:
                data = batch[name]
                if not isinstance(data, Tensor):
                    raise ValueError(f"AVResNet: modality {name!r} must decode to a tensor")
                z = z.index_copy(0, batch.rows(name).to(z.device), encode(data).to(z.dtype))
            out.append(z)
        return out

    def head(self, x: Tensor) -> Tensor:
        """Concatenated features `[..., 1024]` -> logits `[..., num_classes]`."""
        return self.fc_out(x)

    def unimodal(self, features: Sequence[Tensor]) -> list[Tensor]:
        """OGM-GE's per-modality logits from the fused layer's weight halves and half bias."""
        w, b = self.fc_out.weight, self.fc_out.bias
        return [
            z @ w[:, j * FEATURE_DIM : (j + 1) * FEATURE_DIM].T + b / 2
            for j, z in enumerate(features)
        ]

    def forward(self, batch: MultimodalBatch) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """(fused logits `[B, K]`, unimodal logits 2 x `[B, K]`, features 2 x `[B, 512]`)."""
        feats = self.features(batch)
        return self.head(torch.cat(feats, dim=1)), self.unimodal(feats), feats


def build(num_classes: int, **kw: Any) -> AVResNet:
    """The model `--model resnet18` names: `AVResNet(num_classes)`. Raises ValueError for
    keyword arguments it does not take (none today) or a bad num_classes."""
    if kw:
        raise ValueError(f"build() of pipelines.paper_models takes no options; got {sorted(kw)}.")
    return AVResNet(num_classes)
