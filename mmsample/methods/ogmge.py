"""OGM-GE (Peng et al. 2022): on-the-fly gradient modulation with generalisation enhancement.

The one training-side piece of mmsample: called between `loss.backward()` and `optimizer.step()`
with the batch's per-modality discrepancy scores (`mmsample.signals.discrepancy` of each
modality's unimodal logits), it scales the gradients of each named encoder by its coefficient
(`mmsample.signals.ogm_coefficients`) and, with GE, adds Gaussian noise. DUS builds on the same
score, so users combine the two.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..signals.discrepancy import ogm_coefficients
from ..stateful import Stateful

__all__ = ["OGMGE", "OGMGE_NOISE", "OGMGE_PARAMS"]


def _every_tensor(param: Tensor) -> bool:
    return True


def _conv_kernels(param: Tensor) -> bool:
    return param.ndim == 4


# which parameters of an encoder are modulated: "all" (the paper), "conv" (the authors' code:
# 4-D conv kernels only, `len(grad.size()) == 4`)
OGMGE_PARAMS: dict[str, Callable[[Tensor], bool]] = {
    "all": _every_tensor,
    "conv": _conv_kernels,
}


def _noise_everywhere(coefficient: Tensor) -> Tensor:
    return torch.ones((), dtype=torch.bool, device=coefficient.device)


def _noise_where_modulated(coefficient: Tensor) -> Tensor:
    return coefficient < 1


# which encoders get GE noise: "all" (paper and authors' code: every encoder, every step in the
# window), "modulated" (only encoders whose coefficient is < 1 this step)
OGMGE_NOISE: dict[str, Callable[[Tensor], Tensor]] = {
    "all": _noise_everywhere,
    "modulated": _noise_where_modulated,
}


class OGMGE(Stateful):
    """Gradient modulation hook: `k_u = 1 - tanh(alpha * rho_u)` for the dominant modality u.

    `OGMGE(encoders={"audio": m.audio, "video": m.visual}, alpha=0.1)`; after `backward()` call
    `hook(scores, epoch)`. Built without encoders (`OGMGE(alpha=0.1)`), it is bound later
    (`bind`; `mmsample.Balancer` binds the model's named encoders and calls the hook from an
    optimizer step pre-hook). Within epochs `start..end` (inclusive) each selected gradient g of
    encoder u becomes `k_u * g` and, with `ge=True`, `k_u * g + N(0, sigma^2)` with sigma the
    unbiased std of the unscaled g plus 1e-8 (0 + 1e-8 for one-element tensors). Noise comes
    from `generator` (on the parameters' device) or the global RNG. `tie_modulates` names the
    modality modulated at rho == 1 (the authors' code: the first, audio); see `ogm_coefficients`.

    State (`mmsample.stateful.Stateful`): compatible with the encoder names and every setting
    (and the noise generator's device, None without one); saves the generator's state.
    """

    STATE_FORMAT = "mmsample.OGMGE"
    STATE_VERSION = 2
    SAVED_FIELDS = ("generator",)
    STATE_FIX = "build the hook with the encoders, settings and kind of 'generator' it had."

    def __init__(
        self,
        encoders: Mapping[str, nn.Module] | None = None,
        alpha: float = 0.1,
        ge: bool = True,
        start: int = 0,
        end: int = 50,
        params: str = "all",
        noise: str = "all",
        tie_modulates: str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not alpha > 0:
            raise ValueError(f"The 'alpha' parameter of OGMGE must be > 0; got {alpha}.")
        if not isinstance(start, int) or start < 0:
            raise ValueError(f"The 'start' parameter of OGMGE must be an int >= 0; got {start!r}.")
        if not isinstance(end, int) or end < start:
            raise ValueError(
                f"The 'end' parameter of OGMGE must be an int >= start ({start}); got {end!r}."
            )
        if params not in OGMGE_PARAMS:
            raise ValueError(
                f"The 'params' parameter of OGMGE must be one of {sorted(OGMGE_PARAMS)}; "
                f"got {params!r}."
            )
        if noise not in OGMGE_NOISE:
            raise ValueError(
                f"The 'noise' parameter of OGMGE must be one of {sorted(OGMGE_NOISE)}; "
                f"got {noise!r}."
            )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"The 'generator' parameter of OGMGE must be a torch.Generator or None; "
                f"got {type(generator).__name__}."
            )
        self.encoders: dict[str, nn.Module] = {}
        self.names: list[str] = []
        self.alpha = float(alpha)
        self.ge = bool(ge)
        self.start, self.end = start, end
        self.params, self.noise = params, noise
        self.tie_modulates = tie_modulates
        self.generator = generator
        self.coefficients: dict[str, Tensor] = {}  # the last step's, by encoder name
        if encoders is not None:
            self.bind(encoders)

    @property
    def bound(self) -> bool:
        """Whether the hook has its encoders (see `bind`)."""
        return bool(self.encoders)

    def bind(self, encoders: Mapping[str, nn.Module]) -> None:
        """Modulate these encoders (`{modality name: module}`, M >= 2, no shared parameter);
        late binding: `mmsample.Balancer` binds a model's named encoders. ValueError / TypeError
        naming the parameter for bad encoders or a `tie_modulates` that is not one of them."""
        if not isinstance(encoders, Mapping) or len(encoders) < 2:
            raise ValueError(
                "The 'encoders' parameter of OGMGE must map M >= 2 modality names to their "
                f"encoder modules; got {encoders!r}."
            )
        seen: dict[int, str] = {}
        for name, module in encoders.items():
            if not isinstance(module, nn.Module):
                raise TypeError(
                    f"The 'encoders' parameter of OGMGE must hold nn.Module values; "
                    f"encoders[{name!r}] is a {type(module).__name__}."
                )
            for p in module.parameters():
                if id(p) in seen:
                    raise ValueError(
                        f"The encoders {seen[id(p)]!r} and {name!r} given to OGMGE share a "
                        "parameter; each parameter must belong to one modality's encoder."
                    )
                seen[id(p)] = name
        if self.tie_modulates is not None and self.tie_modulates not in encoders:
            raise ValueError(
                f"The 'tie_modulates' parameter of OGMGE must be None or one of the encoder "
                f"names {list(encoders)}; got {self.tie_modulates!r}."
            )
        self.encoders = dict(encoders)
        self.names = list(encoders)

    def _scores(self, scores: Mapping[str, float | Tensor] | Tensor) -> Tensor:
        if isinstance(scores, Tensor):
            if scores.shape != (len(self.names),) or not scores.is_floating_point():
                raise ValueError(
                    f"The 'scores' argument of OGMGE must be a floating tensor [M] = "
                    f"[{len(self.names)}] in encoder order {self.names}, or a mapping by name; "
                    f"got {scores.dtype} {tuple(scores.shape)}. Each score is "
                    f"mmsample.signals.discrepancy(logits, labels) of that modality's unimodal "
                    f"logits, not the logits themselves."
                )
            return scores.detach()
        if not isinstance(scores, Mapping) or set(scores) != set(self.names):
            got = sorted(scores) if isinstance(scores, Mapping) else type(scores).__name__
            raise ValueError(
                f"The 'scores' argument of OGMGE must give one score per encoder "
                f"{sorted(self.names)}; got {got}."
            )
        values = [scores[n] for n in self.names]
        for name, v in zip(self.names, values, strict=True):
            if isinstance(v, Tensor) and v.numel() != 1:
                raise ValueError(
                    f"The 'scores' argument of OGMGE must hold one number per encoder (the "
                    f"batch's discrepancy score); scores[{name!r}] is a tensor of shape "
                    f"{list(v.shape)}. Per-sample logits [B, K] are not a score: pass "
                    f"mmsample.signals.discrepancy(logits, labels) of each modality's unimodal "
                    f"logits (the sum over the batch of the label's softmax probability)."
                )
            if not isinstance(v, Tensor | int | float) or isinstance(v, bool):
                raise ValueError(
                    f"The 'scores' argument of OGMGE must hold one number per encoder; "
                    f"scores[{name!r}] is a {type(v).__name__}."
                )
        if all(isinstance(v, Tensor) for v in values):
            return torch.stack([torch.as_tensor(v).detach().reshape(()) for v in values])
        return torch.tensor([float(v) for v in values], dtype=torch.float64)

    def __call__(
        self, scores: Mapping[str, float | Tensor] | Tensor, epoch: int
    ) -> dict[str, Tensor]:
        """Modulate the encoders' gradients for this step; returns the coefficient applied to each
        encoder (all 1 outside `start..end`; also kept as `coefficients`). Checks the M scores
        are finite (one host sync). RuntimeError before `bind`."""
        if not self.bound:
            raise RuntimeError(
                "OGMGE has no encoders yet: build it with encoders={name: module, ...}, call "
                "bind(encoders), or hand it to mmsample.Balancer, which binds the model's."
            )
        s = self._scores(scores)
        if not bool(torch.isfinite(s).all()):
            raise ValueError(
                f"The 'scores' argument of OGMGE must be finite; got {s.tolist()} for "
                f"{self.names} (a NaN score usually means NaN logits)."
            )
        tie = None if self.tie_modulates is None else self.names.index(self.tie_modulates)
        if not self.start <= epoch <= self.end:
            self.coefficients = {
                n: torch.ones((), dtype=s.dtype, device=s.device) for n in self.names
            }
            return dict(self.coefficients)
        coefficients = ogm_coefficients(s, self.alpha, tie_modulates=tie)
        select = OGMGE_PARAMS[self.params]
        add_noise = OGMGE_NOISE[self.noise]
        for j, name in enumerate(self.names):
            for p in self.encoders[name].parameters():
                if p.grad is None or not select(p):
                    continue
                g = p.grad
                if self.generator is not None and self.generator.device.type != g.device.type:
                    raise ValueError(
                        f"The 'generator' of OGMGE is on {self.generator.device} but encoder "
                        f"{name!r} has gradients on {g.device}; give a generator on that device."
                    )
                k = coefficients[j].to(device=g.device, dtype=g.dtype)
                if self.ge:
                    sigma = g.std() if g.numel() > 1 else torch.zeros((), dtype=g.dtype)
                    sigma = sigma.to(g.device) + 1e-8
                    gate = add_noise(k)
                    eps = torch.randn(
                        g.shape, generator=self.generator, dtype=g.dtype, device=g.device
                    )
                    g.mul_(k).add_(torch.where(gate, eps * sigma, torch.zeros_like(eps)))
                else:
                    g.mul_(k)
        self.coefficients = {n: coefficients[j] for j, n in enumerate(self.names)}
        return dict(self.coefficients)

    def compatibility(self) -> dict[str, Any]:
        """What a state must match: encoder names, settings and the generator's device."""
        return {
            "encoders": list(self.names),
            "alpha": self.alpha,
            "ge": self.ge,
            "start": self.start,
            "end": self.end,
            "params": self.params,
            "noise": self.noise,
            "tie_modulates": self.tie_modulates,
            "generator_device": None if self.generator is None else str(self.generator.device),
        }

    def state_dict(self) -> dict[str, Any]:
        """Encoder names, settings and the noise generator's state (None without a generator)."""
        return super().state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the generator state; refuses a state of other encoders, other settings or
        another kind of generator (ValueError naming each). `state` is not modified."""
        super().load_state_dict(state)

    def _save_fields(self) -> dict[str, Any]:
        return {"generator": None if self.generator is None else self.generator.get_state()}

    def _load_fields(self, state: Mapping[str, Any]) -> None:
        saved = state["generator"]
        if self.generator is not None:
            if not isinstance(saved, Tensor):
                raise ValueError(
                    f"OGMGE.load_state_dict: the state's 'generator' entry must be the noise "
                    f"generator's state (a uint8 tensor); got {type(saved).__name__}."
                )
            self.generator.set_state(saved.clone())
