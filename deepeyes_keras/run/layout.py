"""The run directory, the contract between the stages: every path, the schema, atomic writes.

This module is the only place that spells a path of a run directory. It imports neither
TensorFlow nor Altair, so every stage (the recorder in the training process, the derived stages
in the maps worker, the site builder) shares it. The layout, with the stage that owns each file
(a stage writes only its own files; the others read them)::

    <run>/manifest.json                        recorder: schema, versions, model, layers, snapshots
    <run>/snapshots/step-00000100.json         recorder: step, epoch, metrics, per-layer counts
    <run>/snapshots/step-00000100.npz          recorder: per-layer arrays, keys "L<i>.<field>"
    <run>/samples/L<i>/entries-00000100.npz    recorder: reservoir instances first kept by then
    <run>/maps/L<i>/step-00000100.npz          maps: input map and filter map of layer i
    <run>/views/overview.vl.json               views: training curves
    <run>/views/histograms.vl.json             views: perplexity histograms of every layer
    <run>/views/step-00000100/L<i>.vl.json.gz  views: the linked layer view of layer i (gzip)
    <run>/views/thumbnails/L<i>.json.gz        views: thumbnails of layer i's points (gzip)
    <run>/findings/step-00000100.json          findings: T1-T5 at that snapshot, with evidence
    <run>/findings.json                        findings: summary of the latest snapshot
    <run>/model.json                           recorder: the model's architecture and compile config
    <run>/redesign/proposal.json               redesign: the proposal (widths, removals, parameters)
    <run>/redesign/verification.json           redesign: original vs proposal, retrained
    <run>/export/                              export: Markdown and images (default location)

A published (frozen) copy of some views, small enough to commit to a wiki (``deepeyes publish``;
:class:`PublishedLayout`), mirrors the views' names under a directory of its own::

    <out>/<run>/published.json                 publish: the run's name, layers, steps, files
    <out>/<run>/overview.vl.json, histograms.vl.json, step-00000100/L<i>.vl.json
    <out>/<run>/thumbnails/L<i>.json           publish: thumbnails of the published points

Layer views name their points' instances (``uid``); the thumbnails are shared, one file per
layer (:mod:`deepeyes_keras.run.view_files` reads every form: gzip or plain, shared or inline
thumbnails, and the ``L<i>.vl.json`` of runs from before; :meth:`RunLayout.view_file`).

Schema history (``SCHEMA_VERSION``):

- 1: findings were written into the snapshot records (``findings``, ``findings_summary``).
- 2: findings live in ``findings/`` (owned by the findings stage); snapshot records are written
  once, by the recorder. Runs of schema 1 still load: the reader falls back to the records.
- 3: the recorder's arrays are compact (:mod:`deepeyes_keras.run.archive`): co-activation
  triangles as uint16 codes, recomputed activations as codes 0..63, repeated sample columns
  linked. The reader still reads schema 2's float32 triangles and 8-bit codes.

Compressed views and shared thumbnails need no new schema: views are derived (``deepeyes maps``).

Every write goes to a temporary name in the same directory and is renamed into place, so a
reader (``mkdocs serve``, :func:`deepeyes_keras.load_run`) or a crash never sees half a file.
JSON is strict: non-finite floats become ``null`` and are counted.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 3
"""Version of the layout and records written by this package (readers accept older ones)."""

N_BINS = 30
"""Bins of every perplexity histogram, over [1, F] (the paper's 30)."""

BETA = 0.5
"""Frequency threshold: a filter is active on an instance above BETA x its max (paper)."""

THETA = 0.8
"""Reliability threshold: a filter's max is confirmed when it reaches THETA x its max (paper)."""

MANIFEST = "manifest.json"
LATEST_FINDINGS = "findings.json"
EXPORT_DIR = "export"
VIEW_SUFFIX = ".vl.json"
GZIP_SUFFIX = ".gz"
THUMBNAILS_DIR = "thumbnails"


def snapshot_stem(step: int) -> str:
    """File stem of the snapshot at ``step``, zero-padded so that names sort by step."""
    return f"step-{int(step):08d}"


def layer_key(index: int) -> str:
    """Key of the ``index``-th analysed layer in file names and array keys ("L0", "L1", ...)."""
    return f"L{int(index)}"


class RunLayout:
    """The paths of one run directory.

    Example:
        >>> layout = RunLayout("deepeyes_runs/lenet")
        >>> layout.maps("L0", 100).as_posix()
        'deepeyes_runs/lenet/maps/L0/step-00000100.npz'
        >>> layout.relative(layout.snapshot_arrays(100))
        'snapshots/step-00000100.npz'
    """

    def __init__(self, root):
        self.root = Path(root)

    # ----------------------------------------------------------------- recorder
    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    def snapshot_record(self, step: int) -> Path:
        return self.snapshots_dir / f"{snapshot_stem(step)}.json"

    def snapshot_arrays(self, step: int) -> Path:
        return self.snapshots_dir / f"{snapshot_stem(step)}.npz"

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    def sample_chunk(self, key: str, step: int) -> Path:
        return self.samples_dir / key / f"entries-{int(step):08d}.npz"

    def sample_chunks(self, key: str) -> list[Path]:
        """The sample chunks of a layer that exist, in step order."""
        return sorted((self.samples_dir / key).glob("entries-*.npz"))

    # ----------------------------------------------------------------- derived stages
    def maps(self, key: str, step: int) -> Path:
        return self.root / "maps" / key / f"{snapshot_stem(step)}.npz"

    @property
    def views_dir(self) -> Path:
        return self.root / "views"

    def view(self, name: str, step: int | None = None) -> Path:
        """A chart spec as the views stage writes it: ``name`` is "overview", "histograms"
        (plain JSON), or a layer key with ``step`` (gzip-compressed JSON)."""
        if step is None:
            return self.views_dir / f"{name}{VIEW_SUFFIX}"
        return self.views_dir / snapshot_stem(step) / f"{name}{VIEW_SUFFIX}{GZIP_SUFFIX}"

    def plain_view(self, name: str, step: int | None = None) -> Path:
        """A view's uncompressed name (``.vl.json``), as layer views were written before."""
        path = self.view(name, step)
        return path.with_name(path.name.removesuffix(GZIP_SUFFIX))

    def view_file(self, name: str, step: int | None = None) -> Path:
        """The file a view has: :meth:`view`, or else :meth:`plain_view` if that one exists."""
        path, old = self.view(name, step), self.plain_view(name, step)
        return old if not path.is_file() and old.is_file() else path

    def thumbnails(self, key: str) -> Path:
        """The thumbnails of every point any layer view of layer ``key`` shows (gzip JSON)."""
        return self.views_dir / THUMBNAILS_DIR / f"{key}.json{GZIP_SUFFIX}"

    def findings(self, step: int) -> Path:
        return self.root / "findings" / f"{snapshot_stem(step)}.json"

    @property
    def latest_findings(self) -> Path:
        return self.root / LATEST_FINDINGS

    @property
    def export_dir(self) -> Path:
        return self.root / EXPORT_DIR

    @property
    def model_config(self) -> Path:
        return self.root / "model.json"

    @property
    def redesign_dir(self) -> Path:
        return self.root / "redesign"

    @property
    def proposal(self) -> Path:
        return self.redesign_dir / "proposal.json"

    @property
    def verification(self) -> Path:
        return self.redesign_dir / "verification.json"

    # ----------------------------------------------------------------- helpers
    def relative(self, path: Path) -> str:
        """``path`` relative to the run directory, with forward slashes (as records store it)."""
        return Path(path).relative_to(self.root).as_posix()

    def is_run(self) -> bool:
        """True when the directory holds a manifest (a run, possibly still training)."""
        return self.manifest.is_file()


PUBLISHED_MANIFEST = "published.json"


class PublishedLayout:
    """The files of one run's published views under ``root`` (``<out>/<run>``)."""

    def __init__(self, root):
        self.root = Path(root)

    @property
    def manifest(self) -> Path:
        return self.root / PUBLISHED_MANIFEST

    def view(self, name: str, step: int | None = None) -> Path:
        """A published spec, named as in the run's ``views/`` directory."""
        if step is None:
            return self.root / f"{name}{VIEW_SUFFIX}"
        return self.root / snapshot_stem(step) / f"{name}{VIEW_SUFFIX}"

    def thumbnails(self, key: str) -> Path:
        """The thumbnails of the published views of layer ``key`` (plain JSON)."""
        return self.root / THUMBNAILS_DIR / f"{key}.json"

    def relative(self, path: Path) -> str:
        return Path(path).relative_to(self.root).as_posix()


def is_published_dir(path) -> bool:
    """True if ``path`` holds one run's published views."""
    return (Path(path) / PUBLISHED_MANIFEST).is_file()


def is_run_dir(path) -> bool:
    """True when ``path`` is a run directory (it holds a manifest)."""
    return RunLayout(path).is_run()


# --------------------------------------------------------------------- strict JSON, atomic writes
def strict_json(obj) -> tuple[object, int]:
    """Returns (a JSON-safe copy of ``obj``, how many non-finite floats became None).

    NumPy arrays and scalars become lists and Python numbers; dict keys become strings.
    """
    count = 0

    def convert(value):
        nonlocal count
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        if isinstance(value, np.ndarray):
            return [convert(v) for v in value.tolist()]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            count += 1
            return None
        return value

    return convert(obj), count


def write_bytes(path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically (temporary file, then rename); makes parents."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
    return path


def write_json(path, obj, *, indent: int | None = 1) -> int:
    """Writes strict, sorted-key JSON atomically; returns how many non-finite values became null."""
    safe, count = strict_json(obj)
    text = json.dumps(safe, sort_keys=True, allow_nan=False, indent=indent)
    write_bytes(path, text.encode("utf-8"))
    return count


def write_npz(path, arrays: dict[str, np.ndarray], *, compress: bool = False) -> None:
    """Writes an .npz atomically (uncompressed by default: the recorder writes while training
    waits)."""
    buffer = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buffer, **arrays)
    write_bytes(path, buffer.getvalue())


class DamagedFileError(ValueError):
    """A file of a run directory that exists but cannot be parsed (truncated, zeroed, corrupt).

    The message names the file, what is wrong, and what to do (:func:`damage_advice`).
    """


def damage_advice(path) -> str:
    """What to do about a damaged file, by the stage that owns it (see the module docstring)."""
    path = Path(path)
    parent, grandparent = path.parent.name, path.parent.parent.name  # only inside the run
    if path.name == MANIFEST:
        return (
            "The manifest cannot be computed again: restore it from a copy of the run "
            "(its snapshots/ and samples/ are left as they are)."
        )
    if parent == "snapshots":
        return (
            "Recorder data cannot be computed again: restore it from a copy of the run, or "
            "delete the snapshot's .json and .npz to read the run without it."
        )
    if grandparent == "samples":
        return (
            "Recorder data cannot be computed again: restore it from a copy of the run; until "
            "then that layer's maps and findings cannot be computed."
        )
    if path.name == LATEST_FINDINGS or {parent, grandparent} & {"maps", "views", "findings"}:
        return "Delete it and run `deepeyes maps RUN` to write it again."
    return "Restore it from a copy, or write it again."


def damaged(path, problem: str) -> DamagedFileError:
    return DamagedFileError(f"{path} is damaged ({problem}). {damage_advice(path)}")


def read_json(path, data: bytes | None = None):
    """A JSON file (or its bytes `data`, already read); :class:`DamagedFileError` (naming it) if
    it is empty, truncated or corrupt."""
    if data is None:
        with open(path, "rb") as handle:
            data = handle.read()
    if not data.strip():
        raise damaged(path, f"{'empty' if not data else 'blank'}: {len(data)} bytes")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise damaged(path, f"not UTF-8 text: byte {err.start} of {len(data)}") from None
    except json.JSONDecodeError as err:
        problem = f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
        raise damaged(path, f"{problem}, {len(data)} bytes") from None


def looks_complete_json(path) -> bool:
    """A cheap check (two reads of a few bytes) that a JSON object file is whole: it starts with
    ``{`` and ends with ``}``. Catches empty, truncated and overwritten files without parsing
    a multi-megabyte chart spec."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64).lstrip()
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64))
            tail = handle.read().rstrip()
    except OSError:
        return False
    return head.startswith(b"{") and tail.endswith(b"}")


def npz_problem(err: BaseException) -> str:
    """The reason an .npz could not be read, in words."""
    if isinstance(err, EOFError) or "pickled" in str(err):  # NumPy's guess for a non-zip file
        return "not an .npz archive"
    return f"{type(err).__name__}: {err}"


NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)
"""What NumPy and zipfile raise for an .npz that is not whole (FileNotFoundError and
PermissionError are re-raised as they are)."""


def read_npz(path, names=None) -> dict[str, np.ndarray]:
    """The arrays of an .npz (``names``, default all), read into memory; the file is closed.

    Raises:
        FileNotFoundError: no such file.
        DamagedFileError: the file is not a readable .npz, or lacks one of ``names`` (the
            message names the file).
    """
    try:  # opened here, so that the file is closed even when NumPy cannot read it
        with open(path, "rb") as handle, np.load(handle) as data:
            return {k: data[k] for k in (data.files if names is None else names)}
    except (FileNotFoundError, PermissionError):
        raise
    except NPZ_ERRORS as err:
        raise damaged(path, f"{npz_problem(err)}; {Path(path).stat().st_size} bytes") from None


def npz_names(path) -> list[str]:
    """The array names of an .npz (only its index is read); errors as :func:`read_npz`."""
    try:
        with open(path, "rb") as handle, np.load(handle) as data:
            return list(data.files)
    except (FileNotFoundError, PermissionError):
        raise
    except NPZ_ERRORS as err:
        raise damaged(path, f"{npz_problem(err)}; {Path(path).stat().st_size} bytes") from None


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")


def _picture(match: re.Match) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # the Control Pictures block: U+241B is "␛"
    return "\u2421" if code == 0x7F else "\ufffd"


def printable(text) -> str:
    """``text`` with every control character shown as its picture (``"␛"`` for ESC, ``"␊"``
    for a newline; U+FFFD for the rest), for terminals, charts and Markdown: a name holding an
    escape sequence never drives the terminal nor breaks a table row, and a chart's SVG stays
    valid XML. No backslash escapes: Vega-Lite reads backslashes in titles as escapes again.
    Everything else (markup, quotes, any script) is left as it is: escaping for HTML or Markdown
    is the writer's job.

    Example:
        >>> printable("conv\\x1b[31m\\n")
        'conv␛[31m␊'
    """
    return _UNPRINTABLE.sub(_picture, str(text))
