"""Chart specs of a run, written beside its data: the stage between maps and the site.

Its files (sorted-key Vega-Lite v6 JSON; paths in :mod:`deepeyes_keras.run.layout`):
``views/overview.vl.json`` (loss and metrics over steps, rewritten as it grows),
``views/histograms.vl.json`` (perplexity histograms of every layer, with a snapshot selector),
``views/step-NNNNNNNN/L<i>.vl.json.gz`` (the linked layer view of layer i at that snapshot,
gzipped; with the snapshot's T4 evidence, the explained-variance curve, when its findings hold
it: the findings stage runs first) and ``views/thumbnails/L<i>.json.gz``, the thumbnails of
every point a view of layer i shows. Most reservoir instances persist from one snapshot to the
next, so the layer views name their points' instances (``uid``) and share that one file
(:mod:`deepeyes_keras.run.view_files`), which is written before the views that use it and only
grows.

:func:`write_views` is idempotent: layer views of a snapshot are written once (their data never
changes; a view of an older run, ``L<i>.vl.json`` with inline thumbnails, counts as written),
the two run-wide views every time. It is the second step of
:func:`deepeyes_keras.derive.pipeline.update_run`. Needs no TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from deepeyes_keras import charts
from deepeyes_keras.charts.layer import layer_spec
from deepeyes_keras.derive.thumbnails import ThumbnailCache
from deepeyes_keras.run.layout import DamagedFileError, printable, write_bytes
from deepeyes_keras.run.reader import Run, Snapshot, load_run
from deepeyes_keras.run.view_files import (
    compress,
    join_thumbnails,
    read_thumbnails,
    shown_uids,
    view_is_whole,
    with_thumbnails_ref,
    write_json_file,
)


def overview(run: Run) -> dict:
    # Names reach SVG text (vl-convert cannot draw a control character): through printable.
    metrics = {
        printable(k): v
        for k, v in run.metrics().items()
        if k == "step" or all(x is None or isinstance(x, int | float) for x in v)
    }
    # Epoch-end logs give the validation curves and the epoch boundaries (charts/overview.py).
    epoch_logs = [log for s in run.snapshots for log in s.record.get("epoch_logs", [])]
    return charts.overview_spec(metrics, epoch_logs=epoch_logs)


def histograms(run: Run) -> dict:
    layers = [
        {"name": printable(info["name"]), "n_filters": info["n_filters"]}
        for info in run.manifest["analysed_layers"]
    ]
    snapshots = [
        {
            "step": snap.step,
            "layers": {
                printable(name): {
                    "histogram": layer.perplexity_histogram.tolist(),
                    "change": layer.perplexity_change.tolist(),
                }
                for name, layer in snap.layers.items()
            },
        }
        for snap in run.snapshots
    ]
    return charts.histograms_spec(layers, snapshots)


def width_evidence(snapshot: Snapshot, name: str) -> dict:
    """The T4 keyword arguments of `layer_spec` for one layer, from the snapshot's findings.

    Empty (no variance view) when the findings are not computed, were written by schema 1
    (whose T4 has no curve), or the layer had no variance (an empty curve).

    Example:
        >>> width_evidence(snapshot, "conv1")  # doctest: +SKIP
        {'cumulative_variance': [0.52, 0.81, ...], 'signal_rank': 3, 'suggested_width': 6, ...}
    """
    t4 = (((snapshot.findings or {}).get("layers") or {}).get(name) or {}).get("T4") or {}
    curve, rank, width = (
        t4.get(k) for k in ("cumulative_variance", "signal_rank", "suggested_width")
    )
    if not curve or rank is None or width is None:
        return {}
    return {
        "cumulative_variance": curve,
        "signal_rank": int(rank),
        "suggested_width": int(width),
        "oversized": bool(t4.get("oversized", False)),
        "width_text": t4.get("text"),
    }


class LayerView(NamedTuple):
    """A layer view as the views stage writes it: points name their instances."""

    spec: dict  # the points' rows carry ``uid`` instead of ``image``
    thumbnails: dict[str, str | None]  # "<uid>" -> data URL, of every point the spec shows


def layer_view(
    snapshot: Snapshot, name: str, *, cache: ThumbnailCache | None = None, max_points: int = 2000
) -> dict | None:
    """The linked layer view of one layer at one snapshot, self-contained (each point's
    thumbnail inline, as notebooks and exports draw it); None while its maps are missing."""
    parts = layer_view_parts(snapshot, name, cache=cache, max_points=max_points)
    return None if parts is None else join_thumbnails(parts.spec, parts.thumbnails)


def layer_view_parts(
    snapshot: Snapshot, name: str, *, cache: ThumbnailCache | None = None, max_points: int = 2000
) -> LayerView | None:
    """The layer view with its points' thumbnails apart; None while its maps are missing.

    Thumbnails are made only for the points the spec shows (a wide layer shows a subsample).
    """
    layer = snapshot.layers[name]
    maps = layer.maps
    if maps is None:
        return None
    samples = layer.samples
    row_of = {u: i for i, u in enumerate(samples.uid.tolist())}
    rows = np.array([row_of[u] for u in maps["uid"].tolist()], dtype=np.int64)
    points = map_points(maps, samples.step[rows], samples.label[rows])
    activation = overlay_activations(layer, maps["uid"])
    if activation is None:
        activation = samples.activation[rows].astype(np.float32)
    rows, shown = rows[points.representative], points.representative
    cache = cache or ThumbnailCache()
    # The page says which network its overlays show when it is not this snapshot's.
    note = "" if layer.overlay_note is None else f" (overlays as sampled: {layer.overlay_note})"
    spec = layer_spec(
        layer=printable(name) + note,
        step=snapshot.step,
        max_activation=layer.max_activation,
        frequency=layer.frequency,
        reliability_age=layer.reliability_age,
        filter_xy=maps["filter_xy"],
        filter_label=maps["filter_label"],
        filter_strength=maps["filter_strength"],
        points_xy=maps["xy"][shown],
        point_label=points.label,
        point_activation=np.maximum(activation[shown], 0),
        thumbnails=[None] * len(rows),
        point_uid=samples.uid[rows],
        n_labels=int(snapshot.run.manifest["model"].get("n_labels", 2)),
        max_points=max_points,
        point_step=samples.step[rows],
        point_weight=points.weight,
        activation_codes=True,
        **width_evidence(snapshot, name),
    )
    sample_of = {u: r for u, r in zip(samples.uid[rows].tolist(), rows.tolist(), strict=True)}
    uids = shown_uids(spec)
    picked = np.array([sample_of[u] for u in uids], dtype=np.int64)
    urls = cache.get(layer.key, np.asarray(uids, np.int64), samples.patch[picked])
    return LayerView(spec, {str(u): url for u, url in zip(uids, urls, strict=True)})


class MapPoints(NamedTuple):
    """The points of an input map: one per distinct descriptor (see ``derive/maps.py``)."""

    representative: np.ndarray  # (m,) row of the map's instances drawn for each point
    label: np.ndarray  # (m,) the most common label among its instances (ties: the smallest)
    weight: np.ndarray  # (m,) its instances


def map_points(maps: dict, step: np.ndarray, label: np.ndarray) -> MapPoints:
    """Each map point's instance to draw (the latest sampled), label and weight.

    Maps written before duplicates were collapsed (no ``point``) have one point per instance.
    """
    n = len(maps["uid"])
    point = np.asarray(maps["point"], np.int64) if "point" in maps else np.arange(n)
    m = int(point.max()) + 1 if n else 0
    order = np.lexsort((np.asarray(step), point))  # by point, then by step: the last is latest
    last = np.ones(n, bool)
    last[:-1] = point[order][1:] != point[order][:-1]
    representative = order[last]
    labels = np.asarray(label, np.int64)
    shift = labels.min(initial=0)
    counts = np.zeros((m, int(labels.max(initial=0) - shift) + 1), np.int64)
    np.add.at(counts, (point, labels - shift), 1)
    weight = np.bincount(point, minlength=m)
    return MapPoints(representative, counts.argmax(axis=1) + shift, weight)


def overlay_activations(layer, uid: np.ndarray) -> np.ndarray | None:
    """The activations recomputed with the snapshot's weights of instances ``uid``, or None."""
    current = layer.current_activation
    if current is None:
        return None
    row_of = {u: i for i, u in enumerate(layer.reservoir_uids.tolist())}
    return current[[row_of[u] for u in np.asarray(uid).tolist()]]


def _write(path: Path, spec: dict) -> Path:
    return write_bytes(path, charts.spec_json(spec).encode("utf-8"))


class SharedThumbnails:
    """The thumbnails file of one layer, as the views stage keeps it while writing views.

    ``lost`` is True when the file was missing or damaged: layer views that name it must then
    be written again (with it); ``stored`` once the file on disk holds ``urls``.
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            self.urls, self.lost = read_thumbnails(path), False
        except (FileNotFoundError, DamagedFileError):
            self.urls, self.lost = {}, True
        self.stored = not self.lost

    def add(self, urls: dict[str, str | None]) -> bool:
        """Adds the thumbnails of one view's points; True if any was new."""
        new = {u: url for u, url in urls.items() if u not in self.urls}
        self.urls.update(new)
        return bool(new)

    def write(self) -> Path:
        self.stored = True
        return write_json_file(self.path, self.urls)


def is_written(run: Run, key: str, step: int, thumbnails: SharedThumbnails) -> bool:
    """Whether the layer view of ``key`` at ``step`` is there and whole: compressed (and its
    thumbnails not lost), or plain with inline thumbnails, as older runs wrote them."""
    path = run.layout.view(key, step)
    if path.is_file():
        return not thumbnails.lost and view_is_whole(path)
    old = run.layout.plain_view(key, step)
    return old.is_file() and view_is_whole(old)


def write_views(
    run_dir, steps=None, *, overwrite: bool = False, cache: ThumbnailCache | None = None
) -> list[Path]:
    """Writes the run's views; returns the paths written.

    Args:
        run_dir: the run directory.
        steps: snapshot steps whose layer views to write (default: every snapshot with maps).
        overwrite: rewrite layer views that already exist.
        cache: thumbnail cache to reuse across calls (the maps worker keeps one).
    """
    run = load_run(run_dir)
    if not run.snapshots:
        return []
    cache = cache or ThumbnailCache()
    written = [
        _write(run.layout.view("overview"), overview(run)),
        _write(run.layout.view("histograms"), histograms(run)),
    ]
    wanted = None if steps is None else {int(s) for s in steps}
    shared: dict[str, SharedThumbnails] = {}
    shown: dict[str, set[str]] = {}
    for snap in run.snapshots:
        for name, layer in snap.layers.items():
            key = layer.key
            if key not in shared:
                shared[key] = SharedThumbnails(run.layout.thumbnails(key))
            table = shared[key]
            path = run.layout.view(key, snap.step)
            # A view naming lost thumbnails is written again, whichever steps were asked for.
            chosen = wanted is None or snap.step in wanted or (table.lost and path.is_file())
            if not chosen or (not overwrite and is_written(run, key, snap.step, table)):
                continue  # not asked for, or written before (a damaged one is written again)
            parts = layer_view_parts(snap, name, cache=cache)
            if parts is None:
                continue
            shown.setdefault(key, set()).update(parts.thumbnails)
            if table.add(parts.thumbnails) or not table.stored:
                written.append(table.write())  # before the view: a reader finds all it names
            spec = with_thumbnails_ref(parts.spec, path, table.path)
            written.append(write_bytes(path, compress(charts.spec_json(spec).encode("utf-8"))))
            run.layout.plain_view(key, snap.step).unlink(missing_ok=True)  # the older form
    if overwrite and wanted is None:  # every view rewritten: keep only the thumbnails they show
        for key, uids in shown.items():
            table = shared[key]
            if set(table.urls) != uids:
                table.urls = {u: table.urls[u] for u in sorted(uids, key=int)}
                written.append(table.write())
    return written
