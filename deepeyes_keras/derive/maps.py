"""The maps stage: the input map and filter map of every layer at every snapshot.

Reads a run directory and writes ``maps/L<i>/step-NNNNNNNN.npz`` (paths in
:mod:`deepeyes_keras.run.layout`), atomically. :func:`compute_missing_maps` does the work for
whatever snapshots lack maps, in step order, so it is idempotent and can be re-run. It is one step
of :func:`deepeyes_keras.derive.pipeline.update_run`, which the background worker
(:mod:`deepeyes_keras.derive.worker`) and ``deepeyes maps RUN`` both call.

Layouts stay comparable from one snapshot to the next: the input map of a snapshot starts from the
previous snapshot's layout of the same layer (instances still in the reservoir keep their place,
new ones start at their nearest kept neighbours, see
:func:`deepeyes_keras.derive.embedding.carry_layout`) and runs a short optimisation; the first
snapshot of a layer starts from PCA with the full schedule.
"""

from __future__ import annotations

import time

import numpy as np

from deepeyes_keras.derive import embedding
from deepeyes_keras.run.layout import read_npz, write_npz
from deepeyes_keras.run.reader import load_run

PCA_DIMENSIONS = 50  # descriptors are reduced to this many dimensions before t-SNE
FRESH_SCHEDULE = {"early_iter": 250, "n_iter": 300}
CARRIED_SCHEDULE = {"early_iter": 0, "n_iter": 150}


def _reduce(descriptors: np.ndarray, seed: int) -> np.ndarray:
    x = np.nan_to_num(descriptors.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if x.shape[1] <= PCA_DIMENSIONS or x.shape[0] <= PCA_DIMENSIONS:
        return x
    from sklearn.decomposition import PCA

    return PCA(PCA_DIMENSIONS, random_state=seed).fit_transform(x).astype(np.float32)


def layer_maps(
    layer,
    *,
    previous: dict | None = None,
    max_points: int = 2000,
    seed: int = 0,
    tolerance: float = embedding.DUPLICATE_TOLERANCE,
) -> dict[str, np.ndarray]:
    """Computes the input map and filter map of one layer at one snapshot.

    Args:
        layer: a :class:`~deepeyes_keras.run.reader.LayerSnapshot`.
        previous: the maps of the same layer at the previous snapshot, to start from.
        max_points: bound on the input map's points (a seeded subset of the reservoir).
        seed: seed of the subset and the embeddings.
        tolerance: instances whose descriptors agree within it (relative, see
            :func:`deepeyes_keras.derive.embedding.collapse_duplicates`) are one map point.

    Returns:
        Arrays: ``uid`` and ``xy`` of the input map's instances (instances of one point share
        its position), ``point`` (the map point of each instance, 0..m-1) and ``weight`` (the
        instances of each point, (m,)), embedded once per point; ``filter_xy``, ``filter_label``,
        ``filter_strength`` and ``filter_perplexity`` of the filter map; ``seconds``.
    """
    began = time.perf_counter()
    samples = layer.samples
    order = np.arange(len(samples))
    if len(order) > max_points:
        order = np.sort(np.random.default_rng(seed).choice(len(order), max_points, replace=False))
    uid = samples.uid[order]
    groups = embedding.collapse_duplicates(samples.descriptor[order], tolerance=tolerance)
    x = _reduce(samples.descriptor[order][groups.first], seed)  # one row per distinct descriptor
    if previous is not None and len(previous["uid"]) and len(uid):
        # Each instance starts where it was (or near its kept neighbours); a point at the mean.
        each = embedding.carry_layout(list(previous["uid"]), previous["xy"], list(uid),
                                      x[groups.point])  # fmt: skip
        init = np.zeros((len(groups.first), 2))
        np.add.at(init, groups.point, each)
        init /= groups.weight[:, None]
        xy = embedding.input_map(x, init=init, seed=seed, **CARRIED_SCHEDULE)
    else:
        xy = embedding.input_map(x, seed=seed, **FRESH_SCHEDULE)
    fmap = embedding.filter_map(layer.jaccard, layer.label_activation, seed=seed)
    return {
        "uid": uid.astype(np.int64),
        "xy": np.asarray(xy, np.float32)[groups.point],
        "point": groups.point.astype(np.int32),
        "weight": groups.weight.astype(np.int32),
        "filter_xy": np.asarray(fmap.xy, np.float32),
        "filter_label": np.asarray(fmap.label, np.int32),
        "filter_strength": np.asarray(fmap.strength, np.float32),
        "filter_perplexity": np.float32(fmap.perplexity_used),
        "seconds": np.float32(time.perf_counter() - began),
    }


def missing_maps(run) -> list[tuple[int, str]]:
    """(step, layer key) pairs of the run that have no maps yet, in step order."""
    return [
        (snap.step, layer.key)
        for snap in run.snapshots
        for layer in snap.layers.values()
        if not run.layout.maps(layer.key, snap.step).is_file()
    ]


def compute_missing_maps(run_dir, *, max_points: int = 2000, seed: int = 0, progress=None) -> int:
    """Computes every missing map of a run, in step order; returns how many were written.

    Args:
        run_dir: the run directory.
        max_points: bound on the points of each input map.
        seed: seed of the embeddings.
        progress: optional ``callable(done, total, message)``.
    """
    run = load_run(run_dir)
    todo = set(missing_maps(run))
    total, done = len(todo), 0
    previous: dict[str, dict] = {}
    for snap in run.snapshots:
        for name, layer in snap.layers.items():
            path = run.layout.maps(layer.key, snap.step)
            if (snap.step, layer.key) not in todo:
                if path.is_file():
                    previous[layer.key] = read_npz(path)
                continue
            arrays = layer_maps(
                layer, previous=previous.get(layer.key), max_points=max_points, seed=seed
            )
            write_npz(path, arrays)
            previous[layer.key] = arrays
            done += 1
            if progress:
                progress(
                    done,
                    total,
                    f"maps of {name} at step {snap.step} ({float(arrays['seconds']):.1f} s)",
                )
    return done
