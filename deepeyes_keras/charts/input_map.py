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

Example:
    >>> chart = input_map_chart(alt.Data(name="points"), n_labels=2, n_shown=5, n_points=9,
    ...                         brush=alt.selection_interval(name="brush"))
    >>> chart.to_dict()["title"]
    'input map (5 of 9 instances; drag to brush)'
"""

from __future__ import annotations

import altair as alt

from deepeyes_keras.charts.common import COLOR_SCHEME, MAP_SIZE, label_scale, scatter_xy

__all__ = ["INPUT_MAP_VIEW", "OVERLAY_EXPR", "input_map_chart"]

INPUT_MAP_VIEW = "input_map"
# The input map's overlay value: the selected filter's normalised activation, the max over all
# filters, or null (label colours). `filter.filter` is the point selection's array of values.
OVERLAY_EXPR = (
    "overlay == 'filter' && isValid(filter.filter) && length(filter.filter) > 0"
    " ? datum.a[filter.filter[0]] / 100"
    " : (overlay == 'max over all filters' ? datum.amax / 100 : null)"
)
POINT_TOOLTIP = ("image:N", "label:N", "step:Q", "point:Q")


def input_map_chart(
    points: alt.Data, *, n_labels: int, n_shown: int, n_points: int, brush: alt.Parameter
) -> alt.LayerChart:
    """The input map of `n_shown` of `n_points` instances, `brush` added to its label layer."""
    by_label = (
        alt.Chart(name=INPUT_MAP_VIEW)
        .mark_circle(size=22, opacity=0.85)
        .encode(**scatter_xy(), color=alt.Color("label:N", scale=label_scale(n_labels)),
                tooltip=list(POINT_TOOLTIP))
        .add_params(brush)
    )  # fmt: skip
    by_overlay = (
        alt.Chart()  # unnamed: Altair lists every named layer in the brush's views
        .transform_calculate(ov=OVERLAY_EXPR)
        .transform_filter("isValid(datum.ov)")
        .mark_circle(size=22, opacity=1.0)
        .encode(**scatter_xy(),
                color=alt.Color("ov:Q", scale=alt.Scale(domain=[0, 1], scheme=COLOR_SCHEME),
                                legend=alt.Legend(title="activation / max")),
                tooltip=[*POINT_TOOLTIP, alt.Tooltip("ov:Q", title="activation", format=".2f")])
    )  # fmt: skip
    return (
        alt.layer(by_label, by_overlay, data=points)
        .resolve_scale(color="independent")
        .properties(width=MAP_SIZE + 60, height=MAP_SIZE + 60,
                    title=f"input map ({n_shown} of {n_points} instances; drag to brush)")
    )  # fmt: skip
