"""The input map: one circle per shown instance at its input-map embedding, brushable.

A view of the layer page (`deepeyes_keras/charts/layer.py`) drawn from the ``points`` rows, as
two layers: the points coloured by label, which carries the ``brush`` (Altair names that layer
``input_map_0`` inside the page's concat), and over them an overlay coloured by the value of
`OVERLAY_EXPR`, which the ``overlay`` radio chooses:

* "filter" (default): the selected filter's activation at each point (``filter.filter[0]`` of the
  ``filter`` selection); while no filter is selected the overlay is empty and the label colours
  show.
* "max over all filters": max_k a_k at each point (points dark everywhere: patterns no filter
  detects, T3).
* "label": no overlay.

The label legend shows while the label colours do, the activation legend while the overlay
does (the other one is transparent). Points that stand for several identical instances (rows
with ``weight``) are drawn larger, and their tooltip says how many.

Example:
    >>> chart = input_map_chart(alt.Data(name="points"), n_labels=2, n_shown=5, n_points=9,
    ...                         brush=alt.selection_interval(name="brush"))
    >>> chart.to_dict()["title"]
    'input map (5 of 9 instances; drag to brush)'
"""

from __future__ import annotations

import altair as alt

from deepeyes_keras.charts.common import COLOR_SCHEME, MAP_SIZE, label_scale, placed, scatter_xy
from deepeyes_keras.charts.layer_data import activation_expr

__all__ = ["INPUT_MAP_VIEW", "OVERLAY_EXPR", "input_map_chart"]

INPUT_MAP_VIEW = "input_map"
# The input map's overlay value: the selected filter's normalised activation, the max over all
# filters, or null (label colours). `filter.filter` is the point selection's array of values.
OVERLAY_EXPR = (
    "overlay == 'filter' && isValid(filter.filter) && length(filter.filter) > 0"
    f" ? {activation_expr('filter.filter[0]')}"
    " : (overlay == 'max over all filters' ? datum.amax / 100 : null)"
)
# Whether the overlay colours the points (then the label legend is hidden, and vice versa).
OVERLAY_ON = (
    "overlay == 'max over all filters' || (overlay == 'filter' && isValid(filter.filter)"
    " && length(filter.filter) > 0)"
)
POINT_TOOLTIP = ("image:N", "label:N", "step:Q", "point:Q")
POINT_SIZE = 22  # px^2; with weights, a point of one instance
WEIGHT_TITLE = "identical instances"


def _weight_top(max_weight: int) -> int:
    return max(int(max_weight), 2)


def _legend(title: str, shown_expr: str, **kwargs) -> alt.Legend:
    """A legend that is drawn only while `shown_expr` holds (otherwise transparent)."""
    shown = alt.ExprRef(f"({shown_expr}) ? 1 : 0")
    return alt.Legend(title=title, symbolOpacity=shown, labelOpacity=shown, titleOpacity=shown,
                      **kwargs)  # fmt: skip


def input_map_chart(
    points: alt.Data,
    *,
    n_labels: int,
    n_shown: int,
    n_points: int,
    brush: alt.Parameter,
    extent: tuple[float, float, float, float] | None = None,
    max_weight: int | None = None,
) -> alt.LayerChart:
    """The input map of `n_shown` of `n_points` instances, `brush` added to its label layer.

    `extent`: (xmin, xmax, ymin, ymax) of the points (fixed scales: the overlay layer is often
    empty). `max_weight`: the rows carry ``weight`` (identical instances collapsed into one
    point; this is the largest), drawn as point area (square-root scale from 1) and named in the
    tooltip; None: no weights. The counts, the extent's numbers and `max_weight` may be
    template slots (`deepeyes_keras/charts/common.py`).
    """
    xy = scatter_xy(extent)
    weighted = max_weight is not None
    tooltip = list(POINT_TOOLTIP) + ([alt.Tooltip("weight:Q", title=WEIGHT_TITLE)]
                                     if weighted else [])  # fmt: skip
    size = (
        {"size": alt.Size("weight:Q", title=WEIGHT_TITLE,
                          scale=alt.Scale(type="sqrt", domain=[1, placed(max_weight, _weight_top)],
                                          range=[POINT_SIZE, 40 * POINT_SIZE]),
                          legend=alt.Legend(title=WEIGHT_TITLE, symbolFillColor="#888888",
                                            symbolStrokeWidth=0, tickMinStep=1))}
        if weighted else {}
    )  # fmt: skip
    by_label = (
        alt.Chart(name=INPUT_MAP_VIEW)
        .mark_circle(size=POINT_SIZE, opacity=0.85)
        .encode(**xy, **size, tooltip=tooltip,
                color=alt.Color("label:N", scale=label_scale(n_labels),
                                legend=_legend("label", f"!({OVERLAY_ON})")))
        .add_params(brush)
    )  # fmt: skip
    by_overlay = (
        alt.Chart()  # unnamed: Altair lists every named layer in the brush's views
        .transform_calculate(ov=OVERLAY_EXPR)
        .transform_filter("isValid(datum.ov)")
        .mark_circle(size=POINT_SIZE, opacity=1.0)
        .encode(**xy, **size,
                color=alt.Color("ov:Q", scale=alt.Scale(domain=[0, 1], scheme=COLOR_SCHEME),
                                legend=_legend("activation / max", OVERLAY_ON,
                                               gradientOpacity=alt.ExprRef(
                                                   f"({OVERLAY_ON}) ? 1 : 0"))),
                tooltip=[*tooltip, alt.Tooltip("ov:Q", title="activation", format=".2f")])
    )  # fmt: skip
    return (
        alt.layer(by_label, by_overlay, data=points)
        .resolve_scale(color="independent")
        .properties(width=MAP_SIZE + 60, height=MAP_SIZE + 60,
                    title=f"input map ({n_shown} of {n_points} instances; drag to brush)")
    )  # fmt: skip
