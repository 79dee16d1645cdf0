"""Collate pads variable-size modalities (issue 7 item 13) on real shards: text, npy MFCC-like
features, images of different sizes, a mono/stereo audio mix; shapes before padding are kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mmsample.batch import Collate, MultimodalBatch, collate
from mmsample.decoding import Array, Audio, Image, Spec, Text
from mmsample.sharding import write_samples
from mmsample.shards import IndexedDataset, StreamedDataset
from mmsample.testing import encode_npy, encode_png, encode_wav, make_tokenizer

TEXTS = ["", "one two", "the quick brown fox jumps over the lazy dog"]  # 0, 2 and 9 words
FRAMES = [12, 25, 17, 3]  # MFCC frames [T, 13] of samples 0..3
SIZES = [(6, 8), (12, 20), (5, 7)]  # image (H, W) of samples 0..2; sample 3 has none
SECONDS = [0.25, 0.5, 0.3]  # audio of samples 0..2: mono, stereo, mono; sample 3 has none
CHANNELS = [1, 2, 1]
RATE = 16000


def _mfcc(i: int) -> np.ndarray:
    return (np.arange(FRAMES[i] * 13, dtype=np.float32).reshape(FRAMES[i], 13) + 1) * (i + 1)


def _image(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(1, 256, (*SIZES[i], 3), dtype=np.uint8)


def _wave(i: int) -> np.ndarray:
    n = round(SECONDS[i] * RATE)
    t = np.arange(n) / RATE
    return np.stack([0.5 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(CHANNELS[i])])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("padding")

    def samples() -> Any:
        for i in range(4):
            fields = {"txt": (TEXTS[i] if i < 3 else "a").encode(), "npy": encode_npy(_mfcc(i))}
            if i < 3:
                fields["png"] = encode_png(_image(i))
                fields["wav"] = encode_wav(_wave(i), RATE)
            yield f"v{i}", i % 2, fields

    write_samples(path, samples(), ["a", "b"], samples_per_shard=2)
    return path


def _specs(text: Text | None = None) -> dict[str, Spec]:
    return {
        "text": text or Text(padding="longest", byte_ids=True),
        "mfcc": Array(field="npy"),
        "image": Image(size=None),
        "audio": Audio(field="wav", mono=False, spectrogram=None, backend="wave"),
        "spec": Audio(field="wav", mono=False, backend="wave"),  # log STFT [C, 257, frames]
    }


def _batch(root: Path, reader: str, **collate_kw: Any) -> MultimodalBatch:
    specs = _specs()
    ds: Any = (
        StreamedDataset(root, specs, shuffle_shards=False)
        if reader == "streamed"
        else IndexedDataset(root, specs)
    )
    loader = DataLoader(ds, batch_size=4, collate_fn=Collate(specs, **collate_kw))
    (batch,) = list(loader)
    assert batch.ids.tolist() == [0, 1, 2, 3]
    return batch


@pytest.mark.parametrize("reader", ["streamed", "indexed"])
def test_every_variable_modality_pads_to_the_longest(root: Path, reader: str) -> None:
    batch = _batch(root, reader)
    # text: byte ids, padded with id 0 and mask 0 to the longest text (43 bytes)
    text = batch["text"]
    assert isinstance(text, dict)
    want = [list(t.encode()) for t in [*TEXTS, "a"]]
    longest = max(len(w) for w in want)
    assert longest == 43
    assert text["input_ids"].tolist() == [w + [0] * (longest - len(w)) for w in want]
    assert text["attention_mask"].tolist() == [
        [1] * len(w) + [0] * (longest - len(w)) for w in want
    ]
    assert batch.lengths("text").tolist() == [0, 7, 43, 1]
    assert torch.equal(batch.valid("text"), text["attention_mask"].bool())
    # MFCC-like features [T, 13]: zeros after each row's T frames
    mfcc = batch["mfcc"]
    assert isinstance(mfcc, torch.Tensor) and mfcc.shape == (4, 25, 13)
    assert batch.lengths("mfcc").tolist() == FRAMES
    for i, t in enumerate(FRAMES):
        assert torch.equal(mfcc[i, :t], torch.from_numpy(_mfcc(i)))
        assert not mfcc[i, t:].any()
    # images [3, H, W]: zeros right of W and below H; sizes keep (3, H, W)
    assert batch.rows("image").tolist() == [0, 1, 2]
    image = batch["image"]
    assert isinstance(image, torch.Tensor) and image.shape == (3, 3, 12, 20)
    assert image.dtype == torch.uint8
    assert batch.sizes("image").tolist() == [[3, h, w] for h, w in SIZES]  # type: ignore[union-attr]
    assert batch.lengths("image", dim=1).tolist() == [h for h, _ in SIZES]
    valid = batch.valid("image")
    assert valid.shape == image.shape and int(valid.sum()) == 3 * sum(h * w for h, w in SIZES)
    for i, (h, w) in enumerate(SIZES):
        assert torch.equal(image[i, :, :h, :w], torch.from_numpy(_image(i)).permute(2, 0, 1))
        assert image[i][~valid[i]].sum() == 0 and image[i][valid[i]].min() >= 1
    # audio [C, S], mono and stereo rows: a mono row gets a zero second channel
    audio = batch["audio"]
    assert isinstance(audio, torch.Tensor) and audio.shape == (3, 2, RATE // 2)
    samples = [round(s * RATE) for s in SECONDS]
    assert batch.sizes("audio").tolist() == [[c, n] for c, n in zip(CHANNELS, samples)]  # type: ignore[union-attr]
    for i, (c, n) in enumerate(zip(CHANNELS, samples)):
        pcm = np.clip(_wave(i), -1, 1) * 32767
        expected = torch.from_numpy(pcm.astype(np.int16).astype(np.float32) / 32768.0)
        assert torch.equal(audio[i, :c, :n], expected)
        assert not audio[i, c:].any() and not audio[i, :, n:].any()
    # log spectrograms of the same mix: channels and frames (1 + S // hop 159) both padded
    frames = [1 + n // 159 for n in samples]
    spec = batch["spec"]
    assert isinstance(spec, torch.Tensor) and spec.shape == (3, 2, 257, max(frames))
    assert batch.sizes("spec").tolist() == [[c, 257, f] for c, f in zip(CHANNELS, frames)]  # type: ignore[union-attr]
    assert batch.lengths("spec", dim=2).tolist() == frames
    valid = batch.valid("spec")
    assert not spec[~valid].any() and torch.isfinite(spec).all()
    assert int(valid.sum()) == 257 * sum(c * f for c, f in zip(CHANNELS, frames))


def test_tokenizer_text_lengths_and_pad_values(root: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok_dir = str(make_tokenizer(tmp_path / "tok"))
    tok = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    specs = _specs(Text(tokenizer=tok_dir, padding="longest"))
    ds = IndexedDataset(root, specs)
    pad = {"text": 99, "mfcc": -1.0}
    batch = Collate(specs, pad=pad)([ds[i] for i in range(4)])
    want = [tok(t)["input_ids"] for t in [*TEXTS, "a"]]
    assert [len(w) for w in want[:3]] == [2, 4, 11]  # [CLS] [SEP] around 0, 2 and 9 words
    longest = max(len(w) for w in want)
    text = batch["text"]
    assert isinstance(text, dict)
    assert text["input_ids"].tolist() == [w + [99] * (longest - len(w)) for w in want]
    assert text["attention_mask"].tolist() == [
        [1] * len(w) + [0] * (longest - len(w)) for w in want
    ]
    assert batch.lengths("text", key="attention_mask").tolist() == [len(w) for w in want]
    mfcc = batch["mfcc"]
    assert isinstance(mfcc, torch.Tensor)
    assert (mfcc[0, 12:] == -1.0).all() and (mfcc[1] > 0).all()


def test_padded_batch_moves_and_densifies(root: Path) -> None:
    batch = _batch(root, "indexed")
    moved = batch.to("cpu")
    for name in ("text", "mfcc", "image", "audio", "spec"):
        assert torch.equal(moved.lengths(name), batch.lengths(name))
    dense = moved.dense("image")
    assert isinstance(dense, torch.Tensor) and dense.shape == (4, 3, 12, 20)
    assert not dense[3].any() and torch.equal(dense[:3], batch["image"])  # type: ignore[arg-type]
    if torch.cuda.is_available():
        gpu = batch.pin_memory().to("cuda", non_blocking=True)
        assert gpu.sizes("image").is_cuda  # type: ignore[union-attr]
        assert torch.equal(gpu.valid("image").cpu(), batch.valid("image"))


def test_equal_shapes_are_stacked_without_sizes(root: Path) -> None:
    ds = IndexedDataset(root, {"text": Text(max_length=50, byte_ids=True), "mfcc": Array()})
    batch = collate([ds[i] for i in range(4)], ["text", "mfcc"])
    assert batch.modalities["text"].sizes is None  # padding="max_length": all [50]
    assert batch.lengths("text").tolist() == [50] * 4  # the padded length Text itself chose
    assert batch.valid("text").all()
    assert batch.modalities["mfcc"].sizes is not None


def test_remaining_errors_name_the_modality_and_the_fix(root: Path) -> None:
    specs = _specs()
    ds = IndexedDataset(root, specs)
    samples = [ds[i] for i in range(4)]
    with pytest.raises(
        ValueError,
        match=r"modality 'image' has rows of different shapes \[3, 6, 8\], \[3, 12, 20\], "
        r"\[3, 5, 7\] .*\(pad=\{'image': None\}\).*Image\(size=224\)",
    ):
        Collate(specs, pad={"image": None})(samples)
    mixed = [dict(s) for s in samples]
    mixed[1]["mfcc"] = mixed[1]["mfcc"][0]  # [13] beside [T, 13]
    with pytest.raises(ValueError, match=r"modality 'mfcc' has rows of different ranks or dtypes"):
        Collate(specs)(mixed)
    mixed = [dict(s) for s in samples]
    mixed[2]["mfcc"] = mixed[2]["mfcc"].double()
    with pytest.raises(ValueError, match=r"'mfcc' .* dtypes \['torch.float32', 'torch.float64'\]"):
        Collate(specs)(mixed)


def test_collate_names_must_be_the_readers(root: Path) -> None:
    """Issue 7 item 14: Collate naming a modality the reader does not have."""
    specs = _specs()
    samples = [IndexedDataset(root, specs)[i] for i in range(4)]
    fix = r"Collate's names must be the reader's modality names in the reader's order"
    for names in (
        ["text", "mfcc", "image", "video", "spec"],  # 'video' instead of 'audio'
        ["text", "mfcc", "image", "audio", "spec", "video"],  # one more than the reader has
        ["mfcc", "text", "image", "audio", "spec"],  # the reader's names in another order
        ["text", "mfcc", "image", "audio"],  # one fewer
    ):
        with pytest.raises(ValueError, match=fix) as info:
            Collate(names)(samples)
        assert "reader whose modalities are ['text', 'mfcc', 'image', 'audio', 'spec']" in str(
            info.value
        )
    # hand-made samples (no 'names' entry) are checked against their mask and values
    bare = [{k: v for k, v in s.items() if k != "names"} for s in samples]
    with pytest.raises(ValueError, match=rf"'v0' carries modalities \['audio'\], .*{fix}"):
        Collate(["text", "mfcc", "image", "video", "spec"])(bare)
    with pytest.raises(
        ValueError, match=r"'v3' has mask 0b11, which means modalities \['image', 'mfcc'\] .*"
    ):
        Collate(["image", "mfcc", "text", "audio", "spec"])(bare[3:])
    with pytest.raises(ValueError, match=r"'v0' carries mask 0b11111 \(bits beyond 4\)"):
        Collate(["text", "mfcc", "image", "spec"])(
            [{k: v for k, v in bare[0].items() if k != "audio"}]
        )
    with pytest.raises(ValueError, match=r"'pad' parameter of Collate names modality 'video'"):
        Collate(specs, pad={"video": 0})
    with pytest.raises(ValueError, match=r"pad\['text'\] must be a number or None; got '0'"):
        Collate(specs, pad={"text": "0"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"'names' parameter of Collate must be a non-empty"):
        Collate(["text", "text"])
