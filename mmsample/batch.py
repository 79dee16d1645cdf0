"""MultimodalBatch: the collated output of every reader, ready for any device.

Each modality keeps only the rows (batch positions) that carry it, so a modality a sample does
not have this step is neither decoded nor transferred; `dense` fills the absent rows with zeros
for models that want paired input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

Data = torch.Tensor | dict[str, torch.Tensor]


def _map(data: Data, fn: Any) -> Data:
    if isinstance(data, dict):
        return {k: fn(v) for k, v in data.items()}
    return fn(data)


def _stack(values: Sequence[Any]) -> Data:
    first = values[0]
    if isinstance(first, dict):
        return {k: torch.stack([v[k] for v in values]) for k in first}
    return torch.stack([torch.as_tensor(v) for v in values])


@dataclass
class Rows:
    """The batch positions that carry one modality and their decoded tensors (same order)."""

    rows: torch.Tensor
    data: Data


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

    def dense(self, name: str) -> Data:
        """Tensors of modality `name` for all B rows, zeros where the sample does not carry it."""
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
            modalities={
                k: Rows(move(r.rows), _map(r.data, move)) for k, r in self.modalities.items()
            },
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
            modalities={
                k: Rows(pin(r.rows), _map(r.data, pin)) for k, r in self.modalities.items()
            },
            keys=list(self.keys),
        )


def collate(samples: Sequence[Mapping[str, Any]], names: Sequence[str]) -> MultimodalBatch:
    """Collate decoded samples (dicts with id, label, mask, key and one entry per carried
    modality) into a MultimodalBatch; modality bit j is `names[j]`."""
    if len(samples) == 0:
        raise ValueError("collate got an empty list of samples")
    names = tuple(names)
    ids = torch.tensor([int(s["id"]) for s in samples], dtype=torch.long)
    labels = torch.tensor([int(s["label"]) for s in samples], dtype=torch.long)
    mask = torch.tensor([int(s["mask"]) for s in samples], dtype=torch.long)
    modalities: dict[str, Rows] = {}
    for j, name in enumerate(names):
        rows = [i for i, s in enumerate(samples) if int(s["mask"]) >> j & 1]
        if not rows:
            continue
        missing = [samples[i].get("key", samples[i]["id"]) for i in rows if name not in samples[i]]
        if missing:
            raise ValueError(
                f"collate: samples {missing[:5]} have modality {name!r} in their mask "
                "but no decoded value for it"
            )
        modalities[name] = Rows(
            torch.tensor(rows, dtype=torch.long), _stack([samples[i][name] for i in rows])
        )
    keys = [str(s.get("key", "")) for s in samples]
    return MultimodalBatch(ids, labels, mask, names, modalities, keys)


class Collate:
    """A picklable `collate_fn` for DataLoader: `DataLoader(ds, collate_fn=Collate(names))`."""

    def __init__(self, names: Sequence[str]) -> None:
        if isinstance(names, str) or len(names) == 0:
            raise ValueError(
                f"The 'names' parameter of Collate must be a non-empty sequence of modality "
                f"names in the reader's order; got {names!r}."
            )
        self.names = tuple(names)

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> MultimodalBatch:
        return collate(samples, self.names)
