"""One open per clip (issue 16 item 6): a `Video` and an `Audio` spec reading the same mp4 field
decode from one open of the container where the backend can (PyAV: one demux of both
streams), with tensors equal to each spec decoding on its own; the decoder counts the items
it decodes, over DataLoader workers too."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from mmsample.decoding import Audio, Video, decode_count, joint
from mmsample.decoding.backends import available_backends
from mmsample.decoding.decoder import Decoder
from mmsample.errors import SampleError
from mmsample.sharding import write_samples
from mmsample.shards import IndexedDataset
from mmsample.testing import encode_mp4, moving_square_clip

from .test_video_timeline import FFMPEG, _ffmpeg_cut, _grey_clip

needs_pyav = pytest.mark.skipif("pyav" not in available_backends(), reason="PyAV not installed")

SPECS = {
    "video": Video(field="mp4", frames=4, fps=None),
    "random-video": Video(field="mp4", frames=8, fps=4.0, random_frames=3, size=24),
    "audio": Audio(field="mp4", spectrogram="logmel", n_mels=40),
    "cropped-audio": Audio(field="mp4", seconds=0.5, spectrogram="log", mono=False),
}


def clips(tmp: Path) -> dict[str, bytes]:
    """Real mp4s with video and audio: the repo's moving square, a grey clip with B-frames and a
    keyframe every 10 frames (several GOPs, so the frames restart from several keyframes) and,
    with the ffmpeg CLI, a stream-copy cut whose edit list discards packets."""
    out = {
        "square": moving_square_clip(3, frames=30, size=32, fps=10.0),
        "bframes-gops": _grey_clip(60, gop=10, bframes=2, audio=True),
    }
    if FFMPEG is not None:
        source = _grey_clip(150, bframes=2, audio=True)
        out["edit-list cut"] = _ffmpeg_cut(tmp, source, "cut.mp4", "-ss", "1.3", "-t", "3")
    return out


@needs_pyav
@pytest.mark.parametrize(("video_name", "audio_name"), [("video", "audio"), ("random-video", "cropped-audio")])  # fmt: skip
def test_one_open_equals_each_spec_alone_on_pyav(
    tmp_path: Path, video_name: str, audio_name: str
) -> None:
    video = dataclasses.replace(SPECS[video_name], backend="pyav")
    audio = dataclasses.replace(SPECS[audio_name], backend="pyav")
    assert isinstance(video, Video) and isinstance(audio, Audio)
    for name, data in clips(tmp_path).items():
        for seed in range(3):
            gens = [torch.Generator().manual_seed(seed) for _ in range(4)]
            both = joint.decode_clip(
                video, audio, data, video_generator=gens[0], audio_generator=gens[1]
            )
            assert both is not None, "PyAV decodes both streams from one open"
            alone = (video.decode(data, generator=gens[2]), audio.decode(data, generator=gens[3]))
            for got, want in zip(both, alone, strict=True):
                assert got.dtype == want.dtype and torch.equal(got, want), (name, seed)


def test_torchcodec_and_the_wave_reader_decode_each_spec_alone() -> None:
    """torchcodec's decoders each open the bytes (no joint path); a wav field never pairs."""
    if "torchcodec" in available_backends():
        video = dataclasses.replace(SPECS["video"], backend="torchcodec")
        audio = dataclasses.replace(SPECS["audio"], backend="torchcodec")
        assert joint.decode_clip(video, audio, moving_square_clip(0)) is None  # type: ignore[arg-type]
    pairs = joint.clip_pairs(
        {"v": Video(field="mp4"), "a": Audio(field="mp4", backend="wave"), "b": Audio()}
    )
    assert pairs == ()
    assert joint.clip_pairs({"a": Audio(field="mp4"), "v": Video(field="mp4")}) == (("v", "a"),)


def shard(root: Path, fields: list[dict[str, bytes]]) -> Path:
    samples = ((f"s{i}", i % 2, f) for i, f in enumerate(fields))
    write_samples(root, samples, ["a", "b"], samples_per_shard=4)
    return root


@needs_pyav
def test_decoder_takes_one_open_and_counts_items_over_workers(tmp_path: Path) -> None:
    """Through a reader and DataLoader workers: the pair decodes from one open (PyAV), the
    tensors equal the specs' own decodes, and `decode_count` counts every item once (its
    modalities each) in the main process and in forked workers."""
    specs = {k: dataclasses.replace(SPECS[k], backend="pyav") for k in ("video", "audio")}
    root = shard(tmp_path / "s", [{"mp4": moving_square_clip(i)} for i in range(6)])
    reader = IndexedDataset(root, specs, seed=5)
    decoder = Decoder(specs, seed=5)
    assert decoder.pairs == (("video", "audio"),)
    before = decode_count.total()
    got = [reader.get(int(i)) for i in reader.ids]
    assert decode_count.total() - before == (6, 12)
    for sample in got:
        data = moving_square_clip(int(sample["id"]))
        assert torch.equal(sample["video"], specs["video"].decode(data))
        assert torch.equal(sample["audio"], specs["audio"].decode(data))
    before = decode_count.total()
    loader = DataLoader(reader, batch_size=None, num_workers=2)
    assert len(list(loader)) == 6
    assert decode_count.total() - before == (6, 12)


@needs_pyav
def test_a_clip_without_audio_names_both_modalities_and_the_field(tmp_path: Path) -> None:
    import numpy as np

    specs = {k: dataclasses.replace(SPECS[k], backend="pyav") for k in ("video", "audio")}
    silent = encode_mp4(np.zeros((10, 16, 16, 3), np.uint8))
    root = shard(tmp_path / "s", [{"mp4": silent}])
    reader = IndexedDataset(root, specs)
    before = decode_count.total()
    with warnings.catch_warnings(), pytest.raises(SampleError) as err:
        reader.get(0)
    message = str(err.value)
    assert "'video' and 'audio'" in message and "'mp4'" in message and "audio stream" in message
    assert decode_count.total() == before  # a failed decode is not counted
