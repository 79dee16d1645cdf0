"""The spec each field extension gets without configuration (what `mmsample inspect` decodes).

Place in the data flow: beside the specs; `default_spec("left.wav")` picks `Audio(field=...)`
from the extension (`mmsample.decoding.extensions` lists which extension is which medium).
"""

from __future__ import annotations

from collections.abc import Callable

from .array import Array
from .audio import Audio
from .base import Spec
from .extensions import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from .image import Image
from .text import Text
from .video import Video

__all__ = ["DEFAULT_SPECS", "default_spec"]


def _default_text(field: str, tokenizer: str | None) -> Spec:
    # `mmsample inspect` without --tokenizer: byte ids, asked for explicitly
    return Text(field=field, tokenizer=tokenizer, byte_ids=tokenizer is None)


# extension -> factory(field, tokenizer) of the spec `mmsample inspect` uses without configuration.
DEFAULT_SPECS: dict[str, Callable[[str, str | None], Spec]] = {
    **{ext: lambda f, _t: Video(field=f) for ext in VIDEO_EXTENSIONS},
    **{ext: lambda f, _t: Audio(field=f) for ext in AUDIO_EXTENSIONS},
    **{ext: lambda f, _t: Image(field=f) for ext in IMAGE_EXTENSIONS},
    "txt": _default_text,
    "npy": lambda f, _t: Array(field=f),
}


def default_spec(field: str, *, tokenizer: str | None = None) -> Spec:
    """The spec that decodes `field` (e.g. "mp4", "left.wav") without configuration."""
    ext = field.rsplit(".", 1)[-1].lower()
    factory = DEFAULT_SPECS.get(ext)
    if factory is None:
        raise ValueError(
            f"No default spec for field {field!r}: its extension must be one of {sorted(DEFAULT_SPECS)}."
        )
    return factory(field, tokenizer)
