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

from deepeyes_keras.site.markup import Link, attr_json, notice
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


def compare_page(runs: list[SiteRun], *, link: Link, section: str) -> str:
    """Two runs side by side; the runs are picked in the page (``?a=<run>&b=<run>`` in the URL)."""
    out = [
        '<div class="deepeyes-page deepeyes-compare-page">',
        breadcrumbs(link, section, ("compare runs", None)),
        "<h1>Compare two runs</h1>",
    ]
    if len(runs) < 2:
        out.append(notice(f"Comparing needs at least two runs; this site has {len(runs)}."))
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
