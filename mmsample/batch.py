"""MultimodalBatch: the collated output of every reader, ready for any device.

Each modality keeps only the rows (batch positions) that carry it, so a modality a sample does
not have this step is neither decoded nor transferred; `dense` fills the absent rows with zeros
for models that want paired input. Variable-size data (Text(padding="longest"), npy features
of varying length, Image(size=None), audio of varying length or channels) is padded to the
largest row of the batch (`mmsample.decoding.padding`); `sizes`, `lengths` and `valid` tell real elements
from padding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from .decoding.padding import PaddingError, PadValue, pad_stack, valid_mask

Data = torch.Tensor | dict[str, torch.Tensor]

# Keys of a decoded sample dict that are not modalities (`names`: the reader's modality names).
SAMPLE_KEYS = frozenset({"id", "label", "key", "shard", "mask", "names"})
# Keys of dict data (Text) padded with 0 whatever the modality's pad value.
MASK_KEYS = frozenset({"attention_mask"})


def _map(data: Data, fn: Any) -> Data:
    if isinstance(data, dict):
        return {k: fn(v) for k, v in data.items()}
    return fn(data)


def _constant_sizes(x: torch.Tensor) -> torch.Tensor:
    shape = torch.tensor(x.shape[1:], dtype=torch.long, device=x.device)
    return shape.expand(x.shape[0], x.dim() - 1)


def _stack(values: Sequence[Any], name: str, pad: PadValue) -> tuple[Data, Data | None]:
    """(data, sizes): one modality's rows stacked, padded where shapes differ (see pad_stack)."""
    first = values[0]
    if not isinstance(first, dict):
        return pad_stack(values, pad, name=name)
    keys = list(first)
    if any(not isinstance(v, dict) or list(v) != keys for v in values):
        raise PaddingError(
            f"collate: modality {name!r} mixes rows with different keys or kinds "
            f"({sorted({str(list(v)) if isinstance(v, dict) else type(v).__name__ for v in values})}); "
            f"decode every sample of {name!r} with one spec."
        )
    data: dict[str, torch.Tensor] = {}
    sizes: dict[str, torch.Tensor | None] = {}
    for k in keys:
        key_pad = 0 if (k in MASK_KEYS and pad is not None) else pad
        data[k], sizes[k] = pad_stack([v[k] for v in values], key_pad, name=f"{name}[{k!r}]")
    if all(v is None for v in sizes.values()):
        return data, None
    return data, {k: _constant_sizes(data[k]) if v is None else v for k, v in sizes.items()}


@dataclass
class Rows:
    """The batch positions that carry one modality and their decoded tensors (same order);
    `sizes`: each row's shape before padding (long `[n, ndim]`, per key for dict data), None
    when no row was padded."""

    rows: torch.Tensor
    data: Data
    sizes: Data | None = None


@dataclass
class MultimodalBatch:
    """ids, labels and item masks `[B]`, plus for each modality the rows that carry it."""

    ids: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    names: tuple[str, ...]
    modalities: dict[str, Rows] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __contains__(self, name: object) -> bool:
        return name in self.modalities

    def __getitem__(self, name: str) -> Data:
        """The tensors of modality `name` for the rows that carry it (see `rows`)."""
        return self.modalities[name].data

    def rows(self, name: str) -> torch.Tensor:
        """Batch positions (long `[n]`) of the samples carrying modality `name`."""
        return self.modalities[name].rows

    def present(self, name: str) -> torch.Tensor:
        """Bool `[B]`: which samples carry modality `name` in this batch."""
        bit = 1 << self.names.index(name)
        return (self.mask & bit) != 0

    def paired(self) -> torch.Tensor:
        """Bool `[B]`: samples carrying every modality (for losses that need paired input)."""
        full = (1 << len(self.names)) - 1
        return (self.mask & full) == full

    def sizes(self, name: str) -> Data:
        """Each carried row's shape before padding: long `[n, ndim]` (n = len(rows(name)),
        ndim = the per-row tensor's dims), a dict of those for dict data (Text)."""
        part = self.modalities[name]
        if part.sizes is not None:
            return part.sizes
        return _map(part.data, _constant_sizes)

    def lengths(self, name: str, dim: int = 0, key: str | None = None) -> torch.Tensor:
        """Long `[n]`: each carried row's size along `dim` before padding (text: tokens; `[T,
        13]` MFCCs: T; `[3, H, W]` images: dim=1 for H). For dict data, `key` picks the tensor
        (default: the first, Text's input_ids). Raises KeyError for an unknown key."""
        sizes = self.sizes(name)
        if isinstance(sizes, dict):
            sizes = sizes[next(iter(sizes)) if key is None else key]
        return sizes[:, dim]

    def valid(self, name: str, key: str | None = None) -> torch.Tensor:
        """Bool, the shape of `batch[name]` (of `batch[name][key]` for dict data): True on the
        elements a row really has, False on padding added by collate. (Text's attention_mask
        also masks the padding Text(padding="max_length") added itself.)"""
        data, sizes = self.modalities[name].data, self.sizes(name)
        if isinstance(data, dict) and isinstance(sizes, dict):
            k = next(iter(data)) if key is None else key
            data, sizes = data[k], sizes[k]
        x, shapes = cast(torch.Tensor, data), cast(torch.Tensor, sizes)
        return valid_mask(shapes.to(x.device), x.shape[1:])

    def dense(self, name: str) -> Data:
        """Tensors of modality `name` for all B rows, zeros where the sample does not carry it.

        Raises KeyError when no row of this batch carries `name` (possible when a plan masks
        modalities, e.g. a batch made only of SMV extra items): test `name in batch` first."""
        if name not in self.modalities:
            if name not in self.names:
                raise KeyError(
                    f"MultimodalBatch.dense: unknown modality {name!r}; the batch has {list(self.names)}"
                )
            raise KeyError(
                f"MultimodalBatch.dense: no row of this batch carries modality {name!r}, so its "
                f"shape is unknown; check `{name!r} in batch` before calling dense"
            )
        part = self.modalities[name]
        n = len(self)

        def fill(x: torch.Tensor) -> torch.Tensor:
            out = x.new_zeros((n, *x.shape[1:]))
            out[part.rows.to(x.device)] = x
            return out

        return _map(part.data, fill)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MultimodalBatch:
        """A copy on `device`; with pinned memory and `non_blocking=True` the copy is asynchronous."""

        def move(x: torch.Tensor) -> torch.Tensor:
            return x.to(device, non_blocking=non_blocking)

        return MultimodalBatch(
            ids=move(self.ids),
            labels=move(self.labels),
            mask=move(self.mask),
            names=self.names,
            modalities={k: _apply(r, move) for k, r in self.modalities.items()},
            keys=list(self.keys),
        )

    def pin_memory(self) -> MultimodalBatch:
        """Page-locked copy, so `.to('cuda', non_blocking=True)` overlaps with compute."""

        def pin(x: torch.Tensor) -> torch.Tensor:
            return x.pin_memory()

        return MultimodalBatch(
            ids=pin(self.ids),
            labels=pin(self.labels),
            mask=pin(self.mask),
            names=self.names,
            modalities={k: _apply(r, pin) for k, r in self.modalities.items()},
            keys=list(self.keys),
        )


def _apply(part: Rows, fn: Any) -> Rows:
    sizes = None if part.sizes is None else _map(part.sizes, fn)
    return Rows(fn(part.rows), _map(part.data, fn), sizes)


def _check_sample(sample: Mapping[str, Any], names: tuple[str, ...]) -> None:
    """The sample's modalities must be Collate's names in the reader's order (bit j = names[j])."""
    where = f"sample {sample.get('key', sample.get('id'))!r}"
    fix = (
        "Collate's names must be the reader's modality names in the reader's order: "
        "Collate(list(modalities)) with the mapping given to the reader"
    )
    theirs = sample.get("names")
    if theirs is not None and tuple(theirs) != names:
        raise ValueError(
            f"collate: {where} comes from a reader whose modalities are {list(theirs)}, but "
            f"Collate was given {list(names)}; {fix}."
        )
    mask = int(sample["mask"])
    carried = {k for k in sample if k not in SAMPLE_KEYS}
    unknown = sorted(carried - set(names))
    if unknown or mask >> len(names):
        what = f"modalities {unknown}" if unknown else f"mask {mask:#b} (bits beyond {len(names)})"
        raise ValueError(
            f"collate: {where} carries {what}, which Collate's names {list(names)} do not "
            f"have; {fix}."
        )
    expected = {n for j, n in enumerate(names) if mask >> j & 1}
    if carried != expected:
        raise ValueError(
            f"collate: {where} has mask {mask:#b}, which means modalities {sorted(expected)} "
            f"for Collate's names {list(names)}, but carries decoded values for "
            f"{sorted(carried)}; {fix}."
        )


def collate(
    samples: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    pad: Mapping[str, PadValue] | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> MultimodalBatch:
    """Collate decoded samples (dicts with id, label, mask, key and one entry per carried
    modality) into a MultimodalBatch; modality bit j is `names[j]`.

    `collate_fn`, if given, collates each modality's values (the rows carrying it, in batch
    order) instead of the padded stack below, e.g. a user's DataLoader `collate_fn` (`wrap`);
    those rows then have no `sizes`.

    Rows of one modality whose shapes differ are padded at the end of every differing dim with
    `pad[name]` (default 0; dict data: that value for every key but attention_mask, which pads
    with 0; `pad[name] = None` refuses unequal shapes). `MultimodalBatch.sizes / lengths /
    valid` give the shapes before padding. Raises ValueError naming the sample or the modality
    (and the fix) for an empty list, samples whose modalities are not `names`, or rows that
    cannot be stacked (different ranks or dtypes)."""
    if len(samples) == 0:
        raise ValueError("collate got an empty list of samples")
    names = tuple(names)
    pad = {} if pad is None else pad
    for s in samples:
        _check_sample(s, names)
    ids = torch.tensor([int(s["id"]) for s in samples], dtype=torch.long)
    labels = torch.tensor([int(s["label"]) for s in samples], dtype=torch.long)
    mask = torch.tensor([int(s["mask"]) for s in samples], dtype=torch.long)
    modalities: dict[str, Rows] = {}
    for j, name in enumerate(names):
        rows = [i for i, s in enumerate(samples) if int(s["mask"]) >> j & 1]
        if not rows:
            continue
        values = [samples[i][name] for i in rows]
        if collate_fn is not None:
            data, sizes = collate_fn(values), None
        else:
            data, sizes = _stack(values, name, pad.get(name, 0))
        modalities[name] = Rows(torch.tensor(rows, dtype=torch.long), data, sizes)
    keys = [str(s.get("key", "")) for s in samples]
    return MultimodalBatch(ids, labels, mask, names, modalities, keys)


class Collate:
    """A picklable `collate_fn` for DataLoader: `DataLoader(ds, collate_fn=Collate(names))`;
    the one collate of every loader (`balanced_loader`, `wrap`, the scoring pass).

    `names`: the reader's modality names in its order (or the name -> Spec mapping given to the
    reader). `pad`: name -> pad value for rows of unequal shape (default 0 for every modality;
    None refuses unequal shapes), e.g. `Collate(names, pad={"text": tok.pad_token_id})`.
    `collate_fn`: collates each modality's values itself instead of padding and stacking them
    (`wrap` passes the user's DataLoader collate_fn); not with `pad`.
    Raises ValueError naming the parameter for bad names, pad entries or collate_fn.
    """

    def __init__(
        self,
        names: Sequence[str],
        pad: Mapping[str, PadValue] | None = None,
        *,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        if isinstance(names, Mapping):
            names = list(names)
        if (
            isinstance(names, str)
            or not isinstance(names, Sequence)
            or len(names) == 0
            or not all(isinstance(n, str) and n and n not in SAMPLE_KEYS for n in names)
            or len(set(names)) != len(names)
        ):
            raise ValueError(
                f"The 'names' parameter of Collate must be a non-empty sequence of distinct "
                f"modality names (not {sorted(SAMPLE_KEYS)}) in the reader's order; "
                f"got {names!r}."
            )
        self.names = tuple(names)
        pad = {} if pad is None else pad
        if not isinstance(pad, Mapping):
            raise ValueError(
                f"The 'pad' parameter of Collate must be None or a mapping modality name -> "
                f"pad value (a number, or None for no padding); got {pad!r}."
            )
        for name, value in pad.items():
            if name not in self.names:
                raise ValueError(
                    f"The 'pad' parameter of Collate names modality {name!r}, which is not "
                    f"in 'names' {list(self.names)}."
                )
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise ValueError(
                    f"The 'pad' parameter of Collate: pad[{name!r}] must be a number or None; "
                    f"got {value!r}."
                )
        self.pad: dict[str, PadValue] = dict(pad)
        if collate_fn is not None and not callable(collate_fn):
            raise ValueError(
                f"The 'collate_fn' parameter of Collate must be None or a callable list of "
                f"values -> batch data; got {collate_fn!r}."
            )
        if collate_fn is not None and self.pad:
            raise ValueError(
                "The 'pad' and 'collate_fn' parameters of Collate exclude each other: a "
                "collate_fn collates each modality's values itself."
            )
        self.collate_fn = collate_fn

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> MultimodalBatch:
        return collate(samples, self.names, self.pad, self.collate_fn)
