"""The findings T1-T5 of a snapshot as HTML: one table row per layer, with the suggestions.

The findings are what the findings stage (``deepeyes_keras/derive/findings.py``) writes and the
reader returns as ``snapshot.findings``; the run page shows every layer, a layer page its own
row. Findings in a shape this module does not know are shown as JSON rather than dropped.
Fine-tuning advice (``transfer`` per layer: keep or retrain, the classes its filters respond to,
T3 on patterned instances; ``deepeyes_keras/derive/transfer.py``) follows in a table of its own.

Every snapshot has its own findings, and a layer page shows those of the snapshot its views show:
the page holds the findings of the snapshot it opens at (:func:`findings_block`), and each other
snapshot's are a small HTML file of the site (:func:`findings_files`, at
:func:`findings_uri`) that ``viewer.js`` fetches when that snapshot is chosen. A snapshot without
findings for the layer (not computed yet) stands in with the nearest one that has them
(:func:`findings_source`), and the page says so.

Example:
    >>> findings_html({"step": 12, "layers": {}})
    '<p>Findings at step 12 (thresholds below).</p>'
    >>> findings_source([6, 12], 9), findings_source([6, 12], 3)
    (6, 6)
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from deepeyes_keras.run.layout import RunLayout, snapshot_stem
from deepeyes_keras.site.markup import Link, anchor, table
from deepeyes_keras.site.runs import SiteLayer, SiteRun

MAX_LISTED_FILTERS = 12  # filter indices listed in a findings cell before "..."

HEADS = (
    "layer",
    "T1 stability",
    "T2 dead filters",
    "T2 always on",
    "T3 undetected",
    "T4 redundant groups",
    "T4 width",
    "T5 separability",
)


def indices(values: list) -> str:
    """How many filters, and the first of their indices: ``"2 (1, 3)"``."""
    shown = ", ".join(str(v) for v in values[:MAX_LISTED_FILTERS])
    more = "…" if len(values) > MAX_LISTED_FILTERS else ""
    return f"{len(values)}" + (f" ({escape(shown)}{more})" if values else "")


def separability_text(t5) -> str:
    """T5 in one cell: linear probe and k-NN accuracy (k-NN only in schema-1 findings)."""
    if not isinstance(t5, dict) or t5.get("accuracy") is None:
        return "-"
    chance = t5.get("chance") or 0.0
    if "linear" not in t5:  # findings written before the linear probe existed
        return f"k-NN {t5['accuracy']:.3f} (chance {chance:.3f})"
    text = f"linear {t5['linear']:.3f}, k-NN {t5.get('knn') or 0:.3f} (chance {chance:.3f})"
    if isinstance(t5.get("gain"), int | float):
        text += f", gain {t5['gain']:+.3f}"
    return text


def finding_cells(name: str, f: dict, link_to: str | None) -> list[str]:
    """The cells of one layer's row (HTML), linked to its page when ``link_to`` is given."""
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
    if isinstance(t4.get("signal_rank"), int):
        size += f"; rank {t4['signal_rank']}"
    sep = separability_text(t5)
    return [
        anchor(link_to, name) if link_to else escape(name),
        escape(stable),
        indices(t2.get("dead") or []),
        indices(t2.get("always_on") or []),
        undetected,
        str(len(groups)),
        escape(size),
        escape(sep),
    ]


def suggestions_html(findings: dict, only_layer: str | None) -> str:
    """The suggestions (of one layer, or all) and the suggested widths (all layers only)."""
    out = []
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
    return "".join(out)


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
        finding_cells(name, f, link(pages[name]) if name in pages else None)
        for name, f in layers.items()
        if isinstance(f, dict) and (only_layer is None or name == only_layer)
    ]
    out = []
    step = findings.get("step")
    if step is not None:
        out.append(f"<p>Findings at step {escape(str(step))} (thresholds below).</p>")
    out.append(suggestions_html(findings, only_layer))
    if rows:
        out.append(table(HEADS, rows))
    out.append(transfer_html(layers, only_layer))
    thresholds = findings.get("thresholds")
    if isinstance(thresholds, dict):
        text = ", ".join(f"{k} = {v}" for k, v in thresholds.items())
        out.append(f"<details><summary>Thresholds</summary><p>{escape(text)}</p></details>")
    return "".join(out)


TRANSFER_HEADS = (
    "layer",
    "fine-tuning",
    "live filters",
    "T3 on patterns",
    "filters responding per class",
    "weakly covered classes",
    "unselective filters",
)


def class_counts(values: list) -> str:
    """Responding filters per class, ``"c: n"``; a class without instances shows ``-``."""
    return ", ".join(f"{c}: {'-' if v is None else v}" for c, v in enumerate(values))


def transfer_cells(name: str, tr: dict, n_filters) -> list[str]:
    """The cells of one layer's fine-tuning row (HTML)."""
    classes = tr.get("classes") or {}
    missed = tr.get("undetected_patterns") or {}
    share = missed.get("share")
    verdict = str(tr.get("verdict", "-"))
    if tr.get("reasons"):
        verdict += ": " + "; ".join(str(r) for r in tr["reasons"])
    live = classes.get("live_filters")
    return [
        escape(name),
        escape(verdict),
        escape(f"{live} of {n_filters}" if live is not None else "-"),
        f"{100 * share:.1f}%" if isinstance(share, int | float) else "-",
        escape(class_counts(classes.get("filters_per_class") or [])),
        escape(", ".join(str(c) for c in classes.get("weak_classes") or []) or "none"),
        indices(classes.get("unselective") or []),
    ]


def transfer_html(layers: dict, only_layer: str | None) -> str:
    """Fine-tuning advice per layer, and (all layers) which to freeze: those before the first
    layer whose verdict is not "keep" (the rule of ``transfer.fine_tuning_plan``)."""
    found = {
        n: f["transfer"]
        for n, f in layers.items()
        if isinstance(f, dict) and isinstance(f.get("transfer"), dict)
    }
    if not found:
        return ""
    rows = [
        transfer_cells(n, tr, layers[n].get("n_filters"))
        for n, tr in found.items()
        if only_layer is None or n == only_layer
    ]
    if not rows:
        return ""
    out = ['<p class="deepeyes-transfer">Fine-tuning: do the filters stay useful on this data?</p>']
    out.append(table(TRANSFER_HEADS, rows))
    if only_layer is None:
        names = list(found)
        keep = next((i for i, n in enumerate(names) if found[n].get("verdict") != "keep"), None)
        frozen = names if keep is None else names[:keep]
        rest = [] if keep is None else names[keep:]
        out.append(
            f"<p>Plan: freeze {escape(', '.join(frozen) or 'nothing')}; retrain "
            f"{escape(', '.join(rest) or 'nothing')}.</p>"
        )
    return "".join(out)


# ----------------------------------------------------------------------------- per snapshot


def has_layer_findings(findings: Any, layer: str) -> bool:
    """True if ``findings`` (one snapshot's) hold a row for ``layer``."""
    layers = findings.get("layers") if isinstance(findings, dict) else None
    return isinstance(layers, dict) and isinstance(layers.get(layer), dict)


def layer_findings(findings: Any, layer: str) -> str | None:
    """HTML of one layer's findings at one snapshot; None if that snapshot has none for it."""
    if not has_layer_findings(findings, layer):
        return None
    # No link on the layer's name: the block is shown on that layer's own page.
    return findings_html(findings, only_layer=layer)


def findings_steps(run: SiteRun, layer: SiteLayer) -> list[int]:
    """The steps whose findings cover ``layer``, among those with its linked views (or all the
    run's, while its views are being computed)."""
    found = run.step_findings
    steps = sorted(layer.views) or run.steps
    return [s for s in steps if has_layer_findings(found.get(s), layer.name)]


def findings_source(with_findings: list[int], step: int) -> int | None:
    """The step whose findings a layer page shows with snapshot ``step``: ``step`` itself when
    it has findings, else the latest earlier one that has, else the earliest (None: no step has).
    """
    if not with_findings:
        return None
    earlier = [s for s in with_findings if s <= step]
    return earlier[-1] if earlier else with_findings[0]


def findings_uri(run: SiteRun, layer: SiteLayer, step: int) -> str:
    """Site path of the HTML of ``layer``'s findings at ``step``, beside that step's views:
    ``deepeyes/<run>/views/step-00000012/L0.findings.html``."""
    layout = RunLayout(run.path)  # beside the views, as the run directory names their place
    return run.uri(
        layout.relative(layout.views_dir / snapshot_stem(step) / f"{layer.key}.findings.html")
    )


def findings_files(run: SiteRun) -> dict[str, str]:
    """Site path -> HTML of every layer's findings at every snapshot with views and findings."""
    out = {}
    for layer in run.layers:
        for step in findings_steps(run, layer):
            out[findings_uri(run, layer, step)] = layer_findings(
                run.step_findings[step], layer.name
            )
    return out


def findings_note(step: int, source: int) -> str:
    """The note over the findings of a snapshot that has none (the same words as viewer.js)."""
    return f"No findings were computed for step {step}; these describe step {source}."


def findings_block(run: SiteRun, layer: SiteLayer, step: int, *, chart_id: str) -> str:
    """The findings box of a layer page opened at ``step`` (empty if no snapshot has findings
    for the layer): the block of the step that stands in for it, marked with that step, tied to
    the snapshot selector of chart ``chart_id``."""
    source = findings_source(findings_steps(run, layer), step)
    if source is None:
        return ""
    note = (
        f'<div class="deepeyes-notice deepeyes-findings-step">{escape(findings_note(step, source))}'
        "</div>"
        if source != step
        else ""
    )
    body = layer_findings(run.step_findings[source], layer.name)
    return (
        f'<div class="deepeyes-findings-box" data-chart="{escape(chart_id)}" '
        f'aria-live="polite">{note}<div class="deepeyes-findings" data-step="{source}">{body}</div>'
        "</div>"
    )


def findings_attrs(run: SiteRun, layer: SiteLayer, link: Link, step: int) -> str:
    """The attributes of a snapshot option that say whose findings go with it: the step and
    the URL of its findings (:func:`findings_files`)."""
    source = findings_source(findings_steps(run, layer), step)
    if source is None:
        return ""
    url = escape(link(findings_uri(run, layer, source)))
    return f' data-findings-step="{source}" data-findings="{url}"'


def run_findings_step(run: SiteRun, step: int) -> str:
    """Which snapshot the run page's findings describe (the last one that has findings)."""
    if step == run.last_step:
        text = f"These findings describe the last snapshot, step {step}."
    else:
        text = (
            f"These findings describe step {step}, the last snapshot with findings (those of "
            f"step {run.last_step} are not computed yet)."
        )
    text += " Each layer page shows the findings of the snapshot its views show."
    return f'<p class="deepeyes-findings-of">{escape(text)}</p>'
