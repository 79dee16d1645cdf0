"""EncoderGates: the model hook that runs each encoder only on the rows carrying its modality.

Place in the data flow: a batch with absent modalities (DUS rows, SMV extra items: zeros of the
right shape) -> the user's model -> **gated encoders** -> the user's fusion and head. A zero
input is not an absent modality (encoder(0) != 0, and BatchNorm statistics would take the
zeros in), so a gated encoder runs on the carried rows only and its output has zero features
on the others (late fusion's meaning of "absent"). The gates also keep each encoder's output of
the step, so the subset passes (`replay`) re-run only the fusion and head with some modalities'
features zeroed, never the encoders.

A gate replaces the encoder module's `forward` attribute on the instance (the module, its
parameters and state_dict keys are unchanged); `remove()` puts the original back. Outside
`carry` / `replay` a gated encoder behaves as before. A batch in which one row carries a
modality runs that encoder in eval mode for it (BatchNorm has no batch statistics of one row).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Within: every submodule in eval mode (no dropout, BatchNorm statistics untouched)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def rows_of(value: Any, rows: Tensor, size: int) -> Any:
    """`value` restricted to `rows` where it is batched (a tensor whose first dim is `size`, or
    a dict / list / tuple of them); anything else as it is."""
    if isinstance(value, Tensor):
        return value[rows.to(value.device)] if value.dim() and value.shape[0] == size else value
    if isinstance(value, Mapping):
        return {k: rows_of(v, rows, size) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(rows_of(v, rows, size) for v in value)
    return value


class EncoderGates:
    """Gates on `encoders` (`{modality name: module}`, modality j = the j-th entry)."""

    def __init__(self, encoders: Mapping[str, nn.Module]) -> None:
        self.names = tuple(encoders)
        self.encoders = dict(encoders)
        self.present: Tensor | None = None  # bool [B, M] while carrying a batch
        self.subset: int | None = None  # the modalities kept while replaying
        self.features: list[Tensor | None] = [None] * len(self.names)
        self.shapes: list[tuple[torch.Size, torch.dtype] | None] = [None] * len(self.names)
        self.originals: dict[str, Callable[..., Any]] = {}
        for j, (name, module) in enumerate(self.encoders.items()):
            self.originals[name] = module.forward
            module.forward = self._gate(j, name, module.forward)

    def remove(self) -> None:
        """Put every encoder's own forward back."""
        for module in self.encoders.values():
            if "forward" in vars(module):
                del module.forward
        self.originals.clear()

    @contextmanager
    def carry(self, present: Tensor) -> Iterator[None]:
        """Within: encoder j runs on the rows where `present[:, j]` (bool `[B, M]`)."""
        self.present, self.subset = present, None
        self.features = [None] * len(self.names)
        try:
            yield
        finally:
            self.present = None

    @contextmanager
    def replay(self, subset: int) -> Iterator[None]:
        """Within: encoder j returns its features of the last carried batch if bit j of
        `subset` is set, else zeros of their shape (the encoder does not run)."""
        self.subset = subset
        try:
            yield
        finally:
            self.subset = None

    def _gate(self, j: int, name: str, forward: Callable[..., Any]) -> Callable[..., Any]:
        def gated(*args: Any, **kwargs: Any) -> Any:
            if self.subset is not None:
                z = self.features[j]
                if z is None:
                    raise RuntimeError(f"encoder {name!r} did not run in the carried batch")
                return z if self.subset >> j & 1 else torch.zeros_like(z)
            if self.present is None:
                return forward(*args, **kwargs)
            out = self._run(j, name, forward, args, kwargs)
            self.features[j] = out.detach()
            self.shapes[j] = (out.shape[1:], out.dtype)
            return out

        return gated

    def _run(
        self,
        j: int,
        name: str,
        forward: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Tensor:
        assert self.present is not None  # _gate checked it
        rows = self.present[:, j]
        size = int(rows.shape[0])
        index = rows.nonzero().squeeze(1)
        if len(index) == 0:
            shape = self.shapes[j]
            if shape is None:
                raise RuntimeError(f"encoder {name!r}: no output shape known yet")
            return torch.zeros((size, *shape[0]), dtype=shape[1], device=rows.device)
        # one row has no batch statistics (BatchNorm refuses it in training): eval mode for it
        alone = eval_mode(self.encoders[name]) if len(index) == 1 else nullcontext()
        with alone:
            if len(index) == size:
                return self._checked(name, forward(*args, **kwargs), size)
            carried = forward(*rows_of(args, index, size), **rows_of(kwargs, index, size))
        carried = self._checked(name, carried, len(index))
        full = carried.new_zeros((size, *carried.shape[1:]))
        return full.index_put((index.to(carried.device),), carried)

    def _checked(self, name: str, out: Any, rows: int) -> Tensor:
        if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != rows:
            got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"encoder {name!r} must map the {rows} rows carrying {name!r} to features "
                f"[{rows}, ...] (its input batched along dim 0, as the loader yields it); got "
                f"{got}. Reshape inside the encoder, pass Balancer.setup(..., encoders=...) "
                "naming modules that do, or run encoders on `batch.present(name)` rows yourself "
                "(see mmsample.user_batch)."
            )
        return out
