"""Edge cases a new user met: unpaired data, skips, changed settings on resume, checkpoints,
drop_last, empty epochs."""

from __future__ import annotations

import math
import tarfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from mmsample.ledger import Ledger
from mmsample.loader import balanced_loader, wrap
from mmsample.methods import BSS, DUS, SMV
from mmsample.methods.bss import EmptyEpochWarning
from mmsample.testing import CountingSpec, write_tiny_dataset

from .loader_helpers import (
    METHODS,
    NAMES,
    N,
    fed_ledger,
    items,
    make_loader,
    make_method,
    modalities,
)

MISSING = {1, 5, 9}


@pytest.fixture(scope="module")
def unpaired(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 samples, ids 1, 5 and 9 without audio (wav)."""
    root = tmp_path_factory.mktemp("unpaired")
    write_tiny_dataset(root, n=12, fields=("wav", "npy"), missing={"wav": MISSING})
    return root


def unpaired_ledger() -> Ledger:
    """Audio dominant; ids lacking wav observed with feat only."""
    n = 12
    led = Ledger(n, 2, 3, names=list(NAMES))
    ids = torch.arange(n)
    labels = ids % 3
    audio = torch.zeros(n, 3)
    audio[ids, labels] = 5.0
    feat = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    present = torch.ones(n, 2, dtype=torch.bool)
    present[sorted(MISSING), 0] = False
    values = torch.tensor([[0.0, 1, 0, 2]]).repeat(n, 1)
    led.observe(ids, labels, [audio, feat], audio + feat, values=values, present=present)
    return led


@pytest.mark.parametrize("mode", ["streamed", "indexed"])
def test_dus_on_unpaired_data_never_yields_an_empty_row(unpaired: Path, mode: str) -> None:
    specs = {name: CountingSpec(spec) for name, spec in modalities().items()}
    dus = DUS(unpaired_ledger(), batch_size=4, epochs=4)
    loader = balanced_loader(unpaired, dus, modalities=specs, mode=mode, seed=1)
    carried = np.zeros(2, dtype=np.int64)
    for epoch in range(4):
        loader.set_epoch(epoch)
        for b in loader:
            assert all(m != 0 for m in b.mask.tolist()), b.mask.tolist()
            for i, m in zip(b.ids.tolist(), b.mask.tolist()):
                if i in MISSING:
                    assert m == 2  # what the sample has
            carried += [int(b.present(n).sum()) for n in NAMES]
    # the decoders ran exactly for the rows that carry each modality
    assert [int(specs[n].calls) for n in NAMES] == carried.tolist()


def test_bss_ranks_unpaired_ids_last(unpaired: Path) -> None:
    led = unpaired_ledger()
    bss = BSS(led, lambda0=0.75, t_grow=10)
    s = bss.scores()
    assert (
        np.isneginf(s[sorted(MISSING)]).all() and np.isfinite(np.delete(s, sorted(MISSING))).all()
    )
    kept = sorted(bss.plan(0).order().tolist())  # floor(12 * 0.75) = 9: every paired id
    assert kept == [i for i in range(12) if i not in MISSING]
    loader = balanced_loader(unpaired, bss, modalities=modalities(), mode="indexed")
    assert sorted(i for b in loader for i in b.ids.tolist()) == kept
    learned = BSS(led, scheduler="learned")
    assert learned.probabilities(0)[sorted(MISSING)].tolist() == [0.0, 0.0, 0.0]


def corrupt_member(root: Path, key: str, ext: str) -> None:
    """Overwrite the payload of member KEY.EXT inside its shard with garbage (same size)."""
    for tar_path in sorted(root.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            member = next((m for m in tar.getmembers() if m.name == f"{key}.{ext}"), None)
        if member is not None:
            with open(tar_path, "r+b") as f:
                f.seek(member.offset_data)
                f.write(b"\x13" * member.size)
            return
    raise AssertionError(f"no member {key}.{ext}")


def test_a_skipped_item_is_replaced_by_a_row_that_carries_something(tmp_path: Path) -> None:
    write_tiny_dataset(tmp_path, n=12, fields=("wav", "npy"), samples_per_shard=4)
    corrupt_member(tmp_path, "s000005", "wav")
    led = unpaired_ledger()  # any fed ledger of 12 ids
    for mode in ("indexed", "streamed"):
        smv = SMV(led, warmup=0, seed=2)
        loader = balanced_loader(
            tmp_path, smv, modalities=modalities(), mode=mode, on_error="skip", seed=3
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = [x for b in loader for x in items(b)]
        assert all(m != 0 for _, m in rows)
        assert len(rows) == len(smv.plan(0).masks)


@pytest.mark.parametrize("name", METHODS)
def test_checkpoints_load_with_torch_load_defaults(root: Path, name: str, tmp_path: Path) -> None:
    loader = make_loader(root, name, mode="indexed", epoch=1)
    it = iter(loader)
    next(it)
    torch.save({"loader": loader.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt")  # weights_only=True: tensors and plain types only
    fresh = make_loader(root, name, mode="indexed", epoch=0)
    fresh.load_state_dict(state["loader"])
    rest = [x for b in fresh for x in items(b)]
    reference = [x for b in make_loader(root, name, mode="indexed", epoch=1) for x in items(b)]
    first = items(next(iter(make_loader(root, name, mode="indexed", epoch=1))))
    assert first + rest == reference


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .loader_helpers import write_dataset

    path = tmp_path_factory.mktemp("shards")
    write_dataset(path)
    return path


def test_resume_refuses_another_batch_size_or_worker_count(root: Path) -> None:
    def build(batch: int, workers: int) -> Any:
        loader = balanced_loader(
            root,
            SMV(fed_ledger(), warmup=0),
            modalities=modalities(),
            batch_size=batch,
            mode="indexed",
            num_workers=workers,
        )
        loader.set_epoch(0)
        return loader

    loader = build(4, 0)
    next(iter(loader))
    state = loader.state_dict()
    # refused at load (the loader holds the position and checks it there), not inside a worker
    with pytest.raises(ValueError, match="batch_size: saved 4, now 8"):
        build(8, 0).load_state_dict(state)
    with pytest.raises(ValueError, match="num_workers: saved 0, now 2"):
        build(4, 2).load_state_dict(state)


def test_drop_last_is_honoured() -> None:
    ds = TensorDataset(torch.randn(10, 2), torch.randn(10, 3), torch.arange(10) % 3)
    loader = wrap(
        DataLoader(ds, batch_size=4, drop_last=True), None, fields={"a": 0, "b": 1, "label": 2}
    )
    assert [len(b.ids) for b in loader] == [4, 4] and len(loader) == 2  # default: tuple batches


def test_drop_last_in_balanced_loader(root: Path) -> None:
    for mode in ("streamed", "indexed"):
        loader = balanced_loader(
            root, None, modalities=modalities(), batch_size=4, mode=mode, drop_last=True
        )
        sizes = [len(b) for b in loader]
        assert sizes == [4] * (N // 4) and len(loader) == N // 4


def test_options_the_loader_owns_are_refused(root: Path) -> None:
    with pytest.raises(ValueError, match=r"forms batches itself: \['collate_fn'\]"):
        balanced_loader(root, None, modalities=modalities(), collate_fn=lambda b: b)
    # the readers' remote parameters are named as theirs, with the call that takes them
    with pytest.raises(ValueError, match=r"\['cache', 'storage_options'\] are parameters of the"):
        balanced_loader(
            "s3://bucket/data", None, modalities=modalities(), storage_options={}, cache=None
        )
    with pytest.raises(ValueError, match="'batch_size' parameter of balanced_loader is 6"):
        balanced_loader(
            root, DUS(fed_ledger(), batch_size=4), modalities=modalities(), batch_size=6
        )
    with pytest.raises(ValueError, match="ledger has 2 classes but the dataset has 3"):
        balanced_loader(root, SMV(Ledger(N, 2, 2, names=list(NAMES))), modalities=modalities())
    with pytest.raises(ValueError, match="'reference_weights' parameter of BSS"):
        BSS(fed_ledger(), reference_weights=1.0)  # type: ignore[arg-type]


def test_an_empty_bss_epoch_warns(root: Path) -> None:
    bss = BSS(fed_ledger(), lambda0=0.01, t_grow=40)  # floor(22 * 0.01) = 0
    loader = balanced_loader(root, bss, modalities=modalities(), mode="indexed")
    with pytest.warns(EmptyEpochWarning, match=r"floor\(22 \* 0\.01\) = 0 ids"):
        loader.set_epoch(0)
    assert list(loader) == [] and len(loader) == 0
    assert math.floor(22 * bss.pacing(5)) > 0
    make_method("bss", fed_ledger())  # the default settings of the other tests keep ids
