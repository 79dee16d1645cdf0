"""What every modality spec shares: the `Spec` protocol and the checks of its parameters.

Place in the data flow: the spec modules (`video`, `image`, `audio`, `text`, `array`) build on
this; the readers only rely on the protocol (a `field` and a `decode(data, generator=...)`).
Every refusal uses one template: "The 'x' parameter of Spec must be ...; got ...".
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .backends import KNOWN_BACKENDS, check_backend_name

__all__ = [
    "DTYPES",
    "Spec",
    "bad_parameter",
    "check_backend",
    "check_size",
    "check_spec_field",
]

DTYPES = ("uint8", "float32")


@runtime_checkable
class Spec(Protocol):
    """A modality: the shard member extension it reads and how to decode those bytes."""

    field: str

    def decode(
        self, data: bytes, *, generator: torch.Generator | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Turn one shard member's bytes into tensors; raise with a clear reason on bad data."""
        ...


def bad_parameter(cls: str, name: str, rule: str, value: object) -> ValueError:
    """The ValueError for parameter `name` of spec class `cls` breaking `rule`."""
    return ValueError(f"The '{name}' parameter of {cls} must be {rule}; got {value!r}.")


def check_spec_field(cls: str, field: object) -> None:
    """A spec's `field` is a shard member extension ('mp4', 'left.wav'); ValueError if not."""
    if not isinstance(field, str) or not field or field.startswith("."):
        raise bad_parameter(cls, "field", "a shard member extension such as 'mp4'", field)


def check_size(cls: str, size: object) -> tuple[int, int] | None:
    """None, or `size` (an int: a square) as a (height, width) pair; ValueError if invalid."""
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if (
        not isinstance(pair, tuple | list)
        or len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair)
    ):
        raise bad_parameter(
            cls, "size", "None, an int >= 1 or a (height, width) pair of ints >= 1", size
        )
    return int(pair[0]), int(pair[1])


def check_backend(cls: str, backend: str | None, extra: tuple[str, ...] = ()) -> None:
    """None, a known backend name or one of `extra`; ValueError if unknown, ImportError if
    its package is missing in this process."""
    if backend is None or backend in extra:
        return
    if backend not in KNOWN_BACKENDS:
        allowed = sorted([*KNOWN_BACKENDS, *extra])
        raise bad_parameter(cls, "backend", f"None or one of {allowed}", backend)
    check_backend_name(backend)
