"""The decode stage both readers share: raw sample + item mask -> decoded sample dict.

Sits between tar I/O (`tar_samples`) and collation (`mmsample.batch.collate`). Only the modalities
an item needs are decoded: those set in the plan's mask AND present in the sample. Randomness
(random frames, crops) comes from a generator seeded by (seed, epoch, id, item, modality) alone,
so the streamed and indexed readers give identical tensors for the same item on any worker,
rank or order, and one modality's draws never depend on which others are decoded.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import get_worker_info

from ..batch import SAMPLE_KEYS
from ..errors import MmsampleWarning, SampleError
from ..schedule import mix_seed
from . import decode_count
from .joint import clip_pairs, decode_clip

if TYPE_CHECKING:
    from .base import Spec

RESERVED_NAMES = SAMPLE_KEYS  # the keys of a decoded sample that are not modalities
# Extensions whose conventional decoders unpickle (WebDataset's do): never decoded here.
UNSAFE_FIELDS = frozenset({"pyd", "pickle", "pkl", "pt", "pth"})


def item_generator(
    seed: int, epoch: int, sample_id: int, item: int, modality: int
) -> torch.Generator:
    """The CPU generator for one modality of one item; the same on every reader and process."""
    gen = torch.Generator()
    gen.manual_seed(mix_seed(seed, epoch, sample_id, item, modality))
    return gen


def check_modalities(
    modalities: Mapping[str, Spec], owner: str, available: list[str] | None = None
) -> dict[str, Spec]:
    """Validate an ordered name -> Spec mapping (bit j = j-th name) and return a copy."""
    if not isinstance(modalities, Mapping) or not modalities:
        raise ValueError(
            f"The 'modalities' parameter of {owner} must be a non-empty mapping of modality "
            f"name -> Spec (e.g. {{'video': Video(), 'audio': Audio()}}); got {modalities!r}."
        )
    out: dict[str, Spec] = {}
    for name, spec in modalities.items():
        if not isinstance(name, str) or not name or name in RESERVED_NAMES:
            raise ValueError(
                f"The 'modalities' parameter of {owner}: modality name {name!r} must be a "
                f"non-empty string other than {sorted(RESERVED_NAMES)}."
            )
        field = getattr(spec, "field", None)
        if not isinstance(field, str) or not callable(getattr(spec, "decode", None)):
            raise ValueError(
                f"The 'modalities' parameter of {owner}: {name!r} must be a Spec (with a "
                f"'field' and a 'decode' method); got {spec!r}."
            )
        if field in UNSAFE_FIELDS:
            raise ValueError(
                f"The 'modalities' parameter of {owner}: {name!r} reads field {field!r}, whose "
                "payloads are pickles; mmsample never unpickles shard members (a shard from a "
                "stranger could run code). Store arrays as .npy instead."
            )
        if available is not None and field not in available:
            raise ValueError(
                f"The 'modalities' parameter of {owner}: {name!r} reads field {field!r}, which "
                f"no sample of this dataset has; the dataset's fields are {sorted(available)}."
            )
        out[name] = spec
    if len(out) > 62:
        raise ValueError(f"{owner} supports at most 62 modalities; got {len(out)}.")
    return out


# torch intra-op threads while a sample decodes in the main process (DataLoader num_workers=0).
# torch already runs each DataLoader worker with one thread; in the main process its intra-op
# threads (one per core) compete with the decoder's own FFmpeg thread and with each other on
# the small tensors of one sample (STFT, resize): see README "Main-process decoding".
MAIN_PROCESS_DECODE_THREADS = 1


def check_decode_threads(value: object, owner: str) -> int | None:
    """Validate a `decode_threads` parameter: None (leave torch's setting) or an int >= 1."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(
            f"The 'decode_threads' parameter of {owner} must be None (torch's own thread "
            f"count) or an int >= 1; got {value!r}."
        )
    return value


@contextlib.contextmanager
def intra_op_threads(limit: int | None) -> Iterator[None]:
    """Run the block with at most `limit` torch intra-op threads, then restore the caller's
    `torch.get_num_threads()` (also when the block raises). None, or a limit at or above the
    current count, changes nothing."""
    before = torch.get_num_threads()
    if limit is None or before <= limit:
        yield
        return
    torch.set_num_threads(limit)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Decoder:
    """Decode the modalities an item needs from a raw sample, with per-item seeded randomness.

    `threads`: torch intra-op threads while an item decodes outside DataLoader workers (None:
    torch's own setting); the caller's `torch.get_num_threads()` is restored after each item.
    """

    def __init__(
        self,
        modalities: Mapping[str, Spec],
        seed: int = 0,
        threads: int | None = MAIN_PROCESS_DECODE_THREADS,
    ) -> None:
        self.specs = check_modalities(modalities, "Decoder")
        self.names = tuple(self.specs)
        self.fields = tuple(spec.field for spec in self.specs.values())
        self.full = (1 << len(self.names)) - 1
        self.seed = int(seed)
        self.threads = check_decode_threads(threads, "Decoder")
        self.pairs = clip_pairs(self.specs)  # (video, audio) read from one field: one open

    def present(self, raw: Mapping[str, Any]) -> int:
        """Bitmask of the modalities whose field the raw sample carries."""
        have = raw["fields"]
        return sum(1 << j for j, f in enumerate(self.fields) if f in have)

    def __call__(
        self,
        raw: Mapping[str, Any],
        mask: int,
        *,
        epoch: int,
        item: int,
        fallback: int | None = None,
    ) -> dict[str, Any]:
        """Decoded sample dict: id, label, key, shard, mask (plan mask AND present), names (the
        modality names, bit j = names[j]) and one entry per modality in that mask.

        `fallback`: the mask to use instead when `mask` leaves none of the sample's modalities
        (a loader that assigns modalities by batch position meets a sample lacking them: the
        row then carries what the sample has, never nothing)."""
        have = self.present(raw)
        mask = int(mask) & self.full & have
        if mask == 0 and fallback is not None:
            mask = int(fallback) & self.full & have
        out: dict[str, Any] = {
            "id": raw["id"],
            "label": raw["label"],
            "key": raw["key"],
            "shard": raw["shard"],
            "mask": mask,
            "names": self.names,  # so collate can check it was given the same names
        }
        if mask and get_worker_info() is None:
            with intra_op_threads(self.threads):
                self._decode_into(out, raw, mask, epoch, item)
        else:
            self._decode_into(out, raw, mask, epoch, item)
        decode_count.add(mask)
        return out

    def _decode_into(
        self, out: dict[str, Any], raw: Mapping[str, Any], mask: int, epoch: int, item: int
    ) -> None:
        done = self._decode_clips(out, raw, mask, epoch, item)
        for j, name in enumerate(self.names):
            if not mask >> j & 1 or name in done:
                continue
            spec = self.specs[name]
            gen = item_generator(self.seed, epoch, raw["id"], item, j)
            try:
                out[name] = spec.decode(raw["fields"][spec.field], generator=gen)
            except Exception as err:
                raise SampleError(
                    f"cannot decode modality {name!r} from field {spec.field!r}: "
                    f"{type(err).__name__}: {err}",
                    shard=raw["shard"],
                    key=raw["key"],
                ) from err

    def _decode_clips(
        self, out: dict[str, Any], raw: Mapping[str, Any], mask: int, epoch: int, item: int
    ) -> set[str]:
        """Decode the (video, audio) pairs that read one field and that the item carries both
        of from one open of the container (`mmsample.decoding.joint`); the names decoded."""
        done: set[str] = set()
        for video, audio in self.pairs:
            j, k = self.names.index(video), self.names.index(audio)
            if not (mask >> j & 1 and mask >> k & 1):
                continue
            field = self.specs[video].field
            try:
                both = decode_clip(
                    self.specs[video],  # type: ignore[arg-type]
                    self.specs[audio],  # type: ignore[arg-type]
                    raw["fields"][field],
                    video_generator=item_generator(self.seed, epoch, raw["id"], item, j),
                    audio_generator=item_generator(self.seed, epoch, raw["id"], item, k),
                )
            except Exception as err:
                raise SampleError(
                    f"cannot decode modalities {video!r} and {audio!r} from field {field!r}: "
                    f"{type(err).__name__}: {err}",
                    shard=raw["shard"],
                    key=raw["key"],
                ) from err
            if both is not None:
                out[video], out[audio] = both
                done.update((video, audio))
        return done


ON_ERROR = ("raise", "skip")


class SkippedSampleWarning(MmsampleWarning):
    """A reader with `on_error="skip"` replaced a bad item (the message names shard and key)."""


def check_on_error(value: str, owner: str) -> str:
    """Validate an `on_error` policy against ON_ERROR."""
    if value not in ON_ERROR:
        raise ValueError(
            f"The 'on_error' parameter of {owner} must be one of {list(ON_ERROR)}; got {value!r}."
        )
    return value


def report_skip(owner: str, err: SampleError, replacement: str) -> None:
    """Warn about one skipped item, naming its shard and key and what replaced it."""
    warnings.warn(
        f"{owner} skipped a bad item ({err}); replaced by {replacement}",
        SkippedSampleWarning,
        stacklevel=3,
    )
