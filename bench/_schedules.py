"""The maps stage's schedule against the one before it: time and layout quality (issue 15, item 3).

Helper of ``bench/embedding.py --schedules`` (see its docstring). Each repetition runs both
schedules, in alternating order, so that a machine that gets busier or quieter during the run
shifts both alike; the ratio of the medians is the figure to quote. Quality is computed off the
clock from the maps each schedule wrote, on the distinct descriptors (one per map point):

* **10-NN kept**: the share of each point's 10 nearest neighbours in descriptor space (filter
  maps: by the distance ``1 - phi``) that are also among its 10 nearest on the map, averaged;
* **trustworthiness** (``sklearn.manifold.trustworthiness``, k = 10): penalises points that are
  near on the map but far in descriptor space.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import _common

SKIPPED_BY_COPY = ("maps", "views", "findings", "findings.json", "export")


class GeneratedSamples(SimpleNamespace):
    """The two fields of a reservoir's samples that the maps read: ``uid`` and ``descriptor``."""

    def __len__(self) -> int:
        return len(self.uid)


def neighbours_kept(x, y, *, k: int = 10, precomputed: bool = False, queries: int = 5_000) -> float:
    """Share of each point's k nearest neighbours in ``x`` that are among its k nearest in ``y``.

    ``x``: points (rows), or with ``precomputed`` a square distance matrix. Averaged over at most
    ``queries`` seeded points (neighbours always among all points), so that 100,000 stay cheap.
    """
    import numpy as np
    from sklearn.neighbors import NearestNeighbors

    n = len(y)
    k = min(k, n - 1)
    if k < 1:
        return float("nan")
    rows = np.arange(n)
    if n > queries:
        rows = np.sort(np.random.default_rng(0).choice(n, queries, replace=False))
    if precomputed:
        d = np.array(x, dtype=float)[rows]
        d[np.arange(len(rows)), rows] = np.inf  # a point is not its own neighbour
        high = np.argsort(d, axis=1, kind="stable")[:, :k]
    else:
        high = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x[rows])[1][:, 1:]
    low = NearestNeighbors(n_neighbors=k + 1).fit(y).kneighbors(y[rows])[1][:, 1:]
    return float((low[:, :, None] == high[:, None, :]).any(axis=2).mean())


def trust(x, y, *, precomputed: bool = False) -> float:
    from sklearn.manifold import trustworthiness

    k = min(10, (len(y) - 1) // 2)
    if k < 1:
        return float("nan")
    metric = "precomputed" if precomputed else "euclidean"
    return float(trustworthiness(x, y, n_neighbors=k, metric=metric))


def map_quality(descriptors, jaccard, maps) -> dict[str, float]:
    """Quality of one layer's maps at one snapshot (``descriptors``: rows as ``maps["uid"]``)."""
    import numpy as np

    point = maps.get("point", np.arange(len(maps["uid"])))
    first = np.unique(point, return_index=True)[1]  # one instance per map point
    x = np.nan_to_num(np.asarray(descriptors, np.float64)[first])
    xy = np.asarray(maps["xy"], np.float64)[first]
    phi = np.clip((jaccard + jaccard.T) / 2.0, 0.0, 1.0)
    np.fill_diagonal(phi, 1.0)
    fxy = np.asarray(maps["filter_xy"], np.float64)
    return {
        "kept": neighbours_kept(x, xy),
        "trust": trust(x, xy),
        "filter_kept": neighbours_kept(1.0 - phi, fxy, precomputed=True),
        "filter_trust": trust(1.0 - phi, fxy, precomputed=True),
        "layout_kept": float(bool(maps.get("filter_kept", False))),
    }


def generated_layers(quick: bool) -> dict[str, list]:
    """Per layer, a sequence of snapshots with what ``maps.layer_maps`` reads from a run.

    A reservoir of clustered descriptors swaps 15% of its instances per snapshot; the new ones
    come from clusters that drift a little (training changes what a layer sees); a fifth of a
    conv layer's windows are blank (the identical background patches of MNIST). Co-activations
    come from filters' positions in a latent space that drift too.
    """
    import numpy as np

    snapshots = 3 if quick else 8
    kinds = {
        "conv": (300 if quick else 2000, 25, 20 if quick else 50, 0.2),
        "dense": (150 if quick else 600, 200, 60 if quick else 500, 0.0),
    }
    out = {}
    for index, (name, (n, dim, n_filters, blank)) in enumerate(kinds.items()):
        rng = np.random.default_rng(index)
        centres = rng.normal(scale=4.0, size=(10, dim))
        latent = rng.normal(size=(max(2, n_filters // 16), 5))
        z = latent[rng.integers(0, len(latent), n_filters)] + 0.3 * rng.normal(size=(n_filters, 5))
        t = rng.gamma(0.5, size=(n_filters, 10))
        uid, x, next_uid, seq = np.arange(n), _draw(rng, n, centres, blank), n, []
        for _ in range(snapshots):
            sq = (z * z).sum(axis=1)
            phi = np.exp(-np.maximum(sq[:, None] + sq[None] - 2 * z @ z.T, 0.0) / 4.0)
            np.fill_diagonal(phi, 1.0)
            samples = GeneratedSamples(uid=uid.copy(), descriptor=x.copy())
            seq.append(SimpleNamespace(samples=samples, jaccard=phi, label_activation=t.copy()))
            swap = rng.choice(n, int(0.15 * n), replace=False)
            centres = centres + 0.3 * rng.normal(size=centres.shape)
            x[swap] = _draw(rng, len(swap), centres, blank)
            uid[swap] = np.arange(next_uid, next_uid + len(swap))
            next_uid += len(swap)
            order = np.argsort(uid)  # the reader returns instances in uid order
            uid, x = uid[order], x[order]
            z = z + 0.05 * rng.normal(size=z.shape)
            t = t + rng.gamma(0.5, size=t.shape) * 0.1
        out[name] = seq
    return out


def _draw(rng, count: int, centres, blank: float):
    """``count`` descriptors around random ``centres``, a share ``blank`` of them all zero."""
    import numpy as np

    x = centres[rng.integers(0, len(centres), count)] + rng.normal(size=(count, centres.shape[1]))
    x[rng.random(count) < blank] = 0.0
    return x.astype(np.float16)  # the stored precision


def on_generated(layers: dict[str, list], schedule) -> tuple[float, float, list]:
    """Each layer's sequence through ``layer_maps``; wall and CPU seconds, and the quality."""
    from deepeyes_keras.derive import maps, tsne

    began, cpu = time.perf_counter(), _common.cpu_seconds()
    written = []
    with tsne.limited_threads(tsne.threads_now()):
        for name, seq in layers.items():
            previous = reference = None
            for step, layer in enumerate(seq):
                previous = maps.layer_maps(
                    layer, previous=previous, reference=reference, schedule=schedule
                )
                if not previous["filter_kept"]:  # what a kept layout is compared with
                    reference = layer.jaccard
                written.append((name, step, layer, previous))
    wall, cpu = time.perf_counter() - began, _common.cpu_seconds() - cpu
    quality = [
        (name, step, map_quality(layer.samples.descriptor, layer.jaccard, arrays))
        for name, step, layer, arrays in written
    ]
    return wall, cpu, quality


def on_run(run_dir: Path, schedule, scratch: Path, workers) -> tuple[float, float, list]:
    """``compute_missing_maps`` on a fresh copy of the run without derived files."""
    from deepeyes_keras import load_run
    from deepeyes_keras.derive import maps, tsne

    copy = scratch / run_dir.name
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(*SKIPPED_BY_COPY))
    began, cpu = time.perf_counter(), _common.cpu_seconds()
    with tsne.limited_threads(tsne.threads_now()):  # as the pipeline runs the stage
        maps.compute_missing_maps(copy, schedule=schedule, workers=workers)
    wall, cpu = time.perf_counter() - began, _common.cpu_seconds() - cpu
    quality = []
    for snap in load_run(copy).snapshots:
        for layer in snap.layers.values():
            arrays = layer.maps
            samples = snap.run.samples(layer.key, arrays["uid"])
            quality.append(
                (layer.name, snap.step, map_quality(samples.descriptor, layer.jaccard, arrays))
            )
    return wall, cpu, quality


def configurations(run: str | None) -> dict[str, tuple]:
    """What is compared: (schedule, workers); the first is the code before issue 15, item 3."""
    from deepeyes_keras.derive import maps

    if not run:  # generated snapshots go through layer_maps: one layer at a time
        return {"SCHEDULE_BEFORE": (maps.SCHEDULE_BEFORE, 1), "SCHEDULE": (maps.SCHEDULE, 1)}
    return {
        "SCHEDULE_BEFORE, one layer at a time": (maps.SCHEDULE_BEFORE, 1),
        "SCHEDULE, one layer at a time": (maps.SCHEDULE, 1),
        "SCHEDULE, layers side by side where cores are idle (the default)": (maps.SCHEDULE, None),
    }


def report(run: str | None, *, repeats: int, quick: bool, jobs: int | None) -> str:
    from deepeyes_keras.derive import maps, tsne

    if jobs is not None:
        tsne.THREADS = jobs
    configs = configurations(run)
    results = {name: {"wall": [], "cpu": []} for name in configs}
    # Imports and first calls stay off the clock (the maps worker pays them once per run).
    on_generated({k: v[:2] for k, v in generated_layers(True).items()}, maps.SCHEDULE)
    with tempfile.TemporaryDirectory() as tmp:
        layers = None if run else generated_layers(quick)
        for rep in range(max(1, repeats)):
            order = list(configs) if rep % 2 == 0 else list(configs)[::-1]
            for name in order:
                schedule, workers = configs[name]
                _common.log(f"repetition {rep + 1}: {name} ...")
                if run:
                    wall, cpu, quality = on_run(Path(run), schedule, Path(tmp), workers)
                else:
                    wall, cpu, quality = on_generated(layers, schedule)
                results[name]["wall"].append(wall)
                results[name]["cpu"].append(cpu)
                results[name]["quality"] = quality  # deterministic: any repetition's
                _common.log(f"  wall {wall:.1f} s, CPU {cpu:.1f} s")
    return _tables(run, configs, results, repeats)


def _mean(values) -> str:
    return f"{statistics.fmean(values):.3f}" if values else "-"


def _tables(run, configs, results, repeats) -> str:
    what = f"the recorded run {run}" if run else "generated snapshots (conv-like, dense-like)"
    fields = ("kept", "trust", "filter_kept", "filter_trust")
    rows = []
    for name, (schedule, _) in configs.items():
        res, quality = results[name], results[name]["quality"]
        means = [_mean([q[f] for _, _, q in quality]) for f in fields]
        kept = sum(q.get("layout_kept", 0.0) for _, _, q in quality)
        rows.append(
            [
                f"`maps.{name}`",
                _describe(schedule),
                f"{len(quality)} ({kept:.0f})",
                _common.spread(res["wall"], "{:.1f}"),
                _common.spread(res["cpu"], "{:.1f}"),
                *means,
            ]
        )
    head = [
        "configuration",
        "iterations",
        "maps (filter layouts kept)",
        "wall (s)",
        "CPU (s)",
        "input map 10-NN kept",
        "input map trustworthiness",
        "filter map 10-NN kept",
        "filter map trustworthiness",
    ]
    names = list(configs)
    note = (
        f"\nMaps of {what}: every snapshot of every layer, each configuration {repeats} time(s), "
        "interleaved; median (min-max). openTSNE threads as the package chooses them "
        f"(DEEPEYES_MAP_THREADS={tsne_threads()}; one on busy cores unless "
        "DEEPEYES_MAP_THREADS_ADAPT=0); side by side: one per layer. Quality: mean over the maps.\n"
    )
    lines = [note, _common.table(head, rows), ""]
    base = results[names[0]]
    for name in names[1:]:
        wall, cpu = (
            statistics.median(base[k]) / statistics.median(results[name][k])
            for k in ("wall", "cpu")
        )
        lines.append(
            f"{name} against {names[0]}: {wall:.2f}x faster in wall time, "
            f"{cpu:.2f}x in CPU time (ratios of the medians)."
        )
    first, last = base["quality"], results[names[-1]]["quality"]
    layers = sorted({q[0] for q in first}, key=[q[0] for q in first].index)
    per_layer = [
        [layer]
        + [
            _mean([q[f] for n, _, q in quality if n == layer])
            for f in ("kept", "filter_kept")
            for quality in (first, last)
        ]
        for layer in layers
    ]
    head = [
        "layer",
        "input 10-NN kept, before",
        "input 10-NN kept, now",
        "filter 10-NN kept, before",
        "filter 10-NN kept, now",
    ]
    lines += ["", _common.table(head, per_layer)]
    return "\n".join(lines)


def tsne_threads() -> int:
    from deepeyes_keras.derive import tsne

    return tsne.THREADS


def _describe(s) -> str:
    carried = "random start" if s.filter_carried is None else f"then {s.filter_carried}"
    keep = ""
    if s.filter_keep is not None:
        mean, most = s.filter_keep
        keep = f", kept while co-activations change by <= {mean:g} (mean), <= {most:g} (max)"
    return (
        f"input: first {s.fresh_early} + {s.fresh_main}, then {s.carried} (restart at std "
        f"{s.carried_std:g}); filter: {s.filter_iter}, {carried}{keep}; theta {s.theta:g}"
    )
