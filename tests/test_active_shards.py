"""Active learning end to end on tiny real shards: the pool pass equals the model computed by hand,
query -> state file -> readers with the id filter read exactly the labeled ids, `mmsample query`
and `mmsample subset` as subprocesses, and two gloo ranks select what one process selects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmsample.active import BMMAL, Pool, RoundState, pool_pass, query, read_ids
from mmsample.cli import main
from mmsample.loader import balanced_loader
from mmsample.shards import IndexedDataset, StreamedDataset

from .active_model import TinyActiveModel
from .loader_helpers import N, modalities, write_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pool")
    write_dataset(path)
    return path


def hand_pool(root: Path, model: TinyActiveModel) -> Pool:
    """The Pool computed sample by sample from the reader, the head called on each subset."""
    reader = IndexedDataset(root, modalities())
    feats: list[list[torch.Tensor]] = [[], []]
    subset = []
    with torch.no_grad():
        model.eval()
        for i in range(N):
            s = reader.get(i)
            fa = model.audio_features(s["audio"].unsqueeze(0)).float()[0]
            fv = s["feat"].float()
            feats[0].append(fa)
            feats[1].append(fv)
            rows = [
                torch.zeros(14),
                torch.cat([fa, torch.zeros(8)]),
                torch.cat([torch.zeros(6), fv]),
                torch.cat([fa, fv]),
            ]
            subset.append(torch.stack([torch.softmax(model.head(r), -1) for r in rows]))
    sub = torch.stack(subset)
    return Pool([torch.stack(f) for f in feats], sub[:, -1], sub)


def test_pool_pass_and_query_equal_the_model_by_hand(root: Path) -> None:
    model = TinyActiveModel()
    pool = pool_pass(model, root, modalities=modalities(), batch_size=5, progress=False)
    want = hand_pool(root, TinyActiveModel())
    assert pool.ids.tolist() == list(range(N))
    assert pool.labels is not None and pool.labels.tolist() == [i % 3 for i in range(N)]
    for j in range(2):
        assert torch.allclose(pool.features[j], want.features[j], atol=1e-6)
    assert pool.subset_probs is not None and want.subset_probs is not None
    assert torch.allclose(pool.subset_probs, want.subset_probs, atol=1e-6)
    assert model.training  # the pass ran in eval mode and restored the mode
    ids = query(
        root,
        model,
        "bmmal",
        6,
        modalities=modalities(),
        batch_size=4,
        seed=2,
        labeled=[0, 1, 2],
        progress=False,
    )
    expect = BMMAL().select(want, 6, labeled=[0, 1, 2], generator=torch.Generator().manual_seed(2))
    assert ids.tolist() == expect.tolist()
    # BALD runs MC-dropout passes of the head: the draws differ from the eval-mode softmax
    mc = pool_pass(model, root, modalities=modalities(), mc_passes=3, progress=False).mc_probs
    assert mc is not None and mc.shape == (N, 3, 3)
    assert not torch.allclose(mc[:, 0], want.probs, atol=1e-3)
    assert len(query(root, model, "bald", 4, progress=False)) == 4  # specs: model.modalities


def test_query_state_file_and_id_filtered_readers(root: Path, tmp_path: Path) -> None:
    state = RoundState("bmmal", seed=0, budget=5)
    state.add_round([20, 3])  # an initial labeled set
    ids = query(
        root,
        TinyActiveModel(),
        "bmmal",
        5,
        modalities=modalities(),
        labeled=state.labeled(),
        progress=False,
    )
    state.add_round(ids.tolist())
    path = state.save(tmp_path / "round.json")
    assert not (tmp_path / "round.json.tmp").exists()
    back = RoundState.load(path)
    labeled = back.labeled().tolist()
    assert back.rounds == [[20, 3], ids.tolist()] and len(labeled) == 7
    reader = IndexedDataset(root, modalities(), ids=back.labeled())
    assert sorted(reader.get(i)["id"] for i in labeled) == labeled
    assert sorted(int(reader[k]["id"]) for k in range(len(reader))) == labeled
    streamed = StreamedDataset(root, modalities(), ids=back.labeled(), shuffle=3, seed=1)
    assert sorted(int(s["id"]) for s in streamed) == labeled
    for mode in ("streamed", "indexed"):
        loader = balanced_loader(
            root, None, modalities=modalities(), batch_size=3, mode=mode, ids=back.labeled()
        )
        loader.set_epoch(0)
        assert sorted(i for b in loader for i in b.ids.tolist()) == labeled, mode
    with pytest.raises(ValueError, match=r"'ids' parameter of IndexedDataset holds 2 ids that"):
        IndexedDataset(root, modalities(), ids=[1, N, N + 5])
    with pytest.raises(ValueError, match=r"budget.* is 16 but only 15 of the pool's 22"):
        query(
            root,
            TinyActiveModel(),
            "badge",
            16,
            modalities=modalities(),
            labeled=labeled,
            progress=False,
        )


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "mmsample", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_cli_query_rounds_and_subset(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = run_cli(
        "query",
        str(root),
        "--model",
        "tests.active_model:build",
        "--strategy",
        "bmmal",
        "--budget",
        "4",
        "--out",
        str(tmp_path / "r1.json"),
        "--quiet",
    )
    assert first.returncode == 0, first.stderr
    assert "picked 4 of 22 pool samples" in first.stdout
    assert "mean modality contribution of the picks: audio" in first.stdout
    r1 = json.loads((tmp_path / "r1.json").read_text())
    want = query(root, TinyActiveModel(), "bmmal", 4, modalities=modalities(), progress=False)
    assert r1["rounds"] == [want.tolist()] and r1["strategy"] == "bmmal"
    counts = first.stdout.split("per predicted class: ")[1].splitlines()[0]
    assert sum(int(c.split(": ")[1]) for c in counts.split(", ")) == 4
    second = run_cli(
        "query",
        str(root),
        "--model",
        "tests.active_model:build",
        "--budget",
        "5",
        "--labeled",
        str(tmp_path / "r1.json"),
        "--out",
        str(tmp_path / "r2.json"),
        "--parts",
        "2",
        "--quiet",
    )
    assert second.returncode == 0, second.stderr
    r2 = RoundState.load(tmp_path / "r2.json")
    assert r2.rounds[0] == r1["rounds"][0] and len(r2.rounds[1]) == 5
    assert len(r2.labeled()) == 9 and r2.split == 2
    # error paths in-process (the same main() as the console script): exit 1, one message
    model = ["--model", "tests.active_model:build"]
    assert (
        main(
            [
                "query",
                str(root),
                *model,
                "--strategy",
                "kcenter",
                "--budget",
                "2",
                "--out",
                str(tmp_path / "x.json"),
            ]
        )
        == 1
    )
    assert "must be one of ['badge', 'bald', 'bmmal'" in capsys.readouterr().err
    assert (
        main(
            [
                "query",
                str(root),
                *model,
                "--budget",
                "14",
                "--labeled",
                str(tmp_path / "r2.json"),
                "--out",
                str(tmp_path / "x.json"),
                "--quiet",
            ]
        )
        == 1
    )
    assert "is 14 but only 13 of the pool's 22" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    out = tmp_path / "labeled"
    sub = run_cli(
        "subset", str(root), str(tmp_path / "r2.json"), str(out), "--samples-per-shard", "4"
    )
    assert sub.returncode == 0, sub.stderr
    copy = IndexedDataset(out, modalities())
    source = IndexedDataset(root, modalities())
    assert sorted(copy.table.ids.tolist()) == r2.labeled().tolist()
    for i in r2.labeled().tolist():
        a, b = copy.get(i), source.get(i)
        assert a["key"] == b["key"] and a["label"] == b["label"]
        assert torch.equal(a["audio"], b["audio"]) and torch.equal(a["feat"], b["feat"])
    assert main(["subset", str(root), str(tmp_path / "r2.json"), str(out)]) == 1
    assert "already holds a dataset" in capsys.readouterr().err


def _rank(rank: int, world: int, init: str, root: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        result = {}
        for name in ("bmmal", "badge", "coreset", "entropy"):
            result[name] = query(
                root,
                TinyActiveModel(),
                name,
                7,
                modalities=modalities(),
                batch_size=3,
                labeled=[5, 6],
                seed=4,
                progress=False,
            ).tolist()
        pool = pool_pass(TinyActiveModel(), root, modalities=modalities(), progress=False)
        result["ids"] = pool.ids.tolist()
        torch.save(result, f"{out}{rank}.pt")
        dist.barrier()  # no rank tears gloo down while its peer still talks to it
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_select_what_one_process_selects(root: Path, tmp_path: Path) -> None:
    init = f"file://{tmp_path / 'rendezvous'}"
    out = str(tmp_path / "rank")
    mp.start_processes(_rank, args=(2, init, str(root), out), nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(f"{out}{r}.pt") for r in (0, 1))
    assert r0["ids"] == r1["ids"] == list(range(N))
    for name in ("bmmal", "badge", "coreset", "entropy"):
        one = query(
            str(root),
            TinyActiveModel(),
            name,
            7,
            modalities=modalities(),
            labeled=[5, 6],
            seed=4,
            progress=False,
        ).tolist()
        assert r0[name] == r1[name] == one, name
        assert not {5, 6} & set(one) and len(set(one)) == 7
    assert np.unique(r0["bmmal"]).size == 7


def test_round_state_and_id_files(tmp_path: Path) -> None:
    state = RoundState("badge", seed=3, budget=2, split=1)
    state.add_round([4, 9])
    state.add_round([1, 2])
    with pytest.raises(ValueError, match=r"ids \[2, 7\] are already labeled or repeated"):
        state.add_round([7, 2, 7])
    path = state.save(tmp_path / "s.json")
    (tmp_path / "list.json").write_text("[5, 3, 5]")
    (tmp_path / "lines.txt").write_text("8\n6\n")
    (tmp_path / "bad.txt").write_text("8\nx\n")
    assert read_ids(path).tolist() == [1, 2, 4, 9]
    assert read_ids(tmp_path / "list.json").tolist() == [3, 5]
    assert read_ids(tmp_path / "lines.txt").tolist() == [6, 8]
    with pytest.raises(ValueError, match="not a state file, a JSON list of ids or one integer"):
        read_ids(tmp_path / "bad.txt")
    (tmp_path / "other.json").write_text('{"rounds": []}')
    with pytest.raises(ValueError, match="is not an mmsample active-learning state file"):
        RoundState.load(tmp_path / "other.json")


class _FusedFeatures(TinyActiveModel):
    def features(self, batch):  # type: ignore[no-untyped-def]
        return torch.cat(super().features(batch), dim=1)  # one fused [B, 14] tensor


class _SequenceFeatures(TinyActiveModel):
    def features(self, batch):  # type: ignore[no-untyped-def]
        audio, feat = super().features(batch)
        return [audio[:, None, :], feat]  # [B, 1, 6]: not flattened


@pytest.mark.parametrize(
    ("model", "got"),
    [
        (_FusedFeatures(), r"got a tensor \(4, 14\)"),
        (_SequenceFeatures(), r"\(4, 1, 6\), \(4, 8\)"),
    ],
)
def test_features_of_the_wrong_form_are_named(root: Path, model: TinyActiveModel, got: str) -> None:
    """A new user's usual slips: one fused tensor (was split into rows and reported as
    `features[0] of subset_logits` with a row's shape) or [B, T, D] features."""
    pattern = r"model\.features\(batch\) must return .*\(2: audio, feat\), B = 4 samples.*"
    with pytest.raises(ValueError, match=pattern + got):
        query(root, model, "bmmal", 2, batch_size=4, progress=False)


def test_cli_model_module_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mmsample query --model mymodel:build` run from the folder holding mymodel.py, as the
    `mmsample` console script runs it (no current directory on sys.path, unlike `python -m`)."""
    from mmsample.active.command import load_model

    (tmp_path / "walkmodel.py").write_text(
        "from tests.active_model import TinyActiveModel\n\ndef build():\n    return TinyActiveModel(3)\n"
    )
    monkeypatch.chdir(tmp_path)
    cwd = {"", ".", str(tmp_path)}
    monkeypatch.setattr(sys, "path", [str(REPO)] + [p for p in sys.path if p not in cwd])
    monkeypatch.delitem(sys.modules, "walkmodel", raising=False)
    model, mods = load_model("walkmodel:build")
    assert isinstance(model, TinyActiveModel) and list(mods) == ["audio", "feat"]
    assert torch.equal(model.linear.weight, TinyActiveModel(3).linear.weight)
    with pytest.raises(ValueError, match=r"cannot import 'build' from 'nosuchmodule'"):
        load_model("nosuchmodule:build")


def test_subset_keeps_each_samples_split_and_metadata(tmp_path: Path) -> None:
    """Splits and `KEY.json` metadata travel with each copied sample (written by hand below)."""
    from mmsample.active import write_subset
    from mmsample.sharding import ShardWriter
    from mmsample.shards.format import Manifest
    from mmsample.shards.shard_table import ShardTable

    src = tmp_path / "src"
    src.mkdir()
    split = ["train", "test", "", "train", "val", "test"]  # "" = no split for id 2
    infos = []
    for s in range(2):
        w = ShardWriter(src / f"shard-{s:06d}.tar", ["a", "b"])
        for i in range(3 * s, 3 * s + 3):
            w.write(f"k{i}", i, i % 2, {"txt": b"x" * i}, meta={"n": str(i)}, split=split[i])
        infos.append(w.close())
    Manifest(["a", "b"], ["txt"], infos, num_rows=6, samples_per_shard=3).save(src)
    out = tmp_path / "out"
    write_subset(src, [1, 2, 3, 5], out, samples_per_shard=3)
    assert Manifest.load(out).split_counts() == {"test": 2, "train": 1}
    assert ShardTable(out, split="test").ids.tolist() == [1, 5]
    assert ShardTable(out, split="train").ids.tolist() == [3]
    table = ShardTable(out)
    assert table.ids.tolist() == [1, 2, 3, 5]
    for row, i in enumerate([1, 2, 3, 5]):
        raw = table.read(row)
        assert raw["key"] == f"k{i}" and raw["label"] == i % 2
        assert raw["fields"]["txt"] == b"x" * i
        assert json.loads(raw["fields"]["json"]) == {"n": str(i)}


@pytest.mark.parametrize(("budget", "split"), [(-1, 1), (2.5, 1), (True, 1), (3, 0)])
def test_query_refuses_a_bad_budget_or_split_before_the_pool_pass(
    root: Path, budget: object, split: object
) -> None:
    """The pass over a VGGSound-size pool takes minutes: a budget or split that can never work
    is named before it starts (the model's features are never called)."""
    model = TinyActiveModel()
    calls = []
    features = model.features
    model.features = lambda batch: calls.append(1) or features(batch)  # type: ignore[method-assign]
    name = "split" if split == 0 else "budget"
    with pytest.raises(ValueError, match=f"The '{name}' parameter of query must be an int >= "):
        query(root, model, "badge", budget, split=split, modalities=modalities(), progress=False)  # type: ignore[arg-type]
    assert calls == []
