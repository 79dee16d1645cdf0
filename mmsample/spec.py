"""Modality specs: which shard field a modality reads and how its bytes become tensors.

Place in the data flow: the reader hands each spec the bytes of its field (`spec.decode(data,
generator=...)`) for the modalities a sample carries this step, and wraps any exception in a
`SampleError` naming the shard and key. Specs are small picklable dataclasses that travel into
DataLoader workers; heavy objects (tokenizers, decoder backends) are created lazily per process
and cached by name/path. All randomness comes from the `generator` argument; without one,
decoding is deterministic (centre crop, uniform frames).
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from mmsample import audio as audio_ops
from mmsample.backends import KNOWN_BACKENDS, check_backend_name, get_backend
from mmsample.image_header import (
    DEFAULT_MAX_PIXELS,
    check_max_pixels,
    check_pixels,
    ffmpeg_decodes_size,
    image_header,
    orient,
)
from mmsample.media_probe import (
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    check_wav_complete,
    npy_header,
    parse_wav,
)

__all__ = [
    "DEFAULT_SPECS",
    "WAVE_READER",
    "Array",
    "Audio",
    "Image",
    "Spec",
    "Text",
    "Video",
    "composite",
    "default_spec",
    "frame_times",
    "resize_frames",
    "uniform_subset",
]

WAVE_READER = "wave"  # Audio(backend="wave"): PCM/float wav parsed here, resampled in torch
DTYPES = ("uint8", "float32")
SPECTROGRAMS = ("log", "mel", "logmel")
PADDINGS = ("max_length", "longest", "do_not_pad")


@runtime_checkable
class Spec(Protocol):
    """A modality: the shard member extension it reads and how to decode those bytes."""

    field: str

    def decode(
        self, data: bytes, *, generator: torch.Generator | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Turn one shard member's bytes into tensors; raise with a clear reason on bad data."""
        ...


def _bad(cls: str, name: str, rule: str, value: object) -> ValueError:
    return ValueError(f"The '{name}' parameter of {cls} must be {rule}; got {value!r}.")


def _check_field(cls: str, field: object) -> None:
    if not isinstance(field, str) or not field or field.startswith("."):
        raise _bad(cls, "field", "a shard member extension such as 'mp4'", field)


def _check_size(cls: str, size: object) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if (
        not isinstance(pair, tuple | list)
        or len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair)
    ):
        raise _bad(cls, "size", "None, an int >= 1 or a (height, width) pair of ints >= 1", size)
    return int(pair[0]), int(pair[1])


def _check_backend(cls: str, backend: str | None, extra: tuple[str, ...] = ()) -> None:
    if backend is None or backend in extra:
        return
    if backend not in KNOWN_BACKENDS:
        allowed = sorted([*KNOWN_BACKENDS, *extra])
        raise _bad(cls, "backend", f"None or one of {allowed}", backend)
    check_backend_name(backend)


def frame_times(duration: float, frames: int, fps: float | None) -> list[float]:
    """The T timestamps (seconds from the first frame) that "T frames uniformly" means.

    With fps: `(i + 0.5) / fps` for i < T, the centres of T slots of 1/fps seconds over the first
    T/fps seconds; if the clip is shorter than T/fps (or fps is None): `(i + 0.5) * duration / T`,
    the centres of T equal segments of the clip. Every time lies strictly inside [0, duration).
    """
    if duration <= 0:
        raise ValueError(f"The clip has no duration ({duration} s); it holds no playable frame.")
    if fps is not None and frames / fps <= duration:
        return [(i + 0.5) / fps for i in range(frames)]
    return [(i + 0.5) * duration / frames for i in range(frames)]


def uniform_subset(total: int, k: int, generator: torch.Generator | None) -> list[int]:
    """k sorted distinct indices of range(total): random with a generator (OGM-GE's random k of T
    frames), else `floor((j + 0.5) * total / k)`, the centres of k equal parts."""
    if generator is not None:
        return sorted(torch.randperm(total, generator=generator)[:k].tolist())
    return [math.floor((j + 0.5) * total / k) for j in range(k)]


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with antialiasing of uint8 `[T, 3, H, W]` to `[T, 3, *size]`, rounded back
    to uint8 (torch.nn.functional.interpolate, so every backend gives the same pixels)."""
    if tuple(frames.shape[-2:]) == tuple(size) or frames.shape[0] == 0:
        return frames if frames.shape[0] else frames.new_zeros(0, 3, *size)
    out = F.interpolate(
        frames.float(), size=size, mode="bilinear", align_corners=False, antialias=True
    )
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _finish(frames: torch.Tensor, size: tuple[int, int] | None, dtype: str) -> torch.Tensor:
    if size is not None:
        frames = resize_frames(frames, size)
    return frames.float().div_(255.0) if dtype == "float32" else frames


@dataclass
class Video:
    """T RGB frames of a clip, `[T, 3, H, W]` (T = random_frames if set), uint8 or float in [0, 1].

    The frames are what a player shows, identical on every backend. Timeline: t = 0 is the first
    frame the container presents (packets an mp4 edit list hides, as in clips cut by stream
    copy, are never returned; see `mmsample.backends.presentation_window`). Orientation: the
    display rotation (mp4 `rotate` tag / display matrix) is applied, so H and W are the displayed
    ones (a 64x32 clip rotated by 90 degrees gives `[T, 3, 64, 32]`); mirror flips are not.
    Timestamps: see `frame_times` (with fps=1.0, frames=10: 0.5 s, 1.5 s, ... 9.5 s; on a clip
    shorter than 10 s, the centres of 10 equal segments of the whole clip, frames repeating if it
    holds fewer than 10). With `random_frames=k`, k of those T are decoded: random with a
    generator, evenly spaced without.
    `size`: an int means a square (size, size), as OGM-GE's Resize((224, 224)); resized with
    `resize_frames` after decoding, so every backend gives the same pixels (torchcodec's own
    decoder Resize measured no faster and differs by up to 10 grey levels).
    Frames on the "torchcodec-cuda" backend stay on the GPU.

    `decode` raises ValueError (the readers wrap it in a `SampleError` naming shard and key) for
    a truncated file (an mp4/Matroska file missing bytes it declares, or a video stream ending
    at least 0.75 frames before its header says), a clip without a video stream, or bytes no
    backend can decode.
    """

    field: str = "mp4"
    frames: int = 10
    fps: float | None = 1.0
    random_frames: int | None = None
    size: int | tuple[int, int] | None = None
    dtype: Literal["uint8", "float32"] = "uint8"
    backend: str | None = None

    def __post_init__(self) -> None:
        _check_field("Video", self.field)
        if not isinstance(self.frames, int) or isinstance(self.frames, bool) or self.frames < 1:
            raise _bad("Video", "frames", "an int >= 1", self.frames)
        if self.fps is not None and not (isinstance(self.fps, int | float) and self.fps > 0):
            raise _bad("Video", "fps", "None or a number > 0", self.fps)
        k = self.random_frames
        if k is not None and not (isinstance(k, int) and 1 <= k <= self.frames):
            raise _bad("Video", "random_frames", f"None or an int in [1, frames={self.frames}]", k)
        self.size = _check_size("Video", self.size)
        if self.dtype not in DTYPES:
            raise _bad("Video", "dtype", f"one of {list(DTYPES)}", self.dtype)
        _check_backend("Video", self.backend)

    def decode(self, data: bytes, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode the chosen frames -> uint8 (or float32) `[T, 3, H, W]`, in one open of the
        container (torchcodec opens a clip with discarded packets twice)."""
        picks = (
            uniform_subset(self.frames, self.random_frames, generator)
            if self.random_frames is not None
            else list(range(self.frames))
        )

        def times(duration: float) -> list[float]:
            all_times = frame_times(duration, self.frames, self.fps)
            return [all_times[i] for i in picks]

        decoded = get_backend(self.backend).video_frames(data, times)
        size = self.size if isinstance(self.size, tuple) else None
        return _finish(decoded.frames, size, self.dtype)


def _check_background(value: object) -> tuple[int, int, int]:
    triple = (value, value, value) if isinstance(value, int) else value
    if (
        not isinstance(triple, tuple | list)
        or len(triple) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in triple)
    ):
        raise _bad(
            "Image", "background", "an int or an (R, G, B) triple of ints in [0, 255]", value
        )
    return int(triple[0]), int(triple[1]), int(triple[2])


def composite(image: torch.Tensor, background: tuple[int, int, int]) -> torch.Tensor:
    """uint8 RGBA `[4, H, W]` (straight alpha) over an opaque `background` colour -> uint8 RGB
    `[3, H, W]`: `round((rgb * a + bg * (255 - a)) / 255)` per channel, in integers."""
    rgb, a = image[:3].to(torch.int32), image[3:4].to(torch.int32)
    bg = torch.tensor(background, dtype=torch.int32).view(3, 1, 1)
    return torch.div(rgb * a + bg * (255 - a) + 127, 255, rounding_mode="floor").to(torch.uint8)


@dataclass
class Image:
    """One still image (png, jpeg, ...) as RGB `[3, H, W]` (RGBA `[4, H, W]` with alpha=True),
    uint8 or float in [0, 1], in the orientation a viewer shows.

    Orientation: the EXIF Orientation tag (JPEG APP1, PNG eXIf) is applied after decoding, so the
    tensor is what a viewer displays (the policy `Video` follows for rotated clips).
    Transparency (RGBA, grey + alpha, palette or colour key with tRNS): composited over
    `background` (default white, what a page shows behind clip art), or with `alpha=True` kept
    as a fourth channel (straight, not premultiplied; 255 for opaque files). Same pixels on every
    backend.
    `max_pixels`: the header's width x height is checked BEFORE decoding (PNG, JPEG, GIF, BMP,
    WebP; other formats after decoding); larger images raise ValueError naming the size and this
    parameter (default 89,478,485, Pillow's MAX_IMAGE_PIXELS; None: no limit). The FFmpeg
    decoders themselves refuse images with (W + 128) * (H + 128) >= 2**31 / 8 pixels.
    Raises ValueError on undecodable bytes; the reader wraps it in a SampleError naming the sample.
    """

    field: str = "png"
    size: int | tuple[int, int] | None = None
    dtype: Literal["uint8", "float32"] = "uint8"
    backend: str | None = None
    background: int | tuple[int, int, int] = (255, 255, 255)
    alpha: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        _check_field("Image", self.field)
        self.size = _check_size("Image", self.size)
        if self.dtype not in DTYPES:
            raise _bad("Image", "dtype", f"one of {list(DTYPES)}", self.dtype)
        _check_backend("Image", self.backend)
        self.background = _check_background(self.background)
        if not isinstance(self.alpha, bool):
            raise _bad("Image", "alpha", "a bool", self.alpha)
        check_max_pixels(self.max_pixels, "Image")

    def decode(self, data: bytes, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Check the declared size, decode the first frame, orient, composite or keep alpha,
        resize (deterministic; generator unused)."""
        how = "Image(max_pixels=...)"
        header = image_header(data)
        if header is not None:
            check_pixels(header.width, header.height, self.max_pixels, how=how)
        try:
            image = get_backend(self.backend).image(data)
        except ValueError as err:
            if header is not None and not ffmpeg_decodes_size(header.width, header.height):
                raise ValueError(
                    f"the image declares {header.width}x{header.height} pixels, beyond what the "
                    "FFmpeg decoders accept ((W + 128) * (H + 128) < 2**31 / 8); downscale the "
                    f"file before sharding ({err})"
                ) from err
            raise
        if header is None:
            check_pixels(image.shape[-1], image.shape[-2], self.max_pixels, how=how)
            orientation = 1
        else:
            orientation = header.orientation
        image = orient(image, orientation)
        if self.alpha:
            if image.shape[0] == 3:
                image = torch.cat([image, image.new_full((1, *image.shape[1:]), 255)])
        elif image.shape[0] == 4:
            image = composite(image, self.background)  # type: ignore[arg-type]
        size = self.size if isinstance(self.size, tuple) else None
        return _finish(image[None], size, self.dtype)[0]


_WAV_DTYPES: dict[tuple[int, bool], np.dtype] = {
    (8, False): np.dtype(np.uint8),
    (16, False): np.dtype("<i2"),
    (32, False): np.dtype("<i4"),
    (32, True): np.dtype("<f4"),
    (64, True): np.dtype("<f8"),
}


def read_wav(data: bytes) -> tuple[torch.Tensor, int]:
    """PCM (8/16/24/32-bit) or float wav bytes -> (float32 [C, S] in [-1, 1], sample rate)."""
    info = parse_wav(data)
    raw = data[info.data_offset : info.data_offset + info.data_size]
    if info.bits == 24 and not info.is_float:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8  # sign-extend 24 bits
        samples = ints.astype(np.float32) / float(1 << 23)
    else:
        dtype = _WAV_DTYPES.get((info.bits, info.is_float))
        if dtype is None:
            raise ValueError(
                f"wav with {info.bits}-bit {'float' if info.is_float else 'PCM'} samples is not supported"
            )
        values = np.frombuffer(raw, dtype=dtype)
        if info.is_float:
            samples = values.astype(np.float32)
        elif info.bits == 8:
            samples = (values.astype(np.float32) - 128.0) / 128.0
        else:
            samples = values.astype(np.float32) / float(1 << (info.bits - 1))
    wave = torch.from_numpy(samples.reshape(-1, info.channels).T.copy())
    return wave, info.sample_rate


@dataclass
class Audio:
    """Audio of a wav/flac/... file or a video's own track: float32 spectrogram `[F, frames]`
    (`[C, F, frames]` if mono=False), or the waveform `[S]` / `[C, S]` if spectrogram=None.

    "log": log(|STFT| + 1e-7), F = n_fft // 2 + 1 (window 512, hop 159 = overlap 353, as BMMAL and
    OGM-GE state; see `mmsample.audio` for where the authors' code differs). "mel": mel filterbank
    of the power spectrogram, F = n_mels; "logmel": its log(+1e-7). `seconds`: a random crop with a
    generator, the centre crop without; zeros appended if the audio is shorter.
    backend="wave" reads PCM/float wav without FFmpeg and resamples in torch.
    """

    field: str = "wav"
    sample_rate: int = 16000
    mono: bool = True
    seconds: float | None = None
    spectrogram: Literal["log", "mel", "logmel"] | None = "log"
    n_fft: int = 512
    win_length: int = 512
    hop_length: int = 159
    n_mels: int = 128
    backend: str | None = None
    mel_scale: Literal["htk", "slaney"] = "htk"

    def __post_init__(self) -> None:
        _check_field("Audio", self.field)
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise _bad("Audio", name, "an int >= 1", value)
        if self.win_length > self.n_fft:
            raise _bad("Audio", "win_length", f"<= n_fft={self.n_fft}", self.win_length)
        if self.seconds is not None and not (
            isinstance(self.seconds, int | float) and self.seconds > 0
        ):
            raise _bad("Audio", "seconds", "None or a number > 0", self.seconds)
        if self.spectrogram is not None and self.spectrogram not in SPECTROGRAMS:
            raise _bad(
                "Audio", "spectrogram", f"None or one of {list(SPECTROGRAMS)}", self.spectrogram
            )
        if self.mel_scale not in audio_ops.MEL_SCALES:
            raise _bad("Audio", "mel_scale", f"one of {list(audio_ops.MEL_SCALES)}", self.mel_scale)
        _check_backend("Audio", self.backend, extra=(WAVE_READER,))

    def waveform(self, data: bytes) -> torch.Tensor:
        """The whole decoded track at `sample_rate`, float32 [C, S] (C = 1 if mono), channels in
        stream order for any layout FFmpeg reads (1..64 channels; the "wave" reader: any).

        Raises ValueError if the stream decodes to no samples or a wav's data chunk is cut
        short (the sharding probe calls this same method, so it accepts what readers decode).
        """
        if self.backend == WAVE_READER:
            wave, rate = read_wav(data)
            wave = audio_ops.resample(wave, rate, self.sample_rate)
        else:
            if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
                check_wav_complete(data)
            wave = get_backend(self.backend).audio(data, self.sample_rate, mono=False)
        if wave.shape[-1] == 0:
            raise ValueError("the audio stream decodes to no samples (empty or undecodable)")
        return audio_ops.mixdown(wave) if self.mono else wave

    def decode(self, data: bytes, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode, crop/pad to `seconds`, then compute the spectrogram if one is asked for."""
        wave = self.waveform(data)
        if self.seconds is not None:
            wave = audio_ops.crop_or_pad(
                wave, round(self.seconds * self.sample_rate), generator=generator
            )
        if self.spectrogram is None:
            return wave[0] if self.mono else wave
        power = 1.0 if self.spectrogram == "log" else 2.0
        spec = audio_ops.spectrogram(
            wave,
            n_fft=self.n_fft,
            win_length=self.win_length,
            hop_length=self.hop_length,
            power=power,
        )
        if self.spectrogram in ("mel", "logmel"):
            fb = _mel_filterbank(self.n_fft // 2 + 1, self.sample_rate, self.n_mels, self.mel_scale)
            spec = torch.matmul(spec.transpose(-1, -2), fb.to(spec.device)).transpose(-1, -2)
        if self.spectrogram in ("log", "logmel"):
            spec = audio_ops.log_compress(spec)
        return spec[0] if self.mono else spec


@functools.cache
def _mel_filterbank(n_freqs: int, sample_rate: int, n_mels: int, scale: str) -> torch.Tensor:
    return audio_ops.mel_filterbank(n_freqs, sample_rate, n_mels, scale=scale)  # type: ignore[arg-type]


# Files of which a transformers tokenizer directory holds at least one.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def _check_tokenizer(tokenizer: object, byte_ids: object) -> None:
    """A Text tokenizer is an existing local directory holding a tokenizer, never a hub name."""
    if not isinstance(byte_ids, bool):
        raise _bad("Text", "byte_ids", "a bool", byte_ids)
    if tokenizer is None:
        if not byte_ids:
            raise ValueError(
                "Text needs a tokenizer: give 'tokenizer' (a local transformers tokenizer "
                "directory, e.g. one saved with tokenizer.save_pretrained(dir)) or "
                "byte_ids=True for one id per UTF-8 byte (0..255, no vocabulary)."
            )
        return
    if byte_ids:
        raise ValueError(
            f"The 'byte_ids' parameter of Text must be False when a 'tokenizer' is given "
            f"(got tokenizer={tokenizer!r}); choose one of the two."
        )
    if not isinstance(tokenizer, str | Path):
        raise _bad("Text", "tokenizer", "None or a local tokenizer directory (str)", tokenizer)
    path = Path(tokenizer)
    if not path.is_dir():
        what = "is a file, not a directory" if path.exists() else "does not exist"
        raise ValueError(
            f"The 'tokenizer' parameter of Text must be a local tokenizer directory; "
            f"{str(path)!r} {what} (resolved: {path.resolve()}). mmsample never downloads: "
            f"save the tokenizer once with AutoTokenizer.from_pretrained(name)"
            f".save_pretrained(dir) and pass that dir."
        )
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"The 'tokenizer' parameter of Text must be a local tokenizer directory; "
            f"{str(path)!r} holds none of {list(TOKENIZER_FILES)}. Pass the directory that "
            f"tokenizer.save_pretrained(dir) wrote."
        )


@functools.cache
def _tokenizer(path: str) -> Any:
    """Load a transformers tokenizer from a local directory, once per process, never the hub
    (an absolute path of an existing directory, and local_files_only)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(path).resolve()), local_files_only=True)


@dataclass
class Text:
    """UTF-8 text -> {"input_ids": long [L], "attention_mask": long [L]}.

    Give exactly one of `tokenizer` (a local transformers tokenizer directory, checked at
    construction; never looked up on a model hub) or `byte_ids=True` (one id per UTF-8 byte,
    0..255, no vocabulary); neither raises ValueError. Ids are truncated to `max_length` (with
    `truncation`) and, with padding="max_length", padded with the tokenizer's pad id (byte ids:
    0) and mask 0, so L = max_length; with "longest" or "do_not_pad" L is the text's own length
    and `mmsample.batch.Collate` pads a batch to its longest text (pad id 0, mask 0).
    """

    field: str = "txt"
    tokenizer: str | None = None
    max_length: int = 64
    padding: Literal["max_length", "longest", "do_not_pad"] = "max_length"
    truncation: bool = True
    byte_ids: bool = False

    def __post_init__(self) -> None:
        _check_field("Text", self.field)
        _check_tokenizer(self.tokenizer, self.byte_ids)
        if isinstance(self.tokenizer, Path):
            self.tokenizer = str(self.tokenizer)
        if (
            not isinstance(self.max_length, int)
            or isinstance(self.max_length, bool)
            or self.max_length < 1
        ):
            raise _bad("Text", "max_length", "an int >= 1", self.max_length)
        if self.padding not in PADDINGS:
            raise _bad("Text", "padding", f"one of {list(PADDINGS)}", self.padding)
        if not isinstance(self.truncation, bool):
            raise _bad("Text", "truncation", "a bool", self.truncation)

    def decode(
        self, data: bytes, *, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Tokenize one text (deterministic; generator unused). Raises ValueError on text that
        is not valid UTF-8."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"text is not valid UTF-8 ({err})") from None
        pad_id = 0
        if self.tokenizer is None:
            ids = list(data[: self.max_length] if self.truncation else data)
        else:
            tokenizer = _tokenizer(self.tokenizer)
            enc = tokenizer(text, truncation=self.truncation, max_length=self.max_length)
            ids = [int(i) for i in enc["input_ids"]]
            pad_id = int(tokenizer.pad_token_id or 0)
        mask = [1] * len(ids)
        if self.padding == "max_length" and len(ids) < self.max_length:
            fill = self.max_length - len(ids)
            ids += [pad_id] * fill
            mask += [0] * fill
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
        }


@dataclass
class Array:
    """A precomputed feature array stored as .npy -> tensor (cast to `dtype` if given).

    Loaded with allow_pickle=False: an object array is refused with a clear error.
    """

    field: str = "npy"
    dtype: str | None = None

    def __post_init__(self) -> None:
        _check_field("Array", self.field)
        if self.dtype is not None and not isinstance(
            getattr(torch, str(self.dtype), None), torch.dtype
        ):
            raise _bad("Array", "dtype", "None or a torch dtype name such as 'float32'", self.dtype)

    def decode(self, data: bytes, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Parse the .npy (header checked first, never unpickled) into a tensor."""
        _shape, dtype, _offset = npy_header(data)
        array = np.load(io.BytesIO(data), allow_pickle=False)
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        try:
            tensor = torch.from_numpy(np.ascontiguousarray(array))
        except TypeError as err:
            raise ValueError(f".npy dtype {dtype} has no torch equivalent ({err})") from None
        return tensor.to(getattr(torch, self.dtype)) if self.dtype is not None else tensor


def _default_text(field: str, tokenizer: str | None) -> Spec:
    # `mmsample inspect` without --tokenizer: byte ids, asked for explicitly
    return Text(field=field, tokenizer=tokenizer, byte_ids=tokenizer is None)


# extension -> factory(field, tokenizer) of the spec `mmsample inspect` uses without configuration.
DEFAULT_SPECS: dict[str, Callable[[str, str | None], Spec]] = {
    **{ext: lambda f, _t: Video(field=f) for ext in VIDEO_EXTENSIONS},
    **{ext: lambda f, _t: Audio(field=f) for ext in AUDIO_EXTENSIONS},
    **{ext: lambda f, _t: Image(field=f) for ext in IMAGE_EXTENSIONS},
    "txt": _default_text,
    "npy": lambda f, _t: Array(field=f),
}


def default_spec(field: str, *, tokenizer: str | None = None) -> Spec:
    """The spec that decodes `field` (e.g. "mp4", "left.wav") without configuration."""
    ext = field.rsplit(".", 1)[-1].lower()
    factory = DEFAULT_SPECS.get(ext)
    if factory is None:
        raise ValueError(
            f"No default spec for field {field!r}: its extension must be one of {sorted(DEFAULT_SPECS)}."
        )
    return factory(field, tokenizer)
