"""HTML of the runs home page, a run's page and a layer's page, and the pieces they share.

The plugin (:mod:`deepeyes_keras.site.plugin`) makes these pages: ``deepeyes/`` lists the runs,
``deepeyes/<run>/`` is a run's overview, ``deepeyes/<run>/<layer>/`` the linked views of one
layer (named after it) with a snapshot selector and the findings of the snapshot shown
(:mod:`deepeyes_keras.site.findings_html`; the run page shows those of the last snapshot that
has them and says which step that is). :mod:`deepeyes_keras.site.generated` names them all;
the compare page is :mod:`deepeyes_keras.site.compare`.

Pure string building over :class:`~deepeyes_keras.site.runs.SiteRun` records: no mkdocs hooks,
no TensorFlow. Every name that comes from a user (run, model, layer) goes through
:func:`html.escape` in text and attributes (the builders of :mod:`deepeyes_keras.site.markup`),
so a layer named ``<b>x</b>`` renders as text.

A page is rendered with a ``link`` function that turns the site path of a generated file
(``deepeyes/<run>/index.md``, ``deepeyes/<run>/views/overview.vl.json``) into a URL relative to
the page, so the built site works from any static host and any sub-path.

Example:
    >>> html = run_page(run, link=lambda uri: uri)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from html import escape

from deepeyes_keras.site.findings_html import (
    findings_attrs,
    findings_block,
    findings_html,
    run_findings_step,
)
from deepeyes_keras.site.markup import Link, anchor, chart, notice, number, table
from deepeyes_keras.site.redesign_html import redesign_html
from deepeyes_keras.site.runs import SiteLayer, SiteRun

# ----------------------------------------------------------------------------- small pieces


def breadcrumbs(link: Link, section: str, *trail: tuple[str, str | None]) -> str:
    """Runs > run > layer; `trail` is (text, site path or None for the current page)."""
    if not trail:
        return (
            '<nav class="deepeyes-breadcrumbs" aria-label="breadcrumbs">'
            '<span aria-current="page">DeepEyes runs</span></nav>'
        )
    parts = [anchor(link(f"{section}/index.md"), "DeepEyes runs")]
    for text, target in trail:
        if target is None:
            parts.append(f'<span aria-current="page">{escape(text)}</span>')
        else:
            parts.append(anchor(link(target), text))
    sep = '<span class="deepeyes-sep" aria-hidden="true">›</span>'
    return f'<nav class="deepeyes-breadcrumbs" aria-label="breadcrumbs">{sep.join(parts)}</nav>'


def status_line(run: SiteRun) -> str:
    """ "training — last snapshot at step N" or "finished — N snapshots, last at step N"."""
    last = run.last_step
    if run.status == "training":
        text = (
            "training — no snapshot yet"
            if last is None
            else f"training — last snapshot at step {last}"
        )
    elif run.status == "finished":
        text = f"finished — {len(run.steps)} snapshots, last at step {last}"
    else:
        text = f"{run.status} — last snapshot at step {last}"
    updated = run.manifest.get("updated")
    when = f' <span class="deepeyes-muted">updated {escape(str(updated))}</span>' if updated else ""
    css = f"deepeyes-status deepeyes-status-{escape(run.status)}"
    line = f'<p class="deepeyes-run-status"><span class="{css}">{escape(text)}</span>{when}</p>'
    return line + resumed_line(run)


def resumed_line(run: SiteRun) -> str:
    """For a run that continues an interrupted one: which, from which step, what it replaces."""
    link = run.manifest.get("resumed_from")
    if not isinstance(link, dict):
        return ""
    superseded = link.get("superseded_steps") or []
    replaced = (
        f"; its snapshots at steps {', '.join(map(str, superseded))} are replaced by this run's"
        if superseded
        else ""
    )
    text = (
        f"Continues the interrupted run {link.get('run')!s} from step {link.get('at_step')} "
        f"(the restored model's step){replaced}."
    )
    return f'<p class="deepeyes-run-resumed">{escape(text)}</p>'


def skipped_box(run: SiteRun) -> str:
    """The snapshot files of the run that could not be read, or nothing."""
    if not run.skipped:
        return ""
    items = "".join(f"<li><code>{escape(s)}</code></li>" for s in run.skipped)
    return (
        f'<div class="deepeyes-error" role="alert">{len(run.skipped)} snapshot file(s) of '
        f"this run could not be read (partial, corrupt or newer schema) and are left out:"
        f"<ul>{items}</ul></div>"
    )


def layer_links(run: SiteRun, link: Link) -> str:
    """A link to each layer page of the run, separated by dots."""
    return " · ".join(anchor(link(run.uri(layer.page)), layer.name) for layer in run.layers)


def layer_views_summary(layer: SiteLayer, run: SiteRun) -> str:
    if not layer.views:
        return "maps being computed" if run.steps else "no snapshot yet"
    steps = sorted(layer.views)
    return f"{len(steps)} snapshot{'s' if len(steps) > 1 else ''}, last at step {steps[-1]}"


# ----------------------------------------------------------------------------- home


HOME_HEADS = (
    "run",
    "model",
    "parameters",
    "steps",
    "last snapshot",
    "snapshots",
    "status",
    "layers",
)


def home_row(run: SiteRun, link: Link) -> list[str]:
    status = f"training (step {run.last_step})" if run.status == "training" else run.status
    return [
        anchor(link(run.uri("index.md")), run.name),
        escape(str(run.model.get("name", "-"))),
        number(run.model.get("parameters")),
        number(run.manifest.get("last_step")),
        "-" if run.last_step is None else f"step {run.last_step}",
        str(len(run.steps)) + (f" ({len(run.skipped)} unreadable)" if run.skipped else ""),
        f'<span class="deepeyes-status deepeyes-status-{escape(run.status)}">'
        f"{escape(status)}</span>",
        layer_links(run, link),
    ]


def site_links_line(site_links, link: Link) -> str:
    """The line "Also on this site: Home · Guide · Case studies"; nothing without such pages."""
    if not site_links:
        return ""
    items = " · ".join(anchor(link(uri), title) for title, uri in site_links)
    return f'<p class="deepeyes-site-links">Also on this site: {items}.</p>'


def home_page(
    runs: list[SiteRun],
    *,
    link: Link,
    section: str,
    source: str,
    site_links: list[tuple[str, str]] = (),
) -> str:
    """Home: every run with its model, size, steps, last snapshot and status, and the site's
    other top-level pages (``site_links``: title and site path, e.g. the guide)."""
    out = [
        f'<div class="deepeyes-page deepeyes-home">{breadcrumbs(link, section)}',
        "<h1>DeepEyes runs</h1>",
        '<p class="deepeyes-lead">Networks recorded by <code>DeepEyesCallback</code> while they '
        "trained. Each run has an <em>overview</em> (training curves, perplexity histograms of "
        "every layer, findings) and one <em>analysis page per layer</em> (activation heatmap, "
        "filter map, input map, patches), each with a snapshot selector. "
        f"{anchor(link(f'{section}/compare.md'), 'Compare two runs')} side by side.</p>",
        site_links_line(site_links, link),
    ]
    if not runs:
        out.append(
            notice(
                f"No runs found in {source} yet. Train a model with "
                "DeepEyesCallback(log_dir=...) pointing there: under mkdocs serve, "
                "runs appear here as their first snapshot is written."
            )
        )
    else:
        out.append(table(HOME_HEADS, [home_row(run, link) for run in runs], css="deepeyes-runs"))
    return "".join(out) + "</div>"


# ----------------------------------------------------------------------------- run


COMPUTING = (
    "Its chart views are being computed; this page shows them once they are written"
    " (reload, or leave mkdocs serve running)."
)
HISTOGRAMS_HELP = (
    "<p>For every analysed layer: how specific its filters are on the sampled receptive "
    "fields (perplexity near 1: one filter responds; near the number of filters: all respond "
    "alike, or none does), and on the right the change since the previous snapshot "
    "(green up, red down). A layer whose change stays small for several snapshots is "
    "stable (T1). Choose the snapshot under the chart.</p>"
)


def run_charts(run: SiteRun, link: Link) -> str:
    """The training curves and the perplexity histograms, or notes that they are coming."""
    out = ["<h2>Training curves</h2>"]
    if run.overview:
        out.append(chart("deepeyes-overview", link(run.overview), label="training curves"))
    else:
        out.append(notice("No training curves yet. " + COMPUTING))
    out += ["<h2>Perplexity histograms</h2>", HISTOGRAMS_HELP]
    if run.histograms:
        out.append(
            chart("deepeyes-histograms", link(run.histograms), label="perplexity histograms")
        )
    else:
        out.append(notice("No perplexity histograms yet. " + COMPUTING))
    return "".join(out)


def layers_table(run: SiteRun, link: Link) -> str:
    """The analysed layers of the run, linked to their pages."""
    rows = [
        [
            anchor(link(run.uri(layer.page)), layer.name),
            escape(layer.kind),
            str(layer.n_filters),
            escape(json.dumps(layer.info.get("output_shape"))),
            escape(layer_views_summary(layer, run)),
        ]
        for layer in run.layers
    ]
    return table(("layer", "kind", "filters", "output shape", "linked views"), rows)


def model_table(run: SiteRun) -> str:
    """Every layer of the model, analysed or not (folded), or nothing if the manifest has none."""
    rows = [
        [
            escape(str(item.get("name"))),
            escape(str(item.get("class"))),
            escape(json.dumps(item.get("output_shape"))),
            number(item.get("parameters")),
            "yes" if item.get("analysed") else "",
        ]
        for item in run.model.get("layers") or []
    ]
    if not rows:
        return ""
    heads = ("layer", "class", "output shape", "parameters", "analysed")
    return f"<details><summary>Every layer of the model</summary>{table(heads, rows)}</details>"


def run_page(run: SiteRun, *, link: Link) -> str:
    """A run: status, training curves, perplexity histograms, findings, redesign, layers, model."""
    model = run.model
    out = [
        '<div class="deepeyes-page deepeyes-run">',
        breadcrumbs(link, run.section, (run.name, None)),
        f"<h1>{escape(run.name)}</h1>",
        status_line(run),
        skipped_box(run),
        f"<p>Model <strong>{escape(str(model.get('name', '-')))}</strong>, "
        f"{number(model.get('parameters'))} parameters, "
        f"{len(run.layers)} analysed layers. Layer pages: {layer_links(run, link)}.</p>",
        run_charts(run, link),
    ]
    found = [s for s in run.steps if run.step_findings.get(s) is not None]
    if found:
        out += ["<h2>Findings</h2>", run_findings_step(run, found[-1])]
        out.append(findings_html(run.step_findings[found[-1]], link=link, run=run))
    if run.proposal is not None or run.verification is not None:
        out.append("<h2>Redesign</h2>")
        out.append(redesign_html(run.proposal, run.verification))
    out += ["<h2>Layers</h2>", layers_table(run, link), model_table(run)]
    return "".join(out) + "</div>"


# ----------------------------------------------------------------------------- layer


HOW_TO_READ = (
    '<details class="deepeyes-help"><summary>How to read this page</summary><ul>'
    "<li><strong>Activation heatmap</strong>: one cell per filter, coloured by its maximum "
    "activation so far or by how often it fires (radio buttons above the view). A dark cell "
    "never fires, a bright frequency cell fires on everything (T2). Small, faded cells have a "
    "stale maximum: the filter has not come near it for more than half the run.</li>"
    "<li><strong>Click a filter</strong> (heatmap, filter map or bars) to colour the input map "
    "by that filter's activation; double-click clears the selection.</li>"
    "<li><strong>Filter map</strong>: filters placed by how often they fire together; close "
    "filters are redundant (T4). Colour: the label that drives the filter; size: how strongly.</li>"
    "<li><strong>Input map</strong>: sampled receptive fields placed by similarity, coloured by "
    "label. Choose <em>max over all filters</em> to see patterns that no filter detects (dark "
    "points, T3). Drag a rectangle to show the input patches of those points and which filters "
    "respond to them.</li></ul></details>"
)


def layer_nav(run: SiteRun, layer: SiteLayer, link: Link) -> str:
    """Links to the previous and next layer and to the run overview."""
    index = run.layers.index(layer)
    others = []
    if index > 0:
        prev = run.layers[index - 1]
        others.append(anchor(link(run.uri(prev.page)), f"← {prev.name}", rel="prev"))
    if index + 1 < len(run.layers):
        nxt = run.layers[index + 1]
        others.append(anchor(link(run.uri(nxt.page)), f"{nxt.name} →", rel="next"))
    others.append(anchor(link(run.uri("index.md")), "run overview"))
    return f'<p class="deepeyes-layer-nav">{" · ".join(others)}</p>'


TAIL_FRACTION = 0.5  # a last interval shorter than this share of the one before is a tail


def default_step(steps: list[int]) -> int:
    """The snapshot a layer page opens at: the last one, unless it is a short tail.

    A run that stops just after a snapshot (2001 after 2000) ends with a snapshot covering a
    step or two; its few instances make a noisy, misleading first view. When the last interval
    is shorter than ``TAIL_FRACTION`` of the one before, the page opens at the last full
    snapshot (the tail stays selectable). Same rule as the histograms' default
    (``deepeyes_keras/charts/histograms.py``).

    Example:
        >>> default_step([1000, 2000, 2001]), default_step([100, 200, 300])
        (2000, 300)
    """
    if len(steps) < 2:
        return steps[-1]
    before = steps[-2] - (steps[-3] if len(steps) > 2 else 0)
    return steps[-2] if steps[-1] - steps[-2] < TAIL_FRACTION * before else steps[-1]


def step_label(steps: list[int], s: int) -> str:
    """ "step N", with the interval length for a short tail: "step 2001 (tail: 1 step)"."""
    if s != steps[-1] or default_step(steps) == s:
        return f"step {s}"
    n = s - steps[-2]
    return f"step {s} (tail: {n} step{'s' if n != 1 else ''})"


LAYER_CHART = "deepeyes-layer-chart"


def layer_views(run: SiteRun, layer: SiteLayer, link: Link) -> str:
    """The linked view of the default snapshot with a selector of every snapshot that has one."""
    steps = sorted(layer.views)
    first = default_step(steps)
    options = "".join(
        f'<option value="{escape(link(layer.views[s]))}" data-step="{s}"'
        f"{findings_attrs(run, layer, link, s)}"
        f"{' selected' if s == first else ''}>{step_label(steps, s)}</option>"
        for s in steps
    )
    chart_id = LAYER_CHART
    return (
        f'<p class="deepeyes-controls"><label>Snapshot <select '
        f'class="deepeyes-snapshot" data-chart="{chart_id}">{options}</select></label>'
        f' <span class="deepeyes-muted">{len(steps)} of {len(run.steps)} snapshots '
        "have linked views</span></p>"
        + chart(chart_id, link(layer.views[first]), label=f"linked views of layer {layer.name}")
        + HOW_TO_READ
    )


def layer_page(run: SiteRun, layer: SiteLayer, *, link: Link) -> str:
    """One layer: the linked view with a snapshot selector (each step's spec loaded by URL)."""
    out = [
        '<div class="deepeyes-page deepeyes-layer">',
        breadcrumbs(link, run.section, (run.name, run.uri("index.md")), (layer.name, None)),
        f'<h1>{escape(layer.name)} <small class="deepeyes-muted">{escape(layer.kind)}, '
        f"{layer.n_filters} filters</small></h1>",
        status_line(run),
        layer_nav(run, layer, link),
    ]
    if layer.views:
        out.append(layer_views(run, layer, link))
    elif run.steps:
        out.append(
            notice(
                f"The input map and filter map of {layer.name} are being computed "
                "(in a background process while training runs, or with `deepeyes maps "
                "RUN`); the linked views appear here once they are written."
            )
        )
    else:
        out.append(notice("This run has no snapshot yet."))
    # The findings of the snapshot the views show (viewer.js swaps them with the snapshot).
    steps = sorted(layer.views) or run.steps
    box = findings_block(run, layer, default_step(steps), chart_id=LAYER_CHART) if steps else ""
    if box:
        out += ["<h2>Findings</h2>", box]
    return "".join(out) + "</div>"
