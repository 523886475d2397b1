"""Published (frozen) views as the site sees them: runs that are not there, by their charts.

``deepeyes publish`` (``deepeyes_keras/derive/publish.py``) writes small chart specs of a run
into ``<published dir>/<run>/`` with a ``published.json``; the thumbnails of a layer's published
views are in a file they share (``thumbnails``), copied beside them. The plugin's
``published`` option lists such directories; :func:`load_published_runs` turns each published
run into a :class:`~deepeyes_keras.site.runs.SiteRun` that has only chart specs (no pages), so a
``deepeyes`` fenced block whose run is absent shows the published chart instead of an error.
A run directory of the same name, when present, always wins.

Example:
    >>> runs = load_published_runs([Path("case_studies/mnist_lenet/published")], section="deepeyes")
    >>> runs[0].layers[0].views  # doctest: +SKIP
    {2000: 'deepeyes/published/lenet-seed0/step-00002000/L0.vl.json'}
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.plugins import get_plugin_logger

from deepeyes_keras.run.layout import PublishedLayout, is_published_dir, read_json
from deepeyes_keras.site.runs import SiteRun, assign_layer_slugs, layer_of, slug_for

log = get_plugin_logger("deepeyes")


def published_dirs(roots: list[Path]) -> list[Path]:
    """Each root that is one published run, and the published runs directly inside the others."""
    found: list[Path] = []
    for root in roots:
        if is_published_dir(root):
            found.append(root)
        elif root.is_dir():
            found += sorted(d for d in root.iterdir() if d.is_dir() and is_published_dir(d))
        else:
            log.warning(f"published directory {root} does not exist: it adds no chart.")
    return list(dict.fromkeys(found))


def load_published_run(path: Path, *, section: str, taken: set[str]) -> SiteRun | None:
    """One published run as a chart-only SiteRun; None (and a warning) when unreadable."""
    layout = PublishedLayout(path)
    try:
        entry = read_json(layout.manifest)
        views = dict(entry["views"])
        steps = sorted(int(s) for s in entry.get("steps") or [])
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning(f"Skipping published run {path}: {err}")
        return None
    site = SiteRun(
        name=str(entry.get("run_name") or path.name),
        slug=slug_for(path.name, taken),
        path=path,
        section=f"{section}/published",
        manifest={"run_name": entry.get("run_name"), "model": {"name": entry.get("model")}},
        steps=steps,
        skipped=[],
        layers=[],
        published=True,
    )

    def spec(item: dict) -> str | None:
        file = path / str(item.get("file", ""))
        if ".." in Path(str(item.get("file", ""))).parts or not file.is_file():
            log.warning(f"published run {path}: missing file {item.get('file')!r}")
            return None
        uri = site.uri(layout.relative(file))
        site.specs[uri] = file
        return uri

    for name in ("overview", "histograms"):
        if name in views:
            setattr(site, name, spec(views[name]))
    shared = entry.get("thumbnails")  # none before thumbnails were shared
    for item in shared.values() if isinstance(shared, dict) else ():
        if isinstance(item, dict):
            spec(item)
    for info in entry.get("layers") or []:
        layer = layer_of(info, where=f"Published run {path}")
        if layer is None:
            continue
        for item in views.values():
            if item.get("layer") == layer.name and (uri := spec(item)):
                layer.views[int(item["step"])] = uri
        site.layers.append(layer)
    assign_layer_slugs(site.layers)  # as in the run's own site, should a block link to it
    return site


def load_published_runs(roots: list[Path], *, section: str) -> list[SiteRun]:
    """The readable published runs under ``roots``."""
    taken: set[str] = set()
    runs = [load_published_run(p, section=section, taken=taken) for p in published_dirs(roots)]
    return [r for r in runs if r is not None]
