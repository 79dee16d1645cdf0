"""Argument checks of the Ledger and the errors that name the argument and the samples.

Place in the data flow: `Ledger.observe` runs the metadata checks (shapes, dtypes, devices) and
the range checks of CPU ids and labels on every call; the staging ring runs the checks that need
the values of device tensors (ranges, NaN / inf) when it is drained. Logits may hold -inf (a class
the model masks out) but never NaN or +inf, and every row needs one finite logit; `values` must be
finite (`mmsample.signals.subset_correct` counts a subset whose logits are not as wrong, so the
values it gives always are). Errors name the argument
(and, for bad values, the offending global sample ids) so a user can find the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

SHOWN = 8  # ids named in an error message
SMALL = 512  # ids and labels of batches up to this size are range-checked as Python ints


def check_int(
    name: str, value: object, low: int, *, where: str = "Ledger", high: int | None = None
) -> None:
    """Raise unless `value` is an int in [low, high] (a parameter of `where`, or an argument)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):  # type: ignore[operator]
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        kind = "parameter" if where == "Ledger" else "argument"
        raise ValueError(f"The '{name}' {kind} of {where} must be an int {bound}; got {value!r}.")


def check_names(names: object, m: int) -> tuple[str, ...]:
    """The modality names of a Ledger: `m` distinct non-empty strings."""
    if not isinstance(names, Sequence) or isinstance(names, str) or len(names) != m:
        raise ValueError(
            f"The 'names' parameter of Ledger must be a sequence of {m} modality names; "
            f"got {names!r}."
        )
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(
            f"The 'names' parameter of Ledger must hold distinct non-empty strings; "
            f"got {list(names)!r}."
        )
    return tuple(names)


def arg_error(name: str, expected: str, got: object) -> ValueError:
    """The error for an `observe` argument of the wrong kind, shape or device."""
    if isinstance(got, Tensor):
        desc = f"{got.dtype} tensor of shape {list(got.shape)} on {got.device}"
    else:
        desc = type(got).__name__
    return ValueError(f"The '{name}' argument of Ledger.observe must be {expected}; got {desc}.")


_INTS = frozenset(
    {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}
    | {getattr(torch, f"uint{bits}") for bits in (16, 32, 64) if hasattr(torch, f"uint{bits}")}
)


def check_batch(
    ids: Tensor,
    labels: Tensor,
    unimodal_logits: Sequence[Tensor],
    fused_logits: Tensor | None,
    values: Tensor | None,
    num_classes: int,
    names: Sequence[str],
    device: torch.device | None,
) -> tuple[list[Tensor], Tensor, Tensor]:
    """Metadata checks of one `observe` batch (shapes, dtypes, devices; no reads of tensor
    values). Returns the heads (unimodal, then fused if given) and int64 ids and labels."""
    if not isinstance(ids, Tensor) or ids.ndim != 1 or ids.dtype not in _INTS:
        raise arg_error("ids", "an integer tensor of shape [B]", ids)
    b, k, m = ids.shape[0], num_classes, len(names)
    if not isinstance(labels, Tensor) or labels.shape != (b,) or labels.dtype not in _INTS:
        raise arg_error("labels", f"an integer tensor of shape [{b}] (like 'ids')", labels)
    if isinstance(unimodal_logits, Tensor) or len(unimodal_logits) != m:
        got = "a tensor" if isinstance(unimodal_logits, Tensor) else len(unimodal_logits)
        raise ValueError(
            f"The 'unimodal_logits' argument of Ledger.observe must be a sequence of "
            f"{m} tensors (one per modality: {', '.join(names)}); got {got}."
        )
    heads = [*unimodal_logits] if fused_logits is None else [*unimodal_logits, fused_logits]
    shape = (b, k)
    for j, h in enumerate(heads):
        if not isinstance(h, Tensor) or h.shape != shape or not h.is_floating_point():
            name = "fused_logits" if j == m else f"unimodal_logits[{j}]"
            raise arg_error(name, f"a floating tensor of shape [{b}, {k}]", h)
    if values is not None:
        if not isinstance(values, Tensor) or values.shape != (b, 1 << m):
            raise arg_error("values", f"a floating tensor of shape [{b}, {1 << m}]", values)
        if not values.is_floating_point():
            raise arg_error("values", "a floating tensor", values)
    on_cpu = [h.is_cpu for h in heads]
    if values is not None:
        on_cpu.append(values.is_cpu)
    if not (all(on_cpu) and ids.is_cpu and labels.is_cpu and device is None):
        _check_devices(ids, labels, heads, values, device, m)
    ids = ids if ids.dtype == torch.int64 else ids.long()
    return heads, ids, labels if labels.dtype == torch.int64 else labels.long()


def _check_devices(
    ids: Tensor,
    labels: Tensor,
    heads: list[Tensor],
    values: Tensor | None,
    device: torch.device | None,
    m: int,
) -> None:
    """The logits and values on one device (the Ledger's, if set); ids, labels there or on
    the CPU."""
    dev = heads[0].device
    if device is not None and (dev.type != device.type or device.index not in (None, dev.index)):
        raise ValueError(
            f"The 'unimodal_logits' argument of Ledger.observe must be on {device} "
            f"(the Ledger's 'device'); got {dev}."
        )
    for j, h in enumerate(heads):
        if h.device != dev:
            name = "fused_logits" if j == m else f"unimodal_logits[{j}]"
            raise ValueError(
                f"The '{name}' argument of Ledger.observe must be on {dev} like "
                f"'unimodal_logits[0]'; got {h.device}."
            )
    if values is not None and values.device != dev:
        raise arg_error("values", f"a floating tensor on {dev}", values)
    for name, t in (("ids", ids), ("labels", labels)):
        if t.device != dev and t.device.type != "cpu":
            raise ValueError(
                f"The '{name}' argument of Ledger.observe must be on the CPU or on {dev} "
                f"(with the logits); got {t.device}."
            )


def checked_ints(name: str, t: Tensor, ids: Tensor, high: int) -> list[int] | Tensor:
    """The CPU int64 tensor `t` (ids or labels) once its values are in [0, high): as a list
    of Python ints for a small batch (cheapest to check and to keep), else a copy."""
    if t.shape[0] <= SMALL:
        values = t.tolist()
        if min(values) < 0 or max(values) >= high:
            raise range_error(name, t, ids, high)
        return values
    lo, hi = torch.aminmax(t)
    if lo.item() < 0 or hi.item() >= high:
        raise range_error(name, t, ids, high)
    return t.clone()


def range_error(name: str, t: Tensor, ids: Tensor, high: int) -> ValueError:
    """`t` (ids or labels of the samples `ids`) holds values outside [0, high)."""
    t, ids = t.cpu(), ids.cpu()
    bad = (t < 0) | (t >= high)
    what = "global sample ids" if name == "ids" else "class indices"
    shown = t[bad][:SHOWN].tolist()
    where = "" if name == "ids" else f" at ids {ids[bad][:SHOWN].tolist()}"
    return ValueError(
        f"The '{name}' argument of Ledger.observe must hold {what} in [0, {high}); got "
        f"{int(bad.sum())} out of range: {shown}{where}."
    )


def all_finite(t: Tensor) -> bool:
    """Whether `t` holds no NaN or inf: one reduction (NaN and inf show in the extremes)."""
    lo, hi = torch.aminmax(t)
    return math.isfinite(lo.item()) and math.isfinite(hi.item())


def usable_logit_rows(z: Tensor) -> Tensor:
    """Bool `[...]` for logits `z` `[..., K]`: whether each row has no NaN, no +inf and at least
    one finite logit. -inf is a masked class (probability 0), so it is allowed; one reduction
    (the row maximum is NaN, +inf or -inf exactly when the row is unusable)."""
    return torch.isfinite(z.amax(-1))


def usable_logits(z: Tensor) -> bool:
    """Whether every row of the logits `z` `[..., K]` is usable (see `usable_logit_rows`). One
    reduction when every logit is finite (the common case, as cheap as `all_finite`); the row
    maxima only when some logit is -inf."""
    lo, hi = (v.item() for v in torch.aminmax(z))  # NaN propagates into both
    if math.isfinite(lo) and math.isfinite(hi):
        return True
    if math.isnan(lo) or math.isnan(hi) or hi == math.inf:
        return False
    return bool(usable_logit_rows(z).all())


def finite_error(ids: Tensor, finite: Tensor, names: Sequence[str]) -> ValueError:
    """`finite` `[B, R]`: whether head (column) r of row i passed (`usable_logit_rows` for
    logits, all finite for `values`); `names` name the heads."""
    col = int((~finite).any(0).nonzero()[0])
    bad = ~finite[:, col].cpu()
    if names[col] == "values":
        what = "NaN or inf"
        hint = (
            "subset values are finite: compute them with mmsample.signals.subset_correct "
            "(`subset_correct(logits, labels, ids) * subset_sizes(M)`), which counts a subset "
            "whose logits are NaN or inf as wrong (value 0) and warns naming the ids."
        )
    else:
        what = "NaN or +inf (or -inf for every class)"
        hint = "-inf logits are accepted (a masked class gets probability 0)."
    return ValueError(
        f"The '{names[col]}' argument of Ledger.observe holds {what} for "
        f"{int(bad.sum())} sample(s), ids {ids.cpu()[bad][:SHOWN].tolist()}; check the "
        f"model's outputs (a diverged loss, an fp16 overflow) before observing. {hint}"
    )


def check_present(present: object, ids: Tensor, m: int, device: torch.device) -> Tensor:
    """The `present` argument of `observe`: a bool tensor `[B, M]` on the CPU or on the logits'
    device (`MultimodalBatch.present(name)` gives one column per modality)."""
    b = ids.shape[0]
    if not isinstance(present, Tensor) or present.shape != (b, m) or present.dtype != torch.bool:
        raise arg_error(
            "present",
            f"a bool tensor of shape [{b}, {m}] (which modalities each row carried, e.g. "
            "torch.stack([batch.present(name) for name in names], 1))",
            present,
        )
    if present.device != device and present.device.type != "cpu":
        raise arg_error("present", f"a bool tensor on the CPU or on {device}", present)
    return present
