"""Small PNG thumbnails of input-space patches, as data URLs for chart tooltips and image marks.

A minimal PNG encoder (signature, IHDR, IDAT, IEND; zlib + CRC-32 from the standard library) so
that thumbnails need neither Pillow nor TensorFlow. Every image is normalised on its own: its
minimum maps to 0 and its maximum to 255; a constant image (no contrast to show) is mid-grey (128).

Example:
    >>> import numpy as np
    >>> url = patch_thumbnail(np.eye(5), max_side=10)
    >>> url.startswith("data:image/png;base64,")
    True
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONSTANT_GREY = 128  # value of every pixel of a constant image (min == max)

__all__ = ["png_bytes", "data_url", "patch_thumbnail", "CONSTANT_GREY", "ThumbnailCache"]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    # The CRC covers the chunk type and its data, not the length.
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Per-image min-max normalisation to 0..255; non-finite values count as the minimum."""
    x = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        return np.full(x.shape, CONSTANT_GREY, dtype=np.uint8)
    lo = float(x[finite].min())
    hi = float(x[finite].max())
    x = np.where(finite, x, lo)
    if hi <= lo:
        return np.full(x.shape, CONSTANT_GREY, dtype=np.uint8)
    return np.rint((x - lo) * (255.0 / (hi - lo))).clip(0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray, *, scale: int = 1, bit_depth: int = 8) -> bytes:
    """Encode a 2-D grey or RGB float array as an 8-bit PNG.

    Args:
        image: array of shape (h, w), (h, w, 1) (grayscale) or (h, w, 3) (RGB). Normalised per
            image: min -> 0, max -> 255; a constant image becomes mid-grey (`CONSTANT_GREY`).
            Non-finite values are drawn as the minimum.
        scale: integer nearest-neighbour upscaling factor (>= 1).
        bit_depth: 8, or 4 for a grey image (16 levels, two pixels a byte: about a quarter
            smaller; RGB images stay 8-bit).

    Returns:
        The PNG file as bytes.

    Example:
        >>> png_bytes(np.zeros((2, 3)))[:8] == PNG_SIGNATURE
        True
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(
            f"Invalid image shape. Received: shape={arr.shape}. Expected (h, w), (h, w, 1) or "
            "(h, w, 3)."
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"Invalid image shape. Received: shape={arr.shape}. Expected h, w >= 1.")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(
            f"Invalid value for argument scale. Received: scale={scale!r}. "
            "Expected an integer >= 1."
        )
    if bit_depth not in (4, 8):
        raise ValueError(
            f"Invalid value for argument bit_depth. Received: bit_depth={bit_depth!r}. "
            "Expected 4 or 8."
        )
    pixels = _to_uint8(arr)
    if scale > 1:
        pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    height, width = pixels.shape[:2]
    color_type = 0 if pixels.ndim == 2 else 2  # 0: grayscale, 2: RGB (truecolour)
    depth = bit_depth if color_type == 0 else 8
    rows = pixels.reshape(height, -1) if depth == 8 else _pack_nibbles(pixels)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    # Filter type 0 (None) on every row: a leading zero byte per scanline.
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def _pack_nibbles(pixels: np.ndarray) -> np.ndarray:
    """(h, w) uint8 grey to 4-bit levels (0..15, rounded), two pixels a byte, high nibble first."""
    levels = (pixels.astype(np.int32) * 15 + 127) // 255
    if levels.shape[1] % 2:  # a row fills whole bytes: pad with one unused pixel
        levels = np.concatenate([levels, np.zeros((levels.shape[0], 1), np.int32)], axis=1)
    return ((levels[:, 0::2] << 4) | levels[:, 1::2]).astype(np.uint8)


def data_url(image: np.ndarray, **kw) -> str:
    """`png_bytes(image, **kw)` as a ``data:image/png;base64,...`` URL."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image, **kw)).decode("ascii")


def patch_thumbnail(patch: np.ndarray, *, max_side: int = 32, bit_depth: int = 8) -> str | None:
    """A PNG data URL for one input-space patch, or None when the patch is empty.

    The patch layouts are those the reservoir stores: images (h, w, c) with c = 1 or 3 (other
    channel counts show their first channel); 1-D signals (L, c), drawn as a strip of c rows x L
    columns; tabular rows (D,), drawn as a 1 x D strip. The longer side is brought to about
    `max_side` pixels: small patches are upscaled by an integer factor, patches longer than
    2 * `max_side` are subsampled by an integer step (both nearest neighbour), which keeps the
    data URL small. Strip rows are repeated so a strip is at least `max_side // 4` pixels tall.

    Args:
        patch: the patch array.
        max_side: target length in pixels of the longer side (>= 1).
        bit_depth: of grey thumbnails, 8 or 4 (see :func:`png_bytes`).

    Example:
        >>> patch_thumbnail(np.zeros((0,))) is None
        True
    """
    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 1:
        raise ValueError(
            f"Invalid value for argument max_side. Received: max_side={max_side!r}. "
            "Expected an integer >= 1."
        )
    arr = np.asarray(patch, dtype=np.float64)
    if arr.size == 0:
        return None
    if arr.ndim == 1:
        img = arr[None, :]
    elif arr.ndim == 2:
        img = arr.T  # (L, c) -> c rows x L columns
    elif arr.ndim == 3:
        img = arr if arr.shape[2] in (1, 3) else arr[:, :, :1]
    else:
        raise ValueError(
            f"Invalid patch shape. Received: shape={arr.shape}. Expected (h, w, c), (L, c) or (D,)."
        )
    longer = max(img.shape[0], img.shape[1])
    if longer > 2 * max_side:
        step = -(-longer // max_side)
        img = img[::step, ::step]
        longer = max(img.shape[0], img.shape[1])
    scale = max(1, int(round(max_side / longer)))
    if arr.ndim < 3:
        reps = max(1, -(-(max_side // 4) // (img.shape[0] * scale)))
        img = np.repeat(img, reps, axis=0)
    return data_url(img, scale=scale, bit_depth=bit_depth)


THUMBNAIL_BIT_DEPTH = 4  # the views' thumbnails: 16 grey levels, a quarter of their bytes


class ThumbnailCache:
    """PNG data URLs of reservoir instances, made once per instance (they never change).

    Args:
        bit_depth: of grey thumbnails (`THUMBNAIL_BIT_DEPTH`: 16 levels are plenty for a
            tooltip and make the views' thumbnails about 25% smaller).
    """

    def __init__(self, bit_depth: int = THUMBNAIL_BIT_DEPTH):
        self._urls: dict[tuple[str, int], str | None] = {}
        self.bit_depth = bit_depth

    def get(self, key: str, uid: np.ndarray, patches: np.ndarray) -> list[str | None]:
        out = []
        for u, patch in zip(uid.tolist(), patches, strict=True):
            if (key, u) not in self._urls:
                self._urls[(key, u)] = patch_thumbnail(
                    np.asarray(patch, np.float32), bit_depth=self.bit_depth
                )
            out.append(self._urls[(key, u)])
        return out
