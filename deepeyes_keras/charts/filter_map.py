"""The filter map: one circle per filter at its filter-map embedding, coloured by driving label.

A view of the layer page (`deepeyes_keras/charts/layer.py`), named ``filter_map``, drawn from
the ``filters`` rows: circle area grows with the filter's strength (six-fold from strength 0 to
1; smaller circles for wide layers), colour is the label that drives the filter ("none": never
fired); layers of up to `LABELS_UP_TO` filters show each filter's index beside its circle. A
click selects the filter (the ``filter`` selection), which is ringed here and outlined in the
heatmap.

Example:
    >>> picked = alt.when(alt.selection_point(name="filter"), empty=False)
    >>> chart = filter_map_chart(alt.Data(name="filters"), n_filters=8, n_labels=2, picked=picked)
    >>> chart.to_dict()["layer"][0]["encoding"]["color"]["scale"]["domain"]
    ['0', '1', 'none']
"""

from __future__ import annotations

import altair as alt

from deepeyes_keras.charts.common import MAP_SIZE, SELECTED_COLOR, label_scale, scatter_xy

__all__ = ["FILTER_MAP_VIEW", "LABELS_UP_TO", "circle_area", "filter_map_chart"]

FILTER_MAP_VIEW = "filter_map"
LABELS_UP_TO = 64  # filters: smaller layers print each filter's index beside its circle
STRENGTH_STEPS = [0.25, 0.5, 0.75, 1.0]  # the size legend's entries


def circle_area(n_filters: int) -> tuple[float, float]:
    """(smallest, largest) circle area in px^2: large for small layers, shrinking for wide ones.

    The smallest is a sixth of the largest, so the size legend's steps differ at a glance.

    Example:
        >>> circle_area(20), circle_area(4096)
        ((100.0, 600.0), (5.0, 30.0))
    """
    big = min(600.0, max(30.0, 16_000.0 / n_filters))
    return big / 6, big


def filter_map_chart(
    filters: alt.Data, *, n_filters: int, n_labels: int, picked: alt.When
) -> alt.LayerChart:
    """The filter map of `n_filters` filters and `n_labels` labels; `picked` rings a circle.

    Layers: the circles (the unit named ``filter_map``) and, for layers of at most
    `LABELS_UP_TO` filters, each filter's index beside its circle.
    """
    small, big = circle_area(n_filters)
    circles = (
        alt.Chart(name=FILTER_MAP_VIEW)
        .mark_circle(cursor="pointer", stroke=SELECTED_COLOR)
        .encode(
            **scatter_xy(),
            color=alt.Color("label:N", scale=label_scale(n_labels),
                            legend=alt.Legend(title="driving label", symbolSize=80)),
            size=alt.Size("strength:Q", scale=alt.Scale(domain=[0, 1], range=[small, big]),
                          legend=alt.Legend(title="strength", values=STRENGTH_STEPS,
                                            symbolFillColor="#888888", symbolStrokeWidth=0)),
            strokeWidth=picked.then(alt.value(2.5)).otherwise(alt.value(0)),
            opacity=picked.then(alt.value(1.0)).otherwise(alt.value(0.8)),
            tooltip=["filter:Q", "label:N", alt.Tooltip("strength:Q", format=".2f"),
                     alt.Tooltip("max:Q", format=".4~g"), alt.Tooltip("frequency:Q", format=".3f")],
        )
        .properties(width=MAP_SIZE, height=MAP_SIZE)
    )  # fmt: skip
    layers = [circles]
    if n_filters <= LABELS_UP_TO:
        layers.append(
            alt.Chart()
            .mark_text(align="left", dx=7 + int(big**0.5 / 2), fontSize=11, color="#333333")
            .encode(**scatter_xy(), text="filter:Q")
        )
    return alt.layer(*layers, data=filters).properties(
        title="filter map (colour: driving label; size: how strongly)"
    )
