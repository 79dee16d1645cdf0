"""FLV files (CREMA-D's VideoFlash) cut short are refused, by the container check and by the
sharding probe, at every cut point; whole files decode."""

from __future__ import annotations

import pytest

from mmsample.decoding import Video
from mmsample.decoding.backends.container import check_complete
from mmsample.decoding.media_probe import probe

from .test_recipe_cremad import flv_bytes


def test_whole_flv_is_accepted_and_decodes() -> None:
    data = flv_bytes(3, frames=20)
    check_complete(data)
    probe(data, "video.flv")
    frames = Video(field="flv", frames=4, fps=None).decode(data)
    assert tuple(frames.shape) == (4, 3, 32, 32)
    # frame t has brightness 8 * t in its lower half. 4 equal parts of the clip: frames 2, 7,
    # 12, 17 of a 2.0 s clip, or 2, 7, 11, 16 if the FLV's duration reads as the last frame's
    # time (1.9 s); each value is within the codec's error (6 levels) of one of those.
    lower = frames[:, :, 24:, :].float().mean(dim=(1, 2, 3)).tolist()
    allowed = [[2], [7], [11, 12], [16, 17]]
    for value, ts in zip(lower, allowed):
        assert min(abs(value - 8 * t) for t in ts) <= 6, (lower, allowed)


def test_every_cut_is_refused() -> None:
    data = flv_bytes(1, frames=12)
    for cut in range(len(b"FLV\x01"), len(data)):  # shorter: not recognisable as FLV
        with pytest.raises(ValueError, match="FLV is truncated"):
            check_complete(data[:cut])


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9])
def test_probe_and_reader_refuse_a_truncated_flv(fraction: float) -> None:
    data = flv_bytes(2)
    cut = data[: int(len(data) * fraction)]
    with pytest.raises(ValueError, match="FLV is truncated"):
        probe(cut, "video.flv")
    with pytest.raises(ValueError, match="FLV is truncated"):
        Video(field="flv", frames=3, fps=None).decode(cut)


def test_a_cut_between_tags_is_caught_by_the_declared_filesize() -> None:
    data = flv_bytes(5, frames=12)
    tags, pos = [], 13
    while pos < len(data):  # tag boundaries, walked by hand
        pos += 11 + int.from_bytes(data[pos + 1 : pos + 4], "big") + 4
        tags.append(pos)
    assert tags[-1] == len(data) and len(tags) == 13  # onMetaData + 12 frames
    for boundary in tags[:-1]:
        with pytest.raises(ValueError, match="metadata declares"):
            check_complete(data[:boundary])


def test_a_size_past_the_end_is_refused() -> None:
    data = bytearray(flv_bytes(4, frames=5))
    first_tag = 13
    data[first_tag + 1 : first_tag + 4] = (len(data)).to_bytes(3, "big")
    with pytest.raises(ValueError, match="declares"):
        check_complete(bytes(data))
