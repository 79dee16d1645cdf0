"""balanced_loader on real shards: every method's plan reaches the batches exactly."""

from __future__ import annotations

import math
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mmsample.errors import EpochWarning
from mmsample.ledger import Ledger
from mmsample.loader import balanced_loader
from mmsample.methods import DUS, SMV
from mmsample.resume_check import check_resume
from mmsample.testing import CountingSpec

from .loader_helpers import (
    METHODS,
    NAMES,
    N,
    fed_ledger,
    items,
    make_loader,
    modalities,
    write_dataset,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shards")
    write_dataset(path)
    return path


def plan_items(loader: Any, epoch: int) -> Counter:
    """The multiset of (id, mask) items of the method's plan (the loader's own source)."""
    method = loader.method
    ids = range(N)
    if method is None:
        return Counter((i, 3) for i in ids)
    plan = method.plan(epoch)
    return Counter((i, m) for i in ids for m in plan.items(i))


@pytest.mark.parametrize("mode", ["streamed", "indexed"])
@pytest.mark.parametrize("workers", [0, 2])
def test_dus_batches_carry_the_scheduled_rows_and_decode_only_them(
    root: Path, mode: str, workers: int
) -> None:
    specs = {
        "audio": CountingSpec(modalities()["audio"]),
        "feat": CountingSpec(modalities()["feat"]),
    }
    loader = make_loader(root, "dus", mode=mode, workers=workers, specs=specs)
    sizes = loader.method.batch_sizes(0)
    # audio dominates: round(0.5 * 2**(1/3) * 6) = 4 rows of audio, 6 of feat
    assert sizes == {"audio": 4, "feat": 6}
    batches = list(loader)
    assert len(batches) == len(loader) == math.ceil(N / 6)  # the epoch wraps to whole batches
    for b in batches:
        assert len(b) == 6
        assert int(b.present("audio").sum()) == 4 and int(b.present("feat").sum()) == 6
        assert b["audio"].shape[0] == 4 and b.rows("audio").tolist() == (
            b.present("audio").nonzero().squeeze(1).tolist()
        )
        assert b.paired().sum() == 4
    seen = Counter(i for b in batches for i in b.ids.tolist())
    assert set(seen) == set(range(N)) and sum(seen.values()) == 6 * len(batches)
    # every decoder ran exactly once per row carrying its modality (count the calls)
    assert int(specs["audio"].calls) == 4 * len(batches)
    assert int(specs["feat"].calls) == 6 * len(batches)


def test_dus_masks_differ_by_batch_and_follow_the_seed(root: Path) -> None:
    a = [b.mask.tolist() for b in make_loader(root, "dus", mode="indexed")]
    b = [b.mask.tolist() for b in make_loader(root, "dus", mode="indexed")]
    assert a == b
    assert len({tuple(m) for m in a}) > 1  # positions are drawn per batch


@pytest.mark.parametrize("name", ["none", "bss", "bss-learned", "smv", "smv-modality"])
def test_streamed_and_indexed_yield_the_plan_items(root: Path, name: str) -> None:
    got = {}
    for mode in ("streamed", "indexed"):
        loader = make_loader(root, name, mode=mode, epoch=1)
        got[mode] = Counter(x for b in loader for x in items(b))
        assert got[mode] == plan_items(loader, 1), mode
        # an extra item decodes only its own modality
        for b in make_loader(root, name, mode=mode, epoch=1):
            for j, m in enumerate(NAMES):
                carried = ((b.mask >> j) & 1).nonzero().squeeze(1).tolist()
                assert (b.rows(m).tolist() if m in b else []) == carried
    assert got["streamed"] == got["indexed"]


@pytest.mark.parametrize("name", ["bss", "bss-learned"])
@pytest.mark.parametrize("workers", [0, 2])
def test_indexed_mode_yields_exactly_the_plan_order(root: Path, name: str, workers: int) -> None:
    loader = make_loader(root, name, mode="indexed", workers=workers, epoch=2)
    order = loader.method.plan(2).order().tolist()
    assert [i for b in loader for i in b.ids.tolist()] == order


def test_smv_extra_items_carry_one_modality_and_dense_zero_fills(root: Path) -> None:
    loader = make_loader(root, "smv", mode="indexed")
    extra = 0
    for b in loader:
        for row, m in enumerate(b.mask.tolist()):
            if m != 3:
                extra += 1
                assert m in (1, 2)
                other = "feat" if m == 1 else "audio"
                if other in b:
                    assert torch.count_nonzero(b.dense(other)[row]) == 0
    assert extra == int(loader.method.copies(0).sum()) > 0


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("mode", ["streamed", "indexed"])
def test_resume_every_method(root: Path, name: str, workers: int, mode: str) -> None:
    if workers == 2 and mode == "indexed" and name in ("none", "smv-modality", "dus-rl"):
        pytest.skip("covered by the streamed and 0-worker cases (keeps the suite short)")

    def make(epoch: int) -> Any:
        return make_loader(root, name, mode=mode, workers=workers, epoch=epoch)

    # a random stop, the same in every run (str hashes are salted per process)
    rng = np.random.default_rng(zlib.crc32(f"{name}/{workers}/{mode}".encode()))
    total = len(make(0))
    stops = sorted({0, int(rng.integers(1, total)), total})
    check_resume(make, items, stops=stops)


def test_log_has_each_epochs_stats(root: Path, tmp_path: Path) -> None:
    import json

    log = tmp_path / "log.jsonl"
    loader = make_loader(root, "dus", log=log, epoch=1)
    loader.set_epoch(1)  # again: no second line
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1]
    assert lines[0]["batch_size/audio"] == 4 and lines[0]["batch_size/feat"] == 6
    assert lines[0]["method"] == "DUS" and "items/audio" in lines[0]


def test_bad_settings_name_the_argument(root: Path) -> None:
    small = Ledger(N - 1, 2, 3, names=list(NAMES))
    with pytest.raises(ValueError, match="ledger holds 21 ids but the dataset's id space is 22"):
        balanced_loader(root, SMV(small), modalities=modalities())
    other = Ledger(N, 2, 3, names=["video", "text"])
    with pytest.raises(ValueError, match=r"modalities \['video', 'text'\]"):
        balanced_loader(root, SMV(other), modalities=modalities())
    with pytest.raises(ValueError, match="'modalities' parameter of balanced_loader is required"):
        balanced_loader(root, SMV(fed_ledger()))
    with pytest.raises(ValueError, match="'batch_size' parameter of balanced_loader"):
        balanced_loader(root, SMV(fed_ledger()), modalities=modalities(), batch_size=0)
    with pytest.raises(ValueError, match="'mode' parameter of balanced_loader"):
        balanced_loader(root, None, modalities=modalities(), mode="random")
    with pytest.raises(ValueError, match="reads field 'mp4'"):
        from mmsample.decoding import Video

        balanced_loader(
            root, None, modalities={"video": Video(field="mp4"), "feat": modalities()["feat"]}
        )
    led = fed_ledger()
    with pytest.raises(ValueError, match=r"'ids' argument of Ledger\.observe"):
        z = torch.zeros(1, 3)
        led.observe(torch.tensor([N]), torch.tensor([0]), [z, z])


def test_state_refuses_another_method(root: Path) -> None:
    state = make_loader(root, "smv").state_dict()
    with pytest.raises(ValueError, match="class: saved 'SMV', now 'BSS'"):
        make_loader(root, "bss").load_state_dict(state)
    with pytest.raises(ValueError, match="no method"):
        make_loader(root, "none").load_state_dict(state)


def test_dus_method_ids_and_stats_follow_the_reader(root: Path) -> None:
    led = Ledger(N + 5, 2, 3, names=list(NAMES))  # a ledger larger than the id space is fine
    dus = DUS(led, batch_size=5, epochs=2)
    loader = balanced_loader(root, dus, modalities=modalities(), num_workers=0)
    assert dus.ids.tolist() == list(range(N))
    assert loader.method is dus and loader.ledger is led
    assert sum(len(b) for b in loader) == 5 * math.ceil(N / 5)


@pytest.mark.parametrize("mode", ["streamed", "indexed"])
def test_persistent_workers_follow_each_epochs_plan(root: Path, mode: str) -> None:
    method = SMV(fed_ledger(), warmup=1, seed=4)
    loader = balanced_loader(
        root,
        method,
        modalities=modalities(),
        batch_size=4,
        mode=mode,
        num_workers=2,
        persistent_workers=True,
        seed=7,
    )
    sizes = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        got = Counter(x for b in loader for x in items(b))
        plan = method.plan(epoch)
        assert got == Counter((i, m) for i in range(N) for m in plan.items(i)), epoch
        sizes.append(len(plan.masks))
    # the warm-up plan (22 items) sized the shared buffers for 44; SMV's plan outgrew them, so
    # the loader restarted the persistent workers with new buffers (and they read them)
    assert sizes[0] == N and sizes[1] > 2 * N
    assert loader.dataset.shared._generation == 2


def test_split_reaches_the_loader(tmp_path: Path) -> None:
    from mmsample.sharding import shard_dataset
    from mmsample.testing import encode_npy

    rows = ["key,label,split,npy"]
    for i in range(10):
        (tmp_path / f"f{i}.npy").write_bytes(encode_npy(np.full(4, i, dtype=np.float32)))
        rows.append(f"k{i},{i % 2},{'train' if i < 7 else 'test'},f{i}.npy")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    shard_dataset(tmp_path / "t.csv", tmp_path / "out", samples_per_shard=3)
    from mmsample.decoding import Array

    specs = {"a": Array(field="npy"), "b": Array(field="npy")}
    led = Ledger(10, 2, 2, names=["a", "b"])
    for mode in ("streamed", "indexed"):
        dus = DUS(led, batch_size=3, epochs=2)
        loader = balanced_loader(tmp_path / "out", dus, modalities=specs, mode=mode, split="test")
        assert dus.ids.tolist() == [7, 8, 9]
        assert sorted(i for b in loader for i in b.ids.tolist()) == [7, 8, 9]


RESUME_SCRIPT = """
import sys, torch
from pathlib import Path
from tests.loader_helpers import items, make_loader
root, name, mode, stop, state_path, out = sys.argv[1:]
loader = make_loader(Path(root), name, mode=mode, workers=2, epoch=1)
got = []
if stop == "rest":
    loader.load_state_dict(torch.load(state_path, weights_only=False))
    for b in loader:
        got += items(b)
else:
    for n, b in enumerate(loader):
        got += items(b)
        if n + 1 == int(stop):
            break
    torch.save(loader.state_dict(), state_path)
torch.save(got, out)
"""


@pytest.mark.parametrize(("name", "mode"), [("smv", "streamed"), ("dus", "indexed")])
def test_resume_in_a_fresh_process(root: Path, tmp_path: Path, name: str, mode: str) -> None:
    import subprocess
    import sys

    def run(stop: str, out: str) -> list:
        cmd = [sys.executable, "-c", RESUME_SCRIPT, str(root), name, mode, stop]
        subprocess.run(
            [*cmd, str(tmp_path / "state.pt"), str(tmp_path / out)],
            check=True,
            cwd=Path(__file__).parent.parent,
        )
        return torch.load(tmp_path / out)

    reference = [
        x for b in make_loader(root, name, mode=mode, workers=2, epoch=1) for x in items(b)
    ]
    first = run("2", "first.pt")
    rest = run("rest", "rest.pt")
    assert first + rest == reference
    assert len(first) == 2 * (6 if name == "dus" else 4) and len(rest) > 0  # 2 batches


class _Decodes(torch.utils.data.Dataset):
    """Each index decodes one tiny npy 20 times through `spec`."""

    def __init__(self, spec: Any, n: int) -> None:
        from mmsample.testing import encode_npy

        self.spec, self.n, self.data = spec, n, encode_npy(np.zeros(1, dtype=np.float32))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        for _ in range(20):
            self.spec.decode(self.data)
        return i


def test_counting_spec_loses_no_call_of_concurrent_workers() -> None:
    """The decoder counts the loader tests compare exactly: 2 workers decoding at once, 40,000
    calls (one shared `+= 1` counter lost 1 or 2 in 3 of 4 runs)."""
    from mmsample.decoding import Array

    spec = CountingSpec(Array(field="npy"))
    spec.decode(_Decodes(spec, 0).data)  # one call in the main process
    loader = torch.utils.data.DataLoader(_Decodes(spec, 2000), batch_size=50, num_workers=2)
    assert sum(len(b) for b in loader) == 2000
    assert int(spec.calls) == 20 * 2000 + 1


@pytest.mark.parametrize("mode", ["streamed", "indexed"])
@pytest.mark.parametrize("name", ["none", "smv", "dus"])
def test_a_loop_without_set_epoch_moves_on_and_an_abandoned_pass_warns_and_moves_on(
    root: Path, name: str, mode: str
) -> None:
    """The loader owns the epoch: iterating again after a completed pass serves the next
    epoch (what `set_epoch(e + 1)` would serve), never epoch 0's order again; iterating again
    after a pass that stopped early warns and serves the next epoch too."""

    def passes(loader: Any, count: int) -> list[list[tuple[int, int]]]:
        return [[x for batch in loader for x in items(batch)] for _ in range(count)]

    reference = make_loader(root, name, mode=mode)
    told = [[x for batch in reference for x in items(batch)]]
    reference.set_epoch(1)
    told.append([x for batch in reference for x in items(batch)])
    assert told[0] != told[1]  # the epochs differ (order or plan), so the check can fail

    forgetful = make_loader(root, name, mode=mode)
    assert passes(forgetful, 2) == told and forgetful.epoch == 1

    stopped = make_loader(root, name, mode=mode)
    it = iter(stopped)
    first = items(next(it))
    del it
    assert told[0][: len(first)] == first
    with pytest.warns(EpochWarning, match="stopped at batch 1 of .*it serves epoch 1"):
        again = passes(stopped, 1)[0]
    assert again == told[1] and stopped.epoch == 1
