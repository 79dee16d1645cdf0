"""Build the embedded AV-MNIST demo data and print a summary of it (`make demo` builds it
through `pipelines.demo`, with the imbalance settings stated there).

Place in the data flow: the first step of every demo: raw digits + spoken digits -> shards under
`--out` (see `mmsample.demo.avmnist`), then one sample read back through the library's indexed
reader and modality specs, to show what a training loop would receive.

    python -m pipelines.avmnist --out runs/avmnist [--n 1000] [--seed 0] [--workers N]
        [--image-components 16] [--audio-snr-db 6] [--test-fraction 0.2]

Every build has a train/test split by default (`--test-fraction 0.2`: a fifth of each class
held out as "test"), so `python -m pipelines.train --data OUT/shards` trains and evaluates.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmsample.cli import name_the_flags
from mmsample.demo.avmnist import DEFAULT_N, BuildInfo, build_avmnist, load_manifest
from mmsample.shards.format import Manifest
from mmsample.storage.location import local_path

TEST_FRACTION = 0.2


def build_parser() -> argparse.ArgumentParser:
    """The command line of the demo builder."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.avmnist", description=__doc__)
    parser.add_argument(
        "--out", type=local_path, default=Path("runs/avmnist"), help="output directory"
    )
    parser.add_argument(
        "--n", type=int, default=DEFAULT_N, help=f"samples, 1..3000 (default {DEFAULT_N})"
    )
    parser.add_argument("--seed", type=int, default=0, help="pairing, motion and phase seed")
    parser.add_argument(
        "--samples-per-shard", type=int, default=100, help="samples per tar shard (default 100)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="encoding processes (default: CPU count)"
    )
    parser.add_argument(
        "--image-components",
        type=int,
        default=None,
        help="show the digit rebuilt from its first k principal components (default: as is)",
    )
    parser.add_argument(
        "--audio-snr-db", type=float, default=None, help="mix white noise into the speech at dB"
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=TEST_FRACTION,
        help="held-out share of each class, the 'test' split (default 0.2; 0: no split column)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line of the demo builder."""
    return build_parser().parse_args(argv)


def describe(value: Any) -> str:
    """`shape dtype` of a decoded tensor (or of each entry of a dict of tensors)."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {describe(v)}" for k, v in value.items())
    if isinstance(value, torch.Tensor):
        return f"{list(value.shape)} {str(value.dtype).replace('torch.', '')}"
    return repr(value)


def decoded_sample(root: Path, sample_id: int) -> dict[str, Any]:
    """One sample read back through `IndexedDataset` with a spec per modality."""
    from mmsample.decoding import Array, Audio, Image, Spec, Text, Video
    from mmsample.shards.indexed import IndexedDataset

    modalities: dict[str, Spec] = {
        "video": Video(field="mp4", frames=10, fps=None),
        "audio": Audio(field="mp4"),
        "mfcc": Array(field="npy"),
        "digit": Image(field="png"),
        "caption": Text(field="txt", byte_ids=True),
    }
    return dict(IndexedDataset(root, modalities).get(sample_id))


def summary(info: BuildInfo, manifest: Manifest, root: Path) -> list[str]:
    """The lines `make demo` prints: what was built and what one decoded sample looks like."""
    counts = manifest.class_counts()
    lines = [
        f"dataset      {root}",
        f"samples      {manifest.num_samples} (seed {info.seed}; "
        f"{info.cropped} recordings longer than {info.seconds:g} s centre-cropped)",
        f"shards       {len(manifest.shards)} x <= {manifest.samples_per_shard} samples, "
        f"{sum(s.bytes for s in manifest.shards) / 1e6:.1f} MB (sharded by {info.sharded_by})",
        f"fields       {', '.join(manifest.fields)}",
        "classes      " + ", ".join(f"{name} {counts[name]}" for name in manifest.classes),
    ]
    first = min(s.first_id for s in manifest.shards)
    sample = decoded_sample(root, first)
    lines.append(f"sample {first}     key {sample.get('key')}, label {sample.get('label')}")
    for name in ("video", "audio", "mfcc", "digit", "caption"):
        if name in sample:
            lines.append(f"  {name:<10} {describe(sample[name])}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or reuse) the demo under `--out` and print its summary."""
    parser = build_parser()
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        info = build_avmnist(
            args.out,
            n=args.n,
            seed=args.seed,
            samples_per_shard=args.samples_per_shard,
            workers=args.workers,
            image_components=args.image_components,
            audio_snr_db=args.audio_snr_db,
            test_fraction=args.test_fraction,
        )
    except ValueError as err:  # a setting the builder refuses: name the flag, exit 2
        parser.error(name_the_flags(str(err), parser.format_usage()))
    took = time.perf_counter() - start
    if info.skipped:
        print(f"AV-MNIST demo already built in {args.out} with these parameters: reusing it")
    else:
        print(f"built the AV-MNIST demo in {took:.1f} s")
    root = args.out / "shards"
    for line in summary(info, load_manifest(args.out), root):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
