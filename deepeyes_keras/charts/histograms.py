"""The perplexity histograms: per layer, the histogram at a snapshot and its change since the last.

One row per layer, all rows driven by one ``snapshot`` param (a select box of steps). Written by
the views stage as ``views/histograms.vl.json`` (see `deepeyes_keras/derive/views.py`). The
number of bins is the run directory's (`deepeyes_keras.run.layout.N_BINS`).

Example:
    >>> snaps = [{"step": 5, "layers": {"c1": {"histogram": [1] * 30, "change": [0] * 30}}}]
    >>> spec = histograms_spec([{"name": "c1", "n_filters": 8}], snaps)
    >>> [v["hconcat"][0]["name"] for v in spec["vconcat"]]
    ['histogram_0']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import numpy as np

from deepeyes_keras.charts.common import (
    DECREASE_COLOR,
    INCREASE_COLOR,
    clean_list,
    clean_number,
    finish,
)
from deepeyes_keras.run.layout import N_BINS

__all__ = ["histograms_spec", "default_step", "interval_labels"]


def histograms_spec(
    layers: Sequence[Mapping[str, Any]],
    snapshots: Sequence[Mapping[str, Any]],
    *,
    width: int = 420,
    height: int = 110,
) -> dict:
    """Perplexity histograms and their change, one row per layer, chosen snapshot by a param.

    Row i shows, for layer i at the step chosen by the ``snapshot`` param (a select box over the
    recorded steps, opening at the last full one: `default_step`): left, the 30-bin perplexity
    histogram (bars from bin edge ``lo`` to ``hi`` over [1, F]); right, the change since the
    previous snapshot (increases above the axis in green, decreases below in red). Each layer's
    y scale is its own and fixed over all snapshots (so bars can be compared across steps); the
    change scale is symmetric.

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
        name = str(layer["name"])
        layer_rows = _layer_rows(name, int(layer["n_filters"]), snapshots)
        rows.extend(layer_rows)
        top = max([0.0] + [r["share"] or 0 for r in layer_rows])
        swing = max([0.0] + [abs(r["change"] or 0) for r in layer_rows])
        extent[name] = (top or 1.0, swing or 1.0)

    snapshot = alt.param(
        name="snapshot",
        value=default_step(steps),
        bind=alt.binding_select(
            options=steps, labels=interval_labels(steps, rows), name="snapshot step "
        ),
    )
    base = alt.Chart(alt.Data(name="histograms"))
    panel_rows = [
        _layer_panels(base, i, layer, extent[str(layer["name"])], snapshot, width, height)
        for i, layer in enumerate(layers)
    ]
    # One colour scale (increase / decrease) with one legend, on the first row: the legends
    # are resolved per view, or Vega-Lite warns of conflicting legend properties.
    chart = (
        alt.vconcat(*panel_rows, params=[snapshot.param])
        .resolve_scale(y="independent")
        .resolve_legend(color="independent")
    )
    return finish(chart, {"histograms": rows})


TAIL_FRACTION = 0.5  # a last interval shorter than this share of the one before is a tail


def default_step(steps: list[int]) -> int:
    """The snapshot shown first: the last one, unless its interval is a short tail.

    A run that stops just after a snapshot (2001 after 2000) ends with an interval of a step
    or two; the view opens at the last full snapshot instead (the tail stays selectable, its
    label says how short it is). The layer pages use the same rule
    (``deepeyes_keras/site/pages.py``, which may not import Altair).

    Example:
        >>> default_step([1000, 2000, 2001]), default_step([100, 200, 300])
        (2000, 300)
    """
    if len(steps) < 2:
        return steps[-1]
    before = steps[-2] - (steps[-3] if len(steps) > 2 else 0)
    return steps[-2] if steps[-1] - steps[-2] < TAIL_FRACTION * before else steps[-1]


def interval_labels(steps: list[int], rows: list[dict]) -> list[str]:
    """Select-box labels that say how much each snapshot's interval holds ("300 (100 steps,
    1,600 instances)"), so a short last interval is seen for what it is."""
    instances: dict[int, float] = {}
    for r in rows:
        instances[r["step"]] = max(instances.get(r["step"], 0.0), r["instances"] or 0.0)
    labels, before = [], 0
    for step in steps:
        n = step - before
        labels.append(
            f"{step} ({n} step{'s' if n != 1 else ''}, {instances.get(step, 0):,.0f} instances)"
        )
        before = step
    return labels


def _layer_rows(name: str, n_filters: int, snapshots: Sequence[Mapping[str, Any]]) -> list[dict]:
    """One row per (snapshot, bin) of one layer: bin edges, share, change and its direction.

    ``share`` is the bin's share of the interval's instances, and ``change`` the difference from
    the previous snapshot's shares: intervals of different lengths (the last one of a run may
    cover a single step) are compared as distributions, not as raw counts, which would read as a
    collapse. ``count`` (instances in the bin) and ``instances`` (in the interval) stay beside.
    """
    if n_filters < 1:
        raise ValueError(
            f"Invalid n_filters for layer {name!r}. Received: {n_filters}. Expected >= 1."
        )
    edges = np.linspace(1.0, float(n_filters), N_BINS + 1)
    rows = []
    previous = np.zeros(N_BINS)
    for snap in sorted(snapshots, key=lambda s: int(s["step"])):
        rec = snap.get("layers", {}).get(name)
        if rec is None:
            continue
        hist = clean_list(rec["histogram"])
        if len(hist) != N_BINS:
            raise ValueError(
                f"Invalid histogram for layer {name!r} at step {snap['step']}. Received "
                f"{len(hist)} bins. Expected {N_BINS}."
            )
        counts = np.array([h or 0.0 for h in hist], dtype=np.float64)
        total = float(counts.sum())
        share = counts / total if total > 0 else np.zeros(N_BINS)
        change = share - previous
        previous = share
        for b in range(N_BINS):
            rows.append(
                {
                    "layer": name,
                    "step": int(snap["step"]),
                    "lo": clean_number(edges[b]),
                    "hi": clean_number(edges[b + 1]),
                    "count": hist[b],
                    "instances": clean_number(total),
                    "share": clean_number(share[b]),
                    "change": clean_number(change[b]),
                    "direction": "increase" if change[b] >= 0 else "decrease",
                }
            )
    return rows


def _layer_panels(
    base: alt.Chart,
    i: int,
    layer: Mapping[str, Any],
    extent: tuple[float, float],
    snapshot: alt.Parameter,
    width: int,
    height: int,
) -> alt.HConcatChart:
    """Row i: layer i's histogram (``histogram_<i>``) beside its change (``change_<i>``)."""
    name = str(layer["name"])
    top, swing = extent
    # bin="binned": bars span lo..hi and rise from zero (a plain x/x2 bar would lie horizontal).
    x = alt.X("lo:Q", bin="binned", title="perplexity").scale(
        domain=[1, max(int(layer["n_filters"]), 2)], nice=False
    )
    bin_tooltip = [
        alt.Tooltip("lo:Q", title="from", format=".3~g"),
        alt.Tooltip("hi:Q", title="to", format=".3~g"),
    ]
    current = base.transform_filter(
        (alt.datum.layer == name) & (alt.datum.step == snapshot)
    ).properties(width=width, height=height)
    hist = current.mark_bar(color="#4c78a8").encode(
        x=x,
        x2="hi:Q",
        y=alt.Y(
            "share:Q",
            title=f"{name}: share",
            axis=alt.Axis(format="%"),
            scale=alt.Scale(domain=[0, top]),
        ),
        tooltip=[
            *bin_tooltip,
            alt.Tooltip("share:Q", format=".1%"),
            alt.Tooltip("count:Q", title="instances in bin", format=".4~g"),
            alt.Tooltip("instances:Q", title="instances in interval", format=".4~g"),
        ],
    )
    change = current.mark_bar().encode(
        x=x,
        x2="hi:Q",
        y=alt.Y(
            "change:Q",
            title="change of share",
            axis=alt.Axis(format="+%"),
            scale=alt.Scale(domain=[-swing, swing]),
        ),
        color=alt.Color(
            "direction:N",
            scale=alt.Scale(
                domain=["increase", "decrease"], range=[INCREASE_COLOR, DECREASE_COLOR]
            ),
            legend=alt.Legend(title="change") if i == 0 else None,
        ),
        tooltip=[*bin_tooltip, alt.Tooltip("change:Q", title="change of share", format="+.1%")],
    )
    return alt.hconcat(
        hist.properties(
            name=f"histogram_{i}", title=f"{name}: perplexity histogram (share of the interval)"
        ),
        change.properties(name=f"change_{i}", title=f"{name}: change of share since previous"),
    )
