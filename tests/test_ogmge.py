"""OGM-GE hook on a small real audio-visual model: coefficients, exact scaling, noise law, state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import chi2, kstest
from torch import nn

from mmsample.methods import OGMGE
from mmsample.signals import discrepancy


class Encoder(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 16, 3)
        self.proj = nn.Linear(16, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class AVModel(nn.Module):
    """Concatenation fusion, as in the authors' AVClassifier."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.audio = Encoder(1)
        self.visual = Encoder(3)
        self.fc = nn.Linear(24, classes)

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        fa, fv = self.audio(a), self.visual(v)
        out = self.fc(torch.cat([fa, fv], dim=1))
        w, b = self.fc.weight, self.fc.bias
        out_a = fa @ w[:, :12].T + b / 2
        out_v = fv @ w[:, 12:].T + b / 2
        return out, out_a, out_v


def step(seed: int = 0) -> tuple[AVModel, dict[str, float], dict[str, torch.Tensor]]:
    """One real forward/backward; returns the model, the scores and a copy of every grad."""
    torch.manual_seed(seed)
    model = AVModel()
    a, v = torch.randn(16, 1, 8, 8), torch.randn(16, 3, 8, 8)
    y = torch.randint(0, 5, (16,))
    out, out_a, out_v = model(a, v)
    nn.functional.cross_entropy(out, y).backward()
    with torch.no_grad():
        scores = {"audio": discrepancy(out_a, y).item(), "visual": discrepancy(out_v, y).item()}
    grads = {n: grad(p).clone() for n, p in model.named_parameters() if p.grad is not None}
    return model, scores, grads


def grad(p: torch.Tensor) -> torch.Tensor:
    assert p.grad is not None
    return p.grad


def hand_coefficients(scores: dict[str, float], alpha: float) -> dict[str, float]:
    rho_a = scores["audio"] / scores["visual"]
    rho_v = 1 / rho_a
    return {
        "audio": 1 - math.tanh(alpha * rho_a) if rho_a > 1 else 1.0,
        "visual": 1 - math.tanh(alpha * rho_v) if rho_v > 1 else 1.0,
    }


def hook(model: AVModel, **kw: object) -> OGMGE:
    return OGMGE({"audio": model.audio, "visual": model.visual}, **kw)  # type: ignore[arg-type]


def test_coefficients_and_exact_scaling_without_ge() -> None:
    model, scores, before = step()
    assert scores["audio"] != scores["visual"]
    expected = hand_coefficients(scores, alpha=0.8)
    assert min(expected.values()) < 1  # one modality is modulated
    got = hook(model, alpha=0.8, ge=False)(scores, epoch=0)
    assert {n: c.item() for n, c in got.items()} == pytest.approx(expected, rel=1e-12)
    for name, p in model.named_parameters():
        owner = name.split(".")[0]
        assert p.grad is not None
        if owner == "fc":
            assert torch.equal(grad(p), before[name])  # the fusion head is never touched
        else:
            torch.testing.assert_close(grad(p), before[name] * expected[owner], rtol=1e-6, atol=0)


def test_conv_only_touches_4d_grads() -> None:
    model, scores, before = step(1)
    expected = hand_coefficients(scores, alpha=0.8)
    hook(model, alpha=0.8, ge=False, params="conv")(scores, epoch=3)
    for name, p in model.named_parameters():
        owner = name.split(".")[0]
        assert p.grad is not None
        if owner != "fc" and grad(p).ndim == 4 and expected[owner] < 1:
            assert not torch.equal(grad(p), before[name])
            torch.testing.assert_close(grad(p), before[name] * expected[owner], rtol=1e-6, atol=0)
        else:
            assert torch.equal(grad(p), before[name])


def test_outside_window_does_nothing() -> None:
    model, scores, before = step(2)
    h = hook(model, alpha=0.8, start=2, end=4)
    for epoch in (0, 1, 5):
        got = h(scores, epoch=epoch)
        assert all(c.item() == 1.0 for c in got.values())
    for name, p in model.named_parameters():
        assert torch.equal(grad(p), before[name])
    h(scores, epoch=4)  # the end is inclusive
    assert not torch.equal(grad(model.audio.conv.weight), before["audio.conv.weight"])


def test_ge_noise_has_the_unscaled_grad_std() -> None:
    model, scores, before = step(3)
    coeff = hand_coefficients(scores, alpha=0.8)
    h = hook(model, alpha=0.8, ge=True, generator=torch.Generator().manual_seed(7))
    h(scores, epoch=0)
    pooled: list[np.ndarray] = []
    for name, p in model.named_parameters():
        owner = name.split(".")[0]
        if owner == "fc" or p.numel() < 100:
            continue
        assert p.grad is not None
        sigma = before[name].std().item() + 1e-8
        noise = (grad(p) - before[name] * coeff[owner]).double().flatten().numpy() / sigma
        pooled.append(noise)
        # the sample variance of n standard normals: (n - 1) s^2 ~ chi2(n - 1)
        n = noise.size
        stat = (n - 1) * noise.var(ddof=1)
        assert chi2.ppf(1e-4, n - 1) < stat < chi2.ppf(1 - 1e-4, n - 1), name
    assert kstest(np.concatenate(pooled), "norm").pvalue > 1e-3


def test_noise_modulated_only_leaves_unmodulated_exact() -> None:
    model, scores, before = step(4)
    coeff = hand_coefficients(scores, alpha=0.8)
    weak = min(coeff, key=lambda n: -coeff[n])  # coefficient 1
    strong = min(coeff, key=lambda n: coeff[n])  # coefficient < 1
    assert coeff[weak] == 1.0 and coeff[strong] < 1.0
    h = hook(model, alpha=0.8, noise="modulated", generator=torch.Generator().manual_seed(0))
    h(scores, epoch=0)
    for name, p in model.named_parameters():
        owner = name.split(".")[0]
        if owner == weak:
            assert torch.equal(grad(p), before[name])
        elif owner == strong:
            assert not torch.allclose(grad(p), before[name] * coeff[strong])


def test_noise_on_every_encoder_by_default() -> None:
    model, scores, before = step(4)
    hook(model, alpha=0.8, generator=torch.Generator().manual_seed(0))(scores, epoch=0)
    for name in ("audio.conv.weight", "visual.conv.weight", "audio.proj.weight"):
        p = model.get_parameter(name)
        assert not torch.equal(grad(p), before[name])


def test_tensor_scores_and_tie() -> None:
    model, _, before = step(5)
    h = hook(model, alpha=0.5, ge=False, tie_modulates="audio")
    got = h(torch.tensor([3.0, 3.0], dtype=torch.float64), epoch=0)
    assert got["audio"].item() == pytest.approx(1 - math.tanh(0.5))
    assert got["visual"].item() == 1.0
    assert torch.equal(grad(model.visual.conv.weight), before["visual.conv.weight"])


def test_state_round_trip_replays_the_noise() -> None:
    model, scores, before = step(6)
    h = hook(model, alpha=0.8, generator=torch.Generator().manual_seed(1))
    state = h.state_dict()
    saved = state["generator"].clone()
    h(scores, epoch=0)
    first = grad(model.audio.conv.weight).clone()
    for name, p in model.named_parameters():  # restore the unmodulated grads
        grad(p).copy_(before[name])
    other = hook(model, alpha=0.8, generator=torch.Generator().manual_seed(99))
    other.load_state_dict(state)
    other(scores, epoch=0)
    assert torch.equal(grad(model.audio.conv.weight), first)
    assert torch.equal(state["generator"], saved)  # loading never mutates the caller's dict


def test_state_refuses_mismatch() -> None:
    model, _, _ = step(0)
    state = hook(model, alpha=0.1).state_dict()
    renamed = OGMGE({"a": model.audio, "v": model.visual}, alpha=0.1)
    with pytest.raises(
        ValueError, match=r"encoders: saved \['audio', 'visual'\], now \['a', 'v'\]"
    ):
        renamed.load_state_dict(state)
    with pytest.raises(ValueError, match=r"generator_device: saved None, now 'cpu'"):
        hook(model, alpha=0.1, generator=torch.Generator()).load_state_dict(state)
    with pytest.raises(ValueError, match=r"expects a dict from OGMGE\.state_dict\(\)"):
        hook(model, alpha=0.1).load_state_dict({"kind": "CumulativeMean"})


def test_validation() -> None:
    model, scores, _ = step(0)
    with pytest.raises(ValueError, match=r"The 'alpha' parameter of OGMGE must be > 0; got -1.0."):
        hook(model, alpha=-1.0)
    with pytest.raises(ValueError, match=r"'params'.*must be one of \['all', 'conv'\]"):
        hook(model, alpha=0.1, params="kernels")
    with pytest.raises(ValueError, match=r"'noise'.*must be one of \['all', 'modulated'\]"):
        hook(model, alpha=0.1, noise="none")
    with pytest.raises(ValueError, match=r"'end'"):
        hook(model, alpha=0.1, start=5, end=4)
    with pytest.raises(ValueError, match=r"'tie_modulates'"):
        hook(model, alpha=0.1, tie_modulates="text")
    with pytest.raises(ValueError, match=r"share a parameter"):
        OGMGE({"audio": model.audio, "both": model}, alpha=0.1)
    with pytest.raises(ValueError, match=r"'encoders'"):
        OGMGE({"audio": model.audio}, alpha=0.1)
    h = hook(model, alpha=0.1)
    with pytest.raises(ValueError, match=r"'scores'.*\['audio', 'visual'\]"):
        h({"audio": 1.0}, epoch=0)
    with pytest.raises(ValueError, match=r"'scores'.*finite"):
        h({"audio": float("nan"), "visual": 1.0}, epoch=0)
    with pytest.raises(ValueError, match=r"'scores'.*\[2\]"):
        h(torch.ones(3), epoch=0)
    assert scores  # the step produced real scores


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda() -> None:
    model, scores, before = step(0)
    model.cuda()
    for p in model.parameters():
        assert p.grad is not None
    expected = hand_coefficients(scores, alpha=0.8)
    h = hook(model, alpha=0.8, ge=False)
    h(torch.tensor([scores["audio"], scores["visual"]], device="cuda"), epoch=0)
    torch.testing.assert_close(
        grad(model.audio.conv.weight).cpu(),
        before["audio.conv.weight"] * expected["audio"],
        rtol=1e-5,
        atol=0,
    )
    g = torch.Generator(device="cuda").manual_seed(0)
    hook(model, alpha=0.8, generator=g)(scores, epoch=0)
    with pytest.raises(ValueError, match=r"'generator'"):
        hook(model, alpha=0.8, generator=torch.Generator())(scores, epoch=0)


def test_per_sample_logits_are_refused_with_the_fix() -> None:
    """Issue 7 item 14: logits [16, 5] given where a score belongs (was: shape '[]' is invalid
    for input of size 80); per-sample values [16] and stacked logits are the same mistake."""
    torch.manual_seed(0)
    model = AVModel()
    a, v, y = torch.randn(16, 1, 8, 8), torch.randn(16, 3, 8, 8), torch.randint(0, 5, (16,))
    out, out_a, out_v = model(a, v)
    nn.functional.cross_entropy(out, y).backward()
    before = {n: grad(p).clone() for n, p in model.named_parameters()}
    h = hook(model, alpha=0.8, ge=False)
    mistakes = [
        ({"audio": out_a, "visual": out_v}, r"scores\['audio'\] is a tensor of shape \[16, 5\]"),
        (
            {"audio": discrepancy(out_a, y), "visual": torch.softmax(out_v, 1)[:, 0]},
            r"scores\['visual'\] is a tensor of shape \[16\]",
        ),
        (torch.stack([out_a, out_v]), r"got torch.float32 \(2, 16, 5\)"),
    ]
    for scores, message in mistakes:
        with pytest.raises(ValueError, match=message) as info:
            h(scores, epoch=0)  # type: ignore[arg-type]
        assert "mmsample.signals.discrepancy(logits, labels)" in str(info.value)
    with pytest.raises(ValueError, match=r"scores\['audio'\] is a str"):
        h({"audio": "0.5", "visual": 1.0}, epoch=0)  # type: ignore[dict-item]
    for name, p in model.named_parameters():  # a refused call modulates nothing
        assert torch.equal(grad(p), before[name])
    # the fix: one discrepancy score per modality (a 1-element tensor is a score too)
    s_a, s_v = discrepancy(out_a, y).detach(), discrepancy(out_v, y).detach()
    got = h({"audio": s_a.reshape(1), "visual": s_v}, epoch=0)
    expected = hand_coefficients({"audio": s_a.item(), "visual": s_v.item()}, alpha=0.8)
    assert got["audio"].item() == pytest.approx(expected["audio"])
    assert got["visual"].item() == pytest.approx(expected["visual"])
