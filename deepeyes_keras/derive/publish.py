"""Publishing (freezing) views of a run: small self-contained chart specs a wiki can hold.

A run directory is 30-200 MB; no team commits that to its wiki. :func:`publish` writes, for the
chosen layers and snapshots, the viewer's own chart specs with only the data those views need
into ``<out>/<run>/`` (:class:`deepeyes_keras.run.layout.PublishedLayout`), as plain JSON: the
training curves, the perplexity histograms and each chosen layer's linked view, the thumbnails
of the points those views show (one file per layer, ``thumbnails/L<i>.json``, shared by the
layer's published views as in the run: :mod:`deepeyes_keras.run.view_files`), and a
``published.json`` that says what is there. A layer view keeps every point of its input map when
it and its thumbnails fit ``LAYER_BUDGET`` bytes; otherwise the largest seeded subset of the
points that fits (the view's title and ``published.json`` say how many of how many). The site
plugin's ``published`` option makes ``deepeyes`` fenced blocks use these files when the run
itself is absent (``viewer_site/guide/embedding.md``).

Example:
    >>> publish("deepeyes_runs/lenet", "docs/published", layers=["conv1"], steps=[300])
    ... # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from deepeyes_keras import charts
from deepeyes_keras.derive import views
from deepeyes_keras.derive.thumbnails import ThumbnailCache
from deepeyes_keras.run.layout import PublishedLayout, read_json, write_bytes, write_json
from deepeyes_keras.run.reader import load_run
from deepeyes_keras.run.view_files import (
    read_thumbnails,
    with_thumbnails_ref,
    write_json_file,
)

LAYER_BUDGET = 1_000_000
"""Bytes of one published layer view and its points' thumbnails at most (a layer's view in the
run can be 4 MB, uncompressed)."""
MIN_POINTS = 100


def _encode(spec: dict) -> bytes:
    return charts.spec_json(spec).encode("utf-8")


def _nearest(steps: list[int], step: int) -> int:
    return min(steps, key=lambda s: (abs(s - step), s))


class PublishedView(NamedTuple):
    """One published layer view: its spec, its points' thumbnails, and how many points."""

    spec: dict  # points name their instances (uid); the thumbnails reference is not set yet
    thumbnails: dict[str, str | None]
    size: int  # bytes of the spec and of its thumbnails, as JSON
    points: int  # points shown
    total: int  # points in the map


def layer_view_within(snapshot, name: str, budget: int, cache: ThumbnailCache):
    """The layer view with as many input-map points as fit ``budget`` bytes, its thumbnails
    counted (they are a page's data too).

    Returns:
        A :class:`PublishedView`, or None while the maps are missing.
    """
    maps = snapshot.layers[name].maps
    if maps is None:
        return None
    # One input-map point per distinct descriptor (identical instances share a weighted point).
    total = len(maps["weight"]) if "weight" in maps else len(maps["uid"])
    points = total
    while True:
        spec, thumbnails = views.layer_view_parts(snapshot, name, cache=cache, max_points=points)
        if points < total:
            spec["title"] = _title_with(spec.get("title"), points, total)
        size = len(_encode(spec)) + len(_encode(thumbnails))
        if size <= budget or points <= MIN_POINTS:
            return PublishedView(spec, thumbnails, size, points, total)
        # Size grows about linearly with the points: aim a little under the budget.
        points = max(MIN_POINTS, int(points * budget / size * 0.95))


def _title_with(title, points: int, total: int):
    note = f" (published: {points:,} of {total:,} points)"
    if isinstance(title, dict) and isinstance(title.get("text"), str):
        return dict(title, text=title["text"] + note)
    if isinstance(title, str):
        return title + note
    return title


def publish(
    run_dir,
    out_dir,
    *,
    layers: list[str] | None = None,
    steps: list[int] | None = None,
    pairs: list[tuple[str, int]] | None = None,
    budget: int = LAYER_BUDGET,
    progress=None,
) -> Path:
    """Writes the published views of a run; returns its ``published.json``.

    Args:
        run_dir: the run directory (its maps must be computed: ``deepeyes maps RUN``).
        out_dir: where published runs live; this run goes to ``out_dir/<run directory name>``.
            Publishing again adds to what is there (a view published before is rewritten).
        layers: analysed layer names (default None: every analysed layer; ``[]``: only the
            training curves and histograms).
        steps: snapshot steps (the nearest snapshot of each; default: the last snapshot).
        pairs: instead of every layer at every step, these ``(layer, step)`` views only.
        budget: bytes per layer view at most.
        progress: optional callable taking a message per file written.

    Raises:
        ValueError: an unknown layer (with the layers there are), no snapshot, or no maps.
    """
    run = load_run(run_dir)
    if not run.snapshots:
        raise ValueError(f"Run {run.name!r} has no snapshot to publish.")
    if pairs:
        names = list(dict.fromkeys(n for n, _ in pairs))
    else:  # None: every layer; []: the run-wide views only
        names = list(run.layer_names if layers is None else layers)
    unknown = [n for n in names if n not in run.layer_names]
    if unknown:
        raise ValueError(
            f"Run {run.name!r} has no analysed layer(s) {unknown}; its layers: {run.layer_names}."
        )
    by_step = {s.step: s for s in run.snapshots}
    last = run.snapshots[-1].step
    if pairs:
        wanted = {(n, _nearest(list(by_step), int(last if s is None else s))) for n, s in pairs}
    else:
        steps_ = {_nearest(list(by_step), int(s)) for s in (steps or [last])}
        wanted = {(n, s) for n in names for s in steps_}
    chosen = sorted({s for _, s in wanted})
    layout = PublishedLayout(Path(out_dir) / run.path.name)
    old = read_json(layout.manifest) if layout.manifest.is_file() else {}
    say = progress or (lambda _m: None)
    entry = {
        "format": "deepeyes-published",
        "run_name": run.name,
        "model": run.manifest.get("model", {}).get("name"),
        "layers": [
            {k: info.get(k) for k in ("name", "key", "kind", "n_filters")}
            for info in run.manifest["analysed_layers"]
        ],
        "steps": [s.step for s in run.snapshots],
        "views": dict(old.get("views") or {}),
    }
    for name, spec in (("overview", views.overview(run)), ("histograms", views.histograms(run))):
        path = write_bytes(layout.view(name), _encode(spec))
        entry["views"][name] = {"file": layout.relative(path), "bytes": path.stat().st_size}
        say(f"wrote {path}")
    cache = ThumbnailCache()
    keys = {info["name"]: info["key"] for info in run.manifest["analysed_layers"]}
    missing, made = [], []
    for step in chosen:
        for name in [n for n in names if (n, step) in wanted]:
            view = layer_view_within(by_step[step], name, budget, cache)
            if view is None:
                missing.append(f"{name} at step {step}")
            else:
                made.append((name, step, view))
    # The thumbnails first (with those of views published before), then the views naming them.
    entry["thumbnails"] = dict(old.get("thumbnails") or {})
    for key in sorted({keys[name] for name, _, _ in made}):
        path = layout.thumbnails(key)
        table = read_thumbnails(path) if path.is_file() else {}
        for name, _, view in made:
            table.update(view.thumbnails if keys[name] == key else {})
        write_json_file(path, dict(sorted(table.items(), key=lambda item: int(item[0]))))
        entry["thumbnails"][key] = {"file": layout.relative(path), "bytes": path.stat().st_size}
        say(f"wrote {path} ({len(table)} thumbnails)")
    for name, step, view in made:
        path = layout.view(keys[name], step)
        data = _encode(with_thumbnails_ref(view.spec, path, layout.thumbnails(keys[name])))
        write_bytes(path, data)
        entry["views"][f"{keys[name]}@{step}"] = {
            "file": layout.relative(path),
            "layer": name,
            "step": step,
            "points": view.points,
            "of": view.total,
            "bytes": len(data),
        }
        say(f"wrote {path} ({len(data) / 1e6:.2f} MB, {view.points} of {view.total} points)")
    if missing and len(missing) == len(wanted):
        raise ValueError(f"No maps to publish for {missing}: run `deepeyes maps {run.path}` first.")
    write_json(layout.manifest, entry)
    say(f"wrote {layout.manifest}" + (f"; no maps yet for {missing}" if missing else ""))
    return layout.manifest


def published_size(manifest_path) -> int:
    """Bytes of every file a ``published.json`` lists (the manifest included)."""
    path = Path(manifest_path)
    entry = json.loads(path.read_text(encoding="utf-8"))
    files = [*entry.get("views", {}).values(), *(entry.get("thumbnails") or {}).values()]
    return path.stat().st_size + sum((path.parent / v["file"]).stat().st_size for v in files)
