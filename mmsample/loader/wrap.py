"""`wrap`: a balancing method around a user's existing map-style Dataset / DataLoader.

Place in the data flow: the user's `Dataset.__getitem__` (their own decoding) -> **wrap**
(plan applied by dataset index = sample id) -> the user's collate_fn -> the batch. The loader
keeps the user's batch size, drop_last, workers, pin_memory, persistent_workers,
worker_init_fn and collate function, and splits ranks itself.

Output (`output=`): "dataset" (default) keeps the dataset's structure: tuples stay tuples,
dicts stay dicts, collated by the user's collate_fn as their DataLoader does, a modality a row
does not carry is zeros of its shape, and the rows' ids and modality masks travel with the
batch (`mmsample.user_batch.TupleBatch` / `DictBatch`: `batch.ids`, `batch.mask`,
`batch.present(name)`). "multimodal" gives a `MultimodalBatch` (each modality's carried rows,
collated by the user's collate_fn). No decode is saved: the user's dataset decodes every field.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence, Sized
from typing import Any, cast

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, SequentialSampler
from torch.utils.data._utils.collate import default_collate

from ..batch import Collate
from ..ledger import Ledger
from ..schedule import resolve_world
from ..user_batch import StructuredCollate, absent
from .arguments import attach
from .control import Scorer
from .dataset import BalancedDataset
from .loader import BalancedLoader

LABEL = "label"


def _structure(names: Sequence[str], collate_fn: Callable[[list[Any]], Any]) -> Any:
    return StructuredCollate(collate_fn, names)


def _multimodal(names: Sequence[str], collate_fn: Callable[[list[Any]], Any]) -> Any:
    return Collate(names, collate_fn=collate_fn)


# what the loader yields, by `output=`: the batch former for (modality names, user's collate)
OUTPUTS: dict[str, Callable[[Sequence[str], Callable[[list[Any]], Any]], Any]] = {
    "dataset": _structure,
    "multimodal": _multimodal,
}


def integer_label(label: Any, sample_id: int) -> int:
    """The class index of one dataset item: an int, or a number / one-element tensor or array
    holding a whole number. ValueError naming the item otherwise (a one-hot or soft label, or a
    fraction, which `int()` would silently truncate)."""
    try:
        arr = np.asarray(label)
    except (TypeError, ValueError, RuntimeError):
        arr = np.asarray(None)
    if arr.size != 1 or arr.dtype.kind not in "iuf":
        shape = tuple(getattr(label, "shape", ()))
        raise ValueError(
            f"wrap: sample {sample_id}'s label is a {type(label).__name__}"
            + (f" of shape {shape}" if shape else "")
            + "; the methods need one class index per sample (an int in [0, K)). For one-hot "
            "or soft labels give the class index (e.g. label.argmax()) in the dataset."
        )
    value = arr.reshape(()).item()
    if float(value) != int(value):
        raise ValueError(
            f"wrap: sample {sample_id}'s label is {value!r}, not a whole number; give its class "
            "index (an int in [0, K))."
        )
    return int(value)


class DatasetFetch:
    """`fetch(id, mask, item, epoch)` from a map-style dataset returning tuples or dicts:
    output "multimodal", a decoded-sample dict (the carried modalities' values); output
    "dataset", `{"id", "mask", "label", "key", "sample"}` with `sample` the dataset's own item,
    the modalities the mask leaves out replaced by zeros of their shape."""

    def __init__(
        self,
        dataset: Any,
        fields: Mapping[str, int | str],
        names: Sequence[str],
        output: str = "multimodal",
    ):
        self.dataset, self.fields, self.names = dataset, dict(fields), tuple(names)
        self.output = output

    def __call__(
        self, sample_id: int, mask: int, item: int, epoch: int, fallback: int | None = None
    ) -> dict[str, Any]:
        if mask == 0 and fallback is not None:  # the user's samples carry every field
            mask = fallback
        raw = self.dataset[sample_id]
        try:
            label = integer_label(raw[self.fields[LABEL]], sample_id)
            out: dict[str, Any] = {
                "id": sample_id,
                "label": label,
                "mask": mask,
                "key": str(sample_id),
            }
            if self.output == "dataset":
                out["sample"] = self._zeroed(raw, mask, sample_id)
                return out
            for j, name in enumerate(self.names):
                if mask >> j & 1:
                    out[name] = raw[self.fields[name]]
        except (KeyError, IndexError, TypeError) as err:
            kind = type(raw).__name__
            raise ValueError(
                f"wrap: sample {sample_id} of the dataset is a {kind} without the field the "
                f"'fields' argument names ({err}); fields = {self.fields}"
            ) from err
        return out

    def _zeroed(self, raw: Any, mask: int, sample_id: int) -> Any:
        """The item with the modalities `mask` leaves out as zeros (same type and shape)."""
        if mask == (1 << len(self.names)) - 1:
            return raw
        parts = dict(raw) if isinstance(raw, Mapping) else list(raw)
        for j, name in enumerate(self.names):
            if not mask >> j & 1:
                key = self.fields[name]
                parts[key] = absent(parts[key], f"sample {sample_id}'s field {key!r}")  # type: ignore[index]
        if isinstance(raw, Mapping):
            return parts
        if isinstance(raw, tuple):
            # a namedtuple (or another tuple type) is built from its fields in order
            return tuple(parts) if type(raw) is tuple else type(raw)(*parts)
        return parts


def check_wrapped(dataloader: Any, fields: Any) -> None:
    """ValueError naming the parameter unless `dataloader` is a DataLoader over a map-style
    Dataset with a batch size and a sequential or random sampler, and `fields` maps modality
    names (at least one) and "label" to tuple positions or dict keys (None: not checked)."""
    if not isinstance(dataloader, DataLoader):
        raise ValueError(
            f"The 'dataloader' parameter of wrap must be a torch DataLoader; got "
            f"{type(dataloader).__name__}."
        )
    dataset = dataloader.dataset
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
        raise ValueError(
            "The 'dataloader' parameter of wrap must be over a map-style Dataset (with __len__ "
            "and __getitem__: the index is the sample id); for shards use balanced_loader."
        )
    sampler = dataloader.sampler
    if not isinstance(sampler, SequentialSampler | RandomSampler):
        raise ValueError(
            f"The 'dataloader' parameter of wrap has a {type(sampler).__name__}; wrap supports "
            "shuffle=True or False only (it splits ranks itself: drop any DistributedSampler)."
        )
    if dataloader.batch_size is None:
        raise ValueError("The 'dataloader' parameter of wrap must have a batch_size.")
    if fields is None:  # Balancer.setup: the fields are read off the model later
        return
    if not isinstance(fields, Mapping) or LABEL not in fields or len(fields) < 2:
        raise ValueError(
            "The 'fields' parameter of wrap must map each modality name to its tuple position "
            f"or dict key, plus 'label'; e.g. {{'audio': 0, 'image': 1, 'label': 2}}; got {fields!r}."
        )


def bind_ledger(
    method: Any, n: int, names: Sequence[str], num_classes: int | None, batch_size: int
) -> None:
    """Give a method built without a Ledger one of `n` ids named `names` (its settings left
    None take the DataLoader's batch size); ValueError naming `num_classes` when it is None."""
    if method is None or not callable(getattr(method, "bind", None)) or method.bound:
        return
    if num_classes is None:
        raise ValueError(
            f"The 'method' parameter of wrap: {type(method).__name__} was built without a "
            "Ledger; give wrap num_classes=... (it binds Ledger(len(dataset), M, num_classes)),"
            " build the method on a Ledger, or use mmsample.Balancer."
        )
    method.set_run(batch_size=batch_size)
    method.bind(Ledger(n, len(names), num_classes, names=list(names)))


def wrap(
    dataloader: DataLoader[Any],
    method: Any = None,
    *,
    fields: Mapping[str, int | str],
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    log: str | os.PathLike[str] | None = None,
    scorer: Scorer | None = None,
    output: str = "dataset",
    num_classes: int | None = None,
) -> BalancedLoader:
    """Put `method` around an existing DataLoader over a map-style Dataset.

    Args:
        dataloader: a DataLoader whose dataset returns a tuple or a dict per index (the index is
            the sample id), with a SequentialSampler (shuffle=False) or RandomSampler
            (shuffle=True; the wrapped loader then permutes each epoch by (seed, epoch)). Its
            batch_size is kept, except under DUS, whose rows per batch replace it.
        method: DUS, BSS or SMV on a Ledger with `len(dataset)` ids or more, or built
            without one (then `num_classes` is required: wrap binds a Ledger of `len(dataset)`
            ids named like the modalities), or None.
        fields: `{modality name: tuple position or dict key, ..., "label": position or key}`;
            modality bit j is the j-th modality listed.
        seed, rank, world_size, log: as in `balanced_loader`.
        scorer: `scorer(ids)` runs a scoring pass over those dataset indices (BSS's ranking,
            SMV-reference's valuation): `mmsample.position_scoring.PositionScorer` runs a
            model over this dataset with its collate_fn.
        output: "dataset" (default): batches keep the dataset's structure (a tuple dataset
            yields tuples, a dict dataset dicts: `TupleBatch` / `DictBatch` of
            `mmsample.user_batch`, with `ids` and `mask`); "multimodal": `MultimodalBatch`.
        num_classes: the classes of the Ledger wrap binds to a method built without one.

    Raises ValueError naming the argument for an iterable dataset, a custom sampler, a missing
    label field, an unknown output, a ledger that does not fit, or an unbound method without
    `num_classes`.
    """
    check_wrapped(dataloader, fields)
    if output not in OUTPUTS:
        raise ValueError(
            f"The 'output' parameter of wrap must be one of {list(OUTPUTS)}; got {output!r}."
        )
    dataset, sampler = dataloader.dataset, dataloader.sampler
    assert dataloader.batch_size is not None  # check_wrapped refused None
    names = tuple(k for k in fields if k != LABEL)
    n = len(cast(Sized, dataset))  # check_wrapped: a map-style dataset with __len__
    rank_, world = resolve_world(rank, world_size, "wrap")
    ids = np.arange(n, dtype=np.int64)
    bind_ledger(method, n, names, num_classes, int(dataloader.batch_size))
    control = attach(
        method,
        ids=ids,
        id_space=n,
        names=names,
        batch_size=int(dataloader.batch_size),
        scorer=scorer,
        log=log,
        rank=rank_,
        owner="wrap",
    )
    num_ids = control.num_ids
    collate_fn = dataloader.collate_fn if dataloader.collate_fn is not None else default_collate
    ds = BalancedDataset(
        mode="indexed",
        reader=dataset,
        fetch=DatasetFetch(dataset, fields, names, output),
        ids=ids,
        names=names,
        collate=OUTPUTS[output](names, collate_fn),
        epoch_hook=control,
        num_ids=num_ids,
        seed=seed,
        rank=rank_,
        world_size=world,
        shuffle=isinstance(sampler, RandomSampler),
        batch_size=int(dataloader.batch_size),
        drop_last=dataloader.drop_last,
    )
    extra: dict[str, Any] = {}
    if dataloader.num_workers > 0:
        extra["prefetch_factor"] = dataloader.prefetch_factor
        extra["persistent_workers"] = dataloader.persistent_workers
    return BalancedLoader(
        ds,
        control,
        num_workers=dataloader.num_workers,
        pin_memory=dataloader.pin_memory,
        timeout=dataloader.timeout,
        worker_init_fn=dataloader.worker_init_fn,
        multiprocessing_context=dataloader.multiprocessing_context,
        **extra,
    )
