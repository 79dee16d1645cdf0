"""Still images as a viewer shows them (issue 7, items 6 and 8): transparency composited over a
background or kept as alpha, EXIF orientation applied, and decompression bombs refused from the
header before decoding, at read time and at shard time; on every backend, on real files.

Expected pixels are worked out by hand in the comments: compositing is
`round((colour * a + background * (255 - a)) / 255)`.
"""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from mmsample.decoding import Image
from mmsample.decoding.backends import available_backends
from mmsample.decoding.media_probe import probe
from mmsample.errors import SampleError
from mmsample.sharding import write_samples
from mmsample.shards import IndexedDataset
from mmsample.testing import add_exif_orientation, encode_image, encode_png

BACKENDS = [b for b in available_backends() if b != "torchcodec-cuda"]


def _rgb(*rows: list[int | tuple[int, int, int]]) -> torch.Tensor:
    """Hand-written expected pixels: rows of grey ints or (R, G, B) -> uint8 [3, H, W]."""
    grid = [[(p, p, p) if isinstance(p, int) else p for p in row] for row in rows]
    return torch.tensor(grid, dtype=torch.uint8).permute(2, 0, 1)


# ---------------------------------------------------------------- transparency (item 6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_black_line_art_on_transparent_background_is_black_on_white(backend: str) -> None:
    # The issue's input: RGBA, black stored everywhere, opaque only on the line (row 1).
    art = np.zeros((3, 4, 4), np.uint8)
    art[1, :, 3] = 255
    got = Image(backend=backend).decode(encode_png(art))
    assert torch.equal(got, _rgb([255] * 4, [0] * 4, [255] * 4))


@pytest.mark.parametrize("backend", BACKENDS)
def test_half_transparent_grey_blends_with_the_background(backend: str) -> None:
    # (100, 100, 100) at alpha 128: over white 100*128/255 + 255*127/255 = 177.2 -> 177;
    # over blue (0, 0, 255): R = G = 100*128/255 = 50.2 -> 50, B = 177; over black: 50.
    pixel = np.array([[[100, 100, 100, 128], [100, 100, 100, 255]]], np.uint8)
    data = encode_png(pixel)
    assert torch.equal(Image(backend=backend).decode(data), _rgb([177, 100]))
    blue = Image(backend=backend, background=(0, 0, 255)).decode(data)
    assert torch.equal(blue, _rgb([(50, 50, 177), 100]))
    assert torch.equal(Image(backend=backend, background=0).decode(data), _rgb([50, 100]))
    # 16-bit RGBA: 100 * 257 and 128 * 257 are exactly 100 and 128 in 8 bits -> the same blend.
    deep = encode_png(pixel.astype(np.uint16) * 257)
    assert torch.equal(Image(backend=backend).decode(deep), _rgb([177, 100]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_grey_alpha_palette_and_colour_key_transparency(backend: str) -> None:
    image = Image(backend=backend)
    # grey + alpha (LA): grey 0 fully transparent -> white; grey 200 opaque -> 200.
    la = np.array([[[0, 0], [200, 255]]], np.uint8)
    assert torch.equal(image.decode(encode_png(la)), _rgb([255, 200]))
    assert torch.equal(image.decode(encode_png(la.astype(np.uint16) * 257)), _rgb([255, 200]))
    # palette + tRNS: entry 0 transparent, 1 opaque red, 2 blue at alpha 128:
    # (0*128 + 255*127)/255 = 127 for R and G, (255*128 + 255*127)/255 = 255 for B.
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    indices = np.array([[0, 1, 2]], np.uint8)
    pal = encode_png(indices, palette=palette, transparent=[0, 255, 128])
    assert torch.equal(image.decode(pal), _rgb([255, (255, 0, 0), (127, 127, 255)]))
    # grey with a transparent colour key 7, and RGB with key (10, 20, 30): exact match only.
    grey = encode_png(np.array([[7, 100, 8]], np.uint8), transparent=7)
    assert torch.equal(image.decode(grey), _rgb([255, 100, 8]))
    rgb = np.array([[[10, 20, 30], [10, 20, 31]]], np.uint8)
    assert torch.equal(
        image.decode(encode_png(rgb, transparent=(10, 20, 30))), _rgb([255, (10, 20, 31)])
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_sixteen_bit_images_round_to_the_same_8_bit_pixels(backend: str) -> None:
    # v * 257 in 16 bits is exactly v in 8 bits (round(v * 257 / 257)); FFmpeg's own 16 -> 8 bit
    # conversion gave 201 for 200 * 257 on grey and RGB.
    grey = np.array([[200, 7, 0, 255]], np.uint16) * 257
    assert torch.equal(Image(backend=backend).decode(encode_png(grey)), _rgb([200, 7, 0, 255]))
    rgb = np.array([[[200, 100, 7], [1, 2, 3]]], np.uint16) * 257
    assert torch.equal(
        Image(backend=backend).decode(encode_png(rgb)), _rgb([(200, 100, 7), (1, 2, 3)])
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_alpha_kept_as_a_fourth_channel_on_request(backend: str) -> None:
    rgba = np.array([[[9, 8, 7, 0], [100, 100, 100, 128]]], np.uint8)
    got = Image(backend=backend, alpha=True).decode(encode_png(rgba))
    assert torch.equal(got, torch.from_numpy(rgba).permute(2, 0, 1))  # stored colour, straight
    opaque = np.array([[[1, 2, 3], [4, 5, 6]]], np.uint8)
    got = Image(backend=backend, alpha=True).decode(encode_png(opaque))
    assert got.shape == (4, 1, 2) and bool((got[3] == 255).all())
    assert torch.equal(got[:3], torch.from_numpy(opaque).permute(2, 0, 1))
    palette = np.array([[0, 0, 0], [255, 0, 0]], np.uint8)
    pal = encode_png(np.array([[0, 1]], np.uint8), palette=palette, transparent=[0, 255])
    want = torch.tensor([[0, 255], [0, 0], [0, 0], [0, 255]], dtype=torch.uint8)[:, None, :]
    assert torch.equal(Image(backend=backend, alpha=True).decode(pal), want)
    # float output and resizing keep four channels
    small = Image(backend=backend, alpha=True, size=(1, 1), dtype="float32").decode(pal)
    assert small.shape == (4, 1, 1) and small.dtype == torch.float32


def test_background_and_alpha_are_validated() -> None:
    for bad in (256, -1, (1, 2), (0, 0, 300), "white", True):
        with pytest.raises(ValueError, match="'background' parameter of Image"):
            Image(background=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'alpha' parameter of Image must be a bool"):
        Image(alpha=1)  # type: ignore[arg-type]
    for bad_limit in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match="'max_pixels' parameter of Image"):
            Image(max_pixels=bad_limit)  # type: ignore[arg-type]


# ---------------------------------------------------------------- orientation


# A 2x3 image with distinct greys, and what a viewer shows for each EXIF orientation (by hand):
STORED = [[1, 2, 3], [4, 5, 6]]
DISPLAYED = {
    1: [[1, 2, 3], [4, 5, 6]],
    2: [[3, 2, 1], [6, 5, 4]],  # mirrored left-right
    3: [[6, 5, 4], [3, 2, 1]],  # rotated 180
    4: [[4, 5, 6], [1, 2, 3]],  # mirrored top-bottom
    5: [[1, 4], [2, 5], [3, 6]],  # transposed
    6: [[4, 1], [5, 2], [6, 3]],  # rotated 90 clockwise
    7: [[6, 3], [5, 2], [4, 1]],  # transverse
    8: [[3, 6], [2, 5], [1, 4]],  # rotated 90 counter-clockwise
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_png_exif_orientation_gives_the_displayed_pixels(backend: str) -> None:
    stored = np.array(STORED, np.uint8) * 40
    for orientation, shown in DISPLAYED.items():
        got = Image(backend=backend).decode(encode_png(stored, orientation=orientation))
        assert torch.equal(got[0], torch.tensor(shown, dtype=torch.uint8) * 40), orientation
        assert torch.equal(got[0], got[2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_jpeg_exif_orientation_rotates_to_display(backend: str) -> None:
    # 16 x 32 stored, left half red, right half blue; orientation 6 (a phone held upright):
    # displayed 32 x 16, top half red, bottom half blue.
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:, :16, 0] = 255
    stored[:, 16:, 2] = 255
    for little_endian in (True, False):
        data = add_exif_orientation(encode_image(stored), 6, little_endian=little_endian)
        got = Image(backend=backend).decode(data).int()
        assert got.shape == (3, 32, 16)
        assert (got[0, :14] > 240).all() and (got[2, :14] < 15).all()  # red on top
        assert (got[2, 18:] > 240).all() and (got[0, 18:] < 15).all()  # blue below
    plain = Image(backend=backend).decode(encode_image(stored))
    assert plain.shape == (3, 16, 32)


# ---------------------------------------------------------------- decompression bombs (item 8)


def _bomb_png(width: int = 20990, height: int = 29700) -> bytes:
    """The issue's 20990 x 29700 RGBA PNG as a header: a 1x1 payload under a forged IHDR."""
    return encode_png(np.zeros((1, 1, 4), np.uint8), declared_size=(width, height))


def _forged_jpeg(width: int, height: int) -> bytes:
    """A real JPEG whose SOF0 frame header is rewritten to declare width x height."""
    data = bytearray(encode_image(np.zeros((16, 16, 3), np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


# Headers of other formats the Image spec reads, declaring 30000 x 30000 (900,000,000 pixels).
FORGED = {
    "gif": b"GIF89a" + (30000).to_bytes(2, "little") * 2 + bytes(20),
    "bmp": b"BM"
    + bytes(12)
    + (40).to_bytes(4, "little")
    + (30000).to_bytes(4, "little") * 2
    + bytes(30),
    "webp": b"RIFF"
    + (100).to_bytes(4, "little")
    + b"WEBPVP8X"
    + bytes(8)
    + (29999).to_bytes(3, "little") * 2
    + bytes(20),
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_issue_bomb_is_refused_naming_size_and_parameter(backend: str) -> None:
    # 20990 * 29700 = 623,403,000 pixels > 89,478,485 (was "FrameDims.height must be > 0")
    want = (
        r"20990x29700 = 623,403,000 pixels, more than the limit of 89,478,485.*Image\(max_pixels="
    )
    with pytest.raises(ValueError, match=want):
        Image(backend=backend).decode(_bomb_png())
    # With the limit lifted, FFmpeg's own size limit is named instead of its terse error.
    with pytest.raises(
        ValueError, match=r"20990x29700 pixels, beyond what the FFmpeg decoders accept"
    ):
        Image(backend=backend, max_pixels=None).decode(_bomb_png())


@pytest.mark.parametrize("backend", BACKENDS)
def test_pixel_limit_boundaries_on_real_images(backend: str) -> None:
    image = np.random.default_rng(5).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    # headers parsed before decoding: PNG, JPEG, BMP, GIF, WebP (VP8); TIFF: checked after
    for data in (
        encode_png(image),
        encode_image(image, "mjpeg"),
        encode_image(image, "bmp"),
        encode_image(image, "gif"),
        encode_image(image, "libwebp"),
        encode_image(image, "tiff"),
    ):
        assert Image(backend=backend, max_pixels=120).decode(data).shape == (3, 10, 12)
        with pytest.raises(ValueError, match=r"12x10 = 120 pixels, more than the limit of 119"):
            Image(backend=backend, max_pixels=119).decode(data)
    assert torch.equal(
        Image(backend=backend).decode(encode_png(image)), torch.from_numpy(image).permute(2, 0, 1)
    )
    # the default limit, exactly: 9459 x 9460 = 89,482,140 > 89,478,485 >= 9459 x 9459
    with pytest.raises(ValueError, match="9459x9460 = 89,482,140 pixels"):
        Image(backend=backend).decode(_bomb_png(9459, 9460))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bombs_in_every_format_are_refused_before_decoding(backend: str) -> None:
    jpeg = _forged_jpeg(30000, 30000)
    for field, data in [("jpg", jpeg), *FORGED.items()]:
        with pytest.raises(ValueError, match=r"30000x30000 = 900,000,000 pixels"):
            Image(field=field, backend=backend).decode(data)
    # A valid, highly compressible 1-bit PNG of 10000 x 9000 = 90,000,000 pixels (a real bomb:
    # 11 kB on disk, 270 MB as RGB): refused from its header, without decoding.
    tiny = Image(backend=backend).decode(_one_bit_png(np.full((4, 2), 0x0F, np.uint8), 16))
    assert torch.equal(
        tiny[0], torch.tensor([[0] * 4 + [255] * 4] * 2 * 4, dtype=torch.uint8).view(4, 16)
    )
    real = _one_bit_png(np.zeros((9000, 10000 // 8), np.uint8), 10000)
    assert len(real) < 20_000
    start = time.perf_counter()
    with pytest.raises(ValueError, match="10000x9000 = 90,000,000 pixels"):
        Image(backend=backend).decode(real)
    assert time.perf_counter() - start < 0.5


def _one_bit_png(packed: np.ndarray, width: int) -> bytes:
    """A valid 1-bit grey PNG (colour type 0, depth 1) from packed rows, 8 pixels a byte."""
    h = packed.shape[0]
    rows = np.concatenate([np.zeros((h, 1), np.uint8), packed], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, h, 1, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def test_bombs_are_refused_at_shard_time_and_read_time(tmp_path: Path) -> None:
    bomb = _bomb_png()
    with pytest.raises(ValueError, match=r"623,403,000 pixels.*max_pixels="):
        probe(bomb, "png")
    with pytest.raises(ValueError, match=r"900,000,000 pixels.*max_pixels="):
        probe(_forged_jpeg(30000, 30000), "jpg")
    small = encode_png(np.zeros((10, 10, 3), np.uint8))
    probe(small, "png", max_pixels=100)
    with pytest.raises(ValueError, match=r"10x10 = 100 pixels, more than the limit of 99"):
        probe(small, "png", max_pixels=99)
    # read time: the reader names shard and key
    write_samples(tmp_path, [("ok", 0, {"png": small}), ("bomb", 0, {"png": bomb})], ["a"])
    dataset = IndexedDataset(tmp_path, {"image": Image()})
    assert dataset[0]["image"].shape == (3, 10, 10)
    with pytest.raises(SampleError, match=r"shard-000000\.tar:bomb: .*623,403,000 pixels") as info:
        dataset[1]
    assert (info.value.shard, info.value.key) == ("shard-000000.tar", "bomb")


@pytest.mark.parametrize("backend", BACKENDS)
def test_size_check_accepts_what_decoders_accept(backend: str) -> None:
    # Extraneous bytes between JPEG segments (some cameras write them; decoders skip them): the
    # header is still found, the size checked and the image decoded.
    green = np.zeros((16, 24, 3), np.uint8)
    green[..., 1] = 200
    jpeg = encode_image(green)
    cut = 4 + int.from_bytes(jpeg[4:6], "big")  # after the first segment (APP0 or COM)
    junk = jpeg[:cut] + b"\x00\x17\x00" + jpeg[cut:]
    got = Image(backend=backend).decode(junk).int()
    assert got.shape == (3, 16, 24) and (got[1] - 200).abs().max() <= 2
    with pytest.raises(ValueError, match="24x16 = 384 pixels"):
        Image(backend=backend, max_pixels=383).decode(junk)


def test_the_sharding_command_names_and_takes_the_pixel_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmsample.cli import main

    (tmp_path / "small.png").write_bytes(encode_png(np.zeros((10, 12, 3), np.uint8)))
    (tmp_path / "t.csv").write_text("key,label,png\nk0,a,small.png\n")
    # 120 pixels over a limit of 119: a bad row whose reason names the option that raises it
    assert (
        main(
            [
                "shard",
                str(tmp_path / "t.csv"),
                str(tmp_path / "a"),
                "--max-pixels",
                "119",
                "--quiet",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "12x10 = 120 pixels" in err and "--max-pixels" in err
    assert (
        main(
            [
                "shard",
                str(tmp_path / "t.csv"),
                str(tmp_path / "b"),
                "--max-pixels",
                "120",
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            ["shard", str(tmp_path / "t.csv"), str(tmp_path / "c"), "--max-pixels", "0", "--quiet"]
        )
        == 0
    )  # 0: no limit


@pytest.mark.parametrize("bad", [-1, 0.5, True, "1000"])
def test_a_bad_pixel_limit_is_named_before_any_row_is_read(tmp_path: Path, bad: object) -> None:
    """`shard_dataset(max_pixels=-1)` (or `--max-pixels -1`) turned every image row into a bad
    row ("more than the limit of -1"); the parameter is now refused up front, on every path."""
    from mmsample.cli import main
    from mmsample.sharding import shard_dataset

    (tmp_path / "a.png").write_bytes(encode_png(np.zeros((4, 4, 3), np.uint8)))
    (tmp_path / "t.csv").write_text("key,label,png\nk0,x,a.png\n")
    with pytest.raises(ValueError, match=r"'max_pixels' parameter of shard_dataset .*got "):
        shard_dataset(tmp_path / "t.csv", tmp_path / "out", max_pixels=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"'max_pixels' parameter of probe must be None"):
        probe(b"", "png", max_pixels=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'max_pixels' parameter of Image must be None"):
        Image(max_pixels=bad)  # type: ignore[arg-type]
    if bad == -1:
        assert (
            main(["shard", str(tmp_path / "t.csv"), str(tmp_path / "o"), "--max-pixels", "-1"]) == 1
        )
