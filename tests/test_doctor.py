"""Say which decoder runs (issue 16, item 7): `mmsample doctor` names every backend, the default
decoder per modality, the FFmpeg libraries and torch's threads; with torchcodec unimportable the
decoder line that `pipelines.train` and `make demo` print says PyAV is used, why, and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmsample.cli import main
from mmsample.decoding.backends.diagnosis import (
    FFMPEG_DEBIAN_PACKAGES,
    FFMPEG_LIBRARIES,
    default_decoders,
)

ROOT = Path(__file__).resolve().parents[1]

# sitecustomize shims that make torchcodec unimportable the two ways it happens: installed but its
# FFmpeg libraries missing (torchcodec raises OSError), or not installed at all.
NO_FFMPEG = """
import sys

class NoFFmpeg:
    def find_spec(self, name, path=None, target=None):
        if name == "torchcodec" or name.startswith("torchcodec."):
            raise OSError("libavutil.so.57: cannot open shared object file: No such file")
        return None

sys.meta_path.insert(0, NoFFmpeg())
"""
NOT_INSTALLED = "import sys\nsys.modules['torchcodec'] = None\n"


def test_doctor_names_the_backends_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in ("torchcodec", "pyav", "decord", "wave"):
        assert f"\n  {name} " in out, name
    for lib in FFMPEG_LIBRARIES:
        assert f"lib{lib}: " in out
    assert "decoder: " in out and "intra-op threads" in out and "torch " in out
    decoders = default_decoders()
    assert set(decoders) == {"video", "audio", "image"}
    assert decoders["video"] in out


def test_doctor_json_holds_the_same_facts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert [b["name"] for b in facts["backends"]] == ["torchcodec", "pyav", "decord"]
    assert facts["decoders"] == default_decoders()
    assert set(facts["ffmpeg_libraries"]) == set(FFMPEG_LIBRARIES)
    assert facts["torch"]["intra_op_threads"] >= 1 and facts["line"].startswith("decoder: ")


def decoder_line_with(shim: str, tmp_path: Path, **extra: str) -> str:
    (tmp_path / "sitecustomize.py").write_text(shim)
    env = {k: v for k, v in os.environ.items() if k != "MMSAMPLE_BACKEND"} | extra
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    code = "from mmsample.decoding.backends.diagnosis import decoder_line; print(decoder_line())"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_without_ffmpeg_the_decoder_line_says_pyav_why_and_the_fix(tmp_path: Path) -> None:
    pytest.importorskip("av")
    line = decoder_line_with(NO_FFMPEG, tmp_path)
    assert line.startswith("decoder: pyav for video, audio, image; torchcodec is not used: ")
    assert "OSError: libavutil.so.57: cannot open shared object file" in line
    assert f"apt-get install {' '.join(FFMPEG_DEBIAN_PACKAGES)}" in line


def test_without_torchcodec_the_fix_is_to_install_it(tmp_path: Path) -> None:
    pytest.importorskip("av")
    line = decoder_line_with(NOT_INSTALLED, tmp_path)
    assert line.startswith("decoder: pyav for video, audio, image; torchcodec is not used: ")
    assert "ModuleNotFoundError" in line and line.endswith("fix: pip install torchcodec")


def test_a_backend_set_by_the_env_var_is_named(tmp_path: Path) -> None:
    pytest.importorskip("av")
    line = decoder_line_with("", tmp_path, MMSAMPLE_BACKEND="pyav")
    assert line == "decoder: pyav for video, audio, image (set by MMSAMPLE_BACKEND=pyav)"


def test_the_readme_lists_the_same_debian_packages() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert " ".join(FFMPEG_DEBIAN_PACKAGES) in readme
    assert "mmsample doctor" in readme
