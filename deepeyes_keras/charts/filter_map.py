"""The filter map: one circle per filter at its filter-map embedding, coloured by driving label.

A view of the layer page (`deepeyes_keras/charts/layer.py`), named ``filter_map``, drawn from
the ``filters`` rows: circle area grows with the filter's strength (smaller circles for wide
layers), colour is the label that drives the filter ("none": never fired). A click selects the
filter (the ``filter`` selection), which is ringed here and outlined in the heatmap.

Example:
    >>> picked = alt.when(alt.selection_point(name="filter"), empty=False)
    >>> chart = filter_map_chart(alt.Data(name="filters"), n_filters=8, n_labels=2, picked=picked)
    >>> chart.to_dict()["encoding"]["color"]["scale"]["domain"]
    ['0', '1', 'none']
"""

from __future__ import annotations

import altair as alt

from deepeyes_keras.charts.common import MAP_SIZE, SELECTED_COLOR, label_scale, scatter_xy

__all__ = ["FILTER_MAP_VIEW", "filter_map_chart"]

FILTER_MAP_VIEW = "filter_map"


def filter_map_chart(
    filters: alt.Data, *, n_filters: int, n_labels: int, picked: alt.When
) -> alt.Chart:
    """The filter map of `n_filters` filters and `n_labels` labels; `picked` rings a circle."""
    big = min(260.0, max(30.0, 16_000.0 / n_filters))  # circle area shrinks for wide layers
    return (
        alt.Chart(filters, name=FILTER_MAP_VIEW, title="filter map (colour: driving label)")
        .mark_circle(cursor="pointer", stroke=SELECTED_COLOR)
        .encode(
            **scatter_xy(),
            color=alt.Color("label:N", scale=label_scale(n_labels)),
            size=alt.Size("strength:Q", scale=alt.Scale(domain=[0, 1], range=[big / 20, big])),
            strokeWidth=picked.then(alt.value(2.5)).otherwise(alt.value(0)),
            opacity=picked.then(alt.value(1.0)).otherwise(alt.value(0.8)),
            tooltip=["filter:Q", "label:N", alt.Tooltip("strength:Q", format=".2f"),
                     alt.Tooltip("max:Q", format=".4~g"), alt.Tooltip("frequency:Q", format=".3f")],
        )
        .properties(width=MAP_SIZE, height=MAP_SIZE)
    )  # fmt: skip
