"""Modality specs on real media: mp4 clips, wav, a trained tokenizer directory, npy, png."""

from __future__ import annotations

import io
import itertools
import math
import os
import pickle
import subprocess
import sys
import wave
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmsample.decoding import (
    DEFAULT_SPECS,
    Array,
    Audio,
    Image,
    Spec,
    Text,
    Video,
    default_spec,
    frame_times,
    uniform_subset,
)
from mmsample.decoding.backends import available_backends
from mmsample.testing import encode_mp4, encode_npy, encode_wav, make_tokenizer, moving_square_clip

os.environ.setdefault("HF_HUB_OFFLINE", "1")
BACKENDS = [b for b in available_backends() if b != "torchcodec-cuda"]


def _index(frame: torch.Tensor) -> int:
    """The frame index mod 16 painted into the background (median pixel), see mmsample.testing."""
    return round(float(frame.float().median()) / 8) % 16


def _clip(seconds: float, fps: float = 10.0, size: int = 32, audio: bool = True) -> bytes:
    return moving_square_clip(
        1, frames=round(seconds * fps), size=size, fps=fps, seconds_audio=seconds if audio else None
    )


def _played(times: list[float], fps: float) -> list[int]:
    """Index (mod 16) of the frame displayed at each time, for a clip starting at 0."""
    return [math.floor(t * fps) % 16 for t in times]


@pytest.fixture(scope="module")
def ten_seconds() -> bytes:
    return _clip(10.0, fps=5.0, audio=False)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tokenizer(tmp_path_factory.mktemp("tok")))


# ---------------------------------------------------------------- timestamps


def test_frame_times_hand_values() -> None:
    assert frame_times(10.0, 10, 1.0) == [i + 0.5 for i in range(10)]
    assert frame_times(30.0, 10, 1.0) == [i + 0.5 for i in range(10)]  # first 10 s of 30
    assert frame_times(2.0, 4, 1.0) == [0.25, 0.75, 1.25, 1.75]  # short clip: spread over it
    assert frame_times(3.0, 3, None) == [0.5, 1.5, 2.5]
    assert frame_times(1.0, 2, 4.0) == [0.125, 0.375]
    with pytest.raises(ValueError, match="no duration"):
        frame_times(0.0, 3, 1.0)


@settings(max_examples=200, deadline=None)
@given(
    duration=st.floats(0.01, 1000.0),
    frames=st.integers(1, 64),
    fps=st.one_of(st.none(), st.floats(0.1, 60.0)),
)
def test_frame_times_stay_inside_the_clip(duration: float, frames: int, fps: float | None) -> None:
    times = frame_times(duration, frames, fps)
    assert len(times) == frames
    assert all(0.0 < t < duration for t in times)
    assert all(a < b for a, b in itertools.pairwise(times))


def test_uniform_subset_without_generator_is_evenly_spaced() -> None:
    assert uniform_subset(10, 3, None) == [1, 5, 8]
    assert uniform_subset(10, 5, None) == [1, 3, 5, 7, 9]
    assert uniform_subset(4, 4, None) == [0, 1, 2, 3]


def test_uniform_subset_with_generator_is_uniform_over_positions() -> None:
    draws = 3000
    counts = np.zeros(10)
    for seed in range(draws):
        pick = uniform_subset(10, 3, torch.Generator().manual_seed(seed))
        assert pick == sorted(set(pick)) and len(pick) == 3 and pick[0] >= 0 and pick[-1] < 10
        counts[pick] += 1
    # Each position is chosen with probability 3/10; chi-square with 9 dof, 99.9% quantile 27.88.
    expected = draws * 3 / 10
    assert ((counts - expected) ** 2 / expected).sum() < 27.88, counts
    assert uniform_subset(10, 3, torch.Generator().manual_seed(5)) == uniform_subset(
        10, 3, torch.Generator().manual_seed(5)
    )


# ---------------------------------------------------------------- Video


@pytest.mark.parametrize("backend", BACKENDS)
def test_video_one_frame_per_second_over_ten_seconds(backend: str, ten_seconds: bytes) -> None:
    video = Video(frames=10, fps=1.0, backend=backend).decode(ten_seconds)
    assert video.shape == (10, 3, 32, 32) and video.dtype == torch.uint8
    assert [_index(f) for f in video] == _played([i + 0.5 for i in range(10)], 5.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_video_short_clip_spreads_frames_over_it(backend: str) -> None:
    short = _clip(2.0, fps=10.0, audio=False)  # 2 s clip, 10 frames asked at 1 fps
    video = Video(frames=10, fps=1.0, backend=backend).decode(short)
    assert [_index(f) for f in video] == _played([(i + 0.5) * 0.2 for i in range(10)], 10.0)
    one = Video(frames=3, fps=None, backend=backend).decode(_clip(0.1, audio=False))  # 1 frame
    assert one.shape == (3, 3, 32, 32) and [_index(f) for f in one] == [0, 0, 0]


def test_video_random_frames_come_from_the_generator(ten_seconds: bytes) -> None:
    spec = Video(frames=10, fps=1.0, random_frames=3)
    times = [i + 0.5 for i in range(10)]
    for seed in (0, 1, 2):
        picks = uniform_subset(10, 3, torch.Generator().manual_seed(seed))
        video = spec.decode(ten_seconds, generator=torch.Generator().manual_seed(seed))
        assert video.shape == (3, 3, 32, 32)
        assert [_index(f) for f in video] == _played([times[i] for i in picks], 5.0)
    plain = spec.decode(ten_seconds)
    assert [_index(f) for f in plain] == _played([times[1], times[5], times[8]], 5.0)
    assert torch.equal(plain, spec.decode(ten_seconds))


def test_video_resize_and_float(ten_seconds: bytes) -> None:
    small = Video(frames=4, fps=None, size=(16, 24)).decode(ten_seconds)
    assert small.shape == (4, 3, 16, 24) and small.dtype == torch.uint8
    flat = encode_mp4(np.full((4, 32, 32, 3), 96, np.uint8), fps=4.0)
    resized = Video(frames=2, fps=None, size=8).decode(flat)
    decoded = Video(frames=2, fps=None).decode(flat)
    assert resized.shape == (2, 3, 8, 8)
    assert torch.equal(
        resized, torch.full_like(resized, int(decoded[0, 0, 0, 0]))
    )  # flat stays flat
    as_float = Video(frames=4, fps=None, dtype="float32").decode(ten_seconds)
    as_uint8 = Video(frames=4, fps=None).decode(ten_seconds)
    assert as_float.dtype == torch.float32 and torch.equal(as_float, as_uint8.float() / 255)


def test_video_bench_call_for_every_backend(ten_seconds: bytes) -> None:
    """What tools/bench_read.py does: Video(frames=10, fps=1.0, backend=name) on a 10 s clip."""
    results = [Video(frames=10, fps=1.0, backend=name).decode(ten_seconds) for name in BACKENDS]
    assert all(r.shape == (10, 3, 32, 32) for r in results)
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_video_bad_bytes_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"could not open|could not decode"):
        Video(frames=2).decode(b"not a video at all" * 10)


# ---------------------------------------------------------------- Audio


def _sine(freq: float, seconds: float, sr: int = 16000) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * freq * np.arange(round(seconds * sr)) / sr)


@pytest.mark.parametrize("backend", [*BACKENDS, "wave"])
def test_audio_log_spectrogram_of_a_wav_sine(backend: str) -> None:
    data = encode_wav(_sine(1000.0, 1.0))
    spec = Audio(backend=backend).decode(data)
    assert spec.shape == (257, 1 + 16000 // 159) and spec.dtype == torch.float32
    assert (spec[:, 2:-2].argmax(dim=0) == 32).all()  # 1000 Hz * 512 / 16000 Hz = bin 32
    # Far from the tone the magnitude is ~0, so the log is near log(1e-7) (quantisation noise).
    assert spec[200, 2:-2].max() < math.log(1e-2)


def test_audio_wave_reader_matches_ffmpeg_backends() -> None:
    data = encode_wav(_sine(440.0, 0.5) + 0.1 * _sine(3000.0, 0.5))
    ours = Audio(backend="wave", spectrogram=None).decode(data)
    for backend in BACKENDS:
        assert torch.equal(ours, Audio(backend=backend, spectrogram=None).decode(data))
        theirs = Audio(backend=backend, spectrogram=None, sample_rate=8000).decode(data)
        resampled = Audio(backend="wave", spectrogram=None, sample_rate=8000).decode(data)
        assert abs(theirs.shape[0] - resampled.shape[0]) <= 64
        n = min(theirs.shape[0], resampled.shape[0])
        np.testing.assert_allclose(
            theirs[100 : n - 100].numpy(), resampled[100 : n - 100].numpy(), atol=5e-3
        )


def test_audio_wave_reader_formats_and_stereo() -> None:
    left, right = _sine(500.0, 0.1), np.zeros(1600)
    pcm = (np.stack([left, right], axis=1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    stereo = Audio(backend="wave", mono=False, spectrogram=None).decode(buf.getvalue())
    assert stereo.shape == (2, 1600)
    np.testing.assert_allclose(stereo[0].numpy(), pcm[:, 0] / 32768, atol=0)
    mono = Audio(backend="wave", spectrogram=None).decode(buf.getvalue())
    np.testing.assert_allclose(mono.numpy(), pcm.astype(np.float64).mean(axis=1) / 32768, atol=1e-7)
    # 24-bit PCM: -1, 0.5 and the extreme negative value, little-endian 3-byte samples.
    values = [-1, 1 << 22, -(1 << 23)]
    raw = b"".join(v.to_bytes(3, "little", signed=True) for v in values)
    buf24 = io.BytesIO()
    with wave.open(buf24, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(3)
        w.setframerate(16000)
        w.writeframes(raw)
    got = Audio(backend="wave", spectrogram=None).decode(buf24.getvalue())
    assert got.tolist() == [-1 / (1 << 23), 0.5, -1.0]


def test_audio_crop_random_with_generator_centre_without() -> None:
    full_wave = _sine(300.0, 2.0) * np.linspace(0.2, 1.0, 32000)  # no two windows alike
    data = encode_wav(full_wave)
    spec = Audio(seconds=0.5, spectrogram=None, backend="wave")
    full = Audio(spectrogram=None, backend="wave").decode(data)
    centre = spec.decode(data)
    assert torch.equal(centre, full[12000:20000])
    starts = set()
    for seed in range(8):
        crop = spec.decode(data, generator=torch.Generator().manual_seed(seed))
        again = spec.decode(data, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(crop, again) and crop.shape == (8000,)
        matches = [s for s in range(0, 24001) if torch.equal(full[s : s + 8000], crop)]
        assert len(matches) == 1
        starts.add(matches[0])
    assert len(starts) > 4
    padded = Audio(seconds=3.0, spectrogram=None, backend="wave").decode(data)
    assert (
        padded.shape == (48000,) and torch.equal(padded[:32000], full) and not padded[32000:].any()
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_audio_track_of_an_mp4(backend: str) -> None:
    clip = moving_square_clip(5, frames=10, seconds_audio=1.0)  # tone 220 + 40 * 5 = 420 Hz
    spec = Audio(field="mp4", backend=backend, seconds=1.0).decode(clip)
    assert spec.shape == (257, 101)
    assert (spec[:, 10:-10].argmax(dim=0) == round(420 * 512 / 16000)).all()
    with pytest.raises(ValueError, match="audio"):
        Audio(field="mp4", backend=backend).decode(_clip(1.0, audio=False))


def test_audio_mel_and_logmel() -> None:
    data = encode_wav(_sine(2000.0, 0.5))
    mel = Audio(spectrogram="mel", n_mels=64).decode(data)
    logmel = Audio(spectrogram="logmel", n_mels=64).decode(data)
    assert mel.shape == logmel.shape == (64, 1 + 8000 // 159)
    torch.testing.assert_close(logmel, torch.log(mel + 1e-7))
    # The loudest band is the one whose HTK centre frequency is nearest 2000 Hz.
    top = 2595 * math.log10(1 + 8000 / 700)
    centres = [700 * (10 ** (m / 2595) - 1) for m in np.linspace(0, top, 66)[1:-1]]
    nearest = int(np.argmin([abs(c - 2000.0) for c in centres]))
    assert int(mel[:, 5].argmax()) in (nearest - 1, nearest, nearest + 1)
    stereo = Audio(spectrogram="log", mono=False).decode(data)
    assert stereo.shape == (1, 257, 1 + 8000 // 159)


# ---------------------------------------------------------------- Image, Text, Array


def _png(image: np.ndarray) -> bytes:
    import av

    ctx: Any = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = (
        image.shape[1],
        image.shape[0],
        "rgb24",
        Fraction(1, 25),
    )
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    return b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])


def test_image_png_round_trip_resize_and_float() -> None:
    image = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    got = Image().decode(_png(image))
    assert torch.equal(got, torch.from_numpy(image).permute(2, 0, 1))
    assert Image(size=(6, 10)).decode(_png(image)).shape == (3, 6, 10)
    assert torch.equal(Image(dtype="float32").decode(_png(image)), got.float() / 255)
    with pytest.raises(ValueError, match="image"):
        Image().decode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)


def test_text_with_a_local_tokenizer(tokenizer_dir: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    out = Text(tokenizer=tokenizer_dir, max_length=12).decode(b"one two three")
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.dtype == mask.dtype == torch.long and ids.shape == mask.shape == (12,)
    n = int(mask.sum())
    assert mask.tolist() == [1] * n + [0] * (12 - n)
    assert ids[0] == tok.cls_token_id and ids[n - 1] == tok.sep_token_id
    assert (ids[n:] == tok.pad_token_id).all()
    assert tok.decode(ids[1 : n - 1].tolist()) == "one two three"
    long = Text(tokenizer=tokenizer_dir, max_length=5).decode(b"one two three four five six seven")
    assert long["input_ids"].shape == (5,) and long["attention_mask"].all()
    assert long["input_ids"][-1] == tok.sep_token_id
    unpadded = Text(tokenizer=tokenizer_dir, max_length=12, padding="do_not_pad").decode(
        b"one two three"
    )
    assert unpadded["input_ids"].tolist() == ids[:n].tolist()


def test_text_without_tokenizer_is_byte_level() -> None:
    out = Text(max_length=8, byte_ids=True).decode("héllo".encode())
    assert out["input_ids"].tolist() == [104, 0xC3, 0xA9, 108, 108, 111, 0, 0]
    assert out["attention_mask"].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert Text(max_length=3, byte_ids=True).decode(b"abcdef")["input_ids"].tolist() == [97, 98, 99]
    assert Text(max_length=3, truncation=False, padding="longest", byte_ids=True).decode(b"abcdef")[
        "input_ids"
    ].shape == (6,)
    with pytest.raises(ValueError, match="UTF-8"):
        Text(byte_ids=True).decode(b"\xff\xfe")


def test_text_needs_an_explicit_tokenizer_or_byte_ids(tokenizer_dir: str) -> None:
    with pytest.raises(
        ValueError, match=r"Text needs a tokenizer: give 'tokenizer' .* byte_ids=True"
    ):
        Text()
    with pytest.raises(ValueError, match="'byte_ids' parameter of Text must be False when"):
        Text(tokenizer=tokenizer_dir, byte_ids=True)
    with pytest.raises(ValueError, match="'byte_ids' parameter of Text must be a bool"):
        Text(byte_ids=1)  # type: ignore[arg-type]


def test_missing_tokenizer_is_an_error_at_construction_never_a_hub_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmsample.decoding.text import _tokenizer

    monkeypatch.chdir(tmp_path)  # one-word names resolve against an empty directory
    (tmp_path / "empty").mkdir()
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    loaded = _tokenizer.cache_info().misses
    cases = {
        str(tmp_path / "no" / "such" / "tokenizer"): "does not exist",
        "bert-base-uncased": "does not exist",  # a hub name: never looked up
        "google-bert/bert-base-uncased": "does not exist",  # the hub's repo-id form
        str(tmp_path / "vocab.txt"): "is a file, not a directory",
        str(tmp_path / "empty"): "holds none of ['tokenizer.json'",
    }
    for path, why in cases.items():
        with pytest.raises(ValueError) as info:
            Text(tokenizer=path)
        message = str(info.value)
        assert message.startswith("The 'tokenizer' parameter of Text must be a local tokenizer")
        assert why in message and "save_pretrained" in message, message
    assert _tokenizer.cache_info().misses == loaded  # nothing was loaded


def test_tokenizer_given_as_a_path_object(tokenizer_dir: str) -> None:
    spec = Text(tokenizer=Path(tokenizer_dir), max_length=4)  # type: ignore[arg-type]
    assert spec.tokenizer == tokenizer_dir and spec == Text(tokenizer=tokenizer_dir, max_length=4)
    assert spec.decode(b"one")["attention_mask"].tolist() == [1, 1, 1, 0]  # [CLS] one [SEP]


def test_array_round_trips_and_casts() -> None:
    for array in (
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.arange(6, dtype=">i4").reshape(2, 3),  # big-endian
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.array([True, False]),
    ):
        got = Array().decode(encode_npy(array))
        assert got.shape == array.shape and np.array_equal(got.numpy(), array)
    half = Array(dtype="float16").decode(encode_npy(np.array([1.5, 2.25])))
    assert half.dtype == torch.float16 and half.tolist() == [1.5, 2.25]


class _Tripwire:
    loaded = 0

    def __setstate__(self, state: object) -> None:
        type(self).loaded += 1


def test_array_refuses_object_arrays_without_unpickling() -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([_Tripwire(), 2], dtype=object), allow_pickle=True)
    _Tripwire.loaded = 0
    with pytest.raises(ValueError, match="never unpickled"):
        Array().decode(buf.getvalue())
    assert _Tripwire.loaded == 0
    with pytest.raises(ValueError, match="truncated"):
        Array().decode(encode_npy(np.zeros(10))[:-4])


# ---------------------------------------------------------------- contract


def test_parameters_are_validated_with_named_messages() -> None:
    cases = [
        (lambda: Video(frames=0), "The 'frames' parameter of Video must be an int >= 1; got 0."),
        (lambda: Video(fps=-1.0), "'fps' parameter of Video"),
        (lambda: Video(frames=4, random_frames=5), "'random_frames' parameter of Video"),
        (lambda: Video(size=(3,)), "'size' parameter of Video"),  # type: ignore[arg-type]
        (lambda: Video(dtype="int8"), "must be one of ['uint8', 'float32']"),  # type: ignore[arg-type]
        (lambda: Video(backend="ffmpeg"), "must be None or one of ['decord', 'pyav', 'torchcodec'"),
        (lambda: Audio(spectrogram="cqt"), "'spectrogram' parameter of Audio"),  # type: ignore[arg-type]
        (lambda: Audio(seconds=0), "'seconds' parameter of Audio"),
        (lambda: Audio(win_length=1024), "'win_length' parameter of Audio"),
        (lambda: Audio(backend="sox"), "'wave'"),
        (lambda: Text(padding="left", byte_ids=True), "'padding' parameter of Text"),  # type: ignore[arg-type]
        (lambda: Text(max_length=0, byte_ids=True), "'max_length' parameter of Text"),
        (lambda: Array(dtype="complex_thing"), "'dtype' parameter of Array"),
        (lambda: Image(field=".png"), "'field' parameter of Image"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError) as info:
            make()
        assert message in str(info.value)


def test_specs_are_picklable_protocol_members(tokenizer_dir: str, ten_seconds: bytes) -> None:
    specs: list[Spec] = [
        Video(size=16),
        Image(),
        Audio(field="mp4", seconds=1.0),
        Text(tokenizer=tokenizer_dir),
        Array(dtype="float32"),
    ]
    Text(tokenizer=tokenizer_dir).decode(b"one")  # loads and caches the tokenizer
    Video().decode(ten_seconds)  # caches a backend
    for spec in specs:
        assert isinstance(spec, Spec)
        copy = pickle.loads(pickle.dumps(spec))
        assert copy == spec and len(pickle.dumps(spec)) < 1000  # no heavy object inside


def test_default_specs_by_extension(tokenizer_dir: str) -> None:
    expected = {
        **dict.fromkeys(("mp4", "avi", "mkv", "webm"), Video),
        **dict.fromkeys(("wav", "flac", "mp3", "ogg", "m4a"), Audio),
        **dict.fromkeys(("png", "jpg", "jpeg"), Image),
        "txt": Text,
        "npy": Array,
    }
    for ext, cls in expected.items():
        spec = default_spec(ext)
        assert type(spec) is cls and spec.field == ext
    assert default_spec("left.MP4").field == "left.MP4"
    assert default_spec("txt", tokenizer=tokenizer_dir) == Text(tokenizer=tokenizer_dir)
    assert default_spec("txt") == Text(byte_ids=True)
    with pytest.raises(ValueError, match="must be one of"):
        default_spec("xyz")
    assert set(expected) <= set(DEFAULT_SPECS)


def test_same_generator_state_gives_identical_tensors_in_another_process(tmp_path: Path) -> None:
    clip = moving_square_clip(7, frames=40, size=32, fps=10.0, seconds_audio=4.0)
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip)
    code = f"""
import sys, torch
from mmsample.decoding import Audio, Video
data = open({str(path)!r}, "rb").read()
g = torch.Generator().manual_seed(1234)
video = Video(frames=10, fps=2.5, random_frames=3).decode(data, generator=g)
audio = Audio(field="mp4", seconds=1.0).decode(data, generator=g)
torch.save({{"video": video, "audio": audio}}, {str(tmp_path / "out.pt")!r})
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    theirs = torch.load(tmp_path / "out.pt")
    g = torch.Generator().manual_seed(1234)
    video = Video(frames=10, fps=2.5, random_frames=3).decode(clip, generator=g)
    audio = Audio(field="mp4", seconds=1.0).decode(clip, generator=g)
    assert torch.equal(video, theirs["video"]) and torch.equal(audio, theirs["audio"])
