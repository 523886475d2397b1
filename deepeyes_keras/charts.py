"""Vega-Lite v6 specs of the DeepEyes views, built with Altair 6 from plain arrays and records.

Every builder returns a plain, JSON-ready dict: numbers rounded to 4 significant digits, non-finite
values replaced by None (JSON null), every param explicitly named, and no global Altair state
touched (no data transformer, no theme: configuration is inline). `spec_json` writes the sorted-key
strict JSON that makes files reproducible; `render` draws a spec to PNG or SVG without a browser.

The builders:

* `overview_spec`: loss / accuracy (any metric) over steps, one panel per metric.
* `histograms_spec`: per layer, the perplexity histogram and its change since the previous
  snapshot, one row per layer, all rows driven by one `snapshot` param (a select box of steps).
* `layer_spec` (in `deepeyes_keras.layer_chart`, re-exported here): the four linked views of one
  layer (activation heatmap, filter map, input map, patch view) as one top-level spec.

Example:
    >>> spec = overview_spec({"step": [1, 2, 3], "loss": [2.3, 1.1, None]})
    >>> sorted(v["name"] for v in spec["vconcat"])
    ['metric_loss']
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import numpy as np

__all__ = [
    "overview_spec",
    "histograms_spec",
    "layer_spec",  # noqa: F822 (lazy, see __getattr__)
    "render",
    "spec_json",
    "clean_number",
    "LABEL_PALETTE",
    "NONE_COLOR",
    "INCREASE_COLOR",
    "DECREASE_COLOR",
]

SIGNIFICANT_DIGITS = 4
# Tableau 20, reordered so the first ten are Tableau 10: labels 0..d-1 take colours in order
# (cycling beyond 20 labels); "none" (a filter that never fired) is always grey.
LABEL_PALETTE = (
    "#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b",
    "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac",
    "#9ecae9", "#ffbf79", "#ff9d98", "#88d27a", "#83bcb6",
    "#f2cf5b", "#d6a5c9", "#fcbfd2", "#d8b5a5", "#79706e",
)  # fmt: skip
NONE_COLOR = "#d0d0d0"
INCREASE_COLOR = "#2ca02c"
DECREASE_COLOR = "#d62728"
N_HISTOGRAM_BINS = 30


# ----------------------------------------------------------------------------- shared helpers


def clean_number(x: Any, digits: int = SIGNIFICANT_DIGITS) -> float | int | None:
    """`x` rounded to `digits` significant digits; None for None, NaN and infinities.

    Integers (and floats that are whole numbers below 1e15) come back as int, so JSON stays short.

    Example:
        >>> clean_number(3.14159), clean_number(float("nan")), clean_number(2.0)
        (3.142, None, 2)
    """
    if x is None:
        return None
    if isinstance(x, (bool, np.bool_)):
        return int(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    if not math.isfinite(x):
        return None
    if x == 0.0:
        return 0
    r = round(x, digits - 1 - math.floor(math.log10(abs(x))))
    return int(r) if r.is_integer() and abs(r) < 1e15 else r


def clean_list(values: Any, digits: int = SIGNIFICANT_DIGITS) -> list[float | int | None]:
    """`clean_number` over a flat sequence (list, tuple or array)."""
    return [clean_number(v, digits) for v in np.asarray(values, dtype=object).ravel()]


def _strip_non_finite(obj: Any) -> Any:
    """Replace NaN/inf floats anywhere in a JSON-like structure by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strip_non_finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strip_non_finite(v) for v in obj]
    return obj


def spec_json(spec: Mapping[str, Any], *, indent: int | None = None) -> str:
    """Strict, deterministic JSON of a spec: sorted keys, non-finite numbers written as null.

    Example:
        >>> spec_json({"b": float("nan"), "a": 1})
        '{"a": 1, "b": null}'
    """
    return json.dumps(_strip_non_finite(spec), sort_keys=True, allow_nan=False, indent=indent)


def label_scale(n_labels: int, *, with_none: bool = True) -> alt.Scale:
    """The categorical scale shared by the filter map and the input map: "0".."d-1", "none"."""
    domain = [str(i) for i in range(n_labels)]
    colors = [LABEL_PALETTE[i % len(LABEL_PALETTE)] for i in range(n_labels)]
    if with_none:
        domain.append("none")
        colors.append(NONE_COLOR)
    return alt.Scale(domain=domain, range=colors)


def label_name(label: Any) -> str:
    """The string a label is shown as: its integer, or "none" for negative, NaN or None."""
    if label is None or not math.isfinite(float(label)):
        return "none"
    value = int(label)
    return "none" if value < 0 else str(value)


def finish(chart: alt.TopLevelMixin, datasets: Mapping[str, list] | None = None) -> dict:
    """`chart.to_dict()` with the (large) named datasets attached afterwards.

    Altair validates the spec against the Vega-Lite schema in `to_dict`; data rows are free-form
    JSON in that schema, so validating thousands of rows only costs time. The chart refers to
    them by name (`alt.Data(name=...)`) and they are put under the top-level `datasets` here.
    """
    spec = chart.to_dict()
    if datasets:
        spec["datasets"] = {name: rows for name, rows in datasets.items()}
    return _strip_non_finite(spec)


# ----------------------------------------------------------------------------- overview


def overview_spec(metrics: Mapping[str, Sequence], *, width: int = 560, height: int = 140) -> dict:
    """Training metrics over steps, one panel per metric.

    Args:
        metrics: ``{"step": [...], "loss": [...], "accuracy": [...], ...}``; every list as long as
            "step"; None (or NaN) marks a step where the metric is unknown. Panels follow the
            key order of `metrics`.
        width, height: size of one panel in pixels.

    Returns:
        A Vega-Lite spec dict (a vconcat; each panel named ``metric_<name>``). With no metric
        besides "step" the spec holds a single text panel saying so.

    Example:
        >>> spec = overview_spec({"step": [10, 20], "loss": [1.5, 0.9], "accuracy": [0.5, 0.7]})
        >>> [v["name"] for v in spec["vconcat"]]
        ['metric_loss', 'metric_accuracy']
    """
    if "step" not in metrics:
        raise ValueError(
            f"Invalid metrics: no 'step' list. Received keys: {sorted(metrics)}. Expected "
            "{'step': [...], 'loss': [...], ...}."
        )
    steps = clean_list(metrics["step"])
    names = [k for k in metrics if k != "step"]
    bad = {k: len(metrics[k]) for k in names if len(metrics[k]) != len(steps)}
    if bad:
        raise ValueError(
            f"Invalid metrics: every list must be as long as 'step' ({len(steps)}). "
            f"Received lengths: {bad}."
        )
    rows = []
    for name in names:
        for step, value in zip(steps, clean_list(metrics[name]), strict=True):
            if step is not None and value is not None:
                rows.append({"metric": name, "step": step, "value": value})
    base = alt.Chart(alt.Data(name="metrics"))
    panels = []
    for name in names:
        line = base.mark_line(point=True).encode(
            x=alt.X("step:Q", title="step", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("value:Q", title=name, scale=alt.Scale(zero=False)),
            tooltip=[alt.Tooltip("step:Q"), alt.Tooltip("value:Q", title=name, format=".4~g")],
        )
        panels.append(
            line.transform_filter(alt.datum.metric == name).properties(
                name=f"metric_{name}", width=width, height=height, title=name
            )
        )
    if not panels:
        panels.append(
            alt.Chart(alt.Data(values=[{"text": "no metrics recorded yet"}]), name="metric_none")
            .mark_text(size=14)
            .encode(text="text:N")
            .properties(width=width, height=40)
        )
    return finish(alt.vconcat(*panels), {"metrics": rows} if names else None)


# ----------------------------------------------------------------------------- histograms


def histograms_spec(
    layers: Sequence[Mapping[str, Any]],
    snapshots: Sequence[Mapping[str, Any]],
    *,
    width: int = 420,
    height: int = 110,
) -> dict:
    """Perplexity histograms and their change, one row per layer, chosen snapshot by a param.

    Row i shows, for layer i at the step chosen by the ``snapshot`` param (a select box over the
    recorded steps, the last one first): left, the 30-bin perplexity histogram (bars from bin edge
    ``lo`` to ``hi`` over [1, F]); right, the change since the previous snapshot (increases above
    the axis in green, decreases below in red). Each layer's y scale is its own and fixed over
    all snapshots (so bars can be compared across steps); the change scale is symmetric.

    Args:
        layers: ``[{"name": str, "n_filters": int}, ...]`` (row order).
        snapshots: ``[{"step": int, "layers": {name: {"histogram": [30], "change": [30]}}}]``;
            a layer missing from a snapshot has no bars at that step.
        width, height: size of one histogram panel in pixels.

    Example:
        >>> snaps = [{"step": 5, "layers": {"c1": {"histogram": [1] * 30, "change": [0] * 30}}}]
        >>> spec = histograms_spec([{"name": "c1", "n_filters": 8}], snaps)
        >>> [p["name"] for p in spec["params"]]
        ['snapshot']
    """
    if not layers:
        raise ValueError("Invalid value for argument layers. Received: []. Expected at least one.")
    if not snapshots:
        raise ValueError("Invalid snapshots. Received: []. Expected at least one snapshot.")
    steps = sorted({int(s["step"]) for s in snapshots})
    rows: list[dict] = []
    extent: dict[str, tuple[float, float]] = {}
    for layer in layers:
        name, n_filters = str(layer["name"]), int(layer["n_filters"])
        if n_filters < 1:
            raise ValueError(
                f"Invalid n_filters for layer {name!r}. Received: {n_filters}. Expected >= 1."
            )
        edges = np.linspace(1.0, float(n_filters), N_HISTOGRAM_BINS + 1)
        top, swing = 0.0, 0.0
        for snap in snapshots:
            rec = snap.get("layers", {}).get(name)
            if rec is None:
                continue
            hist = clean_list(rec["histogram"])
            change = clean_list(rec.get("change") or [0] * len(hist))
            if len(hist) != N_HISTOGRAM_BINS or len(change) != N_HISTOGRAM_BINS:
                raise ValueError(
                    f"Invalid histogram for layer {name!r} at step {snap['step']}. Received "
                    f"{len(hist)} bins and {len(change)} change bins. Expected "
                    f"{N_HISTOGRAM_BINS} of each."
                )
            for b in range(N_HISTOGRAM_BINS):
                count, diff = hist[b], change[b]
                top = max(top, count or 0)
                swing = max(swing, abs(diff or 0))
                rows.append(
                    {
                        "layer": name,
                        "step": int(snap["step"]),
                        "lo": clean_number(edges[b]),
                        "hi": clean_number(edges[b + 1]),
                        "count": count,
                        "change": diff,
                        "direction": "increase" if (diff or 0) >= 0 else "decrease",
                    }
                )
        extent[name] = (top or 1.0, swing or 1.0)

    snapshot = alt.param(
        name="snapshot",
        value=steps[-1],
        bind=alt.binding_select(options=steps, name="snapshot step "),
    )
    base = alt.Chart(alt.Data(name="histograms"))
    # bin="binned": bars span lo..hi and rise from zero (a plain x/x2 bar would lie horizontal).
    bar_x = alt.X("lo:Q", bin="binned", title="perplexity")
    tooltip = [
        alt.Tooltip("lo:Q", title="from", format=".3~g"),
        alt.Tooltip("hi:Q", title="to", format=".3~g"),
    ]
    panel_rows = []
    for i, layer in enumerate(layers):
        name = str(layer["name"])
        top, swing = extent[name]
        x = bar_x.scale(domain=[1, max(int(layer["n_filters"]), 2)], nice=False)
        current = base.transform_filter(
            (alt.datum.layer == name) & (alt.datum.step == snapshot)
        ).properties(width=width, height=height)
        hist = current.mark_bar(color="#4c78a8").encode(
            x=x,
            x2="hi:Q",
            y=alt.Y("count:Q", title=f"{name}: instances", scale=alt.Scale(domain=[0, top])),
            tooltip=[*tooltip, alt.Tooltip("count:Q", format=".4~g")],
        )
        change = current.mark_bar().encode(
            x=x,
            x2="hi:Q",
            y=alt.Y("change:Q", title="change", scale=alt.Scale(domain=[-swing, swing])),
            color=alt.Color(
                "direction:N",
                scale=alt.Scale(
                    domain=["increase", "decrease"], range=[INCREASE_COLOR, DECREASE_COLOR]
                ),
                legend=alt.Legend(title="change") if i == 0 else None,
            ),
            tooltip=[*tooltip, alt.Tooltip("change:Q", format="+.4~g")],
        )
        panel_rows.append(
            alt.hconcat(
                hist.properties(name=f"histogram_{i}", title=f"{name}: perplexity histogram"),
                change.properties(name=f"change_{i}", title=f"{name}: change since previous"),
            )
        )
    chart = alt.vconcat(*panel_rows, params=[snapshot.param]).resolve_scale(y="independent")
    return finish(chart, {"histograms": rows})


# ----------------------------------------------------------------------------- rendering


def _vl_version(spec: Mapping[str, Any]) -> str | None:
    """The vl-convert version string ("6.4") matching a spec's $schema, or None (its default)."""
    import vl_convert

    schema = str(spec.get("$schema", ""))
    marker = "/vega-lite/v"
    if marker not in schema:
        return None
    parts = schema.split(marker, 1)[1].split(".json", 1)[0].split(".")
    try:
        wanted = (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)
    except ValueError:
        return None
    known = []
    for v in vl_convert.get_vegalite_versions():
        major, minor = (int(p) for p in v.split(".")[:2])
        if major == wanted[0]:
            known.append(((major, minor), v))
    if not known:
        return None
    not_newer = [k for k in known if k[0] <= wanted]
    return max(not_newer or known)[1]


def render(spec: Mapping[str, Any], fmt: str = "png", *, scale: float = 1.0) -> bytes:
    """Draw a Vega-Lite spec without a browser (vl-convert), as PNG or SVG bytes.

    The Vega-Lite version is taken from the spec's ``$schema`` (Altair 6 writes v6.x): the
    newest version vl-convert bundles that is not newer than the schema's, within its major.

    Args:
        spec: a Vega-Lite spec dict.
        fmt: "png" or "svg".
        scale: PNG pixel scale (ignored for SVG).

    Example:
        >>> render(overview_spec({"step": [1], "loss": [1.0]}), "svg")[:4]
        b'<svg'
    """
    import vl_convert

    if fmt not in ("png", "svg"):
        raise ValueError(
            f"Invalid value for argument fmt. Received: fmt={fmt!r}. Expected 'png' or 'svg'."
        )
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(
            f"Invalid value for argument scale. Received: scale={scale!r}. Expected a number > 0."
        )
    clean = json.loads(spec_json(spec))
    version = _vl_version(clean)
    if fmt == "svg":
        return vl_convert.vegalite_to_svg(clean, vl_version=version).encode("utf-8")
    return vl_convert.vegalite_to_png(clean, vl_version=version, scale=float(scale))


def __getattr__(name: str):
    # layer_spec lives in its own module (it is long); re-exported lazily to avoid an import cycle.
    if name == "layer_spec":
        from deepeyes_keras.layer_chart import layer_spec

        return layer_spec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
