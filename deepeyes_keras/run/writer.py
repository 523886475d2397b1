"""Writes a run directory in the training process: manifest, snapshot records and sample chunks.

The recorder's files of the run directory (see :mod:`deepeyes_keras.run.layout`). The manifest is
rewritten last, so a snapshot exists for a reader once the manifest lists it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deepeyes_keras.run.layout import SCHEMA_VERSION, RunLayout, write_json, write_npz


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
        self.layout = RunLayout(run_dir)
        self.manifest: dict | None = None
        self.nonfinite_replaced = 0

    def open(self, manifest: dict) -> None:
        """Creates the directory and writes the first manifest (status "training")."""
        check_writable(self.run_dir)
        self.layout.snapshots_dir.mkdir(exist_ok=True)
        self.layout.samples_dir.mkdir(exist_ok=True)
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
        layout = self.layout
        chunks = {}
        for key, columns in samples.items():
            if len(columns["uid"]) == 0:
                continue
            path = layout.sample_chunk(key, step)
            write_npz(path, columns)
            chunks[key] = layout.relative(path)
        write_npz(layout.snapshot_arrays(step), arrays)
        record = dict(
            record,
            schema_version=SCHEMA_VERSION,
            arrays=layout.relative(layout.snapshot_arrays(step)),
            sample_chunks=chunks,
        )
        self.nonfinite_replaced += write_json(layout.snapshot_record(step), record)
        entries = [s for s in self.manifest["snapshots"] if s["step"] != step]
        entries.append(
            {
                "step": step,
                "epoch": record.get("epoch"),
                "file": layout.relative(layout.snapshot_record(step)),
                "time": record.get("time"),
            }
        )
        self.manifest["snapshots"] = sorted(entries, key=lambda s: s["step"])
        self.manifest["last_step"] = step
        self.manifest["updated"] = record.get("time")
        self._write_manifest()

    def write_model_config(self, config: dict) -> None:
        """Writes ``model.json``: the model's architecture and compile settings (for redesigns)."""
        self.nonfinite_replaced += write_json(self.layout.model_config, config)

    def set_status(self, status: str, **fields) -> None:
        self.manifest.update(fields, status=status)
        self._write_manifest()

    def _write_manifest(self) -> None:
        self.manifest["nonfinite_replaced"] = self.nonfinite_replaced
        self.nonfinite_replaced += write_json(self.layout.manifest, self.manifest)
