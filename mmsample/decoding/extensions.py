"""Which file extensions hold which medium: video, audio or still image.

Place in the data flow: the sharding tool types its input columns by these lists
(`mmsample.sharding.columns`) and probes the files (`mmsample.decoding.media_probe`); the default
specs (`mmsample.decoding.defaults`) pick `Video`, `Audio` or `Image` by them.
"""

from __future__ import annotations

__all__ = ["AUDIO_EXTENSIONS", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS"]

VIDEO_EXTENSIONS = ("mp4", "avi", "mkv", "webm", "mov", "flv")
AUDIO_EXTENSIONS = ("wav", "flac", "mp3", "ogg", "m4a")
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg")
