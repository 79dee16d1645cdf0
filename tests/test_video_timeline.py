"""Video decoding truth on every backend: the frames and duration a player shows (edit lists,
discarded leading packets, negative timestamps, stream-copy cuts), truncated clips refused, and
display rotation applied.

Which frame came back is read from the frame itself: the clips here are lossless h264 in full
range (yuvj420p, qp 0) with frame i painted grey level i, so the green channel decodes to i
exactly (red and blue carry chroma rounding of about 1 level); `_index` takes the nearest grey
level and allows 0.5 levels of error. Stream-copy cuts are made with the ffmpeg CLI, as datasets
cut them (tests needing it skip when it is absent); the rest is built with PyAV.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mmsample.decoding import Video
from mmsample.decoding.backends import available_backends, get_backend, presentation_window
from mmsample.decoding.backends.container import check_complete
from mmsample.decoding.decoder import SkippedSampleWarning
from mmsample.decoding.media_probe import probe
from mmsample.errors import SampleError
from mmsample.sharding import BadRowsError, shard_dataset, write_samples
from mmsample.shards import IndexedDataset, StreamedDataset

BACKENDS = [b for b in available_backends() if b != "torchcodec-cuda"]
FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None or FFPROBE is None,
    reason="the ffmpeg/ffprobe CLI is not installed (apt-get install ffmpeg); it makes the "
    "stream-copy cuts the way datasets are cut",
)
FPS = 25


def _grey_clip(
    frames: int,
    *,
    gop: int = 50,
    bframes: int = 0,
    faststart: bool = False,
    audio: bool = False,
    shift: int = 0,
    container: str = "mp4",
    rotation: int | None = None,
    image: np.ndarray | None = None,
) -> bytes:
    """A lossless h264 clip at 25 fps, 64x48, frame i grey level i (or `image` on every frame),
    a keyframe exactly every `gop` frames. `shift` frames are subtracted from every timestamp
    (negative timestamps); `rotation` sets the display matrix (degrees counter-clockwise)."""
    import av

    height, width = (48, 64) if image is None else image.shape[:2]
    # faststart rewrites the finished file to move the index to the front: it needs a real file.
    scratch = tempfile.NamedTemporaryFile(suffix=".mp4") if faststart else None  # noqa: SIM115
    target: Any = scratch.name if scratch is not None else io.BytesIO()
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(target, "w", format=container, options=options) as out:
        video = out.add_stream("libx264", rate=FPS)
        video.height, video.width = height, width
        video.pix_fmt = "yuvj420p" if image is None else "yuvj444p"
        video.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0",
                         "bf": str(bframes), "qp": "0", "preset": "veryfast"}  # fmt: skip
        video.codec_context.thread_count = 1
        if rotation is not None:
            video.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=16000) if audio else None
        tb = None
        for i in range(frames):
            pixels = np.full((height, width, 3), i % 256, np.uint8) if image is None else image
            for packet in video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                tb = tb or packet.time_base
                _mux(out, packet, shift, FPS)
            if sound is not None:
                tone = np.sin(np.arange(640) / 3.0, dtype=np.float32)[None] * 0.3
                frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 16000, i * 640
                for packet in sound.encode(frame):
                    out.mux(packet)
        for packet in video.encode():
            _mux(out, packet, shift, FPS)
        if sound is not None:
            for packet in sound.encode():
                out.mux(packet)
    if scratch is not None:
        with scratch:
            return Path(scratch.name).read_bytes()
    return target.getvalue()


def _mux(out: Any, packet: Any, shift: int, fps: int) -> None:
    if shift:
        ticks = round(shift / fps / packet.time_base)
        packet.pts -= ticks
        packet.dts -= ticks
    out.mux(packet)


def _index(frame: torch.Tensor) -> int:
    """The grey level of a decoded frame (green channel), i.e. the source frame index."""
    green = frame[1].float()
    level = round(float(green.median()))
    assert abs(float(green.mean()) - level) <= 0.5, f"not one grey level: mean {green.mean()}"
    return level


def _indices(frames: torch.Tensor) -> list[int]:
    return [_index(f) for f in frames]


def _centres(count: int) -> list[float]:
    """The centre of each of `count` frame slots of 1/25 s."""
    return [(i + 0.5) / FPS for i in range(count)]


def _run(*args: str) -> bytes:
    done = subprocess.run(args, capture_output=True, check=True, timeout=60)
    return done.stdout


def _ffmpeg_cut(tmp: Path, source: bytes, name: str, *args: str) -> bytes:
    """`ffmpeg -ss ... -i src.mp4 ... -c copy out` on the source bytes -> the cut's bytes."""
    assert FFMPEG is not None
    src, dst = tmp / f"src-{name}.mp4", tmp / name
    src.write_bytes(source)
    _run(FFMPEG, "-v", "error", "-y", *args[:2], "-i", str(src), *args[2:], "-c", "copy", str(dst))
    return dst.read_bytes()


def _ffprobe_duration(tmp: Path, data: bytes, name: str) -> float:
    """The container duration ffprobe reports (what players show as the length)."""
    assert FFPROBE is not None
    path = tmp / f"probe-{name}"
    path.write_bytes(data)
    out = _run(FFPROBE, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
               str(path))  # fmt: skip
    return float(out.decode().strip())


def _ffmpeg_player_frames(tmp: Path, data: bytes, name: str, gray: bool = True) -> np.ndarray:
    """Every frame the ffmpeg CLI outputs for the clip (its player logic: edit lists, discarded
    packets and display rotation applied, no frame duplicated or dropped) -> uint8 array."""
    assert FFMPEG is not None
    path = tmp / f"play-{name}"
    path.write_bytes(data)
    fmt = "gray" if gray else "rgb24"
    raw = _run(FFMPEG, "-v", "error", "-i", str(path), "-fps_mode", "passthrough", "-f",
               "rawvideo", "-pix_fmt", fmt, "-")  # fmt: skip
    return np.frombuffer(raw, np.uint8)


@pytest.fixture(scope="module")
def source() -> bytes:
    """The issue's source: 250 frames at 25 fps, grey level = frame index, keyframe every 50."""
    return _grey_clip(250)


@pytest.fixture(scope="module")
def cut(source: bytes, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The issue's cut: `ffmpeg -ss 1.3 -i src.mp4 -t 3 -c copy cut.mp4` (an edit list)."""
    if FFMPEG is None:
        pytest.skip("the ffmpeg CLI is not installed (apt-get install ffmpeg)")
    return _ffmpeg_cut(tmp_path_factory.mktemp("cut"), source, "cut.mp4", "-ss", "1.3", "-t", "3")


# ---------------------------------------------------------------- item 3: clips cut by stream copy


@needs_ffmpeg
@pytest.mark.parametrize("backend", BACKENDS)
def test_stream_copy_cut_shows_the_players_frames(backend: str, cut: bytes, tmp_path: Path) -> None:
    # The keyframe before 1.3 s is frame 0; the edit list starts the clip at frame 33 (1.32 s,
    # the first frame boundary at or after 1.3 s), so t s shows source frame floor(33 + 25 t).
    decoded = get_backend(backend).video_frames(cut, [0.0, 0.5, 1.0, 2.0])
    assert _indices(decoded.frames) == [33, 45, 58, 83]
    assert decoded.duration == pytest.approx(_ffprobe_duration(tmp_path, cut, "cut.mp4"), abs=1e-3)
    assert decoded.duration == pytest.approx(3.0, abs=0.03)
    # Every presented frame, once each: 75 frames (3 s at 25 fps), source frames 33..107.
    every = get_backend(backend).video_frames(cut, _centres(75))
    assert _indices(every.frames) == list(range(33, 108))
    get_backend(backend).probe(cut, "video")  # the sharding probe accepts the valid cut


def _cut_kinds(source: bytes, tmp: Path) -> dict[str, tuple[bytes, int, int, float]]:
    """name -> (clip, first source frame shown, frames shown, duration in s), hand-worked:
    - edit list over B-frames: same cut of a source with 2 B-frames (pts != dts, negative dts);
    - cut at a keyframe (-ss 2.0): no packet discarded, starts at frame 50;
    - Matroska cut: no edit lists there, so the whole GOP from frame 0 is shown (4.32 s);
    - negative timestamps, mp4 (PyAV): pts shifted 33 frames down; the muxer writes an edit list
      and the 33 negative frames are discarded; Matroska keeps them (shifted to start at 0)."""
    kinds: dict[str, tuple[bytes, int, int, float]] = {
        "negative-ts.mp4": (_grey_clip(108, shift=33), 33, 75, 3.0),
        "negative-ts.mkv": (_grey_clip(108, shift=33, container="matroska"), 0, 108, 4.32),
    }
    if FFMPEG is not None:
        bsource = _grey_clip(250, bframes=2)
        kinds["bframes-cut.mp4"] = (
            _ffmpeg_cut(tmp, bsource, "bframes-cut.mp4", "-ss", "1.3", "-t", "3"),
            33,
            75,
            3.02,
        )
        kinds["keyframe-cut.mp4"] = (
            _ffmpeg_cut(tmp, source, "keyframe-cut.mp4", "-ss", "2.0", "-t", "3"),
            50,
            75,
            3.0,
        )
        kinds["cut.mkv"] = (
            _ffmpeg_cut(tmp, source, "cut.mkv", "-ss", "1.3", "-t", "3"),
            0,
            108,
            4.32,
        )
    return kinds


def test_cuts_of_every_kind_show_the_players_frames_on_every_backend(
    source: bytes, tmp_path: Path
) -> None:
    kinds = _cut_kinds(source, tmp_path)
    for name, (data, first, count, duration) in kinds.items():
        results = []
        for backend in BACKENDS:
            decoded = get_backend(backend).video_frames(data, _centres(count))
            assert _indices(decoded.frames) == list(range(first, first + count)), (name, backend)
            assert decoded.duration == pytest.approx(duration, abs=0.021), (name, backend)
            get_backend(backend).probe(data, "video")
            results.append(decoded)
        for other in results[1:]:  # the same tensors and duration on every backend
            assert torch.equal(results[0].frames, other.frames), name
            assert other.duration == results[0].duration, name
        probe(data, name)
        if FFMPEG is not None:  # the ffmpeg CLI shows the same frames, no more, no fewer
            shown = _ffmpeg_player_frames(tmp_path, data, name).reshape(-1, 48 * 64)
            assert shown.shape[0] == count and shown[:, 0].tolist() == list(
                range(first, first + count)
            ), name
            assert results[0].duration == pytest.approx(
                _ffprobe_duration(tmp_path, data, name), abs=1e-3
            )


# ---------------------------------------------------------------- item 2: truncated clips


def _last_video_packet(data: bytes) -> tuple[int, int]:
    """(byte offset, size) of the last video packet in the file."""
    import av

    with av.open(io.BytesIO(data)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    return max(packets)


@pytest.fixture(scope="module")
def faststart() -> bytes:
    """A 4 s clip (100 frames) with the index (moov) at the front: cut, it still opens."""
    return _grey_clip(100, faststart=True)


def _truncations(faststart: bytes) -> dict[str, bytes]:
    at, size = _last_video_packet(faststart)
    plain = _grey_clip(100)
    with_audio = _grey_clip(100, faststart=True, audio=True)
    mkv = _grey_clip(100, container="matroska")
    return {
        "faststart cut to 60%": faststart[: len(faststart) * 6 // 10],
        "faststart cut to 20%": faststart[: len(faststart) * 2 // 10],
        "faststart cut to 90%": faststart[: len(faststart) * 9 // 10],
        "faststart, last packet missing": faststart[:at],
        "faststart, half the last packet": faststart[: at + size // 2],
        "faststart, last byte missing": faststart[:-1],
        "faststart with audio cut to 60%": with_audio[: len(with_audio) * 6 // 10],
        "index at the end, cut to 60%": plain[: len(plain) * 6 // 10],
        "index at the end, cut to 90%": plain[: len(plain) * 9 // 10],
        "matroska cut to 60%": mkv[: len(mkv) * 6 // 10],
        "matroska, last byte missing": mkv[:-1],
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_clips_of_every_kind_are_refused(backend: str, faststart: bytes) -> None:
    impl = get_backend(backend)
    for name, data in _truncations(faststart).items():
        with pytest.raises(ValueError, match=r"truncated|could not open") as caught:
            impl.video_frames(data, [0.0])
        assert "truncated" in str(caught.value) or "index at the end" in name, name
        with pytest.raises(ValueError, match=r"truncated|could not open"):
            impl.probe(data, "video")
    # The whole clips pass, with and without audio, index at the front or the end, Matroska.
    wholes = (
        faststart,
        _grey_clip(100),
        _grey_clip(100, faststart=True, audio=True),
        _grey_clip(100, container="matroska"),
    )
    for whole in wholes:
        decoded = impl.video_frames(whole, [0.0, 3.99])
        assert _indices(decoded.frames) == [0, 99] and decoded.duration == pytest.approx(4.0)
        impl.probe(whole, "video")


def test_the_sharding_probe_refuses_truncation_and_accepts_valid_cuts(
    faststart: bytes, source: bytes, tmp_path: Path
) -> None:
    for data in _truncations(faststart).values():
        with pytest.raises(ValueError, match=r"truncated|could not open"):
            probe(data, "mp4")
    probe(faststart, "mp4")
    for name, (data, *_rest) in _cut_kinds(source, tmp_path).items():
        probe(data, name)


def _shard_with(root: Path, bad: bytes) -> Path:
    good = _grey_clip(25)
    samples = [(f"c{i}", 0, {"mp4": bad if i == 2 else good}) for i in range(4)]
    write_samples(root, iter(samples), ["a"], samples_per_shard=2)
    return root


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_clip_in_a_shard_is_a_sample_error_or_a_counted_skip(
    backend: str, faststart: bytes, tmp_path: Path
) -> None:
    root = _shard_with(tmp_path / "ds", faststart[: len(faststart) * 6 // 10])
    specs = {"video": Video(frames=2, fps=1.0, backend=backend)}
    message = r"shard-000001\.tar:c2: .*truncated"
    with pytest.raises(SampleError, match=message):
        list(StreamedDataset(root, specs, shuffle_shards=False))
    with pytest.raises(SampleError, match=message):
        IndexedDataset(root, specs)[2]
    streamed = StreamedDataset(root, specs, on_error="skip", shuffle_shards=False)
    with pytest.warns(SkippedSampleWarning, match=r"shard-000001\.tar:c2"):
        ids = [int(s["id"]) for s in streamed]
    # the bad clip is replaced by a decodable item of the epoch (mmsample.skips' seeded rule),
    # the same one in both readers; every good clip still appears once
    assert len(ids) == 4 and 2 not in ids and streamed.skipped == 1
    assert sorted(set(ids)) == [0, 1, 3]
    replacement = ids[2]
    indexed = IndexedDataset(root, specs, on_error="skip")
    with pytest.warns(SkippedSampleWarning, match=r"shard-000001\.tar:c2"):
        assert int(indexed[2]["id"]) == replacement
    assert indexed.skipped == 1


def test_the_sharding_tool_refuses_a_truncated_clip_and_keeps_valid_cuts(
    faststart: bytes, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    files = {
        "whole": faststart,
        "truncated": faststart[: len(faststart) * 6 // 10],
        "negative": _grey_clip(108, shift=33),
        "rotated": _grey_clip(10, rotation=90),
    }
    for name, data in files.items():
        (media / f"{name}.mp4").write_bytes(data)
    table = tmp_path / "rows.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "label", "mp4"])
        for name in files:
            writer.writerow([name, "x", f"media/{name}.mp4"])
    with pytest.raises(BadRowsError) as caught:
        shard_dataset(table, tmp_path / "out", samples_per_shard=10, workers=1)
    assert [b.row for b in caught.value.rows] == [1]
    assert "truncated" in str(caught.value)
    rows = [r for r in table.read_text().splitlines() if not r.startswith("truncated")]
    table.write_text("\n".join(rows) + "\n")
    report = shard_dataset(table, tmp_path / "out2", samples_per_shard=10, workers=1)
    assert report.rows == 3 and not report.skipped and report.manifest is not None
    assert sum(info.count for info in report.infos) == 3


def test_truncation_rule_hand_values() -> None:
    # 4 s declared, 100 frames of 0.04 s: one frame (0.04 s) missing is truncation ...
    with pytest.raises(ValueError, match=r"declares 4\.000 s .* end at 3\.960 s"):
        presentation_window(header_begin=0.0, header_duration=4.0, content_begin=0.0,
                            content_end=3.96, content_frames=99)  # fmt: skip
    # ... a last frame read 0.02 s shorter than the header says is not (FFmpeg versions differ).
    assert presentation_window(
        header_begin=0.0, header_duration=3.02, content_begin=0.0, content_end=3.0,
        content_frames=75,
    ) == (0.0, pytest.approx(3.02))  # fmt: skip
    # No duration in the header (WebM from a live recorder): the packets decide.
    assert presentation_window(
        header_begin=None, header_duration=None, content_begin=-1.32, content_end=3.0,
        content_frames=108,
    ) == (-1.32, pytest.approx(4.32))  # fmt: skip
    with pytest.raises(ValueError, match="no presented frame"):
        presentation_window(header_begin=0.0, header_duration=1.0, content_begin=0.0,
                            content_end=0.0, content_frames=0)  # fmt: skip


def test_box_walk_hand_built_files() -> None:
    def box(kind: bytes, body: bytes) -> bytes:
        return (8 + len(body)).to_bytes(4, "big") + kind + body

    whole = box(b"ftyp", b"isom" * 2) + box(b"moov", b"\x00" * 20) + box(b"mdat", b"\x01" * 30)
    check_complete(whole)
    with pytest.raises(
        ValueError, match=r"'mdat' box at byte 44 declares 38 bytes, 37 are present"
    ):
        check_complete(whole[:-1])
    large = box(b"ftyp", b"isom") + (1).to_bytes(4, "big") + b"mdat" + (26).to_bytes(8, "big")
    check_complete(large + b"\x00" * 10)  # 64-bit size: 16-byte header + 10 bytes
    with pytest.raises(ValueError, match=r"'mdat' box .*\(1 missing\)"):
        check_complete(large + b"\x00" * 9)
    check_complete(box(b"ftyp", b"isom") + (0).to_bytes(4, "big") + b"mdat" + b"\x00" * 5)  # to EOF
    with pytest.raises(ValueError, match="not a whole box header"):
        check_complete(whole + b"\x00\x00\x00")
    with pytest.raises(ValueError, match="corrupt"):
        check_complete(box(b"ftyp", b"isom") + (4).to_bytes(4, "big") + b"mdat")
    # Matroska: EBML header (id 1A45DFA3, 1-byte size 0x84 = 4) then a Segment (id 18538067)
    # of 8-byte size 0x01 00..05 = 5, or of unknown size (all ones: a live recording).
    ebml = bytes.fromhex("1a45dfa384") + b"abcd"
    segment = bytes.fromhex("185380670100000000000005") + b"12345"
    check_complete(ebml + segment)
    with pytest.raises(ValueError, match=r"element 0x18538067 at byte 9 declares 5 bytes, 4 are"):
        check_complete(ebml + segment[:-1])
    with pytest.raises(ValueError, match="truncated"):
        check_complete(ebml[:-1])
    check_complete(ebml + bytes.fromhex("1853806701ffffffffffffff") + b"123")
    check_complete(b"RIFF....AVI other containers are not checked here")


# ---------------------------------------------------------------- item 5: display rotation


def _pattern() -> np.ndarray:
    """A 64x32 (W x H) RGB picture with no symmetry: a white block top-left, a green ramp in x."""
    image = np.zeros((32, 64, 3), np.uint8)
    image[:, :, 1] = (np.arange(64) * 3)[None, :]
    image[:8, :8] = 255
    return image


@pytest.mark.parametrize("rotation", [90, 180, 270, -90])
def test_rotation_metadata_gives_display_orientation_on_every_backend(rotation: int) -> None:
    image = _pattern()
    data = _grey_clip(10, image=image, rotation=rotation)
    # The display matrix rotates counter-clockwise by `rotation` degrees; np.rot90 turns
    # counter-clockwise too: a 64x32 picture shows as 32x64 ([T, 3, 64, 32]) at 90 and 270.
    want = torch.from_numpy(np.rot90(image, rotation // 90 % 4).copy()).permute(2, 0, 1)
    results = []
    for backend in BACKENDS:
        decoded = get_backend(backend).video_frames(data, [0.05, 0.35])
        expected_shape = (2, 3, 64, 32) if rotation % 180 else (2, 3, 32, 64)
        assert tuple(decoded.frames.shape) == expected_shape, backend
        assert (decoded.frames.int() - want.int()).abs().max() <= 1, backend  # chroma rounding
        assert decoded.duration == pytest.approx(0.4)  # 10 frames at 25 fps
        empty = get_backend(backend).video_frames(data, []).frames  # no frame: display H, W
        assert tuple(empty.shape) == (0, *expected_shape[1:]), backend
        resized = Video(frames=2, fps=10.0, size=(16, 8), backend=backend).decode(data)
        assert resized.shape == (2, 3, 16, 8)
        results.append(decoded.frames)
    for other in results[1:]:
        assert torch.equal(results[0], other)


@needs_ffmpeg
@pytest.mark.parametrize("rotate", ["90", "180", "270"])
def test_rotate_tag_written_by_ffmpeg_shows_as_the_player_shows_it(
    rotate: str, tmp_path: Path
) -> None:
    image = _pattern()
    tagged = _ffmpeg_cut(tmp_path, _grey_clip(10, image=image), f"rot{rotate}.mp4",
                         "-ss", "0", "-metadata:s:v:0", f"rotate={rotate}")  # fmt: skip
    # What the ffmpeg CLI (autorotate, as players) shows, and the angle ffprobe reads.
    assert FFPROBE is not None
    (tmp_path / "tagged.mp4").write_bytes(tagged)
    angle = float(_run(FFPROBE, "-v", "error", "-select_streams", "v", "-show_entries",
                       "stream_side_data=rotation", "-of", "csv=p=0",
                       str(tmp_path / "tagged.mp4")).decode().split()[0])  # fmt: skip
    want = np.rot90(image, round(angle / 90) % 4)
    shown = _ffmpeg_player_frames(tmp_path, tagged, "tagged.mp4", gray=False)
    shown = shown.reshape(-1, *want.shape)[0]
    assert np.abs(shown.astype(int) - want).max() <= 1
    for backend in BACKENDS:
        frames = get_backend(backend).video_frames(tagged, [0.05]).frames[0]
        assert (
            frames.permute(1, 2, 0).int() - torch.from_numpy(want.copy()).int()
        ).abs().max() <= 1


# ------------------------------------------------- item 17: Video(frames=10, fps=1.0) on short clips


@pytest.mark.parametrize("backend", BACKENDS)
def test_ten_frames_at_one_fps_on_clips_shorter_than_ten_seconds(backend: str) -> None:
    spec = Video(frames=10, fps=1.0, backend=backend)
    # 4 s (100 frames): the 10 frames spread over the whole clip, at the centres of 10 equal
    # segments: t = (i + 0.5) * 0.4 s -> frame floor(25 t) = 10 i + 5.
    assert _indices(spec.decode(_grey_clip(100))) == [10 * i + 5 for i in range(10)]
    # 0.2 s (5 frames): fewer frames than asked, so frames repeat: t = (i + 0.5) * 0.02 s ->
    # frame floor(25 t) = floor(0.5 i + 0.25).
    assert _indices(spec.decode(_grey_clip(5))) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    # 12 s: the first 10 s at 1 fps, t = i + 0.5 -> frame 25 i + 12.
    assert _indices(spec.decode(_grey_clip(300, gop=100))) == [25 * i + 12 for i in range(10)]
