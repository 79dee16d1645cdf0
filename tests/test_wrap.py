"""wrap(): a method around a user's own map-style Dataset and DataLoader."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from mmsample.ledger import Ledger
from mmsample.loader import wrap
from mmsample.methods import BSS, DUS, SMV
from mmsample.resume_check import check_resume

N, K = 30, 3


class TupleSet(Dataset):
    """(audio [2, 5], image [3, 4, 4], label): values encode the index, to check rows."""

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return torch.full((2, 5), float(i)), torch.full((3, 4, 4), float(-i)), i % K


class DictSet(TupleSet):
    def __getitem__(self, i: int) -> dict:  # type: ignore[override]
        a, v, y = super().__getitem__(i)
        return {"sound": a, "picture": v, "target": y}


def fed(names: list[str]) -> Ledger:
    led = Ledger(N, 2, K, names=names)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(N) % K
    a = torch.randn(N, K, generator=g) + 2 * torch.nn.functional.one_hot(y, K)
    v = torch.randn(N, K, generator=g)
    values = torch.stack(
        [
            torch.zeros(N),
            (a.argmax(1) == y).double(),
            (v.argmax(1) == y).double(),
            2 * ((a + v).argmax(1) == y).double(),
        ],
        1,
    )
    led.observe(torch.arange(N), y, [a, v], a + v, values=values)
    return led


CASES = [
    (TupleSet, {"audio": 0, "image": 1, "label": 2}),
    (DictSet, {"audio": "sound", "image": "picture", "label": "target"}),
]


@pytest.mark.parametrize(("kind", "fields"), CASES)
@pytest.mark.parametrize("workers", [0, 2])
def test_wrap_applies_smv_to_a_users_dataset(kind: type, fields: dict, workers: int) -> None:
    """Default output: the dataset's own structure (a tuple dataset yields tuples, a dict one
    dicts), ids and masks attached; an absent modality is zeros of its shape."""
    dl = DataLoader(kind(), batch_size=7, shuffle=True, num_workers=workers)
    smv = SMV(fed(["audio", "image"]), warmup=0)
    loader = wrap(dl, smv, fields=fields)
    loader.set_epoch(0)
    plan = smv.plan(0)
    got = Counter()
    for b in loader:
        assert isinstance(b, dict if kind is DictSet else tuple)
        assert len(b) == 3  # the dataset's fields, nothing added
        assert len(b.ids) <= 7
        got.update(zip(b.ids.tolist(), b.mask.tolist()))
        # each modality's rows hold the right sample's values; absent rows are zeros
        audio, image = b[fields["audio"]], b[fields["image"]]
        assert audio.shape == (len(b.ids), 2, 5) and image.shape == (len(b.ids), 3, 4, 4)
        for row, (i, m) in enumerate(zip(b.ids.tolist(), b.mask.tolist())):
            assert torch.all(audio[row] == (float(i) if m & 1 else 0.0))
            assert torch.all(image[row] == (float(-i) if m & 2 else 0.0))
        assert b.present("audio").tolist() == [bool(m & 1) for m in b.mask.tolist()]
        assert b[fields["label"]].tolist() == [i % K for i in b.ids.tolist()]
    assert got == Counter((i, m) for i in range(N) for m in plan.items(i))
    assert sum(got.values()) > N  # SMV added items


@pytest.mark.parametrize(("kind", "fields"), CASES)
@pytest.mark.parametrize("workers", [0, 2])
def test_wrap_multimodal_output_applies_smv(kind: type, fields: dict, workers: int) -> None:
    """output="multimodal": MultimodalBatch, each modality's carried rows (the former default,
    its assertions unchanged)."""
    dl = DataLoader(kind(), batch_size=7, shuffle=True, num_workers=workers)
    smv = SMV(fed(["audio", "image"]), warmup=0)
    loader = wrap(dl, smv, fields=fields, output="multimodal")
    loader.set_epoch(0)
    plan = smv.plan(0)
    got = Counter()
    for b in loader:
        assert len(b) <= 7
        got.update(zip(b.ids.tolist(), b.mask.tolist()))
        # each modality's rows hold the right sample's values; absent rows are zero in dense()
        if "audio" not in b:  # a batch of image-only extra items
            assert all(m == 2 for m in b.mask.tolist())
            continue
        audio = b.dense("audio")
        for row, (i, m) in enumerate(zip(b.ids.tolist(), b.mask.tolist())):
            expect = float(i) if m & 1 else 0.0
            assert torch.all(audio[row] == expect)
        assert b.labels.tolist() == [i % K for i in b.ids.tolist()]
    assert got == Counter((i, m) for i in range(N) for m in plan.items(i))
    assert sum(got.values()) > N  # SMV added items


@pytest.mark.parametrize("workers", [0, 2])
def test_wrap_resumes_and_follows_bss_order(workers: int) -> None:
    def make(epoch: int):
        dl = DataLoader(TupleSet(), batch_size=4, num_workers=workers)
        loader = wrap(dl, BSS(fed(["audio", "image"]), lambda0=0.5, t_grow=3), fields=CASES[0][1])
        for e in range(epoch + 1):
            loader.set_epoch(e)
        return loader

    loader = make(0)
    assert [i for b in loader for i in b.ids.tolist()] == loader.method.plan(0).order().tolist()
    check_resume(make, lambda b: list(zip(b.ids.tolist(), b.mask.tolist())))


def test_wrap_dus_rows_and_errors() -> None:
    led = fed(["audio", "image"])
    loader = wrap(
        DataLoader(TupleSet(), batch_size=8), DUS(led, batch_size=6, epochs=2), fields=CASES[0][1]
    )
    sizes = loader.method.batch_sizes(0)
    for b in loader:
        assert len(b.ids) == max(sizes.values())
        assert int(b.present("audio").sum()) == sizes["audio"]
    with pytest.raises(ValueError, match="'fields' parameter of wrap"):
        wrap(DataLoader(TupleSet()), None, fields={"audio": 0, "image": 1})
    with pytest.raises(ValueError, match="ledger holds 30 ids but the dataset's id space is 31"):

        class Bigger(TupleSet):
            def __len__(self) -> int:
                return N + 1

        wrap(DataLoader(Bigger()), SMV(led), fields=CASES[0][1])
    sampler = torch.utils.data.WeightedRandomSampler([1.0] * N, N)
    with pytest.raises(ValueError, match="WeightedRandomSampler"):
        wrap(DataLoader(TupleSet(), sampler=sampler), None, fields=CASES[0][1])
