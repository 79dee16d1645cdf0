"""What `Balancer.setup` reads off a user's model and dataset: the modality fields, the encoders.

Place in the data flow: the user's model (`forward(audio, video)`: the modalities, in order) and
one dataset item (a tuple `(audio, video, label)` or a dict) -> **fields** (`{modality: tuple
position or dict key, "label": ...}`, as `wrap` takes them) and **encoders** (the submodules
named like the modalities). Every refusal names what to pass instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

LABEL = "label"
POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def forward_names(model: nn.Module) -> list[str]:
    """The names of `model.forward`'s positional parameters (the modalities, in order)."""
    params = inspect.signature(model.forward).parameters.values()
    return [p.name for p in params if p.kind in POSITIONAL]


def infer_fields(model: nn.Module, item: Any) -> dict[str, int | str]:
    """`{modality: position or key, ..., "label": ...}` for `item` (a dataset item) and a model
    whose forward takes the modalities in order. Tuple items: the modalities are positions
    0..M-1, the label position M (the last). Dict items: the modalities are the keys named like
    forward's parameters, the label key "label" (or the one key left). ValueError naming
    `fields` otherwise."""
    names = forward_names(model)
    fix = (
        "pass Balancer.setup(..., fields={'audio': 0, 'video': 1, 'label': 2}) (tuple "
        "positions or dict keys, modalities in the order forward takes them)"
    )
    if len(names) < 2:
        raise ValueError(
            f"Balancer.setup: {type(model).__name__}.forward takes {names} positionally; a "
            f"late-fusion model takes one argument per modality (M >= 2). Otherwise {fix}."
        )
    if isinstance(item, Mapping):
        missing = [n for n in names if n not in item]
        rest = [k for k in item if k not in names]
        label = LABEL if LABEL in item else (rest[0] if len(rest) == 1 else None)
        if missing or label is None:
            raise ValueError(
                f"Balancer.setup: the dataset's dict items have keys {list(item)}; forward "
                f"takes {names}" + (f" (no key {missing})" if missing else "") + " and the "
                f"label key is not 'label' nor the only other key; {fix}."
            )
        return {**{n: n for n in names}, LABEL: label}
    if isinstance(item, Sequence) and not isinstance(item, str) and len(item) == len(names) + 1:
        return {**{n: j for j, n in enumerate(names)}, LABEL: len(names)}
    kind = f"a {type(item).__name__}" + (f" of {len(item)}" if isinstance(item, Sequence) else "")
    raise ValueError(
        f"Balancer.setup: a dataset item is {kind}; with forward taking {names} it must be a "
        f"tuple ({', '.join(names)}, label) or a dict with those keys; {fix}."
    )


def check_fields(fields: Mapping[str, int | str], item: Any) -> None:
    """`fields` must name a label and at least two modalities, each a position or key that
    `item` (one dataset item) has. ValueError naming `fields` and what the item holds."""
    if LABEL not in fields or len(fields) < 3:
        raise ValueError(
            f"The 'fields' parameter of Balancer.setup must name the label and two or more "
            f"modalities, e.g. {{'audio': 0, 'video': 1, 'label': 2}}; got {dict(fields)}."
        )
    for name, where in fields.items():
        try:
            item[where]
        except (KeyError, IndexError, TypeError):
            held = list(item) if isinstance(item, Mapping) else f"{len(item)} positions"
            raise ValueError(
                f"The 'fields' parameter of Balancer.setup: {name!r} -> {where!r}, but a "
                f"dataset item ({type(item).__name__}) holds {held}."
            ) from None


def named_encoders(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """`{modality: model.<modality>}`: the encoder submodules named like the modalities.
    ValueError naming `encoders` when one is missing or not a module."""
    out: dict[str, nn.Module] = {}
    for name in names:
        module = getattr(model, name, None)
        if not isinstance(module, nn.Module):
            raise ValueError(
                f"Balancer.setup: {type(model).__name__} has no submodule {name!r} (the encoder "
                f"of modality {name!r}); name the encoders like the modalities, or pass "
                f"encoders={{{', '.join(f'{n!r}: model.<its encoder>' for n in names)}}}."
            )
        out[name] = module
    return out
