"""Turning the recorder's state into one snapshot: the record, the arrays and the new samples.

:meth:`deepeyes_keras.record.recorder.Recorder.read` copies the TensorFlow state to NumPy; a
:class:`SnapshotAssembler` turns that copy into what
:meth:`deepeyes_keras.run.writer.RunWriter.write_snapshot` takes: per layer the finished statistics
(with the perplexity histogram of the interval since the previous snapshot and its change), one
record entry, and the reservoir instances not written before, with their input-space boxes. The
files and their keys are listed in ``viewer_site/reference/run-format.md``.

Example:
    >>> assembler = SnapshotAssembler()                                    # doctest: +SKIP
    >>> state = recorder.read(assembler.written_uid)                       # doctest: +SKIP
    >>> arrays, samples, layers = assembler.assemble(recorder, state, 100)  # doctest: +SKIP
    >>> record = snapshot_record(step=100, epoch=0, fit_seconds=12.5, metrics={},
    ...                          epoch_logs=[], layers=layers)             # doctest: +SKIP
    >>> writer.write_snapshot(record, arrays, samples)                     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from deepeyes_keras.record.current import CODE_LEVELS, encode
from deepeyes_keras.record.describe import utc_now
from deepeyes_keras.record.recorder import FLOAT16_MAX, Recorder
from deepeyes_keras.record.statistics import JACCARD_CODES, finalize, jaccard_codes
from deepeyes_keras.record.taps import LayerTap
from deepeyes_keras.run.layout import layer_key


def as_float16(a: np.ndarray) -> np.ndarray:
    """Bulk columns are stored as float16; non-finite values become 0 or the float16 bounds."""
    a = np.nan_to_num(a, nan=0.0, posinf=FLOAT16_MAX, neginf=-FLOAT16_MAX)
    return np.clip(a, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)


def input_boxes(tap: LayerTap, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The input-space box of each sampled position of a layer.

    Args:
        tap: the analysed layer.
        positions: ``(n,)`` flat row-major positions in the layer's output grid.

    Returns:
        ``(start, size)``, both ``(n, spatial axes of the input)`` int64: the box's first index
        and its size per axis in the model input the patch comes from (``tap.patch_input``); the
        whole input for a layer without a space map.
    """
    input_shape = tap.patch_input_shape
    in_spatial = input_shape[:-1] if len(input_shape) > 1 else ()
    n = len(positions)
    if not tap.space_map:  # the whole input
        start = np.zeros((n, len(in_spatial)), np.int64)
        size = np.tile(np.asarray(in_spatial, np.int64), (n, 1)).reshape(n, len(in_spatial))
        return start, size
    coords = (
        np.stack(np.unravel_index(positions, tap.grid), axis=1)
        if n
        else np.zeros((0, len(tap.grid)), np.int64)
    )
    scale = np.array([m.scale for m in tap.space_map])
    offset = np.array([m.offset for m in tap.space_map])
    sizes = np.array([m.size for m in tap.space_map])
    return (coords * scale + offset).astype(np.int64), np.tile(sizes, (n, 1)).astype(np.int64)


def sample_columns(tap: LayerTap, new: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The stored columns of a layer's new reservoir instances, with their input-space boxes.

    Args:
        tap: the analysed layer.
        new: the ``new_samples`` of the layer in :meth:`Recorder.read`'s state.

    Returns:
        ``uid``, ``step``, ``image``, ``position``, ``label``, ``box_start``, ``box_size``,
        ``descriptor`` and ``patch`` (float16) and ``activation`` (float32: the findings' probes
        and width rule move with float16's rounding; measured in ``tests/test_storage_size.py``).
    """
    positions = new["position"].astype(np.int64)
    start, size = input_boxes(tap, positions)
    return {
        "uid": new["uid"].astype(np.int64),
        "step": new["step"].astype(np.int64),
        "image": new["image"].astype(np.int64),
        "position": positions,
        "label": new["label"].astype(np.int32),
        "box_start": start,
        "box_size": size,
        "descriptor": as_float16(new["descriptor"]),
        "activation": new["activation"].astype(np.float32),
        "patch": as_float16(new["patch"]),
    }


def layer_record(
    key: str,
    raw_stats: Mapping[str, np.ndarray],
    reservoir_filled: int,
    current_reason: str | None = None,
) -> dict:
    """A layer's entry in the snapshot record: its key, instance counts, reservoir fill, and
    which activations its overlays show (``overlay_activations``: ``"current"``, recomputed with
    the snapshot's weights, or ``"sampled"`` with ``overlay_note`` saying why); the arrays'
    code ranges (``jaccard_codes``, and ``current_levels`` with recomputed activations)."""
    codes = {"jaccard_codes": JACCARD_CODES}
    if current_reason is None:
        codes["current_levels"] = CODE_LEVELS
    return {
        **codes,
        "key": key,
        "instances": int(raw_stats["instances"]),
        "weighted_instances": float(raw_stats["weighted_instances"]),
        "nonfinite": int(raw_stats["nonfinite"]),
        "reservoir_filled": int(reservoir_filled),
        "overlay_activations": "current" if current_reason is None else "sampled",
        "overlay_note": current_reason,
    }


def snapshot_record(
    *,
    step: int,
    epoch: int,
    fit_seconds: float,
    metrics: dict[str, list],
    epoch_logs: list[dict],
    layers: dict[str, dict],
) -> dict:
    """The JSON record of one snapshot (RunWriter adds the file names).

    Args:
        step: the training step of the snapshot.
        epoch: the epoch it falls in.
        fit_seconds: seconds since this ``fit`` began.
        metrics: the per-step training logs since the previous snapshot, as lists.
        epoch_logs: the epoch-end logs since the previous snapshot.
        layers: per layer name, its :func:`layer_record`.
    """
    return {
        "step": step,
        "epoch": epoch,
        "time": utc_now(),
        "fit_seconds": fit_seconds,
        "metrics": metrics,
        "epoch_logs": epoch_logs,
        "layers": layers,
    }


class SnapshotAssembler:
    """Turns recorder state into a snapshot's arrays, samples and layer records, one after another.

    It remembers, per layer, what the previous snapshot left: the cumulative perplexity histogram
    and the interval histogram (a snapshot stores the interval since the previous one and its
    change), and the largest reservoir uid written (each instance is stored once, with the
    snapshot that first saw it).

    Attributes:
        written_uid: per layer index, the largest reservoir uid already written; pass it to
            :meth:`Recorder.read`.
    """

    def __init__(self) -> None:
        self.written_uid: dict[int, int] = {}
        self._cumulative: dict[int, np.ndarray] = {}
        self._interval: dict[int, np.ndarray] = {}

    def layer_statistics(
        self, tap: LayerTap, layer_state: Mapping, step: int
    ) -> dict[str, np.ndarray]:
        """A layer's finished statistics, with the interval histogram and its change.

        Args:
            tap: the analysed layer.
            layer_state: the layer's entry in :meth:`Recorder.read`'s state.
            step: the snapshot's step (for the reliability ages).

        Returns:
            :func:`deepeyes_keras.record.statistics.finalize`'s arrays plus
            ``perplexity_histogram`` (this interval), ``perplexity_change`` (minus the previous
            interval), ``histogram_cumulative``, ``reservoir_uids``, ``jaccard`` as the uint16
            codes of its upper triangle (:func:`~deepeyes_keras.record.statistics.jaccard_codes`)
            and, where the layer's activations can be recomputed, ``current_activation`` (codes
            0..63, rows as ``reservoir_uids``) and ``current_scale`` (see
            ``deepeyes_keras/record/current.py``).
        """
        stats = finalize(layer_state["stats"], step=step)
        cumulative = stats.pop("histogram_cumulative")
        interval = cumulative - self._cumulative.get(tap.index, 0.0)
        change = interval - self._interval.get(tap.index, 0.0)
        self._cumulative[tap.index] = cumulative
        self._interval[tap.index] = interval
        stats["perplexity_histogram"] = interval
        stats["perplexity_change"] = change
        stats["histogram_cumulative"] = cumulative
        stats["reservoir_uids"] = layer_state["reservoir_uids"]
        # Symmetric: its upper triangle, as 16-bit codes (fc1's 500 x 500: 250 kB, not 1 MB) on a
        # grid that keeps every comparison with the findings' thresholds.
        jaccard = stats["jaccard"]
        stats["jaccard"] = jaccard_codes(jaccard[np.triu_indices(len(jaccard))])
        current = layer_state.get("current_activation")
        if current is not None:  # the views' 64 levels: fc1's 2,000 x 500 in ~0.4 MB, not 4
            stats["current_activation"], stats["current_scale"] = encode(current)
        return stats

    def new_samples(self, tap: LayerTap, new: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Reservoir instances not yet written (:func:`sample_columns`); they count as written."""
        if len(new["uid"]):
            self.written_uid[tap.index] = int(new["uid"].max())
        return sample_columns(tap, new)

    def assemble(
        self, recorder: Recorder, state: Mapping, step: int
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]], dict[str, dict]]:
        """One snapshot's contents from :meth:`Recorder.read`'s state.

        Returns:
            ``(arrays, samples, layers)``: arrays keyed ``"L<i>.<name>"``, the new samples per
            layer key, and each layer's :func:`layer_record` by layer name.
        """
        arrays, samples, layers = {}, {}, {}
        for tap, layer_state in zip(recorder.taps, state["layers"], strict=True):
            key = layer_key(tap.index)
            stats = self.layer_statistics(tap, layer_state, step)
            for name, value in stats.items():
                arrays[f"{key}.{name}"] = value
            samples[key] = self.new_samples(tap, layer_state["new_samples"])
            layers[tap.name] = layer_record(
                key,
                layer_state["stats"],
                len(stats["reservoir_uids"]),
                layer_state.get("current_reason"),
            )
        return arrays, samples, layers
