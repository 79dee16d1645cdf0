"""The user's own batch structure, carried through `wrap`: tuples stay tuples, dicts stay dicts.

Place in the data flow: the user's `Dataset.__getitem__` -> `wrap` (the plan applied by index)
-> each item with the modalities its plan entry leaves out replaced by zeros of the same shape
(`absent`) -> **the user's collate_fn** over the items (exactly what their DataLoader does) ->
`TupleBatch` / `DictBatch`: the collated structure, plus the rows' sample ids and modality masks
as attributes, so they travel with the batch (a loader attribute would be wrong for libraries
that read a batch ahead). `.to(device)` and `.pin_memory()` keep them (torch's pin-memory thread
and Accelerate's `send_to_device` call these methods).

A zero input is not an absent modality (encoder(0) != 0, and BatchNorm statistics would take
the zeros in): a model reads `batch.present(name)` and runs each encoder on the rows that carry
its modality. `mmsample.Balancer` does it for a model with named encoders; by hand:
`rows = batch.present("audio"); z = audio.new_zeros(len(rows), D); z[rows] = enc(audio[rows])`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


def absent(value: Any, where: str) -> Any:
    """Zeros shaped like `value` (a tensor, a numpy array, a number, or a dict / list / tuple
    of them): what a modality a row does not carry becomes. ValueError naming `where` for
    anything else (a string, an object)."""
    if isinstance(value, Tensor):
        return torch.zeros_like(value)
    if isinstance(value, np.ndarray):
        return np.zeros_like(value)
    if isinstance(value, bool | int | float):
        return type(value)(0)
    if isinstance(value, Mapping):
        return {k: absent(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(absent(v, f"{where}[{j}]") for j, v in enumerate(value))
    raise ValueError(
        f"{where} is a {type(value).__name__}, which has no zeros: a row that does not carry "
        "this modality (a DUS row, an SMV extra item) needs zeros of its shape. Return tensors, "
        "arrays or numbers for modalities, or use wrap(..., output='multimodal')."
    )


def apply(data: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """`fn` on every tensor of a nested dict / list / tuple structure; other leaves as they
    are."""
    if isinstance(data, Tensor):
        return fn(data)
    if isinstance(data, BatchInfo):
        return data.moved(fn)
    if isinstance(data, Mapping):
        return {k: apply(v, fn) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return type(data)(apply(v, fn) for v in data)
    return data


class BatchInfo:
    """What a structured batch carries besides the user's data: `ids` (long `[B]`, the dataset
    indices), `mask` (long `[B]`, bit j = the j-th modality of `names` is carried) and `names`."""

    ids: Tensor
    mask: Tensor
    names: tuple[str, ...]

    def present(self, name: str) -> Tensor:
        """Bool `[B]`: which rows carry modality `name` (KeyError for an unknown name)."""
        if name not in self.names:
            raise KeyError(f"unknown modality {name!r}; the batch has {list(self.names)}")
        return (self.mask >> self.names.index(name) & 1) != 0

    def paired(self) -> Tensor:
        """Bool `[B]`: rows carrying every modality."""
        full = (1 << len(self.names)) - 1
        return (self.mask & full) == full

    def moved(self, fn: Callable[[Tensor], Tensor]) -> Any:
        raise NotImplementedError

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Any:
        """A copy with every tensor (ids and mask too) on `device`."""
        return self.moved(lambda x: x.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Any:
        """A page-locked copy (the DataLoader's pin-memory thread calls it)."""
        return self.moved(lambda x: x.pin_memory())


class TupleBatch(BatchInfo, tuple):
    """The user's collated tuple (`for audio, video, label in loader` unpacks it as before),
    with `ids`, `mask` and `names` attached (see `BatchInfo`)."""

    def __new__(
        cls, items: Sequence[Any], ids: Tensor, mask: Tensor, names: Sequence[str]
    ) -> TupleBatch:
        obj = super().__new__(cls, items)
        obj.ids, obj.mask, obj.names = ids, mask, tuple(names)
        return obj

    def __reduce__(self) -> Any:
        return (TupleBatch, (tuple(self), self.ids, self.mask, self.names))

    def moved(self, fn: Callable[[Tensor], Tensor]) -> TupleBatch:
        items = [apply(v, fn) for v in self]
        return TupleBatch(items, fn(self.ids), fn(self.mask), self.names)


class DictBatch(BatchInfo, dict):
    """The user's collated dict (same keys), with `ids`, `mask` and `names` attached (see
    `BatchInfo`)."""

    def __init__(
        self, items: Mapping[str, Any], ids: Tensor, mask: Tensor, names: Sequence[str]
    ) -> None:
        super().__init__(items)
        self.ids, self.mask, self.names = ids, mask, tuple(names)

    def __reduce__(self) -> Any:
        return (DictBatch, (dict(self), self.ids, self.mask, self.names))

    def moved(self, fn: Callable[[Tensor], Tensor]) -> DictBatch:
        items = {k: apply(v, fn) for k, v in self.items()}
        return DictBatch(items, fn(self.ids), fn(self.mask), self.names)


class StructuredCollate:
    """Picklable collate of `wrap(..., output="dataset")`: the user's `collate_fn` over the
    items' own structures (absent modalities already zeros) -> `TupleBatch` (a tuple or list
    came back) or `DictBatch` (a mapping came back). ValueError naming the collate for any
    other result."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any], names: Sequence[str]) -> None:
        self.collate_fn, self.names = collate_fn, tuple(names)

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> TupleBatch | DictBatch:
        data = self.collate_fn([s["sample"] for s in samples])
        ids = torch.tensor([int(s["id"]) for s in samples], dtype=torch.long)
        mask = torch.tensor([int(s["mask"]) for s in samples], dtype=torch.long)
        if isinstance(data, Mapping):
            return DictBatch(data, ids, mask, self.names)
        if isinstance(data, list | tuple):
            return TupleBatch(data, ids, mask, self.names)
        raise ValueError(
            f"wrap: the DataLoader's collate_fn returned a {type(data).__name__}; the batch "
            "structure is kept for a tuple, list or dict. Use wrap(..., output='multimodal') "
            "(a MultimodalBatch, each modality collated by your collate_fn)."
        )
