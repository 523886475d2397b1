"""The run directory: atomic, strict writes of the manifest, snapshots and reservoir samples.

Layout (documented for users in docs/run-format.md)::

    <run>/manifest.json                        schema, versions, model, layers, snapshot list
    <run>/snapshots/step-00000100.json         small record: step, epoch, metrics, per-layer counts
    <run>/snapshots/step-00000100.npz          per-layer arrays, keys "L<i>.<name>"
    <run>/samples/L<i>/entries-00000100.npz    reservoir instances first kept before that snapshot

Every file is written to a temporary name and renamed into place, and the manifest is rewritten
last, so a reader (``mkdocs serve``, :func:`deepeyes_keras.load_run`) or a crash at any moment
never sees half a file: a snapshot exists once the manifest lists it.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def snapshot_stem(step: int) -> str:
    """File stem of the snapshot at ``step`` (zero-padded so names sort by step)."""
    return f"step-{int(step):08d}"


def strict_json(obj):
    """Returns (JSON-safe copy of obj, number of non-finite floats replaced by null)."""
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


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> int:
    """Writes strict, sorted-key JSON atomically; returns how many non-finite values became null."""
    safe, count = strict_json(obj)
    text = json.dumps(safe, sort_keys=True, allow_nan=False, indent=1)
    _atomic_write_bytes(path, text.encode("utf-8"))
    return count


def write_npz(path: Path, arrays: dict[str, np.ndarray], *, compress: bool = False) -> None:
    """Writes an .npz atomically (uncompressed by default: it is written while training waits)."""
    buffer = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buffer, **arrays)
    _atomic_write_bytes(path, buffer.getvalue())


def read_json(path: Path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def check_writable(directory: Path) -> None:
    """Creates ``directory`` and proves a file can be written there, or raises a clear error."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".deepeyes-write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"DeepEyesCallback cannot write its run directory {str(directory)!r}: {err}. "
            "Pass log_dir= a writable directory."
        ) from err


class RunWriter:
    """Writes one run directory. Touches no disk until :meth:`open`."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.manifest: dict | None = None
        self.nonfinite_replaced = 0

    def open(self, manifest: dict) -> None:
        """Creates the directory and writes the first manifest (status "training")."""
        check_writable(self.run_dir)
        (self.run_dir / "snapshots").mkdir(exist_ok=True)
        (self.run_dir / "samples").mkdir(exist_ok=True)
        self.manifest = dict(manifest, schema_version=SCHEMA_VERSION, status="training")
        self.manifest.setdefault("snapshots", [])
        self._write_manifest()

    def write_snapshot(
        self, record: dict, arrays: dict[str, np.ndarray], samples: dict[str, dict[str, np.ndarray]]
    ) -> None:
        """Writes one snapshot: sample chunks, arrays, record, then the manifest that lists it.

        Args:
            record: the JSON record (must hold "step"); file names are filled in here.
            arrays: flat mapping "L<i>.<name>" -> array.
            samples: per layer key, the new reservoir instances (skipped when empty).
        """
        step = int(record["step"])
        stem = snapshot_stem(step)
        chunks = {}
        for key, columns in samples.items():
            if len(columns["uid"]) == 0:
                continue
            rel = f"samples/{key}/entries-{step:08d}.npz"
            (self.run_dir / "samples" / key).mkdir(parents=True, exist_ok=True)
            write_npz(self.run_dir / rel, columns)
            chunks[key] = rel
        write_npz(self.run_dir / "snapshots" / f"{stem}.npz", arrays)
        record = dict(
            record,
            schema_version=SCHEMA_VERSION,
            arrays=f"snapshots/{stem}.npz",
            sample_chunks=chunks,
        )
        self.nonfinite_replaced += write_json(self.run_dir / "snapshots" / f"{stem}.json", record)
        entries = [s for s in self.manifest["snapshots"] if s["step"] != step]
        entries.append(
            {
                "step": step,
                "epoch": record.get("epoch"),
                "file": f"snapshots/{stem}.json",
                "time": record.get("time"),
            }
        )
        self.manifest["snapshots"] = sorted(entries, key=lambda s: s["step"])
        self.manifest["last_step"] = step
        self.manifest["updated"] = record.get("time")
        self._write_manifest()

    def set_status(self, status: str, **fields) -> None:
        self.manifest.update(fields, status=status)
        self._write_manifest()

    def _write_manifest(self) -> None:
        self.manifest["nonfinite_replaced"] = self.nonfinite_replaced
        self.nonfinite_replaced += write_json(self.run_dir / MANIFEST, self.manifest)
