"""The paper model (OGM-GE's ResNet-18 pair with a concatenation head) and the presets' checks."""

from __future__ import annotations

import pytest
import torch

from mmsample.batch import collate
from pipelines.paper_models import AVResNet, build
from pipelines.presets import IMAGENET_MEAN, IMAGENET_STD, normalize_frames, preset

NAMES = ("audio", "visual")


def batch(masks: list[int], t: int = 2, size: int = 32):  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(0)
    samples = []
    for i, mask in enumerate(masks):
        s = {"id": i, "label": i % 3, "key": f"k{i}", "mask": mask, "names": NAMES}
        if mask & 1:
            s["audio"] = torch.randn(257, 40, generator=gen)
        if mask & 2:
            s["visual"] = torch.randint(0, 256, (t, 3, size, size), generator=gen).to(torch.uint8)
        samples.append(s)
    return collate(samples, NAMES)


@pytest.fixture(scope="module")
def model() -> AVResNet:
    torch.manual_seed(0)
    return build(3).eval()


def test_trunks_are_resnet18(model: AVResNet) -> None:
    # torchvision's resnet18 without its fc layer has 11,176,512 parameters; one input channel
    # removes 2 * 64 * 7 * 7 = 6,272 of conv1's weights.
    assert sum(p.numel() for p in model.visual_net.parameters()) == 11_176_512
    assert sum(p.numel() for p in model.audio_net.parameters()) == 11_176_512 - 6_272


def test_features_head_and_unimodal_logits(model: AVResNet) -> None:
    b = batch([3, 1, 2, 3])
    with torch.no_grad():
        fused, uni, feats = model(b)
    assert [tuple(z.shape) for z in feats] == [(4, 512), (4, 512)]
    assert tuple(fused.shape) == (4, 3)
    # rows without a modality are not encoded: zero features
    assert torch.equal(feats[0][2], torch.zeros(512)) and torch.equal(feats[1][1], torch.zeros(512))
    assert (
        feats[0][[0, 1, 3]].abs().sum(1).gt(0).all()
        and feats[1][[0, 2, 3]].abs().sum(1).gt(0).all()
    )
    # OGM-GE's split of the fused layer: the two unimodal logits add up to the fused ones
    torch.testing.assert_close(uni[0] + uni[1], fused)
    w, bias = model.fc_out.weight, model.fc_out.bias
    torch.testing.assert_close(uni[1][1], bias / 2)  # row 1 has no visual input
    torch.testing.assert_close(uni[0][0], feats[0][0] @ w[:, :512].T + bias / 2)


def test_frames_are_pooled_over_time(model: AVResNet) -> None:
    """The visual feature of T frames is the mean of the per-frame feature maps (frames folded
    into the batch), so the feature of a clip of two identical frames equals that of one."""
    one = torch.randint(0, 256, (1, 1, 3, 32, 32)).to(torch.uint8)
    with torch.no_grad():
        a = model.encode_visual(one)
        b = model.encode_visual(one.expand(1, 2, 3, 32, 32))
        c = model.encode_visual(torch.cat([one, torch.zeros_like(one)], dim=1))
        zero = model.encode_visual(torch.zeros_like(one))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(c, (a + zero) / 2, rtol=1e-4, atol=1e-5)


def test_normalize_frames() -> None:
    x = torch.tensor([0, 255, 128], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2)
    y = normalize_frames(x)
    for c, v in enumerate([0.0, 1.0, 128 / 255]):
        assert torch.allclose(y[c], torch.tensor((v - IMAGENET_MEAN[c]) / IMAGENET_STD[c]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "ucf101"}, "'name'"),
        ({"name": "vggsound", "split": "val"}, "'split'"),
        ({"name": "vggsound", "train_frames": 11}, r"'train_frames'.*\[1, 10\]"),
        ({"name": "cremad", "train_frames": 4}, r"'train_frames'.*\[1, 3\]"),
        ({"name": "vggsound", "train_frames": 0}, "'train_frames'"),
        ({"name": "cremad", "audio_seconds": 0}, "'audio_seconds'"),
        ({"name": "cremad", "size": 0}, "'size'"),
    ],
)
def test_preset_refuses_bad_parameters(kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=match):
        preset(**kwargs)


def test_model_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError, match="'num_classes'"):
        AVResNet(1)
    with pytest.raises(ValueError, match="takes no options"):
        build(3, width=2)
