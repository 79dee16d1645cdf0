"""Issue 7 item 9: manifests as people write them. Fields typed from their cells' extensions or
`--field NAME=EXT`, inline text declared once, metadata columns kept per sample, a split column
honoured by both readers (`split="train"`) and counted in the manifest; no column becomes an
unchecked field silently."""

from __future__ import annotations

import csv
import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from mmsample.cli import main
from mmsample.decoding import Audio, Image, Spec, Text
from mmsample.errors import ManifestError
from mmsample.sharding import BadRowsError, shard_dataset
from mmsample.shards import IndexedDataset, StreamedDataset
from mmsample.shards.format import Manifest
from mmsample.shards.offsets import load_index

ROWS = [  # the user's table: key, label, split, image (path), text (inline), audio (path)
    ("kite", "bird", "train", "img/kite.png", "A red kite.", "snd/kite.ogg"),
    ("owl", "bird", "val", "img/owl.png", "An owl, at night.", "snd/owl.ogg"),
    ("cat", "mammal", "train", "img/cat.png", "A cat. It sleeps.", "snd/cat.ogg"),
    ("dog", "mammal", "test", "img/dog.png", "", "snd/dog.ogg"),
    ("fox", "mammal", "train", "img/fox.png", "A fox", ""),
]
HEADER = ["key", "label", "split", "image", "text", "audio"]
SPLITS = {"train": [0, 2, 4], "val": [1], "test": [3]}


def encode_png(rgb: np.ndarray) -> bytes:
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = rgb.shape[1], rgb.shape[0], "rgb24"
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    return b"".join(bytes(p) for p in [*codec.encode(frame), *codec.encode(None)])


def encode_ogg(samples: np.ndarray, rate: int = 48000) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples[None].astype(np.float32), "flt", "mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("table")
    (root / "img").mkdir()
    (root / "snd").mkdir()
    for i, row in enumerate(ROWS):
        (root / row[3]).write_bytes(encode_png(np.full((8, 12, 3), 40 * i, np.uint8)))
        if row[5]:
            tone = 0.3 * np.sin(2 * np.pi * (300 + 100 * i) * np.arange(4800) / 48000)
            (root / row[5]).write_bytes(encode_ogg(tone))
    with open(root / "in.csv", "w", newline="") as f:
        csv.writer(f).writerows([HEADER, *ROWS])
    return root


def members(out: Path) -> dict[str, dict[str, bytes]]:
    """key -> {field: payload} of every sample, read with plain tarfile."""
    found: dict[str, dict[str, bytes]] = {}
    for path in sorted(out.glob("*.tar")):
        with tarfile.open(path) as tar:
            for m in tar:
                key, _, ext = m.name.partition(".")
                f = tar.extractfile(m)
                assert f is not None
                found.setdefault(key, {})[ext] = f.read()
    return found


MODS: dict[str, Spec] = {
    "image": Image(field="image.png"),
    "text": Text(field="text.txt", byte_ids=True, max_length=6),
    "audio": Audio(field="audio.ogg"),
}


def test_the_users_table_shards_as_written(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["shard", str(src / "in.csv"), str(out), "--text-field", "text", "--workers", "1",
            "--samples-per-shard", "2", "--verify", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "verify: OK" in said
    assert "image -> field image.png (.png files; every cell ends in .png)" in said
    assert "audio -> field audio.ogg (.ogg files; every cell ends in .ogg)" in said
    assert "text -> field text.txt (inline text; given by --text-field)" in said
    assert "split -> the split (named split)" in said
    manifest = Manifest.load(out)
    assert manifest.fields == ["audio.ogg", "image.png", "text.txt"]
    assert manifest.split_counts() == {k: len(v) for k, v in SPLITS.items()}
    assert manifest.num_samples == 5 and manifest.classes == ["bird", "mammal"]
    found = members(out)
    for i, (key, label, split, image, text, audio) in enumerate(ROWS):
        expected = {
            "id": str(i).encode(),
            "cls": str(["bird", "mammal"].index(label)).encode(),
            "image.png": (src / image).read_bytes(),
            "json": json.dumps({"split": split}).encode(),
        }
        if text:
            expected["text.txt"] = text.encode()
        if audio:
            expected["audio.ogg"] = (src / audio).read_bytes()
        assert found[key] == expected
    # the split of every sample is in its shard's offset index too
    indexes = [load_index(p) for p in sorted(out.glob("*.idx.npy"))]
    splits = [str(s) for i in indexes for s in (i.splits if i.splits is not None else [])]
    assert splits == [r[2] for r in ROWS]
    # inspect decodes every field with its default spec
    assert main(["inspect", str(out)]) == 0
    report = capsys.readouterr().out
    assert "not decoded" not in report
    assert re.search(r"image\.png\s+uint8 \[3, 8, 12\]", report)
    assert "splits  test 1, train 3, val 1" in report


@pytest.mark.parametrize("reader", [IndexedDataset, StreamedDataset])
def test_both_readers_take_a_split(src: Path, tmp_path: Path, reader: type) -> None:
    out = tmp_path / "out"
    shard_dataset(src / "in.csv", out, text_fields=["text"], workers=1, samples_per_shard=2)
    for split, rows in SPLITS.items():
        ds = reader(out, MODS, split=split)
        got = [ds[i] for i in range(len(ds))] if reader is IndexedDataset else list(ds)
        assert sorted(s["id"] for s in got) == rows
        assert len(ds) == len(rows)
        for s in got:
            assert s["key"] == ROWS[s["id"]][0]
            assert s["image"].shape == (3, 8, 12)
            assert int(s["image"][0, 0, 0]) == 40 * s["id"]
    everything = reader(out, MODS)
    assert len(everything) == 5
    with pytest.raises(
        ValueError, match=r"'split' parameter .* splits are \['test', 'train', 'val'\]"
    ):
        reader(out, MODS, split="dev")


def test_split_of_a_dataset_without_one_is_refused(src: Path, tmp_path: Path) -> None:
    table = tmp_path / "nosplit.csv"
    table.write_text("key,label,image\na,x,%s\n" % (src / "img" / "kite.png"))
    shard_dataset(table, tmp_path / "o", workers=1)
    with pytest.raises(ValueError, match="it has no split column"):
        IndexedDataset(tmp_path / "o", {"image": Image(field="image.png")}, split="train")
    assert Manifest.load(tmp_path / "o").split_counts() == {}


def test_index_rebuilds_the_splits_from_the_tars(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shard_dataset(src / "in.csv", out, text_fields=["text"], workers=1, samples_per_shard=2)
    before = Manifest.load(out)
    written = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    # with the shard sidecars: the same files, byte for byte
    for path in [out / "manifest.json", *out.glob("*.idx.npy")]:
        path.unlink()
    assert main(["index", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in sorted(out.iterdir())} == written
    # from the tars alone
    for path in [out / "manifest.json", *out.glob("*.idx.npy"), *out.glob("shard-*.json")]:
        path.unlink()
    classes = tmp_path / "classes.txt"
    classes.write_text("bird\nmammal\n")
    assert main(["index", str(out), "--classes", str(classes), "--verify"]) == 0
    after = Manifest.load(out)
    assert after.split_counts() == before.split_counts() == {"test": 1, "train": 3, "val": 1}
    assert [s.split_counts for s in after.shards] == [s.split_counts for s in before.shards]
    ds = StreamedDataset(out, MODS, split="train")
    assert sorted(s["id"] for s in ds) == SPLITS["train"]


def test_text_not_declared_is_kept_as_metadata_and_said(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["shard", str(src / "in.csv"), str(out), "--workers", "1", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert (
        "text -> metadata (no cell names a media file; --text-field text to make it a text" in said
    )
    assert Manifest.load(out).fields == ["audio.ogg", "image.png"]
    meta = json.loads(members(out)["kite"]["json"])
    assert meta == {"split": "train", "text": "A red kite."}


def test_metadata_columns_and_jsonl_values_are_kept(src: Path, tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"key": "a", "label": 1, "photo": str(src / "img/kite.png"), "source": "http://x/a",
         "duration": 3.5, "fold": "train", "tags": ["red", "sky"]},
        {"key": "b", "label": 0, "photo": str(src / "img/owl.png"), "source": "http://x/b.html",
         "duration": None, "fold": "test"},
    ]  # fmt: skip
    table = tmp_path / "in.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = shard_dataset(table, tmp_path / "o", workers=1, split_column="fold")
    kinds = {c.name: (c.kind, c.field) for c in report.columns}
    assert kinds == {
        "photo": ("file", "photo.png"),
        "source": ("meta", None),
        "duration": ("meta", None),
        "fold": ("split", None),
        "tags": ("meta", None),
    }
    found = members(tmp_path / "o")
    assert json.loads(found["a"]["json"]) == {
        "source": "http://x/a",
        "duration": 3.5,
        "split": "train",
        "tags": ["red", "sky"],
    }
    assert json.loads(found["b"]["json"]) == {"source": "http://x/b.html", "split": "test"}
    assert Manifest.load(tmp_path / "o").split_counts() == {"test": 1, "train": 1}


def test_an_explicit_field_types_cells_without_extension(src: Path, tmp_path: Path) -> None:
    (tmp_path / "blob1").write_bytes((src / "img/kite.png").read_bytes())
    (tmp_path / "blob2").write_bytes(b"hello\n")  # not a png: the probe must refuse it
    table = tmp_path / "in.csv"
    table.write_text("key,label,picture\na,x,blob1\nb,x,blob2\n")
    with pytest.raises(BadRowsError) as caught:
        shard_dataset(table, tmp_path / "o", fields={"picture": "png"}, workers=1)
    assert [(b.row, b.reasons[0][0]) for b in caught.value.rows] == [(1, "picture")]
    assert "not a PNG file" in caught.value.rows[0].reasons[0][1]
    report = shard_dataset(
        table, tmp_path / "o", fields={"picture": "png"}, workers=1, skip_bad=True
    )
    assert report.manifest is not None and report.manifest.fields == ["picture.png"]
    assert members(tmp_path / "o")["a"]["picture.png"] == (src / "img/kite.png").read_bytes()
    # without the mapping the column names no media file: metadata, said in the summary
    report = shard_dataset(table, tmp_path / "p", workers=1, meta=(), skip_bad=True, text_fields=())
    assert [(c.name, c.kind) for c in report.columns] == [("picture", "meta")]


def test_a_column_named_name_ext_is_that_field_once(src: Path, tmp_path: Path) -> None:
    kite = src / "img/kite.png"
    table = tmp_path / "in.csv"
    table.write_text(f"key,label,photo.png\na,x,{kite}\n")
    report = shard_dataset(table, tmp_path / "o", workers=1)
    assert [(c.name, c.field) for c in report.columns] == [("photo.png", "photo.png")]
    table.write_text(f"key,label,photo.png,photo\na,x,{kite},{kite}\n")
    with pytest.raises(ManifestError, match=re.escape("two columns would fill the same field")):
        shard_dataset(table, tmp_path / "p", workers=1)


def test_a_media_column_of_any_name_is_probed(src: Path, tmp_path: Path) -> None:
    """A column named `video` of .mp4 paths was stored unchecked as field `video`; now it is
    field video.mp4 and every file is probed."""
    (tmp_path / "fake.mp4").write_bytes(b"hello\n")
    table = tmp_path / "in.csv"
    table.write_text("key,label,video\na,x,fake.mp4\n")
    with pytest.raises(BadRowsError, match=r"key 'a'\): video: unreadable \.mp4 file .*fake\.mp4"):
        shard_dataset(table, tmp_path / "o", workers=1)


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        (["a.png", "b.jpg"], "column 'image' holds .jpg: 1, .png: 1: a field holds files of one"),
        (["a.png", "a red kite"], "column 'image' holds .png: 1, 1 other cells"),
        (["a.PNG", "b.wav"], ".png: 1, .wav: 1"),
    ],
)
def test_a_column_the_cells_do_not_decide_is_refused(
    tmp_path: Path, cells: list[str], message: str
) -> None:
    table = tmp_path / "in.csv"
    table.write_text("key,label,image\n" + "".join(f"k{i},x,{c}\n" for i, c in enumerate(cells)))
    with pytest.raises(ManifestError, match=re.escape(message)) as caught:
        shard_dataset(table, tmp_path / "o", workers=1)
    assert "--field image=EXT" in str(caught.value) and "--meta image" in str(caught.value)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fields": {"picture": "png"}}, "The 'fields' parameter names ['picture'], which are not"),
        ({"fields": {"image": "a.b"}}, "maps column 'image' to 'a.b'"),
        ({"fields": {"label": "png"}}, "key and label are not fields"),
        ({"meta": ["nope"]}, "The 'meta' parameter names ['nope']"),
        ({"split_column": "fold"}, "The 'split_column' parameter names ['fold']"),
        ({"meta": ["image"], "fields": {"image": "png"}}, "given two roles"),
        ({"text_fields": ["split"], "split_column": "split"}, "given two roles"),
        ({"meta": ["split"]}, "column 'split' would be metadata, but metadata keeps the split"),
        ({"split_column": "text"}, "column 'split' would be metadata"),
    ],
)
def test_column_options_are_checked(
    src: Path, tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        shard_dataset(src / "in.csv", tmp_path / "o", workers=1, **kwargs)


def test_cli_field_needs_name_and_extension(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["shard", str(src / "in.csv"), str(tmp_path / "o"), "--field", "image"])
    assert caught.value.code == 2
    assert "must be NAME=EXT (e.g. image=png); got 'image'" in capsys.readouterr().err
    out = tmp_path / "o"
    argv = ["shard", str(src / "in.csv"), str(out), "--field", "image=.PNG", "--text-field",
            "text", "--workers", "1", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert "image -> field image.png (.png files; given by --field)" in capsys.readouterr().out


def test_index_of_foreign_json_members(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Another tool's `KEY.json` may follow another convention: no split is read from it; a
    member that is not JSON at all is a problem naming the sample."""
    import webdataset as wds

    root = tmp_path / "foreign"
    root.mkdir()
    metas = [b'[{"box": [1, 2]}]', b'{"split": 3}', b'{"split": "val", "w": 2}', b"{}"]
    with wds.TarWriter(str(root / "a.tar"), encoder=False) as sink:
        for i, meta in enumerate(metas):
            sink.write({"__key__": f"x{i}", "id": str(i).encode(), "cls": b"0",
                        "txt": b"t", "json": meta})  # fmt: skip
    (tmp_path / "c.txt").write_text("only\n")
    assert main(["index", str(root), "--classes", str(tmp_path / "c.txt"), "--verify"]) == 0
    assert Manifest.load(root).split_counts() == {"val": 1}
    assert sorted(
        s["id"] for s in StreamedDataset(root, {"t": Text(byte_ids=True)}, split="val")
    ) == [2]
    with wds.TarWriter(str(root / "b.tar"), encoder=False) as sink:
        sink.write({"__key__": "y", "id": b"9", "cls": b"0", "txt": b"t", "json": b"{not json"})
    assert main(["index", str(root), "--classes", str(tmp_path / "c.txt")]) == 1
    assert "b.tar:y: y.json is not UTF-8 JSON" in capsys.readouterr().err
