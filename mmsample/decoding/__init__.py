"""Decoding: shard member bytes -> tensors, one modality spec per medium.

Data flow: a reader (`mmsample.shards`) hands each modality's spec the bytes of its field; the
spec decodes them (video, audio and images through a decoder backend, `backends`), and
`mmsample.batch` stacks the decoded rows (`padding`). The specs users configure are importable
from here: `Video`, `Image`, `Audio`, `Text`, `Array` (and `default_spec` for a field without
configuration). Also here: the decode stage both readers share (`decoder`), the header parsers
(`image_header`, `wav`, `npy`) and the probe the sharding tool runs on every file
(`media_probe`).
"""

from .array import Array
from .audio import WAVE_READER, Audio
from .base import Spec
from .defaults import DEFAULT_SPECS, default_spec
from .frames import resize_frames
from .image import Image, composite
from .text import Text
from .video import Video, frame_times, uniform_subset

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
