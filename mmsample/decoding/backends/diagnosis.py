"""Which decoder runs here, and why: the backends found, their versions, the FFmpeg libraries on
the system, torch's threads, and the fix for each missing piece.

Place in the data flow: beside the backend registry (`mmsample.decoding.backends`), read before
any decoding. `mmsample doctor` prints `doctor_report()`; `pipelines.train` and `make demo`
(`pipelines.demo`) print `decoder_line()` at their start, so a run that falls back from
torchcodec to PyAV (the system FFmpeg libraries missing) says so instead of running slower
without a word.
"""

from __future__ import annotations

import ctypes.util
import dataclasses
import importlib
import importlib.metadata
import os
from dataclasses import dataclass

from . import BACKEND_ENV_VAR, KNOWN_BACKENDS, get_backend

__all__ = [
    "FFMPEG_DEBIAN_PACKAGES",
    "FFMPEG_LIBRARIES",
    "MODALITIES",
    "BackendStatus",
    "announce_decoders",
    "backend_statuses",
    "decoder_line",
    "default_decoders",
    "doctor_facts",
    "doctor_report",
    "ffmpeg_libraries",
]

# The shared libraries torchcodec loads, and the Debian (bookworm) packages that install them;
# the README's installation section lists the same names (tests/test_doctor.py checks it).
FFMPEG_LIBRARIES = (
    "avcodec",
    "avformat",
    "avutil",
    "swscale",
    "swresample",
    "avdevice",
    "avfilter",
)
FFMPEG_DEBIAN_PACKAGES = (
    "libavcodec59",
    "libavformat59",
    "libavutil57",
    "libswscale6",
    "libswresample4",
    "libavdevice59",
    "libavfilter8",
)
MODALITIES = ("video", "audio", "image")  # what the FFmpeg backends decode (specs' backend=None)
_PREFERRED = "torchcodec"  # the fastest backend, the default when it imports


@dataclass(frozen=True)
class BackendStatus:
    """One decoder backend in this process: `version` of its package (None if not installed),
    `error` (why it did not import, None if usable) and `fix` (what to do, "" if usable)."""

    name: str
    package: str
    version: str | None
    error: str | None
    fix: str


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _fix(name: str, package: str, error: BaseException) -> str:
    if isinstance(error, ModuleNotFoundError):
        optional = "optional (legacy, chosen only when nothing faster imports): " * (
            name == "decord"
        )
        return f"{optional}pip install {package}"
    if (
        name == _PREFERRED
    ):  # installed, but its FFmpeg libraries did not load (OSError/RuntimeError)
        return (
            "install the system FFmpeg libraries (Debian: apt-get install "
            f"{' '.join(FFMPEG_DEBIAN_PACKAGES)})"
        )
    return f"reinstall {package} (pip install --force-reinstall {package})"


def backend_statuses() -> list[BackendStatus]:
    """Every known backend (fastest first; "torchcodec-cuda" left out: it shares torchcodec's
    package and import), usable or not, with why not and the fix. Imports each backend's package
    (torchcodec loads the FFmpeg libraries: seconds)."""
    statuses = []
    for name, (module_name, package) in KNOWN_BACKENDS.items():
        if name == "torchcodec-cuda":
            continue
        module = importlib.import_module(f"{__package__}.{module_name}")
        error: BaseException | None = module.IMPORT_ERROR
        statuses.append(
            BackendStatus(
                name=name,
                package=package,
                version=_version(package),
                error=None if error is None else f"{type(error).__name__}: {error}",
                fix="" if error is None else _fix(name, package, error),
            )
        )
    return statuses


def default_decoders() -> dict[str, str]:
    """modality -> the backend a spec with `backend=None` uses in this process
    (`$MMSAMPLE_BACKEND` if set, else the fastest available); "none" when no backend imports.
    Audio may also use the built-in "wave" reader, but only when a spec asks for it."""
    try:
        name = get_backend().name
    except ImportError:
        name = "none"
    return dict.fromkeys(MODALITIES, name)


def ffmpeg_libraries() -> dict[str, str | None]:
    """library -> the file the system linker finds (`ldconfig -p`), or None when absent."""
    return {lib: ctypes.util.find_library(lib) for lib in FFMPEG_LIBRARIES}


def decoder_line() -> str:
    """One line for the start of a run: the decoder per modality and, when the preferred one
    (torchcodec) is not used, why (its import error or `$MMSAMPLE_BACKEND`) and the fix."""
    decoders = default_decoders()
    names = sorted(set(decoders.values()))
    if len(names) == 1:
        line = f"decoder: {names[0]} for {', '.join(decoders)}"
    else:
        line = "decoder: " + ", ".join(f"{m} {n}" for m, n in decoders.items())
    if _PREFERRED in names:
        return line
    env = os.environ.get(BACKEND_ENV_VAR)
    if env:
        return f"{line} (set by {BACKEND_ENV_VAR}={env})"
    preferred = next(s for s in backend_statuses() if s.name == _PREFERRED)
    return f"{line}; {_PREFERRED} is not used: {preferred.error}; fix: {preferred.fix}"


_ANNOUNCED: set[str] = set()


def announce_decoders(force: bool = False) -> str:
    """`decoder_line()`, printed (flushed) the first time this process meets that line, or
    always when `force` (a command's start), and returned every time: a demo that runs many
    trainings in one process says it once, and again only if the decoders change (e.g.
    `$MMSAMPLE_BACKEND` set between runs)."""
    line = decoder_line()
    if force or line not in _ANNOUNCED:
        _ANNOUNCED.add(line)
        print(line, flush=True)
    return line


def doctor_facts() -> dict[str, object]:
    """`doctor_report` as data (`mmsample doctor --json`): "backends" (a list of
    `BackendStatus` fields), "decoders" (modality -> backend), "line" (`decoder_line()`),
    "ffmpeg_libraries" (library -> file or None), "torch" (version, intra-op and inter-op
    threads)."""
    import torch

    return {
        "backends": [dataclasses.asdict(s) for s in backend_statuses()],
        "decoders": default_decoders(),
        "line": decoder_line(),
        "ffmpeg_libraries": ffmpeg_libraries(),
        "torch": {
            "version": torch.__version__,
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
        },
    }


def _threads() -> str:
    import torch

    return (
        f"torch {torch.__version__}: {torch.get_num_threads()} intra-op threads, "
        f"{torch.get_num_interop_threads()} inter-op threads"
    )


def doctor_report() -> str:
    """What `mmsample doctor` prints: backends with versions and the fix for each missing one,
    the default decoder per modality, the FFmpeg libraries found, torch's version and threads."""
    lines = ["decoder backends (fastest first):"]
    for status in backend_statuses():
        version = status.version or "not installed"
        state = "ok" if status.error is None else f"unusable: {status.error}"
        lines.append(f"  {status.name:<11} {status.package} {version}: {state}")
        if status.fix:
            lines.append(f"  {'':<11} fix: {status.fix}")
    lines.append("  wave        built in: PCM/float wav audio only, Audio(backend='wave')")
    lines.append(decoder_line())
    lines.append("system FFmpeg libraries (torchcodec loads these; PyAV bundles its own):")
    found = ffmpeg_libraries()
    for lib, path in found.items():
        lines.append(f"  lib{lib}: {path or 'not found'}")
    if not all(found.values()):
        lines.append(
            f"  fix: apt-get install {' '.join(FFMPEG_DEBIAN_PACKAGES)} (Debian; names differ "
            "by release)"
        )
    lines.append(_threads())
    return "\n".join(lines)
