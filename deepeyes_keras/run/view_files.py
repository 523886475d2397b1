"""The views stage's files as every reader sees them: compressed specs and shared thumbnails.

A layer view (``views/step-NNNNNNNN/L<i>.vl.json.gz``; every path is in
:mod:`deepeyes_keras.run.layout`) is gzip-compressed Vega-Lite JSON. Its input-map points name
their reservoir instance (``uid``) instead of carrying its thumbnail: the thumbnails of a layer
are written once per run, in ``views/thumbnails/L<i>.json.gz`` (a JSON object ``{"<uid>":
"data:image/png;base64,..."}`` holding every instance any view of the layer shows), and the
spec says where, as a URL relative to the spec's own file::

    "usermeta": {"deepeyes": {"thumbnails": "../thumbnails/L0.json.gz"}}

Whoever draws a view joins the thumbnails back into each point's ``image`` first: the site's
page script, and in Python :func:`read_view`, which every reader uses (notebooks, export). It
reads every form this package has written: gzip or plain JSON (told apart by the first two
bytes, not by the name), thumbnails shared or inline (views written before, and published views
of older versions). A spec read back equals the one :func:`deepeyes_keras.derive.views.layer_view`
computes, with no ``uid`` and no ``usermeta`` left. Needs neither TensorFlow nor Altair.

Example:
    >>> spec = read_view("deepeyes_runs/lenet/views/step-00000300/L0.vl.json.gz")  # doctest: +SKIP
    >>> spec["datasets"]["points"][0]["image"][:22]  # doctest: +SKIP
    'data:image/png;base64,'
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Mapping
from pathlib import Path

from deepeyes_keras.run.layout import (
    GZIP_SUFFIX,
    DamagedFileError,
    damaged,
    looks_complete_json,
    read_json,
    strict_json,
    write_bytes,
)

GZIP_MAGIC = b"\x1f\x8b"
GZIP_LEVEL = 5  # fc1 at step 2,000: 2% larger than level 6, about 2.5x faster (level 9: 1.5 s)
META_KEY = "deepeyes"  # the package's entry in a spec's ``usermeta``
Thumbnails = Mapping[str, str | None]

__all__ = [
    "GZIP_LEVEL",
    "compress",
    "file_bytes",
    "join_thumbnails",
    "read_thumbnails",
    "read_view",
    "shown_uids",
    "thumbnails_ref",
    "view_is_whole",
    "with_thumbnails_ref",
    "write_json_file",
]


def compress(data: bytes) -> bytes:
    """``data`` gzipped at :data:`GZIP_LEVEL`, with no time stamp (the same bytes every time)."""
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def file_bytes(path) -> bytes:
    """The content of a file, decompressed when it is gzip (by its first bytes, not its name).

    Raises:
        FileNotFoundError: no such file.
        DamagedFileError: a gzip file that is truncated or corrupt (the message names it).
    """
    data = Path(path).read_bytes()
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise damaged(path, f"not a whole gzip file: {err}; {len(data)} bytes") from None


def read_json_file(path):
    """A JSON file, gzip or plain; :class:`DamagedFileError` if it cannot be parsed."""
    return read_json(path, file_bytes(path))


def write_json_file(path, obj) -> Path:
    """Strict, sorted-key JSON written atomically; gzipped when the name ends with ``.gz``."""
    safe, _ = strict_json(obj)
    data = json.dumps(safe, sort_keys=True, allow_nan=False).encode("utf-8")
    return write_bytes(path, compress(data) if str(path).endswith(GZIP_SUFFIX) else data)


def view_is_whole(path) -> bool:
    """Whether a view (or thumbnails) file holds a whole JSON object, without parsing it.

    A plain file: its first and last bytes (:func:`~deepeyes_keras.run.layout.looks_complete_json`).
    A gzip file: decompressed (its checksum catches truncation and corruption), then the same
    check; a few milliseconds for the largest layer view.
    """
    try:
        with open(path, "rb") as handle:
            compressed = handle.read(2) == GZIP_MAGIC
    except OSError:
        return False
    if not compressed:
        return looks_complete_json(path)
    try:
        text = file_bytes(path).strip()
    except (OSError, DamagedFileError):
        return False
    return text.startswith(b"{") and text.endswith(b"}")


# ------------------------------------------------------------------------------- thumbnails


def thumbnails_ref(spec: dict) -> str | None:
    """The URL of a spec's thumbnails file (relative to the spec's file), or None (inline)."""
    meta = spec.get("usermeta")
    entry = meta.get(META_KEY) if isinstance(meta, dict) else None
    ref = entry.get("thumbnails") if isinstance(entry, dict) else None
    return ref if isinstance(ref, str) else None


def with_thumbnails_ref(spec: dict, spec_path, thumbnails_path) -> dict:
    """``spec`` (changed in place) naming ``thumbnails_path`` relative to ``spec_path``."""
    ref = Path(os.path.relpath(thumbnails_path, Path(spec_path).parent)).as_posix()
    meta = spec.setdefault("usermeta", {})
    meta.setdefault(META_KEY, {})["thumbnails"] = ref
    return spec


def _point_rows(spec: dict):
    """Every data row of the spec's named datasets that names an instance (``uid``)."""
    for rows in (spec.get("datasets") or {}).values():
        for row in rows if isinstance(rows, list) else ():
            if isinstance(row, dict) and "uid" in row:
                yield row


def shown_uids(spec: dict) -> list[int]:
    """The instances a spec's points name, in row order."""
    return [int(row["uid"]) for row in _point_rows(spec)]


def join_thumbnails(spec: dict, thumbnails: Thumbnails) -> dict:
    """``spec`` (changed in place) with each point's ``image`` from ``thumbnails`` (None for an
    instance it lacks) in place of its ``uid``, and without the thumbnails reference: the
    self-contained form, as views were written before the thumbnails were shared."""
    for row in _point_rows(spec):
        row["image"] = thumbnails.get(str(row.pop("uid")))
    meta = spec.get("usermeta")
    if isinstance(meta, dict) and isinstance(meta.get(META_KEY), dict):
        meta[META_KEY].pop("thumbnails", None)
        if not meta[META_KEY]:
            del meta[META_KEY]
        if not meta:
            del spec["usermeta"]
    return spec


def read_thumbnails(path) -> dict[str, str | None]:
    """A thumbnails file (gzip or plain): ``{"<uid>": data URL}``.

    Raises:
        FileNotFoundError: no such file.
        DamagedFileError: it cannot be parsed, or is not a JSON object.
    """
    table = read_json_file(path)
    if not isinstance(table, dict):
        raise damaged(path, f"a JSON {type(table).__name__}, not an object of thumbnails")
    return table


def read_view(path, *, thumbnails: bool = True) -> dict:
    """A chart spec file of any form, as a dict; its thumbnails joined in (see the module).

    Args:
        path: a view file (``.vl.json.gz`` or ``.vl.json``), of a run or published.
        thumbnails: join the shared thumbnails into the points (False: keep ``uid``).

    Raises:
        FileNotFoundError: no such file.
        DamagedFileError: the file, or the thumbnails file it names, is damaged or missing (the
            message names the file and the fix).
    """
    spec = read_json_file(path)
    if not isinstance(spec, dict):
        raise damaged(path, f"a JSON {type(spec).__name__}, not a chart spec object")
    ref = thumbnails_ref(spec)
    if not thumbnails or ref is None:
        return spec
    if ref.startswith("/") or ":" in ref:  # a file beside the views, never elsewhere
        raise damaged(path, f"its thumbnails reference {ref!r} is not a relative path")
    table_path = Path(path).parent / ref
    try:
        table = read_thumbnails(table_path)
    except FileNotFoundError:
        raise DamagedFileError(
            f"{path} names the thumbnails file {table_path}, which does not exist. Run "
            "`deepeyes maps RUN` to write the views and their thumbnails again."
        ) from None
    return join_thumbnails(spec, table)
