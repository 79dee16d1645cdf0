"""Tiny real media for tests and for users' own tests: encoded mp4 clips, wav files, tokenizers.

Everything here writes real files (h264/AAC through PyAV's bundled FFmpeg, a WordPiece tokenizer
trained with `tokenizers`), so tests exercise the same decoders users run.
"""

from __future__ import annotations

import io
import struct
import wave
import zlib
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .plan import TablePlan as TablePlan  # re-exported; public in mmsample.plan

if TYPE_CHECKING:
    from .shards.format import Manifest


def encode_mp4(
    frames: np.ndarray | None,
    fps: float = 10.0,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    crf: int = 23,
) -> bytes:
    """Encode uint8 RGB frames `[T, H, W, 3]` (H, W even) and optional mono float audio `[S]` in
    [-1, 1] as an mp4 with an h264 video track and an AAC audio track. `frames=None` writes an
    audio-only mp4 (a clip without a video stream, for error-path tests)."""
    import av

    if frames is None and audio is None:
        raise ValueError("encode_mp4 needs frames, audio or both")
    if frames is not None:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8 [T, H, W, 3]; got {frames.dtype} {frames.shape}"
            )
        if frames.shape[1] % 2 or frames.shape[2] % 2:
            raise ValueError(
                f"frame height and width must be even for yuv420p; got {frames.shape[1:3]}"
            )
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        if frames is not None:
            video = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            video.width, video.height = int(frames.shape[2]), int(frames.shape[1])
            video.pix_fmt = "yuv420p"
            video.options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency"}
            video.codec_context.thread_count = 1
        if audio is not None:
            sound = out.add_stream("aac", rate=sample_rate)
            sound.layout = "mono"
        if frames is not None:
            for frame in frames:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                for packet in video.encode(vf):
                    out.mux(packet)
            for packet in video.encode():
                out.mux(packet)
        if audio is not None:
            wave_ = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
            step = 1024
            for start in range(0, len(wave_), step):
                af = av.AudioFrame.from_ndarray(
                    wave_[None, start : start + step].copy(), format="fltp", layout="mono"
                )
                af.sample_rate = sample_rate
                af.pts = start
                for packet in sound.encode(af):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return buf.getvalue()


def encode_wav(audio: np.ndarray, sample_rate: int = 16000) -> bytes:
    """Encode float audio in [-1, 1], mono `[S]` or channels-first `[C, S]`, as 16-bit PCM wav."""
    wave_ = np.asarray(audio, dtype=np.float64)
    channels = wave_[None] if wave_.ndim == 1 else wave_
    if channels.ndim != 2:
        raise ValueError(f"audio must be [S] or [C, S]; got shape {wave_.shape}")
    pcm = (np.clip(channels, -1.0, 1.0) * 32767).astype("<i2").T  # interleaved frames
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels.shape[0])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.ascontiguousarray(pcm).tobytes())
    return buf.getvalue()


def encode_audio(
    audio: np.ndarray,
    sample_rate: int = 16000,
    *,
    codec: str = "pcm_s16le",
    container: str = "wav",
    layout: str | None = None,
    sample_format: str | None = None,
    start: int = 0,
    frame_size: int = 1024,
) -> bytes:
    """Encode float audio in [-1, 1], `[S]` or channels-first `[C, S]`, with any FFmpeg audio
    encoder PyAV bundles (pcm_*, flac, vorbis, libopus, libmp3lame, aac, alac) into `container`.

    `layout`: an FFmpeg channel layout name ("5.1(side)", "7.1", "hexadecagonal") or
    "N channels" (no speaker positions; the default for C > 2); `sample_format`: the encoder's
    input format (e.g. "s16", "flt", "fltp"; default the encoder's first); `start`: pts of the
    first sample, in samples (a stream that starts late, as some Vorbis/Ogg files do).
    """
    import av

    wave_ = np.asarray(audio, dtype=np.float32)
    channels = wave_[None] if wave_.ndim == 1 else wave_
    if channels.ndim != 2:
        raise ValueError(f"audio must be [S] or [C, S]; got shape {wave_.shape}")
    c = channels.shape[0]
    if layout is None:
        layout = {1: "mono", 2: "stereo"}.get(c, f"{c} channels")
    if av.AudioLayout(layout).nb_channels != c:
        raise ValueError(f"layout {layout!r} does not have {c} channels")
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream: Any = out.add_stream(codec, rate=sample_rate)
        stream.layout = layout
        formats = stream.codec_context.codec.audio_formats or []
        fmt = sample_format or (formats[0].name if formats else "s16")
        stream.format = fmt
        stream.codec_context.thread_count = 1
        if codec == "vorbis":  # FFmpeg's own Vorbis encoder is marked experimental
            stream.codec_context.options = {"strict": "experimental"}
        # Packed float frames: PyAV miscounts the planes of planar frames with > 8 channels.
        converter = av.AudioResampler(format=fmt, layout=layout, rate=sample_rate)
        clipped = np.clip(channels, -1.0, 1.0)
        size = stream.codec_context.frame_size or frame_size
        for begin in range(0, clipped.shape[1], size):
            part = np.ascontiguousarray(clipped[:, begin : begin + size].T).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(part, format="flt", layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = start + begin
            frame.time_base = Fraction(1, sample_rate)
            for converted in converter.resample(frame):
                for packet in stream.encode(converted):
                    out.mux(packet)
        for converted in converter.resample(None):
            for packet in stream.encode(converted):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def exif_orientation_block(orientation: int, *, little_endian: bool = False) -> bytes:
    """TIFF-structured EXIF bytes whose IFD0 holds only the Orientation tag (0x0112)."""
    end = "<" if little_endian else ">"
    head = b"II*\x00" if little_endian else b"MM\x00*"
    entry = struct.pack(end + "HHIH2x", 0x0112, 3, 1, orientation)
    return head + struct.pack(end + "IH", 8, 1) + entry + struct.pack(end + "I", 0)


def encode_png(
    image: np.ndarray,
    *,
    palette: np.ndarray | None = None,
    transparent: int | tuple[int, int, int] | Iterable[int] | None = None,
    orientation: int | None = None,
    declared_size: tuple[int, int] | None = None,
) -> bytes:
    """Write a PNG by hand (zlib-compressed rows, filter 0), for the cases encoders rarely make.

    `image`: uint8 or uint16 (16-bit PNG) `[H, W]` grey, `[H, W, 2]` grey + alpha, `[H, W, 3]`
    RGB or `[H, W, 4]` RGBA; with `palette` (uint8 `[N, 3]`) it holds palette indices.
    `transparent` (a tRNS chunk): the grey value or RGB triple that is transparent, or with a
    palette the alpha of each palette entry. `orientation`: an eXIf chunk with that EXIF
    Orientation (1..8). `declared_size` (width, height) overrides the IHDR size: a small file
    that declares a huge image, as decompression bombs and forged headers do.
    """
    pixels = np.asarray(image)
    h, w = pixels.shape[:2]
    if palette is not None:
        colour, depth = 3, 8
    else:
        channels = 1 if pixels.ndim == 2 else pixels.shape[2]
        colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
        depth = 16 if pixels.dtype == np.uint16 else 8
    raw = pixels.astype(">u2" if depth == 16 else np.uint8).reshape(h, -1).view(np.uint8)
    rows = np.concatenate([np.zeros((h, 1), np.uint8), raw], axis=1).tobytes()
    width, height = declared_size or (w, h)
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))]
    if orientation is not None:
        chunks.append((b"eXIf", exif_orientation_block(orientation)))
    if palette is not None:
        chunks.append((b"PLTE", np.asarray(palette, np.uint8).tobytes()))
    if transparent is not None:
        if palette is not None:
            trns = bytes(list(transparent))  # type: ignore[arg-type]
        elif isinstance(transparent, int):
            trns = struct.pack(">H", transparent)
        else:
            trns = struct.pack(">HHH", *transparent)
        chunks.append((b"tRNS", trns))
    chunks += [(b"IDAT", zlib.compress(rows)), (b"IEND", b"")]
    body = b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in chunks
    )
    return b"\x89PNG\r\n\x1a\n" + body


def add_exif_orientation(jpeg: bytes, orientation: int, *, little_endian: bool = True) -> bytes:
    """Insert an APP1 Exif segment carrying `orientation` (1..8) right after a JPEG's SOI."""
    if not jpeg.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG (no start-of-image marker)")
    payload = b"Exif\x00\x00" + exif_orientation_block(orientation, little_endian=little_endian)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def encode_image(image: np.ndarray, codec: str = "mjpeg") -> bytes:
    """Encode uint8 RGB `[H, W, 3]` with one of PyAV's still-image encoders ("mjpeg", "png",
    "bmp", "gif", ...), in the pixel format it takes (yuvj444p for JPEG)."""
    import av

    ctx: Any = av.CodecContext.create(codec, "w")
    formats = [f.name for f in ctx.codec.video_formats or []]
    rgb = [f for f in ("rgb24", "bgr24") if f in formats]
    pix = "yuvj444p" if codec == "mjpeg" else (rgb or formats)[0]
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = (
        image.shape[1],
        image.shape[0],
        pix,
        Fraction(1, 25),
    )
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    frame = frame.reformat(format=pix)
    return b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])


def encode_npy(array: np.ndarray) -> bytes:
    """Serialise an array as .npy bytes (never pickled)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def moving_square_clip(
    seed: int,
    frames: int = 20,
    size: int = 32,
    fps: float = 10.0,
    seconds_audio: float | None = 2.0,
    sample_rate: int = 16000,
) -> bytes:
    """A deterministic mp4: a bright square moving over a dark background, with a tone whose
    pitch depends on `seed`; each frame's mean brightness encodes its index (for order checks)."""
    rng = np.random.default_rng(seed)
    video = np.zeros((frames, size, size, 3), dtype=np.uint8)
    side = max(4, size // 4)
    x0, y0 = rng.integers(0, size - side, size=2)
    for t in range(frames):
        video[t] = 8 * (t % 16)
        x = int((x0 + t) % (size - side))
        video[t, y0 : y0 + side, x : x + side] = 255
    audio = None
    if seconds_audio:
        n = int(seconds_audio * sample_rate)
        freq = 220.0 + 40.0 * (seed % 10)
        audio = 0.4 * np.sin(2 * np.pi * freq * np.arange(n) / sample_rate)
    return encode_mp4(video, fps=fps, audio=audio, sample_rate=sample_rate)


def make_tokenizer(directory: str | Path, corpus: Iterable[str] | None = None) -> Path:
    """Train a small WordPiece tokenizer with `tokenizers` and save it as a transformers
    tokenizer directory (loadable offline with `AutoTokenizer.from_pretrained(directory)`)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    words = (
        list(corpus)
        if corpus is not None
        else [
            "zero one two three four five six seven eight nine",
            "a photo of a handwritten digit spoken aloud",
            "the quick brown fox jumps over the lazy dog",
        ]
    )
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        words, trainers.WordPieceTrainer(vocab_size=200, special_tokens=special)
    )
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    fast.save_pretrained(str(directory))
    return directory


def tiny_sample_fields(index: int, fields: Iterable[str], seed: int = 0) -> dict[str, bytes]:
    """Payloads of sample `index` of the tiny dataset: a moving-square mp4 (with audio), a tone
    wav, a short caption and an 8-float npy, each deterministic in (seed, index)."""
    rng = np.random.default_rng([seed, index])
    out: dict[str, bytes] = {}
    for name in fields:
        if name == "mp4":
            out[name] = moving_square_clip(seed * 1000 + index, frames=20, size=32)
        elif name == "wav":
            t = np.arange(16000) / 16000
            out[name] = encode_wav(0.3 * np.sin(2 * np.pi * (200 + 25 * (index % 13)) * t))
        elif name == "txt":
            out[name] = f"sample {index} says digit {index % 10}".encode()
        elif name == "npy":
            out[name] = encode_npy(rng.standard_normal(8).astype(np.float32))
        else:
            raise ValueError(f"tiny datasets know fields mp4, wav, txt, npy; got {name!r}")
    return out


def write_tiny_dataset(
    root: str | Path,
    n: int = 12,
    num_classes: int = 3,
    fields: Iterable[str] = ("mp4", "wav", "txt", "npy"),
    samples_per_shard: int = 4,
    seed: int = 0,
    missing: dict[str, set[int]] | None = None,
) -> Manifest:
    """Write a small real sharded dataset (keys `s000000`..., label = index % num_classes) and
    return its manifest; `missing[field]` lists sample indices that lack that field."""
    from .sharding import write_samples

    fields = tuple(fields)
    missing = missing or {}
    classes = [f"class{c}" for c in range(num_classes)]

    def samples() -> Iterator[tuple[str, int, dict[str, bytes]]]:
        for i in range(n):
            keep = [f for f in fields if i not in missing.get(f, set())]
            yield f"s{i:06d}", i % num_classes, tiny_sample_fields(i, keep, seed)

    return write_samples(root, samples(), classes, samples_per_shard)


class CountingSpec:
    """A real spec whose `decode` calls are counted in shared memory, so calls made in
    DataLoader workers show in the main process: `CountingSpec(Audio()).calls` (int64 `[1]`).
    For tests and benchmarks that check a loader decodes exactly what a plan needs.

    Each process counts in its own slot (the main process in slot 0, DataLoader worker w in
    slot w + 1; at most `SLOTS - 1` workers, else ValueError): a `+= 1` on one shared counter
    from several workers loses updates (two read-modify-writes interleave)."""

    SLOTS = 256

    def __init__(self, spec: Any) -> None:
        import torch

        self.spec, self.field = spec, spec.field
        self._slots = torch.zeros(self.SLOTS, dtype=torch.int64).share_memory_()

    @property
    def calls(self) -> Any:
        """int64 `[1]`: decode calls so far, over the main process and every worker."""
        return self._slots.sum().reshape(1)

    def decode(self, data: bytes, *, generator: Any = None) -> Any:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        slot = 0 if info is None else info.id + 1
        if slot >= self.SLOTS:
            raise ValueError(
                f"CountingSpec counts at most {self.SLOTS - 1} DataLoader workers; worker "
                f"{info.id if info is not None else None} decoded."
            )
        self._slots[slot] += 1
        return self.spec.decode(data, generator=generator)
