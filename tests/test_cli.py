"""The `mmsample` command: the `python -m mmsample` entry point, argument errors, `inspect`."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmsample.cli import main
from mmsample.testing import encode_npy, encode_wav, make_tokenizer, moving_square_clip

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["dog", "cat", "dog", "dog", "bird"]
SIZE, WAV_SAMPLES = 16, 4000


def write_input(src: Path) -> Path:
    """Five rows of real media (16x16 h264 clip, 0.25 s wav, 8-float npy, a caption); row 1
    has no wav."""
    (src / "m").mkdir(parents=True)
    rows = []
    for i, label in enumerate(LABELS):
        (src / "m" / f"{i}.mp4").write_bytes(
            moving_square_clip(i, frames=4, size=SIZE, seconds_audio=None)
        )
        tone = 0.3 * np.sin(2 * np.pi * 330 * np.arange(WAV_SAMPLES) / 16000)
        (src / "m" / f"{i}.wav").write_bytes(encode_wav(tone))
        (src / "m" / f"{i}.npy").write_bytes(encode_npy(np.arange(8, dtype=np.float32) + i))
        wav = "" if i == 1 else f"m/{i}.wav"
        rows.append([f"s{i}", label, f"m/{i}.mp4", wav, f"the quick fox {i}", f"m/{i}.npy"])
    with open(src / "in.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "label", "mp4", "wav", "txt", "npy"])
        writer.writerows(rows)
    return src / "in.csv"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("cli")
    out = src / "out"
    argv = ["shard", str(write_input(src)), str(out), "--samples-per-shard", "2",
            "--workers", "1", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    return out


def test_python_m_mmsample_shards_and_verifies(tmp_path: Path) -> None:
    src = write_input(tmp_path)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    argv = ["shard", str(src), str(tmp_path / "out"), "--samples-per-shard", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "mmsample", *argv, "--workers", "1", "--verify"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote 3 shard(s), kept 0 from an earlier run" in done.stdout
    assert "5 samples in 3 shards, 3 classes, fields mp4, npy, txt, wav" in done.stdout
    assert "verify: OK" in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tar")) == [
        f"shard-00000{i}.tar" for i in range(3)
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["shard", "in.csv", "out", "--part", "2/2"],
        ["shard", "in.csv", "out", "--part", "1"],
        ["shard", "in.csv", "out", "--samples-per-shard", "0"],
        ["shard", "in.csv", "out", "--workers", "-1"],
        ["inspect"],
        [],
        ["frobnicate"],
    ],
)
def test_bad_arguments_exit_with_usage_status(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2


@pytest.mark.parametrize("command", ["shard", "index", "inspect", "query", "subset", "report"])
def test_help_of_every_subcommand(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: mmsample {command}")


def test_runtime_errors_print_one_message_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["shard", str(tmp_path / "none.csv"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mmsample shard: error: The 'input' parameter must be an existing file")
    assert main(["inspect", str(tmp_path)]) == 1
    assert "no manifest.json" in capsys.readouterr().err


def test_inspect_reports_counts_and_decoded_shapes(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokenizer = make_tokenizer(tmp_path / "tok")
    assert main(["inspect", str(dataset), "--tokenizer", str(tokenizer), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    tars = sorted(dataset.glob("*.tar"))
    assert report["samples"] == 5 and report["shards"] == len(tars) == 3
    assert report["bytes"] == sum(p.stat().st_size for p in tars)
    assert report["fields"] == ["mp4", "npy", "txt", "wav"]
    assert report["class_counts"] == {"bird": 1, "cat": 1, "dog": 3}
    sample = report["sample"]
    assert (sample["id"], sample["key"], sample["class"]) == (0, "s0", "dog")
    shapes = sample["modalities"]
    assert shapes["mp4"] == {"shape": [10, 3, SIZE, SIZE], "dtype": "uint8"}  # Video(): 10 frames
    assert shapes["npy"] == {"shape": [8], "dtype": "float32"}
    assert shapes["txt"] == {
        "input_ids": {
            "shape": [64],
            "dtype": "int64",
        },  # Text(byte_ids=True): max_length 64, padded
        "attention_mask": {"shape": [64], "dtype": "int64"},
    }
    assert shapes["wav"]["dtype"] == "float32"
    assert shapes["wav"]["shape"][0] == 512 // 2 + 1  # Audio(): log STFT, n_fft 512
    assert sample["absent"] == []


def test_inspect_text_and_the_id_option(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(dataset), "--id", "1"]) == 0
    text = capsys.readouterr().out
    assert "samples 5 of 5 rows, 3 shards" in text
    assert "sample id 1 (key s1, shard-000000.tar, class cat)" in text
    assert "  mp4  uint8 [10, 3, 16, 16]" in text
    assert "absent: wav" in text
    for name, count in (("bird", 1), ("cat", 1), ("dog", 3)):
        assert f"    {name:<4}  {count}" in text
    assert main(["inspect", str(dataset), "--id", "7"]) == 1
    assert "7 is not in" in capsys.readouterr().err


def test_inspect_with_a_missing_tokenizer_names_the_option_not_a_shard(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 7 item 14: a tokenizer path that does not exist was tried as a hub repo id and the
    failure blamed a shard; now it is an error about the tokenizer path, before any decoding."""
    for name in (str(tmp_path / "no-such-tokenizer"), "bert-base-uncased"):
        assert main(["inspect", str(dataset), "--tokenizer", name]) == 1
        err = capsys.readouterr().err
        assert "The 'tokenizer' parameter of Text must be a local tokenizer directory" in err
        assert err.startswith("mmsample inspect: error: --tokenizer: The 'tokenizer'")  # the flag
        assert "does not exist" in err and "save_pretrained" in err and "shard-" not in err
