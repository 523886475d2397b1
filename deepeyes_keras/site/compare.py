"""The compare page: two runs side by side, picked in the page (``?a=<run>&b=<run>``).

The page holds, as JSON in a data attribute, the overview and last layer views of every run (by
URL, :func:`compare_index`); ``deepeyes_keras/site/assets/viewer.js`` fills it in for the two
runs chosen. The JSON goes through :func:`json.dumps` then :func:`html.escape`, so names with
markup decode to the exact names.

Example:
    >>> html = compare_page(runs, link=lambda uri: uri, section="deepeyes")  # doctest: +SKIP
"""

from __future__ import annotations

from html import escape

from deepeyes_keras.site.markup import Link, attr_json
from deepeyes_keras.site.pages import breadcrumbs
from deepeyes_keras.site.runs import SiteRun


def compare_index(runs: list[SiteRun], link: Link) -> list[dict]:
    """What the compare page's script needs: per run its overview and last layer views, by URL."""
    out = []
    for run in runs:
        layers = {}
        for layer in run.layers:
            if layer.views:
                step = max(layer.views)
                layers[layer.name] = {
                    "step": step,
                    "spec": link(layer.views[step]),
                    "page": link(run.uri(layer.page)),
                }
        out.append(
            {
                "name": run.name,
                "slug": run.slug,
                "status": run.status,
                "last_step": run.last_step,
                "page": link(run.uri("index.md")),
                "overview": link(run.overview) if run.overview else None,
                "layers": layers,
            }
        )
    return out


def second_run_hint(runs: list[SiteRun], source: str) -> str:
    """What to do when the site has fewer than two runs: where a second run must go, and how
    to make one (another seed, a redesign, or any other network)."""
    where = f" ({escape(source)})" if source else ""
    have = (
        f"this site has one, <strong>{escape(runs[0].name)}</strong>"
        if runs
        else "this site has none yet"
    )
    return (
        '<div class="deepeyes-notice deepeyes-compare-hint">'
        f"<p>Comparing needs at least two runs; {have}. A second run is any other "
        "training recorded into the directory this site reads its runs from"
        f"{where}, under another run name:</p><ul>"
        "<li>the same network with another seed: <code>deepeyes demo --seed 1 "
        "--run-name lenet-seed1</code>;</li>"
        "<li>a redesign: the smaller network <code>deepeyes redesign RUN</code> proposes, "
        "trained with the callback;</li>"
        "<li>any network: <code>model.fit(..., callbacks=[DeepEyesCallback(log_dir=..., "
        "run_name=...)])</code> with the same <code>log_dir</code> (<code>deepeyes demo</code> "
        "writes to <code>deepeyes_runs</code> unless given <code>--log-dir</code>).</li></ul>"
        "<p>Rebuild the site (<code>mkdocs build</code>), or keep <code>mkdocs serve</code> "
        "running: the run shows up here as its first snapshot is written.</p></div>"
    )


def compare_page(runs: list[SiteRun], *, link: Link, section: str, source: str = "") -> str:
    """Two runs side by side; the runs are picked in the page (``?a=<run>&b=<run>`` in the URL).
    With fewer than two runs, how to get a second one (into ``source``, where runs are read)."""
    out = [
        '<div class="deepeyes-page deepeyes-compare-page">',
        breadcrumbs(link, section, ("compare runs", None)),
        "<h1>Compare two runs</h1>",
    ]
    if len(runs) < 2:
        out.append(second_run_hint(runs, source))
        return "".join(out) + "</div>"
    out.append(
        "<p>Pick two runs (for example a network and its redesign): their training "
        "curves side by side, then, for every layer name both have, the linked views at "
        "each run's last snapshot.</p>"
    )
    # Newest two by default: the later one is usually the redesign.
    ordered = sorted(runs, key=lambda r: str(r.manifest.get("updated") or ""))
    default_a, default_b = ordered[-2].slug, ordered[-1].slug
    options = "".join(f'<option value="{escape(r.slug)}">{escape(r.name)}</option>' for r in runs)
    out.append(
        f'<div class="deepeyes-compare" data-runs="{attr_json(compare_index(runs, link))}" '
        f'data-default-a="{escape(default_a)}" data-default-b="{escape(default_b)}">'
        '<p class="deepeyes-controls">'
        f'<label>Run A <select class="deepeyes-compare-a">{options}</select></label> '
        f'<label>Run B <select class="deepeyes-compare-b">{options}</select></label></p>'
        '<div class="deepeyes-compare-body"></div></div>'
    )
    return "".join(out) + "</div>"
