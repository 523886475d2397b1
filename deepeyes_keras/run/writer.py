"""Writes a run directory in the training process: manifest, snapshot records and sample chunks.

The recorder's files of the run directory (see :mod:`deepeyes_keras.run.layout`). The manifest is
rewritten last, so a snapshot exists for a reader once the manifest lists it.

A full or vanishing disk does not stop training (``viewer_site/reference/faults.md``): a snapshot
whose files cannot all be written is taken back whole (the files it did write are removed, the
manifest keeps its previous version) and a warning names the path and the snapshot;
:meth:`RunWriter.write_snapshot` returns False so that the recorder keeps its samples for the next
snapshot. A run directory removed during training is recreated with its manifest
(:meth:`RunWriter.recover`). With ``strict=True`` a failed write raises instead. Opening the run
(:meth:`RunWriter.open`) always raises: a run that cannot start fails before the first step.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from deepeyes_keras.run.archive import link_duplicates, npz_bytes
from deepeyes_keras.run.layout import SCHEMA_VERSION, RunLayout, strict_json, write_bytes

MAX_SUFFIX = 10_000
"""Most names tried for a dated run directory: ``<name>``, ``<name>-2``, ... ``<name>-9999``."""


def unwritable(directory: Path, err: OSError) -> PermissionError:
    """The error raised when the run directory cannot be created or written."""
    return PermissionError(
        f"DeepEyesCallback cannot write its run directory {str(directory)!r}: {err}. "
        "Pass log_dir= a writable directory."
    )


def check_writable(directory: Path) -> None:
    """Creates ``directory`` and proves a file can be written there, or raises a clear error."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".deepeyes-write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise unwritable(directory, err) from err


def claim_run_dir(base: Path) -> Path:
    """Creates a new directory ``base``, or ``base-2``, ``base-3``...: the first name not taken.

    Each name is created exclusively (``mkdir`` fails when it exists), so two trainings started
    at the same moment in one ``log_dir`` always get two directories.
    """
    base = Path(base)
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise unwritable(base.parent, err) from err
    for n in range(1, MAX_SUFFIX):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            raise unwritable(candidate, err) from err
        return candidate
    raise FileExistsError(f"DeepEyesCallback: {MAX_SUFFIX - 1} run directories named {base}-N.")


def write_file(path, data: bytes) -> None:
    """The writer's one write: ``layout.write_bytes`` (temporary file renamed into place).

    A failed write leaves no temporary file (``.<name>.tmp-<pid>``, as ``write_bytes`` names it)
    and raises an OSError that names ``path``.
    """
    path = Path(path)
    try:
        write_bytes(path, data)
    except OSError as err:
        try:
            path.with_name(f".{path.name}.tmp-{os.getpid()}").unlink(missing_ok=True)
        except OSError:
            pass  # the directory itself is gone
        if err.errno is None:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err


def json_bytes(obj) -> tuple[bytes, int]:
    """Strict, sorted-key JSON as ``layout.write_json`` writes it, and the non-finite count."""
    safe, count = strict_json(obj)
    return json.dumps(safe, sort_keys=True, allow_nan=False, indent=1).encode("utf-8"), count


class RunWriter:
    """Writes one run directory. Touches no disk until :meth:`open`.

    Args:
        run_dir: the run directory; with ``unique``, the name to start from.
        strict: raise when a write fails during training, instead of warning and going on.
        unique: create the directory exclusively, as ``run_dir`` or the first free
            ``run_dir-2``, ``run_dir-3``... (:func:`claim_run_dir`); the manifest's ``run_name``
            is the name taken.

    Attributes:
        failures: the warning of every failed write (what was not written, and why).
    """

    def __init__(self, run_dir: Path, *, strict: bool = False, unique: bool = False):
        self.run_dir = Path(run_dir)
        self.layout = RunLayout(run_dir)
        self.strict = strict
        self.unique = unique
        self.manifest: dict | None = None
        self.nonfinite_replaced = 0
        self.model_config: dict | None = None
        self.model_config_written = False
        self.failures: list[str] = []
        self._lost = False
        self._last_failure: tuple[int, str] | None = None

    def open(self, manifest: dict) -> None:
        """Creates the directory and writes the first manifest (status "training"); raises."""
        if self.unique:
            self.run_dir = claim_run_dir(self.run_dir)
            self.layout = RunLayout(self.run_dir)
        check_writable(self.run_dir)
        self.layout.snapshots_dir.mkdir(exist_ok=True)
        self.layout.samples_dir.mkdir(exist_ok=True)
        self.manifest = dict(
            manifest, run_name=self.run_dir.name, schema_version=SCHEMA_VERSION, status="training"
        )
        self.manifest.setdefault("snapshots", [])
        self._write_manifest()

    def recover(self) -> bool:
        """Recreates the run directory with its manifest if it vanished since the last write.

        Returns:
            True when snapshots or samples written before were lost since the last call: the
            recorder must then store its whole reservoir again with the next snapshot.
        """
        self._restore_if_vanished()
        lost, self._lost = self._lost, False
        return lost

    def write_snapshot(
        self, record: dict, arrays: dict[str, np.ndarray], samples: dict[str, dict[str, np.ndarray]]
    ) -> bool:
        """Writes one snapshot: sample chunks, arrays, record, then the manifest that lists it.

        All or nothing: when a write fails, the files this snapshot wrote are removed and the
        manifest stays as it was; a warning says so (``strict``: the OSError is raised).

        Args:
            record: the JSON record (must hold "step"); file names are filled in here.
            arrays: flat mapping "L<i>.<name>" -> array.
            samples: per layer key (in layer order), the new reservoir instances (skipped when
                empty); a column that repeats one of an earlier layer is linked to it
                (:func:`deepeyes_keras.run.archive.link_duplicates`).

        Returns:
            True when the snapshot was written.
        """
        step = int(record["step"])
        layout = self.layout
        manifest, nonfinite = dict(self.manifest), self.nonfinite_replaced
        written: list[Path] = []
        try:
            self._write_model_config()
            samples = {key: c for key, c in samples.items() if len(c["uid"])}
            chunks = {key: layout.relative(layout.sample_chunk(key, step)) for key in samples}
            for key, columns in link_duplicates(samples, chunks).items():
                self._write_new(layout.sample_chunk(key, step), npz_bytes(columns), written)
            self._write_new(layout.snapshot_arrays(step), npz_bytes(arrays), written)
            record = dict(
                record,
                schema_version=SCHEMA_VERSION,
                arrays=layout.relative(layout.snapshot_arrays(step)),
                sample_chunks=chunks,
            )
            data, count = json_bytes(record)
            self._write_new(layout.snapshot_record(step), data, written)
            self.nonfinite_replaced += count
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
        except OSError as err:
            self.manifest, self.nonfinite_replaced = manifest, nonfinite
            for path in written:
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    pass
            if (step, str(err)) != self._last_failure:  # the end of fit tries a last one again
                self._failed(
                    f"snapshot at step {step}",
                    err,
                    "Training continues; the samples and metrics it held go with the next "
                    "snapshot written",
                )
            elif self.strict:
                raise
            self._last_failure = (step, str(err))
            return False
        return True

    def write_model_config(self, config: dict) -> None:
        """Keeps ``model.json`` (architecture, compile settings) to write with the next snapshot."""
        self.model_config = config
        self.model_config_written = False

    def set_status(self, status: str, **fields) -> bool:
        """Rewrites the manifest with a new status; a failed write warns (``strict``: raises)."""
        self._restore_if_vanished()
        self.manifest.update(fields, status=status)
        try:
            self._write_manifest()
        except OSError as err:
            self._failed(
                f"manifest with status {status!r}",
                err,
                "The run directory keeps its previous manifest",
            )
            return False
        return True

    # -- internals ---------------------------------------------------------------------------

    def _restore_if_vanished(self) -> None:
        """A manifest gone during training: list only the snapshots left, recreate the folders."""
        if self.manifest is None or self.layout.is_run():
            return
        layout = self.layout
        kept = [
            s
            for s in self.manifest["snapshots"]
            if layout.snapshot_record(s["step"]).is_file()
            and layout.snapshot_arrays(s["step"]).is_file()
        ]
        gone = len(self.manifest["snapshots"]) - len(kept)
        if gone or not layout.samples_dir.is_dir():
            self._lost = True
        self.manifest["snapshots"] = kept
        self.model_config_written = False
        message = (
            f"DeepEyes: the run directory {str(self.run_dir)!r} lost its manifest during training "
            f"(the directory was removed?); it is written again, with the {len(kept)} snapshot(s) "
            f"still on disk; {gone} snapshot(s) written before are lost."
        )
        self.failures.append(message)
        warnings.warn(message, stacklevel=3)
        try:
            layout.snapshots_dir.mkdir(parents=True, exist_ok=True)
            layout.samples_dir.mkdir(parents=True, exist_ok=True)
            self._write_manifest()
        except OSError:
            pass  # the next write fails too and says so

    def _write_model_config(self) -> None:
        if self.model_config is not None and not self.model_config_written:
            data, count = json_bytes(self.model_config)
            write_file(self.layout.model_config, data)
            self.nonfinite_replaced += count
            self.model_config_written = True

    def _write_new(self, path: Path, data: bytes, written: list[Path]) -> None:
        """Writes ``path``, noting it in ``written`` (to take back) unless it existed before."""
        existed = path.exists()
        write_file(path, data)
        if not existed:
            written.append(path)

    def _failed(self, what: str, err: OSError, consequence: str) -> None:
        if self.strict:
            raise err
        message = f"DeepEyes: {what} not written: {err}. {consequence}. (strict=True raises.)"
        self.failures.append(message)
        warnings.warn(message, stacklevel=4)

    def _write_manifest(self) -> None:
        self.manifest["nonfinite_replaced"] = self.nonfinite_replaced
        data, count = json_bytes(self.manifest)
        write_file(self.layout.manifest, data)
        self.nonfinite_replaced += count
