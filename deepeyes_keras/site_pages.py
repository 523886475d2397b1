"""HTML of the pages the DeepEyes mkdocs plugin generates (see :mod:`deepeyes_keras.site_plugin`).

Pure string building over :class:`SiteRun` records: no mkdocs, no TensorFlow. Every name that comes
from a user (run, model, layer) goes through :func:`html.escape` in text and attributes, and
through :func:`json.dumps` (then ``html.escape``) in data attributes read by ``viewer.js``, so a
layer named ``<b>x</b>`` renders as text.

A page is rendered with a ``link`` function that turns the site path of a generated file
(``deepeyes/<run>/index.md``, ``deepeyes/<run>/views/overview.vl.json``) into a URL relative to
the page, so the built site works from any static host and any sub-path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

Link = Callable[[str], str]

MAX_LISTED_FILTERS = 12  # filter indices listed in a findings cell before "..."


@dataclass
class SiteLayer:
    """One analysed layer of a run, as the site shows it."""

    key: str
    name: str
    kind: str
    n_filters: int
    info: dict
    views: dict[int, str] = field(default_factory=dict)  # step -> site path of its spec

    @property
    def page(self) -> str:
        return f"{self.key}.md"


@dataclass
class SiteRun:
    """One run directory, loaded without TensorFlow, with the site paths of its pages and specs."""

    name: str
    slug: str
    path: Path
    section: str
    manifest: dict
    steps: list[int]
    skipped: list[str]
    layers: list[SiteLayer]
    overview: str | None = None
    histograms: str | None = None
    findings: dict | None = None

    @property
    def status(self) -> str:
        return str(self.manifest.get("status") or "unknown")

    @property
    def last_step(self) -> int | None:
        return self.steps[-1] if self.steps else None

    @property
    def model(self) -> dict:
        return self.manifest.get("model") or {}

    def uri(self, name: str) -> str:
        return f"{self.section}/{self.slug}/{name}"


# ----------------------------------------------------------------------------- small pieces


def _attr_json(value: Any) -> str:
    """A JSON value safe inside a double-quoted HTML attribute."""
    return escape(json.dumps(value, sort_keys=True), quote=True)


def _number(value: Any) -> str:
    return (
        f"{value:,}" if isinstance(value, int) else escape(str(value if value is not None else "-"))
    )


def breadcrumbs(link: Link, section: str, *trail: tuple[str, str | None]) -> str:
    """Runs > run > layer; `trail` is (text, site path or None for the current page)."""
    if not trail:
        return (
            '<nav class="deepeyes-breadcrumbs" aria-label="breadcrumbs">'
            '<span aria-current="page">DeepEyes runs</span></nav>'
        )
    parts = [f'<a href="{escape(link(f"{section}/index.md"))}">DeepEyes runs</a>']
    for text, target in trail:
        if target is None:
            parts.append(f'<span aria-current="page">{escape(text)}</span>')
        else:
            parts.append(f'<a href="{escape(link(target))}">{escape(text)}</a>')
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
    return f'<p class="deepeyes-run-status"><span class="{css}">{escape(text)}</span>{when}</p>'


def notice(text: str, *, kind: str = "notice") -> str:
    role = ' role="alert"' if kind == "error" else ""
    return f'<div class="deepeyes-{kind}"{role}>{escape(text)}</div>'


def chart(chart_id: str, spec_url: str, *, snapshot: int | None = None, label: str = "") -> str:
    """The placeholder `viewer.js` fills: it fetches `spec_url` and embeds it with vega-embed."""
    extra = "" if snapshot is None else f' data-snapshot="{int(snapshot)}"'
    aria = f' aria-label="{escape(label)}"' if label else ""
    return (
        f'<div class="deepeyes-chart" id="{escape(chart_id)}" data-spec="{escape(spec_url)}"'
        f'{extra} role="figure"{aria}><span class="deepeyes-loading">loading chart…</span></div>'
    )


def skipped_box(run: SiteRun) -> str:
    if not run.skipped:
        return ""
    items = "".join(f"<li><code>{escape(s)}</code></li>" for s in run.skipped)
    return (
        f'<div class="deepeyes-error" role="alert">{len(run.skipped)} snapshot file(s) of '
        f"this run could not be read (partial, corrupt or newer schema) and are left out:"
        f"<ul>{items}</ul></div>"
    )


def _layer_views_summary(layer: SiteLayer, run: SiteRun) -> str:
    if not layer.views:
        return "maps being computed" if run.steps else "no snapshot yet"
    steps = sorted(layer.views)
    return f"{len(steps)} snapshot{'s' if len(steps) > 1 else ''}, last at step {steps[-1]}"


# ----------------------------------------------------------------------------- findings


def _indices(values: list) -> str:
    shown = ", ".join(str(v) for v in values[:MAX_LISTED_FILTERS])
    more = "…" if len(values) > MAX_LISTED_FILTERS else ""
    return f"{len(values)}" + (f" ({escape(shown)}{more})" if values else "")


def _finding_row(name: str, f: dict, link_to: str | None) -> str:
    t1, t2, t3 = f.get("T1") or {}, f.get("T2") or {}, f.get("T3") or {}
    t4, t5 = f.get("T4") or {}, f.get("T5")
    if t1.get("stable"):
        stable = f"stable since step {escape(str(t1.get('stable_since_step')))}"
    else:
        stable = "not yet stable"
    share = t3.get("undetected_share")
    undetected = f"{100 * share:.1f}%" if isinstance(share, int | float) else "-"
    groups = t4.get("redundant_groups") or []
    width = t4.get("suggested_width")
    n = f.get("n_filters")
    size = f"{n} → {width}" if t4.get("oversized") else f"{n} (keep)"
    if isinstance(t5, dict) and t5.get("accuracy") is not None:
        sep = f"k-NN {t5['accuracy']:.3f} (chance {t5.get('chance', 0):.3f})"
    else:
        sep = "-"
    title = escape(name)
    if link_to:
        title = f'<a href="{escape(link_to)}">{title}</a>'
    cells = [
        title,
        escape(stable),
        _indices(t2.get("dead") or []),
        _indices(t2.get("always_on") or []),
        undetected,
        str(len(groups)),
        escape(size),
        escape(sep),
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def findings_html(
    findings: Any,
    *,
    link: Link | None = None,
    run: SiteRun | None = None,
    only_layer: str | None = None,
) -> str:
    """The findings T1-T5 of a snapshot as a table, with the suggestions; JSON when unknown."""
    layers = findings.get("layers") if isinstance(findings, dict) else None
    if not isinstance(layers, dict):
        body = escape(json.dumps(findings, indent=1, sort_keys=True))
        return f'<pre class="deepeyes-findings-raw">{body}</pre>'
    pages = {layer.name: run.uri(layer.page) for layer in run.layers} if run and link else {}
    rows = [
        _finding_row(name, f, link(pages[name]) if name in pages else None)
        for name, f in layers.items()
        if isinstance(f, dict) and (only_layer is None or name == only_layer)
    ]
    heads = [
        "layer",
        "T1 stability",
        "T2 dead filters",
        "T2 always on",
        "T3 undetected",
        "T4 redundant groups",
        "T4 width",
        "T5 separability",
    ]
    out = []
    step = findings.get("step")
    if step is not None:
        out.append(f"<p>Findings at step {escape(str(step))} (thresholds below).</p>")
    suggestions = [s for s in findings.get("suggestions") or [] if isinstance(s, dict)]
    if only_layer is not None:
        suggestions = [s for s in suggestions if s.get("layer") == only_layer]
    if suggestions:
        items = "".join(
            f"<li>{escape(str(s.get('task', '')))}: {escape(str(s.get('text', '')))}</li>"
            for s in suggestions
        )
        out.append(f'<ul class="deepeyes-suggestions">{items}</ul>')
    widths = findings.get("suggested_widths") or {}
    if widths and only_layer is None:
        text = ", ".join(f"{k}: {v}" for k, v in widths.items())
        out.append(f"<p>Suggested widths: {escape(text)}.</p>")
    if rows:
        head = "".join(f"<th>{h}</th>" for h in heads)
        out.append(
            f'<div class="deepeyes-scroll"><table class="deepeyes-table">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        )
    thresholds = findings.get("thresholds")
    if isinstance(thresholds, dict):
        text = ", ".join(f"{k} = {v}" for k, v in thresholds.items())
        out.append(f"<details><summary>Thresholds</summary><p>{escape(text)}</p></details>")
    return "".join(out)


# ----------------------------------------------------------------------------- pages


def home_page(runs: list[SiteRun], *, link: Link, section: str, source: str) -> str:
    """Home: every run with its model, size, steps, last snapshot and status."""
    out = [
        f'<div class="deepeyes-page deepeyes-home">{breadcrumbs(link, section)}',
        "<h1>DeepEyes runs</h1>",
    ]
    out.append(
        '<p class="deepeyes-lead">Networks recorded by <code>DeepEyesCallback</code> while they '
        "trained. Each run has an <em>overview</em> (training curves, perplexity histograms of "
        "every layer, findings) and one <em>analysis page per layer</em> (activation heatmap, "
        "filter map, input map, patches), each with a snapshot selector. "
        f'<a href="{escape(link(f"{section}/compare.md"))}">Compare two runs</a> side by side.</p>'
    )
    if not runs:
        out.append(
            notice(
                f"No runs found in {source} yet. Train a model with "
                "DeepEyesCallback(log_dir=...) pointing there: under mkdocs serve, "
                "runs appear here as their first snapshot is written."
            )
        )
        return "".join(out) + "</div>"
    heads = [
        "run",
        "model",
        "parameters",
        "steps",
        "last snapshot",
        "snapshots",
        "status",
        "layers",
    ]
    rows = []
    for run in runs:
        layers = " · ".join(
            f'<a href="{escape(link(run.uri(layer.page)))}">{escape(layer.name)}</a>'
            for layer in run.layers
        )
        status = f"training (step {run.last_step})" if run.status == "training" else run.status
        cells = [
            f'<a href="{escape(link(run.uri("index.md")))}">{escape(run.name)}</a>',
            escape(str(run.model.get("name", "-"))),
            _number(run.model.get("parameters")),
            _number(run.manifest.get("last_step")),
            "-" if run.last_step is None else f"step {run.last_step}",
            str(len(run.steps)) + (f" ({len(run.skipped)} unreadable)" if run.skipped else ""),
            f'<span class="deepeyes-status deepeyes-status-{escape(run.status)}">'
            f"{escape(status)}</span>",
            layers,
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in heads)
    out.append(
        f'<div class="deepeyes-scroll"><table class="deepeyes-table deepeyes-runs">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
    return "".join(out) + "</div>"


def run_page(run: SiteRun, *, link: Link) -> str:
    """A run: status, training curves, perplexity histograms, findings, layers, model."""
    out = [
        '<div class="deepeyes-page deepeyes-run">',
        breadcrumbs(link, run.section, (run.name, None)),
        f"<h1>{escape(run.name)}</h1>",
        status_line(run),
        skipped_box(run),
    ]
    model = run.model
    out.append(
        f"<p>Model <strong>{escape(str(model.get('name', '-')))}</strong>, "
        f"{_number(model.get('parameters'))} parameters, "
        f"{len(run.layers)} analysed layers. Layer pages: "
        + " · ".join(
            f'<a href="{escape(link(run.uri(layer.page)))}">{escape(layer.name)}</a>'
            for layer in run.layers
        )
        + ".</p>"
    )
    computing = (
        "Its chart views are being computed; this page shows them once they are written"
        " (reload, or leave mkdocs serve running)."
    )
    out.append("<h2>Training curves</h2>")
    if run.overview:
        out.append(chart("deepeyes-overview", link(run.overview), label="training curves"))
    else:
        out.append(notice("No training curves yet. " + computing))
    out.append("<h2>Perplexity histograms</h2>")
    out.append(
        "<p>For every analysed layer: how specific its filters are on the sampled receptive "
        "fields (perplexity near 1: one filter responds; near the number of filters: all respond "
        "alike, or none does), and on the right the change since the previous snapshot "
        "(green up, red down). A layer whose change stays small for several snapshots is "
        "stable (T1). Choose the snapshot under the chart.</p>"
    )
    if run.histograms:
        out.append(
            chart("deepeyes-histograms", link(run.histograms), label="perplexity histograms")
        )
    else:
        out.append(notice("No perplexity histograms yet. " + computing))
    if run.findings is not None:
        out.append("<h2>Findings</h2>")
        out.append(findings_html(run.findings, link=link, run=run))
    out.append("<h2>Layers</h2>")
    rows = []
    for layer in run.layers:
        shape = layer.info.get("output_shape")
        cells = [
            f'<a href="{escape(link(run.uri(layer.page)))}">{escape(layer.name)}</a>',
            escape(layer.kind),
            str(layer.n_filters),
            escape(json.dumps(shape)),
            escape(_layer_views_summary(layer, run)),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append(
        '<div class="deepeyes-scroll"><table class="deepeyes-table"><thead><tr>'
        "<th>layer</th><th>kind</th><th>filters</th><th>output shape</th>"
        f"<th>linked views</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
    all_layers = model.get("layers") or []
    if all_layers:
        rows = []
        for item in all_layers:
            cells = [
                escape(str(item.get("name"))),
                escape(str(item.get("class"))),
                escape(json.dumps(item.get("output_shape"))),
                _number(item.get("parameters")),
                "yes" if item.get("analysed") else "",
            ]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        out.append(
            "<details><summary>Every layer of the model</summary>"
            '<div class="deepeyes-scroll"><table class="deepeyes-table"><thead><tr>'
            "<th>layer</th><th>class</th><th>output shape</th><th>parameters</th>"
            f"<th>analysed</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
            "</details>"
        )
    return "".join(out) + "</div>"


HOW_TO_READ = (
    '<details class="deepeyes-help"><summary>How to read this page</summary><ul>'
    "<li><strong>Activation heatmap</strong>: one cell per filter, coloured by its maximum "
    "activation so far or by how often it fires (radio buttons below the chart). A dark cell "
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


def layer_page(run: SiteRun, layer: SiteLayer, *, link: Link) -> str:
    """One layer: the linked view with a snapshot selector (each step's spec loaded by URL)."""
    out = [
        '<div class="deepeyes-page deepeyes-layer">',
        breadcrumbs(link, run.section, (run.name, run.uri("index.md")), (layer.name, None)),
        f'<h1>{escape(layer.name)} <small class="deepeyes-muted">{escape(layer.kind)}, '
        f"{layer.n_filters} filters</small></h1>",
        status_line(run),
    ]
    index = run.layers.index(layer)
    others = []
    if index > 0:
        prev = run.layers[index - 1]
        others.append(
            f'<a href="{escape(link(run.uri(prev.page)))}" rel="prev">← {escape(prev.name)}</a>'
        )
    if index + 1 < len(run.layers):
        nxt = run.layers[index + 1]
        others.append(
            f'<a href="{escape(link(run.uri(nxt.page)))}" rel="next">{escape(nxt.name)} →</a>'
        )
    others.append(f'<a href="{escape(link(run.uri("index.md")))}">run overview</a>')
    out.append(f'<p class="deepeyes-layer-nav">{" · ".join(others)}</p>')
    if layer.views:
        steps = sorted(layer.views)
        options = "".join(
            f'<option value="{escape(link(layer.views[s]))}" data-step="{s}"'
            f"{' selected' if s == steps[-1] else ''}>step {s}</option>"
            for s in steps
        )
        chart_id = "deepeyes-layer-chart"
        out.append(
            f'<p class="deepeyes-controls"><label>Snapshot <select '
            f'class="deepeyes-snapshot" data-chart="{chart_id}">{options}</select></label>'
            f' <span class="deepeyes-muted">{len(steps)} of {len(run.steps)} snapshots '
            "have linked views</span></p>"
        )
        out.append(
            chart(
                chart_id, link(layer.views[steps[-1]]), label=f"linked views of layer {layer.name}"
            )
        )
        out.append(HOW_TO_READ)
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
    if isinstance(run.findings, dict) and isinstance(run.findings.get("layers"), dict):
        if layer.name in run.findings["layers"]:
            out.append("<h2>Findings</h2>")
            out.append(findings_html(run.findings, link=link, run=run, only_layer=layer.name))
    return "".join(out) + "</div>"


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
        f'<div class="deepeyes-compare" data-runs="{_attr_json(compare_index(runs, link))}" '
        f'data-default-a="{escape(default_a)}" data-default-b="{escape(default_b)}">'
        '<p class="deepeyes-controls">'
        f'<label>Run A <select class="deepeyes-compare-a">{options}</select></label> '
        f'<label>Run B <select class="deepeyes-compare-b">{options}</select></label></p>'
        '<div class="deepeyes-compare-body"></div></div>'
    )
    return "".join(out) + "</div>"


def embed_block(
    *, chart_id: str, spec_url: str, caption: str, page_url: str | None, snapshot: int | None = None
) -> str:
    """A chart embedded in an author's page by a ``deepeyes`` fenced block."""
    text = escape(caption)
    if page_url:
        text = f'<a href="{escape(page_url)}">{text}</a>'
    body = chart(chart_id, spec_url, snapshot=snapshot, label=caption)
    return f'<figure class="deepeyes-figure">{body}<figcaption>{text}</figcaption></figure>'
