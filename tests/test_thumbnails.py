"""Tests for derive.thumbnails: the PNG encoder is checked by decoding with zlib alone."""

import base64
import struct
import zlib

import numpy as np
import pytest

from deepeyes_keras.derive.thumbnails import (
    CONSTANT_GREY,
    PNG_SIGNATURE,
    data_url,
    patch_thumbnail,
    png_bytes,
)


def decode_png(data: bytes) -> np.ndarray:
    """Decode an 8-bit grey/RGB PNG whose rows all use filter type 0, checking every CRC."""
    assert data[:8] == PNG_SIGNATURE
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF, kind
        chunks.append((kind, payload))
        pos += 12 + length
    assert [k for k, _ in chunks][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, color, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, comp, filt, interlace) == (8, 0, 0, 0) and color in (0, 2)
    channels = 1 if color == 0 else 3
    raw = zlib.decompress(b"".join(p for k, p in chunks if k == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * channels)
    assert (rows[:, 0] == 0).all()  # filter type 0 on every row
    pixels = rows[:, 1:].reshape(height, width, channels)
    return pixels[:, :, 0] if channels == 1 else pixels


def _url_to_pixels(url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return decode_png(base64.b64decode(url[len(prefix) :]))


def _expected(x: np.ndarray) -> np.ndarray:
    return np.rint((x - x.min()) / (x.max() - x.min()) * 255).astype(np.uint8)


def test_grey_png_round_trip_matches_normalised_values():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7))
    got = decode_png(png_bytes(x))
    assert got.shape == (5, 7)
    np.testing.assert_array_equal(got, _expected(x))
    assert got.min() == 0 and got.max() == 255
    # (h, w, 1) is the same grey image
    np.testing.assert_array_equal(decode_png(png_bytes(x[:, :, None])), got)


def test_rgb_png_round_trip_and_scale():
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 3, size=(3, 4, 3))
    got = decode_png(png_bytes(x, scale=3))
    assert got.shape == (9, 12, 3)
    small = _expected(x)  # one normalisation over all channels, not per channel
    np.testing.assert_array_equal(got[::3, ::3], small)
    np.testing.assert_array_equal(got[2::3, 1::3], small)


def test_constant_and_non_finite_images():
    np.testing.assert_array_equal(decode_png(png_bytes(np.full((2, 2), 7.0))), CONSTANT_GREY)
    np.testing.assert_array_equal(decode_png(png_bytes(np.full((2, 2), np.nan))), CONSTANT_GREY)
    got = decode_png(png_bytes(np.array([[0.0, np.inf], [1.0, 2.0]])))
    np.testing.assert_array_equal(got, [[0, 0], [128, 255]])


@pytest.mark.parametrize(
    "shape, kw",
    [((2, 2, 2), {}), ((2,), {}), ((0, 3), {}), ((2, 2), {"scale": 0}), ((2, 2), {"scale": 1.5})],
)
def test_png_bytes_rejects_bad_input(shape, kw):
    with pytest.raises(ValueError, match="Received"):
        png_bytes(np.zeros(shape), **kw)


def test_data_url_is_base64_png():
    url = data_url(np.eye(3))
    np.testing.assert_array_equal(_url_to_pixels(url), np.eye(3) * 255)


def test_mnist_like_patch_thumbnail_is_small():
    rng = np.random.default_rng(2)
    patch = np.zeros((28, 28, 1))
    patch[6:22, 12:16, 0] = rng.uniform(0.6, 1.0, size=(16, 4))  # a "1" stroke
    url = patch_thumbnail(patch, max_side=32)
    assert len(url) < 2048
    pixels = _url_to_pixels(url)
    assert pixels.shape == (28, 28)  # round(32 / 28) = 1: no upscaling
    assert pixels[0, 0] == 0 and pixels[10, 13] > 100


def test_patch_layouts():
    # small image: upscaled so the longer side is about max_side
    assert _url_to_pixels(patch_thumbnail(np.eye(5)[:, :, None] * [1, 1, 1])).shape == (30, 30, 3)
    # 1-D signal (L, c) -> c rows x L columns, rows repeated to at least max_side // 4 pixels
    sig = np.stack([np.linspace(0, 1, 16), np.linspace(1, 0, 16)], axis=1)
    px = _url_to_pixels(patch_thumbnail(sig, max_side=32))
    assert px.shape == (8, 32)
    assert px[0, 0] == 0 and px[0, -1] == 255 and px[-1, 0] == 255
    # tabular (D,) -> 1 x D strip
    px = _url_to_pixels(patch_thumbnail(np.arange(8.0), max_side=32))
    assert px.shape == (8, 32)
    np.testing.assert_array_equal(px[0, ::4], _expected(np.arange(8.0)))
    # large patches are subsampled
    assert _url_to_pixels(patch_thumbnail(np.ones((224, 224, 3)), max_side=32)).shape[0] <= 64
    assert patch_thumbnail(np.zeros((0,))) is None
    assert patch_thumbnail(np.zeros((4, 0, 1))) is None
    with pytest.raises(ValueError, match="max_side"):
        patch_thumbnail(np.eye(2), max_side=0)
