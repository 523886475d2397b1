"""The maps stage: the input map and filter map of every layer at every snapshot.

Reads a run directory and writes ``maps/L<i>/step-NNNNNNNN.npz`` (paths in
:mod:`deepeyes_keras.run.layout`), atomically. :func:`compute_missing_maps` does the work for
whatever snapshots lack maps, in step order per layer (layers side by side where cores are idle),
so it is idempotent and can be re-run. It is one step of
:func:`deepeyes_keras.derive.pipeline.update_run`, which the background worker
(:mod:`deepeyes_keras.derive.worker`) and ``deepeyes maps RUN`` both call.

Layouts stay comparable from one snapshot to the next: the input map of a snapshot starts from the
previous snapshot's layout of the same layer (instances still in the reservoir keep their place,
new ones start at their nearest kept neighbours, see
:func:`deepeyes_keras.derive.carry.carry_layout`) and runs a short optimisation; the first
snapshot of a layer starts from PCA with the full schedule. How long each embedding runs is a
:class:`Schedule`; :data:`SCHEDULE` is the one used, chosen by measurement (issue 15, item 3:
``bench/embedding.py --schedules`` prints time and layout quality beside :data:`SCHEDULE_BEFORE`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from deepeyes_keras.derive import carry, embedding, tsne
from deepeyes_keras.run.layout import read_npz, write_npz
from deepeyes_keras.run.reader import load_run

PCA_DIMENSIONS = 50  # descriptors are reduced to this many dimensions before t-SNE


@dataclass(frozen=True)
class Schedule:
    """How long, and how exactly, the embeddings of one snapshot's maps run.

    Attributes:
        fresh_early: early-exaggeration iterations of a layer's first input map (PCA start).
        fresh_main: the normal iterations after them.
        carried: iterations of a later input map, started from the previous snapshot's layout
            (no exaggeration).
        carried_std: the scale that layout restarts at (std of its first axis, see
            :func:`~deepeyes_keras.derive.embedding.input_map`'s ``init_std``).
        filter_iter: iterations of a layer's first filter map (random start; the first 250 at
            momentum 0.5).
        filter_carried: iterations of a later filter map, started from the previous snapshot's
            filter layout (restarted at ``carried_std``); None: every filter map from a random
            start with ``filter_iter``.
        theta: Barnes-Hut accuracy of every embedding (0.5: the libraries' default).
        filter_keep: ``(mean, max)``: the previous snapshot's filter layout is kept as it is while
            the co-activations it was computed from changed by at most ``mean`` on average and
            ``max`` for any pair of filters (:func:`filter_unchanged`); None: never kept.
    """

    fresh_early: int = 150
    fresh_main: int = 250
    carried: int = 75
    carried_std: float = 1e-2
    filter_iter: int = 300
    filter_carried: int | None = 100
    theta: float = 0.8
    filter_keep: tuple[float, float] | None = (0.005, 0.05)


SCHEDULE = Schedule()
# The schedule until issue 15 (item 3), kept to measure SCHEDULE against (benchmark and tests).
SCHEDULE_BEFORE = Schedule(
    fresh_early=250, fresh_main=300, carried=150, carried_std=1e-4, filter_iter=750,
    filter_carried=None, theta=0.5, filter_keep=None,
)  # fmt: skip


def filter_unchanged(jaccard, reference, schedule: Schedule = SCHEDULE) -> bool:
    """Whether co-activations ``jaccard`` are within ``schedule.filter_keep`` of ``reference``.

    Example:
        >>> phi = np.eye(3) * 0.5 + 0.5
        >>> filter_unchanged(phi + 0.001, phi), filter_unchanged(phi + 0.1, phi)
        (True, False)
    """
    if schedule.filter_keep is None or reference is None:
        return False
    a, b = np.asarray(jaccard, np.float64), np.asarray(reference, np.float64)
    if a.shape != b.shape or not a.size:
        return False
    change = np.abs(a - b)
    mean, most = schedule.filter_keep
    return bool(change.mean() <= mean and change.max() <= most)


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
    reference: np.ndarray | None = None,
    max_points: int = 2000,
    seed: int = 0,
    tolerance: float = embedding.DUPLICATE_TOLERANCE,
    schedule: Schedule = SCHEDULE,
) -> dict[str, np.ndarray]:
    """Computes the input map and filter map of one layer at one snapshot.

    Args:
        layer: a :class:`~deepeyes_keras.run.reader.LayerSnapshot`.
        previous: the maps of the same layer at the previous snapshot, to start from.
        reference: the co-activations (``jaccard``) that ``previous``'s filter layout was
            computed from; while the layer's are within ``schedule.filter_keep`` of them, that
            layout is kept (``filter_kept`` True in the result).
        max_points: bound on the input map's points (a seeded subset of the reservoir).
        seed: seed of the subset and the embeddings.
        tolerance: instances whose descriptors agree within it (relative, see
            :func:`deepeyes_keras.derive.embedding.collapse_duplicates`) are one map point.
        schedule: iterations and accuracy of the embeddings (default :data:`SCHEDULE`).

    Returns:
        Arrays: ``uid`` and ``xy`` of the input map's instances (instances of one point share
        its position), ``point`` (the map point of each instance, 0..m-1) and ``weight`` (the
        instances of each point, (m,)), embedded once per point; ``filter_xy``, ``filter_label``,
        ``filter_strength``, ``filter_perplexity`` and ``filter_kept`` of the filter map;
        ``seconds``.
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
        each = carry.carry_layout(list(previous["uid"]), previous["xy"], list(uid),
                                  x[groups.point])  # fmt: skip
        init = np.zeros((len(groups.first), 2))
        np.add.at(init, groups.point, each)
        init /= groups.weight[:, None]
        xy = embedding.input_map(x, init=init, seed=seed, early_iter=0, n_iter=schedule.carried,
                                 theta=schedule.theta, init_std=schedule.carried_std)  # fmt: skip
    else:
        xy = embedding.input_map(x, seed=seed, early_iter=schedule.fresh_early,
                                 n_iter=schedule.fresh_main, theta=schedule.theta)  # fmt: skip
    jaccard = layer.jaccard
    start = None if previous is None else previous.get("filter_xy")
    start = start if start is not None and len(start) == len(jaccard) else None
    kept = start is not None and filter_unchanged(jaccard, reference, schedule)
    if kept or (start is not None and schedule.filter_carried is not None):
        iters = dict(init=start, init_std=schedule.carried_std,
                     n_iter=0 if kept else schedule.filter_carried)  # fmt: skip
    else:
        iters = dict(n_iter=schedule.filter_iter)
    fmap = embedding.filter_map(jaccard, layer.label_activation, seed=seed, theta=schedule.theta,
                                **iters)  # fmt: skip
    return {
        "uid": uid.astype(np.int64),
        "xy": np.asarray(xy, np.float32)[groups.point],
        "point": groups.point.astype(np.int32),
        "weight": groups.weight.astype(np.int32),
        "filter_xy": np.asarray(fmap.xy, np.float32),
        "filter_label": np.asarray(fmap.label, np.int32),
        "filter_strength": np.asarray(fmap.strength, np.float32),
        "filter_perplexity": np.float32(fmap.perplexity_used),
        "filter_kept": np.bool_(kept),
        "seconds": np.float32(time.perf_counter() - began),
    }


def _filter_source(by_step: dict, name: str, maps: dict | None) -> np.ndarray | None:
    """The co-activations that ``maps``' filter layout was computed from (maps files say which
    snapshot's in ``filter_step``; older ones do not), or None."""
    source = by_step.get(int(maps["filter_step"])) if maps and "filter_step" in maps else None
    return source.layers[name].jaccard if source is not None and name in source.layers else None


def missing_maps(run) -> list[tuple[int, str]]:
    """(step, layer key) pairs of the run that have no maps yet, in step order."""
    return [
        (snap.step, layer.key)
        for snap in run.snapshots
        for layer in snap.layers.values()
        if not run.layout.maps(layer.key, snap.step).is_file()
    ]


def compute_missing_maps(
    run_dir,
    *,
    max_points: int = 2000,
    seed: int = 0,
    progress=None,
    schedule: Schedule = SCHEDULE,
    workers: int | None = None,
) -> int:
    """Computes every missing map of a run; returns how many were written.

    Each layer's maps are computed in step order (a map starts from the layer's previous one).
    Layers are independent, so with ``workers`` > 1 that many layers are computed at once, each
    embedding on one thread: at up to 2,000 points openTSNE's own threads spin more than they
    help (two threads: the same wall time for twice the CPU time), whereas two layers at once
    took 0.6 of the time on 2 cores (issue 15, measured). Every map is the same either way.

    Args:
        run_dir: the run directory.
        max_points: bound on the points of each input map.
        seed: seed of the embeddings.
        progress: optional ``callable(done, total, message)`` (called from one thread at a time).
        schedule: iterations and accuracy of the embeddings (default :data:`SCHEDULE`).
        workers: layers computed at once; default: as many threads as
            :func:`~deepeyes_keras.derive.tsne.threads_now` allows (1 on busy cores).
    """
    run = load_run(run_dir)
    todo = set(missing_maps(run))
    keys = {key for _, key in todo}
    names = [info["name"] for info in run.manifest["analysed_layers"] if info["key"] in keys]
    workers = tsne.threads_now() if workers is None else int(workers)
    workers = max(1, min(workers, len(names)))
    count = {"done": 0, "total": len(todo)}
    lock = threading.Lock()

    def wrote(name: str, step: int, seconds: float) -> None:
        with lock:  # the worker prints each notice as a line: one at a time
            count["done"] += 1
            if progress:
                message = f"maps of {name} at step {step} ({seconds:.1f} s)"
                progress(count["done"], count["total"], message)

    common = dict(todo=todo, wrote=wrote, max_points=max_points, seed=seed, schedule=schedule)
    if workers == 1:
        for name in names:
            _layer_chain(run, name, **common)
        return count["done"]
    from concurrent.futures import ThreadPoolExecutor

    with tsne.limited_threads(1), tsne.fixed_threads(1), ThreadPoolExecutor(workers) as pool:
        for job in [pool.submit(_layer_chain, run, name, **common) for name in names]:
            job.result()  # re-raises a layer's error here
    return count["done"]


def _layer_chain(run, name: str, *, todo, wrote, max_points, seed, schedule) -> None:
    """The missing maps of one layer, in step order, each from the layer's previous map."""
    by_step = {snap.step: snap for snap in run.snapshots}
    previous = None
    for snap in run.snapshots:
        layer = snap.layers.get(name)
        if layer is None:
            continue
        path = run.layout.maps(layer.key, snap.step)
        if (snap.step, layer.key) not in todo:
            previous = read_npz(path) if path.is_file() else previous
            continue
        arrays = layer_maps(
            layer,
            previous=previous,
            reference=_filter_source(by_step, name, previous),
            max_points=max_points,
            seed=seed,
            schedule=schedule,
        )
        kept = bool(arrays["filter_kept"])
        arrays["filter_step"] = previous["filter_step"] if kept else np.int64(snap.step)
        write_npz(path, arrays, compress=True)  # off the training thread: size over speed
        previous = arrays
        wrote(name, snap.step, float(arrays["seconds"]))
