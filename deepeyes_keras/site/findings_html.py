"""The findings T1-T5 of a snapshot as HTML: one table row per layer, with the suggestions.

The findings are what the findings stage (``deepeyes_keras/derive/findings.py``) writes and the
reader returns as ``snapshot.findings``; the run page shows every layer, a layer page its own
row. Findings in a shape this module does not know are shown as JSON rather than dropped.
Fine-tuning advice (``transfer`` per layer: keep or retrain, the classes its filters respond to,
T3 on patterned instances; ``deepeyes_keras/derive/transfer.py``) follows in a table of its own.

Example:
    >>> findings_html({"step": 12, "layers": {}})
    '<p>Findings at step 12 (thresholds below).</p>'
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from deepeyes_keras.site.markup import Link, anchor, table
from deepeyes_keras.site.runs import SiteRun

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
