"""Balancer and the user's batch structure: dict datasets stay dicts (the user's collate_fn),
ids and masks travel with the batch, encoders run only on the rows carrying their modality."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

import mmsample
from mmsample.balancer import EncoderGates
from mmsample.methods import DUS, SMV
from mmsample.user_batch import DictBatch, TupleBatch

N, K = 24, 3


class Clips(Dataset):
    """Dict items; every value is nonzero, so a zero row can only be an absent modality."""

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "sound": torch.full((4,), 1.0 + i),
            "frames": torch.full((2, 3), -1.0 - i),
            "y": i % K,
        }


class Recording(nn.Module):
    """An encoder that refuses zero rows (they would be an absent modality fed as input)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(width, 8), nn.BatchNorm1d(8))
        self.rows: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert bool((x.flatten(1) != 0).any(1).all()), "an absent row reached the encoder"
        self.rows.append(len(x))
        return self.net(x)


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sound, self.frames = Recording(4), Recording(6)
        self.head = nn.Linear(16, K)

    def forward(self, sound: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.sound(sound), self.frames(frames)], 1))


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A user's own collate_fn (whole items, as their DataLoader calls it)."""
    out = default_collate(items)
    out["collated_by_user"] = True
    return out


def test_dict_items_stay_dicts_and_encoders_see_only_carried_rows() -> None:
    model = Model()
    balancer = mmsample.Balancer(DUS(batch_size=6), epochs=3)
    loader = balancer.setup(DataLoader(Clips(), batch_size=6, collate_fn=collate), model)
    assert balancer.fields == {"sound": "sound", "frames": "frames", "label": "y"}
    assert balancer.ledger.num_samples == N and balancer.ledger.num_classes == K
    for _ in range(3):  # epochs 0, 1, 2
        model.sound.rows.clear()
        carried = 0
        for batch in loader:
            assert isinstance(batch, DictBatch) and batch["collated_by_user"] is True
            assert set(batch) == {"sound", "frames", "y", "collated_by_user"}
            present = batch.present("sound")
            # absent rows are zeros of the modality's shape; carried rows the item's values
            assert batch["sound"].shape == (len(batch.ids), 4)
            assert bool((batch["sound"][~present] == 0).all())
            assert batch["sound"][present, 0].tolist() == (batch.ids[present] + 1.0).tolist()
            carried += int(present.sum())
            balancer.loss(batch).backward()
        assert sum(model.sound.rows) == carried  # the encoder ran on carried rows only
    sizes = balancer.method.batch_sizes(1)
    assert min(sizes.values()) < 6  # DUS acted, so some rows were absent


def test_ids_travel_with_the_batch_when_batches_are_read_ahead() -> None:
    model = Model()
    balancer = mmsample.Balancer(SMV(warmup=0), epochs=2)
    loader = balancer.setup(DataLoader(Clips(), batch_size=5, collate_fn=collate), model)
    it = iter(loader)
    first, second = next(it), next(it)  # what a prefetching wrapper does
    balancer.loss(first)
    seen = balancer.ledger.seen_count
    assert seen[first.ids].tolist() == [1] * len(first.ids)
    assert int(seen[second.ids].sum()) == 0
    copy = pickle.loads(pickle.dumps(second))
    moved = second.to("cpu")
    for other in (copy, moved):
        assert isinstance(other, DictBatch) and torch.equal(other.ids, second.ids)
        assert torch.equal(other.mask, second.mask) and other.names == ("sound", "frames")


def test_a_tuple_batch_unpacks_as_before() -> None:
    batch = TupleBatch(
        [torch.ones(2, 3), torch.zeros(2, 1), torch.tensor([0, 1])],
        torch.tensor([7, 9]),
        torch.tensor([3, 1]),
        ("audio", "video"),
    )
    audio, video, label = batch
    assert audio.shape == (2, 3) and video.shape == (2, 1) and label.tolist() == [0, 1]
    assert batch.present("video").tolist() == [True, False]
    assert batch.paired().tolist() == [True, False]
    assert pickle.loads(pickle.dumps(batch)).ids.tolist() == [7, 9]


def test_a_modality_no_row_carries_has_its_shape_and_its_encoder_does_not_run() -> None:
    enc = {"a": Recording(4), "b": Recording(6)}
    gates = EncoderGates(enc)
    x, y = torch.ones(3, 4), torch.ones(3, 6)
    with gates.carry(torch.ones(3, 2, dtype=torch.bool)):
        enc["a"](x), enc["b"](y)  # learns the output shapes
    enc["b"].rows.clear()
    with gates.carry(torch.tensor([[True, False]] * 3)):
        out = enc["b"](torch.zeros(3, 6))
    assert out.shape == (3, 8) and bool((out == 0).all()) and enc["b"].rows == []
    gates.remove()
    assert "forward" not in vars(enc["a"])


def test_setup_names_what_it_cannot_infer() -> None:
    class Opaque(nn.Module):
        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return inputs[0]

    with pytest.raises(ValueError, match="fields="):
        mmsample.Balancer(SMV()).setup(DataLoader(Clips()), Opaque())

    class Unnamed(Model):
        def forward(self, audio: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
            return super().forward(audio, video)

    with pytest.raises(ValueError, match="no submodule 'audio'"):
        mmsample.Balancer(SMV()).setup(
            DataLoader(Clips()),
            Unnamed(),
            fields={"audio": "sound", "video": "frames", "label": "y"},
        )
    with pytest.raises(ValueError, match="pass your optimizer"):
        mmsample.Balancer(mmsample.methods.OGMGE()).setup(DataLoader(Clips()), Model())
    with pytest.raises(ValueError, match="takes the batch the loader yielded"):
        balancer = mmsample.Balancer(SMV())
        balancer.setup(DataLoader(Clips(), batch_size=4), Model())
        balancer.loss({"sound": torch.ones(1, 4)})


class Pairs(Dataset):
    """(audio [4], video [6], label) tuples; labels as the test asks."""

    def __init__(self, label: Any = None) -> None:
        self.label = label

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
        y = i % K if self.label is None else self.label(i)
        return torch.full((4,), 1.0 + i), torch.full((6,), 2.0 + i), y


class Swapped(nn.Module):
    """forward(video, audio): the other order than the dataset's (audio, video, label)."""

    def __init__(self) -> None:
        super().__init__()
        self.audio, self.video = nn.Linear(4, 8), nn.Linear(6, 8)
        self.head = nn.Linear(16, K)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.audio(audio), self.video(video)], 1))


def test_bad_fields_and_a_forward_in_another_order_are_named() -> None:
    loader = DataLoader(Pairs(), batch_size=4)
    with pytest.raises(ValueError, match=r"forward\(video=item\[0\], audio=item\[1\]\).*fields="):
        mmsample.Balancer(SMV()).setup(loader, Swapped())
    right = mmsample.Balancer(SMV()).setup(
        loader, Swapped(), fields={"video": 1, "audio": 0, "label": 2}
    )
    assert len(list(right)) == N // 4  # the order said, the same model runs
    with pytest.raises(ValueError, match=r"'video' -> 5, but a dataset item \(tuple\) holds 3"):
        mmsample.Balancer(SMV()).setup(
            loader, Swapped(), fields={"video": 5, "audio": 0, "label": 2}
        )
    with pytest.raises(ValueError, match="must name the label and two or more modalities"):
        mmsample.Balancer(SMV()).setup(loader, Swapped(), fields={"video": 1, "audio": 0})


@pytest.mark.parametrize(
    ("label", "message"),
    [
        (lambda i: torch.nn.functional.one_hot(torch.tensor(i % K), K).float(), "of shape"),
        (lambda i: i % K + 0.7, "not a whole number"),
        (lambda i: str(i % K), "is a str"),
    ],
)
def test_a_label_that_is_not_a_class_index_is_refused_naming_the_sample(
    label: Any, message: str
) -> None:
    loader = mmsample.wrap(
        DataLoader(Pairs(label), batch_size=4),
        SMV(),
        fields={"a": 0, "v": 1, "label": 2},
        num_classes=K,
    )
    with pytest.raises(ValueError, match=f"sample 0's label.*{message}"):
        list(loader)


def test_whole_number_labels_of_any_numeric_type_are_class_indices() -> None:
    for label in (lambda i: float(i % K), lambda i: torch.tensor(i % K), lambda i: np.int64(i % K)):
        loader = mmsample.wrap(
            DataLoader(Pairs(label), batch_size=4),
            SMV(),
            fields={"a": 0, "v": 1, "label": 2},
            num_classes=K,
        )
        assert sorted(int(y) for b in loader for y in b[2]) == sorted(i % K for i in range(N))
