"""Audio of any channel layout and start time, on every backend, and a probe that agrees with the
readers (issue 7, items 4 and 7), on real encoded wav/flac/ogg/opus/mp3/m4a files.

Channel c of every multichannel file below is a 100 Hz sine (it passes the LFE low-pass of 5.1/7.1 codecs) of amplitude 0.01 * (c + 1), so which
channel came back, and in which order, is read from its level, independent of any decoder.
Decoding runs in a subprocess where a decoder could crash the process (PyAV segfaulted on wavs
of >= 8 channels): a segfault then fails the test instead of killing pytest.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mmsample.decoding import Audio
from mmsample.decoding.backends import available_backends
from mmsample.decoding.media_probe import probe
from mmsample.errors import SampleError
from mmsample.sharding import write_samples
from mmsample.shards import IndexedDataset
from mmsample.testing import encode_audio, encode_wav, moving_square_clip

FFMPEG_BACKENDS = [b for b in available_backends() if b != "torchcodec-cuda"]
READERS = [*FFMPEG_BACKENDS, "wave"]  # Audio(backend=...) values that read wav
SR = 48000


def _tones(channels: int, seconds: float = 0.25, sr: int = SR) -> np.ndarray:
    """float32 [C, S]: channel c a 100 Hz sine of amplitude 0.01 * (c + 1)."""
    t = np.arange(round(seconds * sr)) / sr
    tones = [0.01 * (c + 1) * np.sin(2 * np.pi * 100 * t) for c in range(channels)]
    return np.stack(tones).astype(np.float32)


# name -> (encode_audio arguments, channels, lossless): layouts FFmpeg reads, > 8 channels,
# unusual layouts, packed (wav, flac) and planar (aac, vorbis, mp3) sample formats.
LAYOUTS: dict[str, tuple[dict[str, object], int, bool]] = {
    "wav-s16-3ch": ({}, 3, True),
    "wav-s16-10ch-issue7": ({}, 10, True),
    "wav-s16-16ch": ({}, 16, True),
    "wav-s16-64ch": ({}, 64, True),
    "wav-s24-5.1(side)": ({"codec": "pcm_s24le", "layout": "5.1(side)"}, 6, True),
    "wav-f32-22.2": ({"codec": "pcm_f32le", "layout": "22.2"}, 24, True),
    "wav-u8-7.1.4": ({"codec": "pcm_u8", "layout": "7.1.4"}, 12, False),
    "flac-s32-7.1": ({"codec": "flac", "container": "flac", "layout": "7.1"}, 8, True),
    "m4a-aac-fltp-7.1": ({"codec": "aac", "container": "mp4", "layout": "7.1"}, 8, False),
    "m4a-aac-fltp-5.1": ({"codec": "aac", "container": "mp4", "layout": "5.1"}, 6, False),
    "ogg-vorbis-fltp-stereo": ({"codec": "vorbis", "container": "ogg"}, 2, False),
    "ogg-opus-flt-5.1": ({"codec": "libopus", "container": "ogg", "layout": "5.1"}, 6, False),
    "mp3-fltp-stereo": ({"codec": "libmp3lame", "container": "mp3"}, 2, False),
    "nut-s16p-planar-10ch": ({"codec": "pcm_s16le_planar", "container": "nut"}, 10, True),
    "nut-s32p-planar-16ch": ({"codec": "pcm_s24le_planar", "container": "nut"}, 16, True),
}


def _write_inputs(directory: Path) -> dict[str, str]:
    paths = {}
    for name, (kwargs, channels, _lossless) in LAYOUTS.items():
        data = encode_audio(_tones(channels), SR, **kwargs)  # type: ignore[arg-type]
        paths[name] = str(directory / f"{name}.bin")
        Path(paths[name]).write_bytes(data)
    # The python `wave` module's plain PCM header (format tag 1, no channel mask) for 10 channels.
    paths["wav-plain-10ch"] = str(directory / "plain10.wav")
    Path(paths["wav-plain-10ch"]).write_bytes(encode_wav(_tones(10), SR))
    return paths


_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import mmsample.decoding.backends
    from mmsample.decoding.media_probe import probe
    from mmsample.decoding import Audio
    paths, backends = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    out = {}
    for name, path in paths.items():
        data = Path(path).read_bytes()
        for backend in backends:
            if backend == "wave" and not name.startswith("wav"):
                continue
            row = {}
            for rate in (48000, 16000):
                try:
                    wave = Audio(field="wav", sample_rate=rate, mono=False, spectrogram=None,
                                 backend=backend).waveform(data)
                    mid = wave[:, wave.shape[1] // 4 : 3 * wave.shape[1] // 4]
                    row[rate] = {"shape": list(wave.shape), "dtype": str(wave.dtype),
                                 "rms": mid.pow(2).mean(1).sqrt().tolist(),
                                 "head": wave[:, :64].tolist() if rate == 48000 else None}
                except ValueError as err:
                    row[rate] = {"error": str(err)}
            mono = Audio(field="wav", sample_rate=48000, spectrogram=None, backend=backend)
            try:
                m = mono.waveform(data)
                row["mono"] = {"shape": list(m.shape),
                               "rms": m[:, m.shape[1] // 4 : 3 * m.shape[1] // 4].pow(2).mean().sqrt().item()}
            except ValueError as err:
                row["mono"] = {"error": str(err)}
            if backend != "wave":  # the sharding probe with this default backend
                mmsample.decoding.backends._DEFAULT[:] = [backend]
                ext = name.split("-")[0].replace("nut", "m4a")  # any audio extension: the
                # probe decodes whatever stream FFmpeg finds, whatever the container
                try:
                    probe(data, ext)
                    row["probe"] = "ok"
                except ValueError as err:
                    row["probe"] = str(err)
            out[f"{name}|{backend}"] = row
            print(name, backend, "ok", file=sys.stderr, flush=True)
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def decoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    """Every input decoded by every reader, in one child process (a crash fails the tests)."""
    paths = _write_inputs(tmp_path_factory.mktemp("layouts"))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(paths), json.dumps(READERS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (
        f"decoding crashed the process (return code {done.returncode}); last decoded: "
        f"{done.stderr.strip().splitlines()[-3:]}"
    )
    result: dict[str, dict[str, object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


CASES = [
    (name, backend)
    for name in [*LAYOUTS, "wav-plain-10ch"]
    for backend in READERS
    if backend != "wave" or name.startswith("wav")  # the wave reader reads wav only
]


@pytest.mark.parametrize(("name", "backend"), CASES)
def test_every_layout_gives_all_channels_in_order(
    decoded: dict[str, dict[str, dict[str, object]]], name: str, backend: str
) -> None:
    kwargs, channels, lossless = LAYOUTS.get(name, ({}, 10, True))
    row = decoded[f"{name}|{backend}"]
    if backend != "wave":  # the sharding probe accepts what this reader decodes
        assert row["probe"] == "ok", row["probe"]
    samples = round(0.25 * SR)
    for rate in ("48000", "16000"):
        got = row[rate]
        assert "error" not in got, got
        shape = got["shape"]
        assert shape[0] == channels and got["dtype"] == "torch.float32"
        if lossless:  # pcm/flac keep the length exactly; resampling: ceil(S * 16000 / 48000)
            assert shape[1] == (samples if rate == "48000" else -(-samples // 3))
        else:  # codec priming/padding: within two 1152-sample frames of the source length
            assert abs(shape[1] * 48000 / int(rate) - samples) <= 2304
        # Channel c is a sine of amplitude 0.01 (c + 1): RMS 0.01 (c + 1) / sqrt(2), in order.
        want = [0.01 * (c + 1) / np.sqrt(2) for c in range(channels)]
        tol = 0.02 if lossless else 0.15
        np.testing.assert_allclose(got["rms"], want, rtol=tol)
    # mono=True: the mean of the channels, a sine of amplitude 0.01 * (C + 1) / 2.
    assert row["mono"]["shape"] == [1, row["48000"]["shape"][1]]
    want_mono = 0.01 * (channels + 1) / 2 / np.sqrt(2)
    assert row["mono"]["rms"] == pytest.approx(want_mono, rel=0.02 if lossless else 0.15)
    if lossless and kwargs.get("codec", "pcm_s16le") == "pcm_s16le":
        # 16-bit PCM decodes exactly to its integers / 32768: encode_wav stored
        # trunc(x * 32767), FFmpeg's float -> s16 conversion (encode_audio) round(x * 32768).
        head = np.array(row["48000"]["head"])
        x = _tones(channels)[:, :64]  # encode_audio hands float32 samples to FFmpeg
        ints = np.trunc(x * 32767) if name == "wav-plain-10ch" else np.round(x * 32768)
        want_head = ints / 32768
        np.testing.assert_allclose(head, want_head, atol=1e-6)


def test_layouts_agree_across_readers(decoded: dict[str, dict[str, dict[str, object]]]) -> None:
    """The same file gives the same channels and lengths on every reader that reads it."""
    for name in [*LAYOUTS, "wav-plain-10ch"]:
        rows = {b: decoded[f"{name}|{b}"] for b in READERS if f"{name}|{b}" in decoded}
        shapes = {b: tuple(r["48000"]["shape"]) for b, r in rows.items()}
        assert len(set(shapes.values())) == 1, (name, shapes)


def test_more_channels_than_ffmpeg_resamples_is_a_clear_error(tmp_path: Path) -> None:
    """65 channels: FFmpeg's resampler takes at most 64. FFmpeg backends refuse with the channel
    count and the fix; the wave reader reads it; a reader names shard and key; so does the probe."""
    data = encode_wav(_tones(65, seconds=0.05), SR)
    for backend in FFMPEG_BACKENDS:
        with pytest.raises(ValueError, match=r"65 channels.*at most 64.*backend='wave'"):
            Audio(backend=backend, spectrogram=None).waveform(data)
    wave = Audio(backend="wave", mono=False, spectrogram=None, sample_rate=SR).waveform(data)
    assert wave.shape == (65, round(0.05 * SR))
    with pytest.raises(ValueError, match="65 channels"):
        probe(data, "wav")
    write_samples(tmp_path, [("wide", 0, {"wav": data})], ["a"])
    with pytest.raises(SampleError, match=r"shard-000000\.tar:wide: .*65 channels") as info:
        IndexedDataset(tmp_path, {"audio": Audio(spectrogram=None)})[0]
    assert (info.value.shard, info.value.key) == ("shard-000000.tar", "wide")


# ---------------------------------------------------------------- the probe agrees with the readers


def _late_vorbis() -> bytes:
    """8 kHz stereo Vorbis in Ogg whose first audio sample is played at 32 ms (pts 256), from
    the Vorbis encoder in PyAV's FFmpeg (it encodes 2 channels only)."""
    x = _tones(2, seconds=1.0, sr=8000)
    return encode_audio(x, 8000, codec="vorbis", container="ogg", start=256)


def _late_mono_vorbis() -> bytes:
    """Issue 7's input: 8 kHz MONO Vorbis in Ogg, first audio packet at 32 ms. Encoded with
    libvorbis through torchcodec's AudioEncoder (the system FFmpeg), then remuxed by PyAV with
    every packet 256 samples (32 ms) later."""
    import av
    from torchcodec.encoders import AudioEncoder

    mono = torch.from_numpy(_tones(1, seconds=1.0, sr=8000))
    encoded = AudioEncoder(mono, sample_rate=8000).to_tensor(format="ogg").numpy().tobytes()
    out = io.BytesIO()
    with av.open(io.BytesIO(encoded)) as src, av.open(out, "w", format="ogg") as dst:
        stream = dst.add_stream_from_template(src.streams.audio[0])
        for packet in src.demux(src.streams.audio[0]):
            if packet.dts is None:
                continue
            packet.pts, packet.dts = packet.pts + 256, packet.dts + 256
            packet.stream = stream
            dst.mux(packet)
    data = out.getvalue()
    with av.open(io.BytesIO(data)) as check:  # what the file is: mono Vorbis, first sample at 32 ms
        first = next(check.decode(check.streams.audio[0]))
        assert (check.streams.audio[0].codec_context.name, first.layout.nb_channels) == (
            "vorbis",
            1,
        )
        assert (first.sample_rate, first.pts) == (8000, 256)
    return data


def _accepted() -> dict[str, tuple[str, bytes, float]]:
    """name -> (extension, bytes, seconds of audio) of files every reader decodes."""
    one = _tones(1, seconds=1.0, sr=8000)
    inputs = {
        "ogg-vorbis-stereo-first-packet-at-32ms": ("ogg", _late_vorbis(), 1.0),
        "ogg-opus-first-packet-at-32ms": (
            "ogg",
            encode_audio(_tones(1, 1.0), SR, codec="libopus", container="ogg", start=1536),
            1.0,
        ),
        "mp3-encoder-delay": (
            "mp3",
            encode_audio(one, 8000, codec="libmp3lame", container="mp3"),
            1.0,
        ),
        "m4a-aac-priming": ("m4a", encode_audio(one, 8000, codec="aac", container="mp4"), 1.0),
        "flac": ("flac", encode_audio(one, 8000, codec="flac", container="flac"), 1.0),
        "wav-6ms-shorter-than-the-old-window": ("wav", encode_wav(one[0, :50], 8000), 50 / 8000),
    }
    if "torchcodec" in FFMPEG_BACKENDS:  # its AudioEncoder writes the mono Vorbis
        inputs["ogg-vorbis-mono-8khz-first-packet-at-32ms-issue7"] = (
            "ogg",
            _late_mono_vorbis(),
            1.0,
        )
    return inputs


def _refused() -> dict[str, tuple[str, bytes, str]]:
    """name -> (extension, bytes, reason) of files no reader decodes."""
    one = _tones(1, seconds=0.5, sr=8000)
    wav = encode_wav(one, 8000)
    vorbis = _late_vorbis()
    pages = [i for i in range(len(vorbis)) if vorbis.startswith(b"OggS", i)]
    return {
        "ogg-headers-only": ("ogg", vorbis[: pages[2]], "audio"),
        "ogg-garbage": ("ogg", b"OggS" + bytes(200), "audio"),
        "mp3-garbage": ("mp3", b"\xff\xfb" + b"\x17" * 300, "audio"),
        "flac-streaminfo-only": (
            "flac",
            encode_audio(one, 8000, codec="flac", container="flac")[:42],
            "audio",
        ),
        "m4a-without-audio": ("m4a", _video_only(), "audio"),
        "wav-cut-short": ("wav", wav[:-1000], "truncated"),
        "wav-no-samples": ("wav", encode_wav(np.zeros(0), 8000), "no samples"),
        "wav-65ch": ("wav", encode_wav(_tones(65, 0.01), SR), "65 channels"),
    }


def _video_only() -> bytes:
    """An mp4 holding an h264 track and no audio track."""
    return moving_square_clip(1, frames=4, seconds_audio=None)


@pytest.mark.parametrize("backend", FFMPEG_BACKENDS)
def test_probe_accepts_what_every_reader_decodes(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 7: the probe decodes the whole stream as the readers do (it used to decode only the
    first 10 ms and refused streams whose first packet starts later)."""
    monkeypatch.setattr(
        "mmsample.decoding.backends._DEFAULT", [backend]
    )  # the probe's default backend
    for name, (ext, data, seconds) in _accepted().items():
        probe(data, ext)
        wave = Audio(field=ext, sample_rate=8000, spectrogram=None, backend=backend).waveform(data)
        if ext in ("wav", "flac"):  # lossless: every sample, none added
            assert wave.shape[1] == round(seconds * 8000), name
        else:  # lossy codecs pad to whole frames: within one 1024-sample block at 8 kHz
            assert abs(wave.shape[1] - seconds * 8000) <= 1024, (name, wave.shape)


@pytest.mark.parametrize("backend", FFMPEG_BACKENDS)
def test_probe_refuses_what_no_reader_decodes(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mmsample.decoding.backends._DEFAULT", [backend])
    for ext, data, reason in _refused().values():
        with pytest.raises(ValueError, match=reason):
            probe(data, ext)
        with pytest.raises(ValueError, match=reason):
            Audio(field=ext, spectrogram=None, backend=backend).waveform(data)


@pytest.mark.parametrize("size", [0xFFFFFFFF, 0])
@pytest.mark.parametrize("backend", READERS)
def test_a_streaming_writers_wav_reads_to_the_end_on_every_reader(backend: str, size: int) -> None:
    """A writer that cannot seek (a pipe) leaves the data size 0 or 0xFFFFFFFF: the samples run
    to the end of the file. The FFmpeg backends read them; `backend="wave"` refused the file as
    truncated (0xFFFFFFFF) or empty (0). Values by hand: 16-bit PCM v decodes to v / 32768."""
    pcm = np.array([[1000, -2000, 3000, 16384], [-32767, 0, 5, 32767]], dtype="<i2")
    good = encode_wav(pcm / 32767.0, sample_rate=SR)  # encode_wav scales by 32767
    at = good.index(b"data") + 4
    data = good[:at] + size.to_bytes(4, "little") + good[at + 4 :]
    want = torch.from_numpy(pcm.astype(np.float32) / 32768.0)
    audio = Audio(field="wav", sample_rate=SR, mono=False, spectrogram=None, backend=backend)
    assert torch.equal(audio.waveform(data), want)
