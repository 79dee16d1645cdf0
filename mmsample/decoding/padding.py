"""Stack the tensors of one modality into one batch tensor, padding to the largest of each dim.

Place in the data flow: `mmsample.batch.collate` calls `pad_stack` once per modality (and per
key of dict data such as Text's input_ids / attention_mask). Rows of equal shape are stacked as
they are; rows whose shapes differ are padded at the end of every dim that differs (text and
MFCC frames: the length; images: height and width; audio: channels and frames) with a pad value,
and the original shape of every row is returned, so a model can mask the padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["PadValue", "PaddingError", "pad_stack", "valid_mask"]

PadValue = int | float | None  # None: rows must have equal shapes (no padding)


class PaddingError(ValueError):
    """The rows of one modality cannot be stacked; the message names the modality and the fix."""


def pad_stack(
    values: Sequence[torch.Tensor], pad: PadValue, *, name: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(`[n, *max shape]` tensor, sizes) from n tensors of equal ndim and dtype.

    sizes is None when every row has the same shape (plain `torch.stack`), else long `[n, ndim]`,
    each row's shape before padding. Pad elements hold `pad` (cast to the rows' dtype). Raises
    PaddingError naming modality `name` when the ndims or dtypes differ, or when shapes differ
    and `pad` is None.
    """
    tensors = [torch.as_tensor(v) for v in values]
    first = tensors[0]
    shapes = [tuple(t.shape) for t in tensors]
    if all(s == shapes[0] for s in shapes):
        try:
            return torch.stack(tensors), None
        except (RuntimeError, TypeError) as err:
            raise PaddingError(f"collate: modality {name!r}: {err}") from None
    dtypes = sorted({str(t.dtype) for t in tensors})
    ndims = sorted({t.ndim for t in tensors})
    if len(ndims) > 1 or len(dtypes) > 1:
        raise PaddingError(
            f"collate: modality {name!r} has rows of different ranks or dtypes (shapes "
            f"{_few(shapes)}, dtypes {dtypes}); padding needs the same number of dims and one "
            f"dtype: decode every sample of {name!r} with the same spec settings (e.g. "
            f"Audio(mono=True), an Array dtype=...)."
        )
    if pad is None:
        raise PaddingError(
            f"collate: modality {name!r} has rows of different shapes {_few(shapes)} and "
            f"Collate was told not to pad it (pad={{{name!r}: None}}); give it a pad value, "
            f"e.g. Collate(names, pad={{{name!r}: 0}}), or a fixed size in its spec (e.g. "
            f"Image(size=224), Audio(seconds=...), Text(padding='max_length'))."
        )
    sizes = torch.tensor(shapes, dtype=torch.long)
    top = sizes.amax(0).tolist()
    out = first.new_full((len(tensors), *top), pad)
    for i, t in enumerate(tensors):
        where: tuple[int | slice, ...] = (i, *(slice(0, d) for d in t.shape))
        out[where] = t
    return out, sizes


def valid_mask(sizes: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Bool `[n, *shape]`: True where an element of the padded batch belongs to its row
    (`sizes` long `[n, ndim]`, the rows' shapes before padding)."""
    n, ndim = sizes.shape
    mask = torch.ones((n, *(1,) * ndim), dtype=torch.bool, device=sizes.device)
    for d, extent in enumerate(shape):
        view = [1] * (ndim + 1)
        view[0], view[d + 1] = n, extent
        inside = torch.arange(extent, device=sizes.device) < sizes[:, d : d + 1]
        mask = mask & inside.view(view)
    return mask.expand(n, *shape)


def _few(shapes: list[tuple[int, ...]]) -> str:
    distinct = list(dict.fromkeys(shapes))
    shown = ", ".join(str(list(s)) for s in distinct[:4])
    return f"{shown}, ..." if len(distinct) > 4 else shown
