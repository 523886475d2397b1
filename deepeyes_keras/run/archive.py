"""The recorder's .npz archives: compact on disk, read back by any ``np.load``.

:func:`npz_bytes` writes a plain zip of ``.npy`` members (what ``np.savez_compressed`` makes),
each deflated at level 1 (the recorder writes while training waits) with whichever of two deflate
strategies packs it better: the usual one (string matching: blank patches, overlapping input
windows) or Huffman coding alone (codes and activations with few repeats, where matching costs
bytes and time). The choice is made on the first `PROBE_BYTES` of each member. Member dates are
fixed (1980-01-01), so the same arrays give the same bytes.

A sample chunk may *link* a column instead of holding it: when a column's array is byte for byte
one that another layer's chunk of the same snapshot holds, as it is or cast to the column's dtype
(a dense layer's float16 input is the float32 output of the dense layer before; both see the
whole image as their patch), the member ``link.<column>`` names that chunk, column and dtype
(:func:`link_duplicates`); :func:`resolve_links` reads them back.
Only columns of at least `LINK_MIN_BYTES` are linked, so a chunk keeps its small columns (ids,
steps, labels) itself.

Example:
    >>> data = npz_bytes({"uid": np.arange(3)})
    >>> import io; np.load(io.BytesIO(data))["uid"].tolist()
    [0, 1, 2]
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping

import numpy as np

LEVEL = 1  # deflate's fastest level
STRATEGIES = (zlib.Z_DEFAULT_STRATEGY, zlib.Z_HUFFMAN_ONLY)
PROBE_BYTES = 1 << 16  # each member's strategy is chosen on its first 64 KiB
LINK_PREFIX = "link."
LINK_MIN_BYTES = 1 << 14  # smaller columns are always stored in their own chunk
_ZIP_LIMIT = 0xFFFFFFFF  # beyond this, sizes and offsets need ZIP64: zipfile writes those
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01
_UTF8_NAMES = 0x800


def deflate(data: bytes, strategy: int = zlib.Z_DEFAULT_STRATEGY) -> bytes:
    """Raw deflate (no zlib header: what a zip member holds) at `LEVEL`."""
    packer = zlib.compressobj(LEVEL, zlib.DEFLATED, -15, 8, strategy)
    return packer.compress(data) + packer.flush()


def compress(data: bytes) -> bytes:
    """``data`` deflated with the strategy of `STRATEGIES` that packs its first bytes best."""
    if len(data) <= PROBE_BYTES:
        return min((deflate(data, s) for s in STRATEGIES), key=len)
    probe = data[:PROBE_BYTES]
    best = min(STRATEGIES, key=lambda s: len(deflate(probe, s)))
    return deflate(data, best)


def npy_bytes(value) -> bytes:
    """One array in the ``.npy`` format (no pickles)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(value), allow_pickle=False)
    return buffer.getvalue()


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An .npz of ``arrays`` (``np.load`` reads it as any other), each member packed by
    :func:`compress`. Archives too big for a plain zip (a member or the whole past 4 GiB) are
    written by ``zipfile`` with ZIP64 and the default strategy."""
    members = []
    for name, value in arrays.items():
        raw = npy_bytes(value)
        members.append((f"{name}.npy".encode(), zlib.crc32(raw), len(raw), compress(raw)))
    total = sum(30 + 46 + 2 * len(name) + len(packed) for name, _, _, packed in members)
    largest = max((size for _, _, size, _ in members), default=0)
    if max(total, largest) >= _ZIP_LIMIT or len(members) >= 0xFFFF:
        return _zip64_bytes(arrays)
    body, directory = bytearray(), bytearray()
    for name, crc, size, packed in members:
        flags = 0 if name.isascii() else _UTF8_NAMES
        fields = (20, flags, zipfile.ZIP_DEFLATED, 0, _DOS_DATE, crc, len(packed), size, len(name))
        directory += struct.pack("<IH", 0x02014B50, 20)  # central entry, made by: version 2.0
        directory += struct.pack("<HHHHHIIIH", *fields)
        directory += struct.pack("<HHHHII", 0, 0, 0, 0, 0, len(body)) + name
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields, 0) + name + packed
    end = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(directory), len(body), 0
    )
    return bytes(body + directory + end)


def _zip64_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=LEVEL) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(value), allow_pickle=False)
    return buffer.getvalue()


def link_duplicates(
    chunks: Mapping[str, Mapping[str, np.ndarray]], chunk_path: Mapping[str, str]
) -> dict[str, dict[str, np.ndarray]]:
    """The sample chunks of one snapshot, each column that repeats an earlier one linked.

    Args:
        chunks: per layer key (in layer order), its chunk's columns.
        chunk_path: per layer key, its chunk's path relative to the run directory.

    Returns:
        The chunks, where a column of at least `LINK_MIN_BYTES` whose shape and bytes equal
        those of a column an earlier chunk holds itself, as it is or cast to the column's dtype
        (a dense layer's float16 input is the float32 output of the layer before), is replaced
        by ``link.<column>``: the array ``[<that chunk's path>, <its column>, <dtype>]``.
    """
    held: dict[tuple, list[tuple[str, str, np.ndarray]]] = {}
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, columns in chunks.items():
        out[key] = {}
        for name, value in columns.items():
            value = np.asarray(value)
            if value.nbytes < LINK_MIN_BYTES:
                out[key][name] = value
                continue
            same = next(
                ((k, n) for k, n, v in held.get(value.shape, []) if _repeats(value, v)), None
            )
            if same is None:
                out[key][name] = value
                held.setdefault(value.shape, []).append((key, name, value))
            else:
                link = [chunk_path[same[0]], same[1], value.dtype.str]
                out[key][LINK_PREFIX + name] = np.array(link)
    return out


def _repeats(value: np.ndarray, earlier: np.ndarray) -> bool:
    """True when ``earlier``, cast to ``value``'s dtype as the reader casts it, is ``value``."""
    if earlier.dtype != value.dtype:
        if not np.can_cast(earlier.dtype, value.dtype, "same_kind"):
            return False
        earlier = earlier.astype(value.dtype)
    return earlier.tobytes() == value.tobytes()


def resolve_links(
    arrays: Mapping[str, np.ndarray], read: Callable[[str, str], np.ndarray]
) -> dict[str, np.ndarray]:
    """A chunk's columns with its links replaced by the columns they name.

    Args:
        arrays: the chunk's members, as read.
        read: ``read(path relative to the run, column)`` -> that chunk's column.
    """
    out = {}
    for name, value in arrays.items():
        if name.startswith(LINK_PREFIX):
            path, column, dtype = (str(v) for v in np.asarray(value).tolist())
            out[name[len(LINK_PREFIX) :]] = np.asarray(read(path, column)).astype(dtype)
        else:
            out[name] = value
    return out
