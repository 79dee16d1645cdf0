"""Encoding jobs: one sample's fields from its sources, in this process or a spawned pool.

Place in the data flow: the middle of `build_avmnist`. A `SampleJob` holds everything one sample
needs; `encode_sample` turns it into field payloads (speech rebuilt from MFCCs, degraded if asked,
clip, PNG, caption) as a function of the job alone, so any process gives the same bytes;
`run_jobs` runs them in order, over worker processes when that helps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
import torch

from ..mfcc import FSDD_MFCC, mfcc_to_waveform
from .clip import digit_clip, place_audio
from .degrade import add_noise
from .encode import caption, encode_clip, encode_png


@dataclass(frozen=True)
class SampleJob:
    """Everything one sample's encoding needs (picklable, so a spawned process can run it)."""

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


def encode_sample(job: SampleJob) -> tuple[dict[str, bytes], bool]:
    """One sample's field payloads, a function of the job alone (any process, same bytes)."""
    from ...testing import encode_npy

    sample_seed = job.seed * 1_000_003 + job.recording
    wave = mfcc_to_waveform(torch.from_numpy(job.mfcc), seed=sample_seed).numpy()
    peak = float(np.abs(wave).max())
    if peak > 0.99:
        wave = wave * (0.99 / peak)
    rate = FSDD_MFCC.sample_rate
    audio, cropped = place_audio(wave, round(job.seconds * rate))
    if job.audio_snr_db is not None:
        audio = add_noise(audio, len(wave), job.audio_snr_db, sample_seed)
    frames = digit_clip(job.shown, job.seconds, job.fps, seed=sample_seed)
    fields = {
        "mp4": encode_clip(frames, audio, rate, fps=job.fps),
        "npy": encode_npy(np.asarray(job.mfcc, dtype=np.float32)),
        "png": encode_png(job.image),
        "txt": caption(job.label).encode(),
    }
    return fields, cropped


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread (same float results whatever process does the work)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _encode_chunk(jobs: Sequence[SampleJob]) -> list[tuple[dict[str, bytes], bool]]:
    with _one_thread():
        return [encode_sample(job) for job in jobs]


def run_jobs(jobs: list[SampleJob], workers: int) -> list[tuple[dict[str, bytes], bool]]:
    """Encode every job, in order; over `workers` spawned processes when that helps."""
    if workers <= 1 or len(jobs) < 2 * workers:
        return _encode_chunk(jobs)
    size = max(1, min(32, math.ceil(len(jobs) / (4 * workers))))
    chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return [result for chunk in pool.map(_encode_chunk, chunks) for result in chunk]
