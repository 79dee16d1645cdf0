"""Decoder backends and media probing on real encoded files (h264 mp4, wav, flac, png, jpeg, npy).

Which frame came back is read from the frame itself: `moving_square_clip` and the clips below
paint frame t with background brightness 8 * (t % 16), independent of any decoder.
"""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mmsample.decoding.backends import (
    KNOWN_BACKENDS,
    available_backends,
    get_backend,
)
from mmsample.decoding.media_probe import probe
from mmsample.decoding.npy import npy_header
from mmsample.decoding.wav import parse_wav
from mmsample.testing import encode_mp4, encode_npy, encode_wav, moving_square_clip

BACKENDS = available_backends()
CPU_BACKENDS = [b for b in BACKENDS if b != "torchcodec-cuda"]


def _index(frame: torch.Tensor) -> int:
    """The frame index mod 16 painted into the background (the median pixel)."""
    return round(float(frame.float().median()) / 8) % 16


def _gop_clip(frames: int = 40, fps: int = 10, gop: int = 5, bframes: int = 2) -> bytes:
    """An h264 mp4 with short GOPs and B-frames (decode order != display order)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": str(gop), "bf": str(bframes), "preset": "veryfast", "crf": "18"}
        stream.codec_context.thread_count = 1
        for t in range(frames):
            image = np.full((32, 32, 3), 8 * (t % 16), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def _encode_image(image: np.ndarray, codec: str) -> bytes:
    """png (lossless) or mjpeg bytes of an RGB uint8 [H, W, 3] image, through PyAV."""
    import av

    pix = "rgb24" if codec == "png" else "yuvj444p"
    ctx: Any = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = (
        image.shape[1],
        image.shape[0],
        pix,
        Fraction(1, 25),
    )
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=pix)
    return b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])


def _encode_flac(samples: np.ndarray, sr: int = 16000) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=sr)
        stream.layout = "mono"
        pcm = (samples * 32767).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


def _stereo_wav(left: np.ndarray, right: np.ndarray, sr: int = 16000) -> bytes:
    return encode_wav(np.stack([left, right]), sr)


@pytest.fixture(scope="module")
def clip() -> bytes:
    return moving_square_clip(4, frames=20, size=32, fps=10.0)


@pytest.fixture(scope="module")
def gop_clip() -> bytes:
    return _gop_clip()


# ---------------------------------------------------------------- registry and selection


def _imports(package: str) -> bool:
    try:
        importlib.import_module(package)
    except (ImportError, RuntimeError, OSError):
        return False
    return True


def test_available_backends_are_the_importable_ones_fastest_first() -> None:
    expected = [n for n in ("torchcodec", "pyav", "decord") if _imports(KNOWN_BACKENDS[n][1])]
    assert expected == CPU_BACKENDS
    assert "pyav" in BACKENDS, "the test environment has PyAV"


def test_get_backend_unknown_and_missing_names() -> None:
    with pytest.raises(ValueError, match=r"must be one of \['decord', 'pyav', 'torchcodec'"):
        get_backend("ffmpeg-cli")
    if "decord" not in BACKENDS:
        with pytest.raises(ImportError, match="'decord' package"):
            get_backend("decord")
    if not torch.cuda.is_available():
        with pytest.raises(ImportError, match="CUDA is not available"):
            get_backend("torchcodec-cuda")
    assert get_backend() is get_backend()
    assert get_backend().name == BACKENDS[0]
    assert get_backend("pyav") is get_backend("pyav")


def test_env_var_picks_the_process_default() -> None:
    code = (
        "import sys; from mmsample.decoding.backends import get_backend; "
        "print(get_backend().name, 'torchcodec' in sys.modules)"
    )
    env = {**os.environ, "MMSAMPLE_BACKEND": "pyav"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pyav", "False"]  # and torchcodec was never loaded
    env["MMSAMPLE_BACKEND"] = "nope"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0 and "MMSAMPLE_BACKEND" in done.stderr


# ---------------------------------------------------------------- video


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_frames_played_at_times(backend: str, clip: bytes) -> None:
    times = [0.0, 0.05, 0.0999, 0.1, 0.55, 1.0, 1.37, 1.999]
    decoded = get_backend(backend).video_frames(clip, times)
    assert decoded.duration == pytest.approx(2.0)
    assert decoded.frames.shape == (len(times), 3, 32, 32) and decoded.frames.dtype == torch.uint8
    # Frame t is displayed during [t/10, (t+1)/10): the frame played at s is floor(10 s).
    assert [_index(f) for f in decoded.frames] == [int(10 * t) % 16 for t in times]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_times_from_the_duration_in_one_open(backend: str, clip: bytes) -> None:
    seen: list[float] = []

    def times(duration: float) -> list[float]:
        seen.append(duration)
        return [duration * 0.25, duration * 0.75]

    decoded = get_backend(backend).video_frames(clip, times)
    assert seen == [pytest.approx(2.0)] and decoded.times == [0.5, 1.5]
    assert [_index(f) for f in decoded.frames] == [5, 15]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_short_gops_with_b_frames_seek_correctly(backend: str, gop_clip: bytes) -> None:
    import av

    with av.open(io.BytesIO(gop_clip), "r") as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
    assert any(p.pts != p.dts for p in packets), "the clip should hold B-frames"
    times = [*[0.05 + 0.1 * i for i in range(40)][::3], 3.95, 0.35]  # forwards, then back
    decoded = get_backend(backend).video_frames(gop_clip, times)
    assert [_index(f) for f in decoded.frames] == [int(10 * t) % 16 for t in times]


def test_backends_return_identical_frames(clip: bytes, gop_clip: bytes) -> None:
    if len(CPU_BACKENDS) < 2:
        pytest.skip("needs two installed backends")
    for data, times in ((clip, [0.05, 0.72, 1.5, 1.95]), (gop_clip, [0.0, 1.23, 2.5, 3.99])):
        frames = [get_backend(b).video_frames(data, times).frames for b in CPU_BACKENDS]
        for other in frames[1:]:
            assert torch.equal(frames[0], other)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_times_outside_the_clip_and_bad_bytes_are_refused(backend: str, clip: bytes) -> None:
    impl = get_backend(backend)
    with pytest.raises(ValueError, match=r"outside the clip \[0, 2\.0"):
        impl.video_frames(clip, [2.0])
    with pytest.raises(ValueError, match="outside the clip"):
        impl.video_frames(clip, [-0.01])
    with pytest.raises(ValueError, match=backend.replace("pyav", "PyAV")):
        impl.video_frames(b"\x00\x01garbage" * 50, [0.0])
    audio_only = encode_mp4(None, audio=np.zeros(1024))
    with pytest.raises(ValueError, match="video"):
        impl.video_frames(audio_only, [0.0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torchcodec_cuda_decodes_the_same_frames(clip: bytes) -> None:
    times = [0.05, 0.55, 1.05, 1.95]
    gpu = get_backend("torchcodec-cuda").video_frames(clip, times).frames
    assert gpu.is_cuda and gpu.shape == (4, 3, 32, 32)
    assert [_index(f) for f in gpu.cpu()] == [0, 5, 10, 3]
    cpu = get_backend("torchcodec").video_frames(clip, times).frames
    assert (gpu.cpu().int() - cpu.int()).abs().float().mean() < 3.0  # GPU colour conversion


# ---------------------------------------------------------------- audio and images


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_audio_resamples_and_mixes_down_by_mean(backend: str) -> None:
    sr = 16000
    t = np.arange(sr) / sr
    left = 0.5 * np.sin(2 * np.pi * 500 * t)
    data = _stereo_wav(left, np.zeros(sr))
    impl = get_backend(backend)
    stereo = impl.audio(data, sr, mono=False)
    assert stereo.shape == (2, sr) and stereo.dtype == torch.float32
    np.testing.assert_allclose(stereo[0].numpy(), np.trunc(left * 32767) / 32768, atol=1e-6)
    mono = impl.audio(data, sr, mono=True)
    np.testing.assert_allclose(mono[0].numpy(), stereo.mean(0).numpy(), atol=1e-7)
    low = impl.audio(data, 8000, mono=True)[0]
    assert abs(low.shape[0] - 8000) <= 64
    want = 0.25 * np.sin(2 * np.pi * 500 * np.arange(low.shape[0]) / 8000)
    np.testing.assert_allclose(low[200:-200].numpy(), want[200:-200], atol=2e-3)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_audio_errors_name_the_problem(backend: str) -> None:
    silent = moving_square_clip(1, frames=4, seconds_audio=None)
    with pytest.raises(ValueError, match="audio"):
        get_backend(backend).audio(silent, 16000, mono=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_images_decode_exactly(backend: str) -> None:
    image = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    got = get_backend(backend).image(_encode_image(image, "png"))
    assert got.dtype == torch.uint8 and torch.equal(got, torch.from_numpy(image).permute(2, 0, 1))
    smooth = np.zeros((32, 48, 3), np.uint8)
    smooth[..., 0], smooth[..., 2] = 200, 40
    jpeg = get_backend(backend).image(_encode_image(smooth, "mjpeg"))
    assert jpeg.shape == (3, 32, 48)
    assert (jpeg.int() - torch.from_numpy(smooth).permute(2, 0, 1).int()).abs().max() <= 3


# ---------------------------------------------------------------- probe


def test_probe_accepts_good_media(clip: bytes) -> None:
    image = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    tone = 0.3 * np.sin(np.arange(4000) / 5)
    good = {
        "mp4": clip,
        "left.mp4": clip,
        "wav": encode_wav(tone),
        "flac": _encode_flac(tone),
        "npy": encode_npy(np.arange(12, dtype=np.float32).reshape(3, 4)),
        "png": _encode_image(image, "png"),
        "jpg": _encode_image(image, "mjpeg"),
        "txt": "héllo".encode(),
        "cls": b"whatever: not a media field",
    }
    for ext, data in good.items():
        probe(data, ext)


def _faststart(data: bytes, tmp: str) -> bytes:
    """Remux with the index (moov) before the media data, so a truncated copy still opens."""
    import av

    with (
        av.open(io.BytesIO(data), "r") as src,
        av.open(tmp, "w", format="mp4", options={"movflags": "faststart"}) as dst,
    ):
        video = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = video
                dst.mux(packet)
    with open(tmp, "rb") as f:
        return f.read()


def test_probe_rejects_truncated_and_garbage(clip: bytes, tmp_path: Path) -> None:
    fast = _faststart(moving_square_clip(5, frames=30), str(tmp_path / "fast.mp4"))
    probe(fast, "mp4")
    image = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    png, jpg = _encode_image(image, "png"), _encode_image(image, "mjpeg")
    wav = encode_wav(0.3 * np.sin(np.arange(4000) / 5))
    npy = encode_npy(np.arange(100, dtype=np.int64))
    bad = [
        ("mp4", clip[: len(clip) * 4 // 5], "truncated"),  # the box holding the index is cut
        ("mp4", fast[: len(fast) * 3 // 5], "truncated|decode"),
        ("mp4", b"garbage" * 100, "open"),
        ("mp4", moving_square_clip(1, frames=2, seconds_audio=1.0)[:0], "empty"),
        ("wav", wav[:-100], "truncated"),
        ("wav", b"RIFF\x00\x00\x00\x00WAVEjunk", "no 'fmt '"),
        ("wav", b"garbage" * 100, "decode"),
        ("flac", b"fLaC" + b"\x00" * 50, "decode"),
        ("npy", npy[:-8], "truncated"),
        ("npy", b"\x93NUMPY garbage", "npy"),
        ("png", png[: len(png) // 2], "truncated"),
        ("png", jpg, "signature"),
        ("jpg", jpg[: len(jpg) // 2], "truncated"),
        ("txt", b"\xff\xfe\xfa", "UTF-8"),
    ]
    for ext, data, reason in bad:
        with pytest.raises(ValueError, match=reason):
            probe(data, ext)


def test_probe_refuses_object_npy_without_unpickling() -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([_Tripwire(), 1], dtype=object), allow_pickle=True)
    _Tripwire.loaded = 0
    with pytest.raises(ValueError, match="never unpickled"):
        probe(buf.getvalue(), "npy")
    assert _Tripwire.loaded == 0


def test_probe_rejects_mp4_without_video() -> None:
    audio_only = encode_mp4(None, audio=np.zeros(2048))
    with pytest.raises(ValueError, match="video"):
        probe(audio_only, "mp4")
    probe(audio_only, "m4a")


def test_header_parsers_read_hand_built_headers() -> None:
    info = parse_wav(_stereo_wav(np.zeros(10), np.zeros(10), sr=22050))
    assert (info.channels, info.sample_rate, info.bits, info.is_float, info.data_size) == (
        2,
        22050,
        16,
        False,
        40,
    )
    shape, dtype, offset = npy_header(encode_npy(np.zeros((2, 5), dtype=">f8")))
    assert shape == (2, 5) and dtype == np.dtype(">f8") and offset % 64 == 0


class _Tripwire:
    """Counts unpickling; a probe must never trigger it."""

    loaded = 0

    def __setstate__(self, state: object) -> None:
        type(self).loaded += 1
