"""The papers' input settings for VGGSound, Kinetics-Sounds and CREMA-D as named presets.

Place in the data flow: shards written by a recipe (`pipelines.vggsound`, `.kinetics_sounds`,
`.cremad`) -> `preset(name, split)` -> `{"audio": Audio, "visual": Video}` for a reader or
`mmsample.loader.balanced_loader` -> the paper model (`pipelines.paper_models`), which applies
`normalize_frames` on the device.

What each preset decodes (sources: the OGM-GE paper and its code GeWu-Lab/OGM-GE_CVPR2022;
the BMMAL paper, section 4; `mmsample.decoding.audio_ops` documents the spectrogram variants):

| preset | visual (train / test) | audio |
| --- | --- | --- |
| vggsound | 10 frames at 1 fps, 3 random per step / all 10 | 16 kHz, 10 s crop |
| kinetics_sounds | 10 frames at 1 fps, 3 random per step / all 10 | 16 kHz, 5 s crop |
| cremad | 3 frames at 1 fps, 1 random per step (2 optional) / all 3 | 22.05 kHz, 3 s, hop 353 |

Frames are resized to 224 x 224 (OGM-GE's test `Resize((224, 224))`) and kept uint8 (4x less
to copy than float); `normalize_frames` applies OGM-GE's ImageNet mean and std. The audio is
`log(|STFT| + 1e-7)` with window 512: overlap 353 (hop 159) as the papers' text says for
VGGSound and Kinetics-Sounds; for CREMA-D hop 353 at 22.05 kHz on 3 s, as OGM-GE's
`CramedDataset.py` does (the 353 passed as the hop), `[257, 188]`.

Where the papers differ, and what is chosen here:
- Frames per step: OGM-GE samples 3 of 10 (CREMA-D: its `--fps 1`, one frame); BMMAL samples 5
  of 10. Default 3 (1 for CREMA-D); `train_frames=` picks another count.
- CREMA-D clips last 2-3 s, so "10 frames at 1 fps" does not exist: OGM-GE extracts frames at
  1 fps (2-3 per clip) and picks 1. Here 3 frames at 1 fps; on a clip shorter than 3 s they are
  the centres of 3 equal parts of the clip (`mmsample.decoding.frame_times`).
- Audio crop: OGM-GE's VGGSound loader takes a random 5 s crop of audio tiled to 10 s, with
  n_fft 256 / hop 128; the issue asks for 10 s on VGGSound (the whole clip), which is the
  default here; `audio_seconds=5` gives OGM-GE's crop length. Short audio is zero-padded, not
  tiled. The crop window is random in both splits: readers always pass the item's generator
  (seeded by seed, epoch, id), so a test reader takes one fixed window per clip, not the
  centre one (`mmsample.decoding.audio_ops.crop_or_pad` centres only without a generator).
- Spatial augmentation: OGM-GE trains with RandomResizedCrop(224) and a horizontal flip per
  frame; the readers decode a plain resize, and `pipelines.augment.random_resized_crop_flip`
  does the crop and flip on the batch, on the device, in the training loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mmsample.decoding import Audio, Spec, Video

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESETS",
    "SPLITS",
    "Setting",
    "normalize_frames",
    "preset",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Setting:
    """One dataset's paper settings (see the module table)."""

    frames: int
    train_frames: int
    fps: float
    sample_rate: int
    audio_seconds: float
    hop_length: int
    video_field: str
    audio_field: str


PRESETS: dict[str, Setting] = {
    "vggsound": Setting(10, 3, 1.0, 16000, 10.0, 159, "mp4", "mp4"),
    "kinetics_sounds": Setting(10, 3, 1.0, 16000, 5.0, 159, "mp4", "mp4"),
    "cremad": Setting(3, 1, 1.0, 22050, 3.0, 353, "video.flv", "audio.wav"),
}


def _check(name: str, value: object, rule: Callable[[object], bool], what: str) -> None:
    if not rule(value):
        raise ValueError(f"The '{name}' parameter of preset must be {what}; got {value!r}.")


def _positive_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def preset(
    name: str,
    split: str = "train",
    *,
    size: int | tuple[int, int] = 224,
    train_frames: int | None = None,
    audio_seconds: float | None = None,
    video_field: str | None = None,
) -> dict[str, Spec]:
    """The ordered `{"audio": Audio, "visual": Video}` specs of preset `name` for `split`.

    Shapes per sample: audio float32 `[257, 1 + S // hop]` (S = audio_seconds * sample_rate;
    VGGSound `[257, 1007]`, Kinetics-Sounds `[257, 504]`, CREMA-D `[257, 188]`), visual uint8
    `[T, 3, H, W]` with T = train_frames in "train" (random per step when the reader passes a
    generator), all `frames` in "test"; (H, W) = size. `size` shrinks frames for tests and
    benchmarks; `video_field` names the video field (CREMA-D shards of .mp4 files:
    "video.mp4"). Raises ValueError naming the parameter for an unknown name or split, a
    train_frames outside [1, frames], audio_seconds <= 0 or a bad size.
    """
    if name not in PRESETS:
        raise ValueError(
            f"The 'name' parameter of preset must be one of {sorted(PRESETS)}; got {name!r}."
        )
    _check("split", split, lambda v: v in SPLITS, f"one of {list(SPLITS)}")
    s = PRESETS[name]
    k = s.train_frames if train_frames is None else train_frames
    _check(
        "train_frames",
        k,
        lambda v: _positive_int(v) and int(v) <= s.frames,  # type: ignore[call-overload]
        f"an int in [1, {s.frames}] for {name}",
    )
    seconds = s.audio_seconds if audio_seconds is None else audio_seconds
    _check(
        "audio_seconds",
        seconds,
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
        "a number of seconds > 0",
    )
    field = s.video_field if video_field is None else video_field
    audio = Audio(
        field=s.audio_field,
        sample_rate=s.sample_rate,
        seconds=float(seconds),
        spectrogram="log",
        n_fft=512,
        win_length=512,
        hop_length=s.hop_length,
    )
    video = Video(
        field=field,
        frames=s.frames,
        fps=s.fps,
        random_frames=k if split == "train" else None,
        size=size,
        dtype="uint8",
    )
    return {"audio": audio, "visual": video}


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (or float in [0, 1]) frames `[..., 3, H, W]` -> float32 `(x / 255 - mean) / std`
    with OGM-GE's ImageNet mean and std per channel, on the frames' device."""
    x = frames.float()
    if frames.dtype == torch.uint8:
        x = x / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std
