"""Reading a run directory back: :func:`load_run`.

Needs only NumPy (no TensorFlow), so the site builder, the derived stages and notebooks can use
it. Reads every schema up to :data:`~deepeyes_keras.run.layout.SCHEMA_VERSION` (schema 1 kept its
findings inside the snapshot records; see :mod:`deepeyes_keras.run.layout`).

Example:
    >>> run = load_run("deepeyes_runs/20261123-101500-lenet")     # doctest: +SKIP
    >>> last = run.snapshots[-1]                                   # doctest: +SKIP
    >>> last.layers["conv1"].frequency                             # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepeyes_keras.run.archive import resolve_links
from deepeyes_keras.run.layout import (
    MANIFEST,
    SCHEMA_VERSION,
    RunLayout,
    npz_names,
    read_json,
    read_npz,
)

ARRAY_FIELDS = (
    "max_activation",
    "frequency",
    "reliability_step",
    "reliability_age",
    "jaccard",
    "label_activation",
    "perplexity_histogram",
    "perplexity_change",
    "histogram_cumulative",
    "reservoir_uids",
)


@dataclass(frozen=True)
class Samples:
    """Reservoir instances of one layer at one snapshot (row i = one instance).

    Attributes:
        uid: unique id of each instance within the layer.
        step: training step it was sampled at.
        image: id of the sampled image (shared by the layers of one step).
        position: flat position in the layer's output grid (0 for dense layers).
        label: label of its image (-1 if unknown).
        box_start, box_size: input-space box per spatial axis (may leave the image: padding).
        descriptor: neuronal receptive field (the layer-input window), flattened.
        activation: the layer's output vector (F) at that instance.
        patch: the input-space patch (crop of the input; the whole input for dense layers).
    """

    uid: np.ndarray
    step: np.ndarray
    image: np.ndarray
    position: np.ndarray
    label: np.ndarray
    box_start: np.ndarray
    box_size: np.ndarray
    descriptor: np.ndarray
    activation: np.ndarray
    patch: np.ndarray

    def __len__(self) -> int:
        return len(self.uid)


class LayerSnapshot:
    """The statistics of one layer at one snapshot, as NumPy arrays (loaded on first use)."""

    def __init__(self, snapshot: Snapshot, info: dict, record: dict):
        self.snapshot = snapshot
        self.info = info
        self.name = info["name"]
        self.key = info["key"]
        self.record = record
        self.instances = record.get("instances")
        self.nonfinite = record.get("nonfinite")
        # Older runs hold no recomputed activations: their overlays show the sampled ones.
        recomputed = record.get("overlay_activations") == "current"
        self.overlay_note = record.get("overlay_note") or (
            None if recomputed else "recorded without recomputed activations"
        )

    def __getattr__(self, field):
        if field == "jaccard":
            return self._jaccard()
        if field in ARRAY_FIELDS:
            return self.snapshot.array(f"{self.key}.{field}")
        raise AttributeError(field)

    def _jaccard(self) -> np.ndarray:
        """The F x F float64 similarity matrix, from its stored upper triangle of codes.

        Schema 3 stores ``floor(phi * jaccard_codes)`` as uint16 (the layer record names
        ``jaccard_codes``); a code k reads back as exactly the float ``k / jaccard_codes``, so a
        threshold on that grid (0.8, any value of at most 4 decimals) is crossed as by the
        float32 value. Schema 2 stored the float32 triangle, older runs the float32 matrix.
        """
        stored = self.snapshot.array(f"{self.key}.jaccard")
        if stored.ndim == 2:  # runs written before the triangle
            return stored.astype(np.float64)
        if stored.dtype.kind in "ui":
            if "jaccard_codes" not in self.record:
                raise ValueError(
                    f"{self.snapshot.record['arrays']}: {self.key}.jaccard holds integer codes "
                    f"but the snapshot record of layer {self.name!r} has no jaccard_codes; the "
                    "record is damaged. Record the run again."
                )
            values = stored.astype(np.float64) / float(self.record["jaccard_codes"])
        else:
            values = stored.astype(np.float64)
        n = int(round((np.sqrt(8 * len(values) + 1) - 1) / 2))
        full = np.zeros((n, n), np.float64)
        full[np.triu_indices(n)] = values
        return np.maximum(full, full.T)  # the lower triangle is 0, the diagonal counted once

    @property
    def current_activation(self) -> np.ndarray | None:
        """``(n, F)`` float32 activations (clamped at 0) of the held instances, rows as
        ``reservoir_uids``, recomputed with this snapshot's weights; None where the layer's
        activations cannot be recomputed (``overlay_note`` says why) or in older runs.

        Stored as codes 0..``current_levels`` of each filter's ``current_scale`` (its largest
        value): 63 since schema 3 (the views' 64 levels), 255 before (no ``current_levels``)."""
        names = self.snapshot.array_names
        codes, scale = f"{self.key}.current_activation", f"{self.key}.current_scale"
        if codes not in names or scale not in names:
            return None
        levels = float(self.record.get("current_levels", 255))
        step = self.snapshot.array(scale).astype(np.float32) / levels
        return self.snapshot.array(codes).astype(np.float32) * step

    @property
    def samples(self) -> Samples:
        return self.snapshot.run.samples(self.key, self.reservoir_uids)

    @property
    def maps(self) -> dict[str, np.ndarray] | None:
        """The input map and filter map of this layer at this snapshot, or None if not computed.

        Keys: ``uid`` and ``xy`` (input-map points: reservoir instance ids and 2-D positions),
        ``filter_xy``, ``filter_label`` (-1: never fired), ``filter_strength``.
        """
        path = self.snapshot.run.layout.maps(self.key, self.snapshot.step)
        return read_npz(path) if path.is_file() else None

    def __repr__(self) -> str:
        return f"LayerSnapshot({self.name!r}, step={self.snapshot.step})"


class Snapshot:
    """One snapshot: ``step``, ``epoch``, ``metrics`` and ``layers[name]``."""

    def __init__(self, run: Run, record: dict):
        self.run = run
        self.record = record
        self.step = int(record["step"])
        self.epoch = record.get("epoch")
        self.time = record.get("time")
        self.metrics = record.get("metrics", {})
        self._loaded: dict[str, np.ndarray] = {}
        # Opened once (only the archive's index is read): a zeroed or overwritten .npz makes the
        # snapshot unreadable here, where load_run skips it with a warning naming the file.
        self.array_names = set(npz_names(run.path / record["arrays"]))
        # The record names each layer; its key finds it too (a manifest whose names changed).
        by_key = {r.get("key"): r for r in record["layers"].values() if isinstance(r, dict)}
        self.layers = {
            info["name"]: LayerSnapshot(
                self, info, record["layers"].get(info["name"]) or by_key.get(info["key"], {})
            )
            for info in run.manifest["analysed_layers"]
        }

    def array(self, name: str) -> np.ndarray:
        """One array of this snapshot, read on first use and kept.

        Only the arrays asked for are read: a reader that wants the perplexity histograms of every
        snapshot (the run-wide views) does not hold every co-activation matrix as well (fc1's alone
        is 1 MB per snapshot).
        """
        if name not in self._loaded:
            path = self.run.path / self.record["arrays"]
            if name not in self.array_names:
                raise KeyError(f"{path} holds no array {name!r}")
            self._loaded[name] = read_npz(path, names=[name])[name]
        return self._loaded[name]

    @property
    def findings(self) -> dict | None:
        """The findings T1-T5 at this snapshot (with their evidence), or None if not computed.

        Written by the findings stage (:mod:`deepeyes_keras.derive.findings`); runs of schema 1
        held them in the snapshot record, which is read instead.
        """
        stored = self._stored_findings()
        return stored.get("findings") if stored else self.record.get("findings")

    @property
    def findings_summary(self) -> dict | None:
        """The findings in short (one row per layer and the suggestions), or None."""
        stored = self._stored_findings()
        return stored.get("summary") if stored else self.record.get("findings_summary")

    def _stored_findings(self) -> dict | None:
        path = self.run.layout.findings(self.step)
        if not path.is_file():
            return None
        try:
            return read_json(path)
        except (OSError, ValueError):  # being replaced right now, or damaged: treat as missing
            return None

    def __repr__(self) -> str:
        return f"Snapshot(step={self.step})"


class Run:
    """A run directory written by :class:`~deepeyes_keras.DeepEyesCallback`."""

    def __init__(self, path: Path, manifest: dict, snapshots: list[Snapshot] | None = None):
        self.path = Path(path)
        self.layout = RunLayout(self.path)
        self.manifest = manifest
        self.name = manifest.get("run_name", self.path.name)
        self.status = manifest.get("status")
        self.snapshots: list[Snapshot] = snapshots or []
        self.skipped: list[str] = []
        self._chunks: dict[str, dict[str, np.ndarray]] = {}

    @property
    def layer_names(self) -> list[str]:
        return [info["name"] for info in self.manifest["analysed_layers"]]

    @property
    def model_config(self) -> dict | None:
        """The recorded model's Keras architecture and compile config (``model.json``), or None."""
        return self._optional_json(self.layout.model_config)

    @property
    def proposal(self) -> dict | None:
        """The redesign proposal written by ``deepeyes redesign``, or None."""
        return self._optional_json(self.layout.proposal)

    @property
    def verification(self) -> dict | None:
        """The retrained comparison written by ``deepeyes redesign --verify``, or None."""
        return self._optional_json(self.layout.verification)

    @staticmethod
    def _optional_json(path: Path) -> dict | None:
        if not path.is_file():
            return None
        try:
            return read_json(path)
        except (OSError, ValueError):  # being replaced or damaged: treat as missing
            return None

    def metrics(self) -> dict[str, list]:
        """Training logs of every recorded step, concatenated over snapshots."""
        merged: dict[str, list] = {}
        for snap in self.snapshots:
            for name, values in snap.metrics.items():
                merged.setdefault(name, []).extend(values)
        return merged

    def samples(self, key: str, uids: np.ndarray) -> Samples:
        """The stored reservoir instances of layer ``key`` with the given ids, in that order."""
        index = self._chunk_index(key)
        rows = np.searchsorted(index["uid"], uids)
        rows = np.clip(rows, 0, max(len(index["uid"]) - 1, 0))
        found = (len(index["uid"]) > 0) & (index["uid"][rows] == uids) if len(uids) else rows
        if len(uids) and not np.all(found):
            raise ValueError(
                f"Run {self.path}: {int((~found).sum())} reservoir entries of layer "
                f"{key} have no stored samples; the run directory is incomplete."
            )
        return Samples(**{name: index[name][rows] for name in Samples.__dataclass_fields__})

    def _chunk_index(self, key: str) -> dict[str, np.ndarray]:
        if key not in self._chunks:
            parts = []
            for path in self.layout.sample_chunks(key):
                parts.append(resolve_links(read_npz(path), self._linked_column))
            if parts:
                merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
                order = np.argsort(merged["uid"], kind="stable")
                merged = {k: v[order] for k, v in merged.items()}
            else:
                merged = {name: np.zeros((0,)) for name in Samples.__dataclass_fields__}
                merged["uid"] = np.zeros((0,), np.int64)
            self._chunks[key] = merged
        return self._chunks[key]

    def _linked_column(self, relative: str, column: str) -> np.ndarray:
        """A column a chunk links to (:func:`deepeyes_keras.run.archive.link_duplicates`)."""
        return read_npz(self.path / relative, names=[column])[column]

    def __repr__(self) -> str:
        return f"Run({self.name!r}, snapshots={len(self.snapshots)}, status={self.status!r})"


def load_run(path) -> Run:
    """Loads a run directory.

    Snapshots that are listed but unreadable (partial, corrupt, or of a newer schema) are skipped
    with a warning naming the file; their paths are in ``run.skipped``.

    Args:
        path: the run directory (the one holding manifest.json).

    Returns:
        A :class:`Run` whose ``snapshots`` are ordered by step.
    """
    path = Path(path)
    manifest_path = RunLayout(path).manifest
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is not a DeepEyes run directory: it has no {MANIFEST}. Pass the "
            "directory of one run (e.g. deepeyes_runs/<run name>)."
        )
    manifest = read_json(manifest_path)
    if not isinstance(manifest, dict):
        raise ValueError(
            f"{manifest_path} is damaged: it holds JSON but not a DeepEyes manifest (an object "
            "with run_name, settings, snapshots). Restore it from a copy."
        )
    version = manifest.get("schema_version", 0)
    if version > SCHEMA_VERSION:
        writer = (manifest.get("versions") or {}).get("deepeyes_keras")
        by = f", written by deepeyes-keras {writer}" if writer else ""
        raise ValueError(
            f"Run {manifest.get('run_name', path.name)!r} ({path}) has schema version {version}"
            f"{by}; this deepeyes-keras reads schema versions up to {SCHEMA_VERSION}. Upgrade "
            "deepeyes-keras (pip install --upgrade deepeyes-keras) to read it."
        )
    run = Run(path, manifest)
    for entry in sorted(manifest.get("snapshots", []), key=lambda s: s["step"]):
        file = path / entry["file"]
        try:
            record = read_json(file)
            if record.get("schema_version", 0) > SCHEMA_VERSION:
                raise ValueError(
                    f"schema version {record['schema_version']} is newer than {SCHEMA_VERSION}"
                )
            if not (path / record["arrays"]).is_file():
                raise FileNotFoundError(f"missing {record['arrays']}")
            run.snapshots.append(Snapshot(run, record))
        except (OSError, ValueError, KeyError, TypeError) as err:
            warnings.warn(f"DeepEyes: skipping unreadable snapshot {file}: {err}", stacklevel=2)
            run.skipped.append(str(file))
    return run
