"""A video whose resolution changes mid-stream decodes on every backend to one size.

The clip: two lossless h264 segments, 64x48 then 32x24 (25 frames each at 25 fps), joined into
one stream by FFmpeg's concat demuxer with stream copy (driven through PyAV here; the ffmpeg CLI
does the same with `-f concat -i list.txt -c copy`). Frame i is a grey ramp, level
`3 i + 64 x / width`. The truth for each frame is the same frame decoded from its segment
alone (an ordinary clip) by the same backend, scaled by `resize_frames`; a frame's index is the
truth it is nearest to (neighbours differ by 3 levels everywhere). As the ffmpeg CLI does,
every frame comes back at the first frame's size (or `size`). Before this was fixed, the probe
and the sharding tool accepted the clip and every read failed.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mmsample.cli import main
from mmsample.decoding import Video
from mmsample.decoding.backends import available_backends, get_backend
from mmsample.decoding.frames import resize_frames, stack_frames
from mmsample.decoding.media_probe import probe
from mmsample.shards import IndexedDataset, StreamedDataset

BACKENDS = [b for b in available_backends() if b in ("torchcodec", "pyav")]
FPS = 25
SEGMENT = 25  # frames per segment
TOLERANCE = 1  # grey levels: backends and the expected ramp (chroma rounding of lossless h264)
# Video(frames=10, fps=None) on the 2 s clip: centres of 10 segments of 0.2 s -> frame 5 k + 2.
TEN = [5 * k + 2 for k in range(10)]


def _ramp(index: int, height: int, width: int) -> np.ndarray:
    """Frame `index` drawn at (height, width): grey, level 3 index + 64 x / width."""
    row = 3 * index + (np.arange(width) * 64) // width
    return np.broadcast_to(row[None, :, None], (height, width, 3)).astype(np.uint8)


def _segment(first: int, height: int, width: int) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.height, video.width = height, width
        video.pix_fmt = "yuvj420p"
        video.options = {"g": str(SEGMENT), "bf": "0", "qp": "0", "preset": "veryfast"}
        video.codec_context.thread_count = 1
        for i in range(first, first + SEGMENT):
            frame = av.VideoFrame.from_ndarray(_ramp(i, height, width), format="rgb24")
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    return buf.getvalue()


def _concatenated(segments: list[bytes]) -> bytes:
    """The segments joined by the concat demuxer with stream copy (the later segments'
    parameter sets travel in-band)."""
    import av

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for n, data in enumerate(segments):
            (folder / f"part{n}.mp4").write_bytes(data)
        names = [f"file 'part{n}.mp4'" for n in range(len(segments))]
        (folder / "list.txt").write_text("\n".join(names) + "\n")
        out_buf = io.BytesIO()
        with (
            av.open(str(folder / "list.txt"), format="concat", options={"safe": "0"}) as src,
            av.open(out_buf, "w", format="mp4") as out,
        ):
            stream = out.add_stream_from_template(src.streams.video[0])
            for packet in src.demux(src.streams.video[0]):
                if packet.dts is not None:
                    packet.stream = stream
                    out.mux(packet)
    return out_buf.getvalue()


SIZES = [(48, 64), (24, 32)]  # (H, W) of the two segments


@pytest.fixture(scope="module")
def segments() -> list[bytes]:
    return [_segment(n * SEGMENT, *size) for n, size in enumerate(SIZES)]


@pytest.fixture(scope="module")
def clip(segments: list[bytes]) -> bytes:
    """The issue's clip: 64x48 for 1 s, then 32x24 for 1 s, in one h264 stream."""
    return _concatenated(segments)


def _centres(count: int) -> list[float]:
    return [(i + 0.5) / FPS for i in range(count)]


def _stored(backend: str, segments: list[bytes]) -> list[torch.Tensor]:
    """Every frame of the clip, decoded from its own segment at its stored size."""
    decoder = get_backend(backend)
    return [f for data in segments for f in decoder.video_frames(data, _centres(SEGMENT)).frames]


def _truth(stored: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    return torch.stack([resize_frames(f[None], size)[0] for f in stored])


def _indices(frames: torch.Tensor, truth: torch.Tensor) -> list[int]:
    """For each frame, the index of the true frame it is nearest to (mean absolute levels)."""
    distance = (frames[:, None].float() - truth[None].float()).abs().mean(dim=(2, 3, 4))
    return distance.argmin(dim=1).tolist()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((a.int() - b.int()).abs().max())


@pytest.mark.skipif(not BACKENDS, reason="needs torchcodec or PyAV")
@pytest.mark.parametrize("size", [None, 32])
def test_every_backend_gives_one_shape_and_the_same_frames(
    clip: bytes, segments: list[bytes], size: int | None
) -> None:
    """First-frame size 64x48 (or `size`), the right frames, equal to each segment's own
    frames scaled (first to 64x48, then to `size`), and equal across backends."""
    shape = (48, 64) if size is None else (32, 32)
    decoded = {}
    for backend in BACKENDS:
        frames = Video(frames=10, fps=None, size=size, backend=backend).decode(clip)
        assert frames.shape == (10, 3, *shape) and frames.dtype == torch.uint8, backend
        truth = _truth(_stored(backend, segments), (48, 64))
        if size is not None:
            truth = resize_frames(truth, shape)
        assert _indices(frames, truth) == TEN, backend
        assert _max_diff(frames, truth[TEN]) <= TOLERANCE, backend
        decoded[backend] = frames
    for backend, frames in decoded.items():
        assert _max_diff(frames, decoded[BACKENDS[0]]) <= TOLERANCE, (backend, BACKENDS[0])


@pytest.mark.skipif(not BACKENDS, reason="needs torchcodec or PyAV")
@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_of_the_second_segment_alone_come_at_the_first_frames_size(
    clip: bytes, segments: list[bytes], backend: str
) -> None:
    """The size depends on the clip, never on which frames were asked for (batches stack);
    the probe accepts the clip, since every reader now decodes it."""
    late = get_backend(backend).video_frames(clip, [1.1, 1.5])
    truth = _truth(_stored(backend, segments), (48, 64))
    assert late.frames.shape == (2, 3, 48, 64)
    assert _indices(late.frames, truth) == [27, 37]
    assert get_backend(backend).video_frames(clip, []).frames.shape == (0, 3, 48, 64)
    get_backend(backend).probe(clip, "video")
    probe(clip, "mp4")


@pytest.mark.skipif(not BACKENDS, reason="needs torchcodec or PyAV")
@pytest.mark.parametrize("backend", BACKENDS)
def test_small_first_segment_scales_the_later_ones_down(backend: str) -> None:
    sizes = [(24, 32), (48, 64), (24, 32)]
    parts = [_segment(n * SEGMENT, *size) for n, size in enumerate(sizes)]
    frames = Video(frames=3, fps=None, backend=backend).decode(_concatenated(parts))
    truth = _truth(_stored(backend, parts), (24, 32))
    assert frames.shape == (3, 3, 24, 32)  # 0.5, 1.5 and 2.5 s
    assert _indices(frames, truth) == [12, 37, 62]
    assert _max_diff(frames, truth[[12, 37, 62]]) <= TOLERANCE


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg CLI is not installed")
@pytest.mark.skipif(not BACKENDS, reason="needs torchcodec or PyAV")
def test_the_ffmpeg_cli_shows_the_same_size_and_frames(
    clip: bytes, segments: list[bytes], tmp_path: Path
) -> None:
    """The CLI scales every frame to the first frame's size too (with its bicubic scaler;
    ours is antialiased bilinear, so the second segment agrees within a few levels)."""
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip)
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    theirs = torch.from_numpy(np.frombuffer(raw, np.uint8).reshape(50, 48, 64, 3).copy())
    theirs = theirs.permute(0, 3, 1, 2)
    for backend in BACKENDS:
        ours = Video(frames=10, fps=None, backend=backend).decode(clip)
        assert _indices(ours, theirs) == TEN, backend
        assert float((ours.float() - theirs[TEN].float()).abs().mean()) <= 1.0, backend
        assert _max_diff(ours[:5], theirs[TEN[:5]]) <= TOLERANCE, backend  # not scaled


def test_stack_frames_asks_for_the_first_size_only_when_sizes_differ() -> None:
    calls: list[int] = []

    def first() -> tuple[int, int]:
        calls.append(1)
        return (4, 6)

    same = [torch.full((3, 4, 6), 7, dtype=torch.uint8)] * 2
    assert stack_frames(same, (4, 6), first).shape == (2, 3, 4, 6) and not calls
    mixed = [*same, torch.full((3, 2, 3), 9, dtype=torch.uint8)]
    out = stack_frames(mixed, (4, 6), first)
    assert out.shape == (3, 3, 4, 6) and calls == [1]
    assert bool((out[2] == 9).all()) and bool((out[:2] == 7).all())
    # Every frame at one size that is not the header's: the first frame decides.
    small = [torch.zeros(3, 2, 3, dtype=torch.uint8)]
    assert stack_frames(small, (4, 6), lambda: (2, 3)).shape == (1, 3, 2, 3)


@pytest.mark.skipif(not BACKENDS, reason="needs torchcodec or PyAV")
def test_sharding_tool_and_readers_end_to_end(
    clip: bytes, segments: list[bytes], tmp_path: Path
) -> None:
    """`mmsample shard` accepts the clip and both readers decode it on every backend."""
    media = tmp_path / "media"
    media.mkdir()
    (media / "changing.mp4").write_bytes(clip)
    (media / "plain.mp4").write_bytes(segments[0])
    table = tmp_path / "rows.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "label", "mp4"])
        writer.writerow(["changing", "a", "media/changing.mp4"])
        writer.writerow(["plain", "b", "media/plain.mp4"])
    out = tmp_path / "shards"
    assert main(["shard", str(table), str(out), "--workers", "1", "--quiet"]) == 0
    for backend in BACKENDS:
        truth = _truth(_stored(backend, segments), (48, 64))
        for size in (None, 32):
            specs = {"video": Video(frames=10, fps=None, size=size, backend=backend)}
            shape = (48, 64) if size is None else (32, 32)
            streamed = list(StreamedDataset(out, specs, shuffle_shards=False))
            indexed = IndexedDataset(out, specs)
            assert len(streamed) == len(indexed) == 2
            for i, sample in enumerate(streamed):
                assert sample["video"].shape == (10, 3, *shape), (backend, size)
                assert torch.equal(sample["video"], indexed[i]["video"])
            changing = next(s["video"] for s in streamed if s["key"] == "changing")
            assert _indices(changing, resize_frames(truth, shape)) == TEN, (backend, size)
