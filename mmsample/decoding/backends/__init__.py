"""Decoder backends for video, audio and images: a registry keyed by name, and the choice of one.

Place in the data flow: `mmsample.decoding` turns shard member bytes into tensors through a backend
chosen here (torchcodec, PyAV or decord). The choice is automatic (the fastest installed one) and
overridable per spec (`Video(backend="pyav")`) or per process (env var `MMSAMPLE_BACKEND`); it is
made once per process and cached. Backends hold no per-sample state; every call opens the bytes it
is given, so a spec only carries the backend's *name* into DataLoader workers.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple, Protocol

import torch

__all__ = [
    "BACKEND_ENV_VAR",
    "KNOWN_BACKENDS",
    "MAX_RESAMPLED_CHANNELS",
    "VIDEO_BACKENDS",
    "DecodedVideo",
    "MediaKind",
    "Timestamps",
    "VideoBackend",
    "available_backends",
    "channel_limit_hint",
    "check_backend_name",
    "display_orientation",
    "get_backend",
    "presentation_window",
    "pyav_image",
    "resolve_times",
]

BACKEND_ENV_VAR = "MMSAMPLE_BACKEND"

MediaKind = Literal["video", "audio", "image"]

# Timestamps in seconds from the start of the video stream, or a function of the clip duration
# (seconds) that returns them: the spec computes timestamps from the duration with one open.
Timestamps = Sequence[float] | Callable[[float], Sequence[float]]


class DecodedVideo(NamedTuple):
    """Frames decoded at the requested times, with the clip duration they were computed from."""

    frames: torch.Tensor  # uint8 [T, 3, H, W], display orientation (rotation metadata applied)
    duration: float  # seconds of the presentation timeline (see `presentation_window`)
    times: list[float]  # the timestamps used, seconds after the first presented frame


class VideoBackend(Protocol):
    """What a decoder backend offers; every method takes the encoded bytes of one file."""

    name: str

    def video_frames(self, data: bytes, times: Timestamps) -> DecodedVideo:
        """Frames a player shows at `times` (seconds after the first presented frame), uint8
        [T, 3, H, W] in display orientation; ValueError if the clip is truncated or undecodable."""
        ...

    def audio(self, data: bytes, sample_rate: int, mono: bool) -> torch.Tensor:
        """The best audio stream resampled to `sample_rate`, float32 [C, S]: every channel in
        stream order (any layout), or their mean (C = 1) if mono. ValueError if undecodable."""
        ...

    def image(self, data: bytes) -> torch.Tensor:
        """A still image (png, jpeg, ...) as stored (no EXIF rotation): uint8 [3, H, W] RGB, or
        [4, H, W] RGBA with straight alpha when the file carries transparency."""
        ...

    def probe(self, data: bytes, kind: MediaKind) -> None:
        """Cheaply check the bytes hold a decodable stream of `kind`; raise ValueError if not."""
        ...


# name -> (module under mmsample.decoding.backends, package users install). Order = fastest
# first, as measured on this project's machines (torchcodec, then PyAV; decord is legacy).
# "torchcodec-cuda" is GPU decoding; it is never chosen automatically and only listed when CUDA
# is available.
KNOWN_BACKENDS: dict[str, tuple[str, str]] = {
    "torchcodec": ("torchcodec", "torchcodec"),
    "pyav": ("pyav", "av"),
    "decord": ("decord", "decord"),
    "torchcodec-cuda": ("torchcodec", "torchcodec"),
}

# name -> backend class, for the backends whose package imports in this process. Filled lazily:
# a backend's package is imported the first time that backend is asked for (importing torchcodec
# loads the FFmpeg libraries, which takes seconds), so `import mmsample` stays light and
# `MMSAMPLE_BACKEND=pyav` never loads torchcodec. `available_backends()` imports them all.
VIDEO_BACKENDS: dict[str, type[VideoBackend]] = {}
_IMPORT_ERRORS: dict[str, str] = {}
_INSTANCES: dict[str, VideoBackend] = {}
_DEFAULT: list[str] = []  # the process-wide default, once chosen


def _load(name: str) -> None:
    """Import the module of backend `name`; register its classes, or remember why it failed."""
    if name in VIDEO_BACKENDS or name in _IMPORT_ERRORS or name not in KNOWN_BACKENDS:
        return
    module_name = KNOWN_BACKENDS[name][0]
    module = importlib.import_module(f"{__name__}.{module_name}")
    classes: dict[str, type[VideoBackend]] = module.BACKENDS
    for other, (other_module, _package) in KNOWN_BACKENDS.items():
        if other_module != module_name:
            continue
        if other in classes:
            VIDEO_BACKENDS[other] = classes[other]
        else:
            _IMPORT_ERRORS[other] = str(module.IMPORT_ERROR)


def available_backends() -> list[str]:
    """Names of the usable backends in this process, fastest first (CUDA decoding last)."""
    for name in KNOWN_BACKENDS:
        _load(name)
    names = [n for n in KNOWN_BACKENDS if n in VIDEO_BACKENDS and n != "torchcodec-cuda"]
    if "torchcodec-cuda" in VIDEO_BACKENDS and torch.cuda.is_available():
        names.append("torchcodec-cuda")
    return names


def check_backend_name(name: str, *, argument: str = "backend") -> None:
    """Raise ValueError for an unknown name, ImportError when its package is missing here."""
    if name not in KNOWN_BACKENDS:
        raise ValueError(
            f"The '{argument}' parameter must be one of {sorted(KNOWN_BACKENDS)} or None; "
            f"got {name!r}."
        )
    _load(name)
    if name not in VIDEO_BACKENDS:
        package = KNOWN_BACKENDS[name][1]
        raise ImportError(
            f"The {name!r} decoder backend needs the {package!r} package, which did not import "
            f"in this process ({_IMPORT_ERRORS.get(name, 'not installed')}). Install it "
            f"(pip install {package}) or pick one of the available backends "
            f"{available_backends()}."
        )
    if name == "torchcodec-cuda" and not torch.cuda.is_available():
        raise ImportError(
            "The 'torchcodec-cuda' backend decodes on the GPU, but CUDA is not available in this "
            f"process; use one of {available_backends()}."
        )


def get_backend(name: str | None = None) -> VideoBackend:
    """The backend `name`; None means `$MMSAMPLE_BACKEND` if set, else the fastest available.

    The default is chosen once per process and cached, as is each backend instance.
    """
    if name is None:
        if not _DEFAULT:
            env = os.environ.get(BACKEND_ENV_VAR) or None
            if env is not None:
                check_backend_name(env, argument=BACKEND_ENV_VAR)
                _DEFAULT.append(env)
            else:
                names = available_backends()
                if not names:
                    raise ImportError(
                        "No video/audio decoder backend is installed: install torchcodec "
                        "(with the system FFmpeg libraries) or av (PyAV, bundles FFmpeg)."
                    )
                _DEFAULT.append(names[0])
        name = _DEFAULT[0]
    instance = _INSTANCES.get(name)
    if instance is None:
        check_backend_name(name)
        instance = VIDEO_BACKENDS[name]()
        _INSTANCES[name] = instance
    return instance


# FFmpeg's resampler (libswresample, SWR_CH_MAX) converts at most this many channels; both FFmpeg
# backends pass every audio stream through it (sample format and rate conversion).
MAX_RESAMPLED_CHANNELS = 64


def channel_limit_hint(channels: int) -> str:
    """A sentence for audio errors when `channels` exceeds what FFmpeg's resampler takes."""
    if channels <= MAX_RESAMPLED_CHANNELS:
        return ""
    return (
        f"; the stream has {channels} channels and FFmpeg's resampler converts at most "
        f"{MAX_RESAMPLED_CHANNELS}: read PCM/float wav with Audio(backend='wave') (any number of "
        "channels) or store fewer channels"
    )


def pyav_image(data: bytes, backend: str) -> torch.Tensor | None:
    """For backends whose image decoder returns 8-bit RGB only (torchcodec, decord): the image
    decoded by PyAV when that would lose something, else None. PyAV decodes files whose header
    says they may carry transparency (PNG colour types 4/6 or tRNS; formats whose header does
    not say) as RGBA, and files of more than 8 bits per sample rounded exactly (the system
    FFmpeg's 16-bit to 8-bit conversion was off by one level), so every backend gives the same
    pixels. Raises ValueError for a PNG with transparency when PyAV is not installed.
    """
    from ..image_header import image_header

    header = image_header(data)
    if header is not None and header.alpha is False and header.bits <= 8:
        return None
    _load("pyav")
    if "pyav" in VIDEO_BACKENDS:
        return get_backend("pyav").image(data)
    if header is not None and header.alpha:
        raise ValueError(
            f"the image carries transparency, which the {backend} backend cannot decode (it "
            "returns RGB only); install PyAV (pip install av) or use backend='pyav'"
        )
    return None


def resolve_times(times: Timestamps, duration: float) -> list[float]:
    """Evaluate `times` against the clip duration and check each lies in [0, duration)."""
    values = [float(t) for t in (times(duration) if callable(times) else times)]
    for t in values:
        if not 0.0 <= t < duration:
            raise ValueError(
                f"Requested a frame at {t:.6f} s, outside the clip [0, {duration:.6f}) s."
            )
    return values


# A stream whose packets end this many frame durations (or more) before the end its header
# declares is truncated. Below one frame: muxers round the last frame's duration differently
# (FFmpeg 5.1 and 8 read 0.06 s and 0.04 s for the same last packet of a stream-copied cut).
_TRUNCATION_FRAMES = 0.75


def presentation_window(
    *,
    header_begin: float | None,
    header_duration: float | None,
    content_begin: float,
    content_end: float,
    content_frames: int,
) -> tuple[float, float]:
    """The clip's presentation timeline on the stream clock -> (begin, duration) in seconds.

    The timeline is what a player shows: the frames the container presents (an mp4 edit list
    hides the packets before its start; FFmpeg marks them discarded and no decoder outputs
    them), so t = 0 is the first presented frame (`content_begin`) whatever the raw timestamps
    (negative ones included). It ends at the later of the last presented frame's end
    (`content_end`) and the end the header declares (`header_begin + header_duration`, the
    edit list's duration in an mp4, which ffprobe reports too). Every backend passes the same
    quantities, so every backend reports the same duration.

    Raises ValueError when the packets end at least 0.75 frame durations before the end the
    header declares: the file was cut short (an interrupted download or copy; with the index at
    the front, `-movflags +faststart`, a truncated mp4 still opens and would decode silently).
    """
    if content_frames < 1 or content_end <= content_begin:
        raise ValueError("the video stream holds no presented frame")
    end = content_end
    if header_duration is not None and header_duration > 0:
        header_end = (content_begin if header_begin is None else header_begin) + header_duration
        frame = (content_end - content_begin) / content_frames
        if header_end - content_end >= _TRUNCATION_FRAMES * frame:
            raise ValueError(
                f"video is truncated: its header declares {header_end:.3f} s of stream, but its "
                f"packets end at {content_end:.3f} s ({header_end - content_end:.3f} s missing). "
                "The file was cut short (interrupted download or copy): fetch or encode it again."
            )
        end = max(end, header_end)
    return content_begin, end - content_begin


def display_orientation(frames: torch.Tensor, rotation: float | None) -> torch.Tensor:
    """Rotate uint8 `[T, 3, H, W]` frames by the container's display rotation (degrees
    counter-clockwise, FFmpeg's display-matrix convention; the mp4 `rotate` tag and the display
    matrix newer muxers write both end up there) -> what a player shows. 90 and 270 swap H and W.
    Raises ValueError for an angle that is not a multiple of 90 degrees."""
    if not rotation:
        return frames
    quarter = round(float(rotation) / 90.0)
    if abs(quarter * 90.0 - float(rotation)) > 1e-3:
        raise ValueError(
            f"the video's display matrix rotates by {rotation} degrees; only multiples of 90 "
            "are supported: re-encode the clip upright (ffmpeg applies the rotation by default)"
        )
    return torch.rot90(frames, quarter % 4, dims=(-2, -1)).contiguous()
