"""The page of one layer: five linked views as ONE top-level Vega-Lite spec.

Selections link only inside one spec, so the views are composed here with ``|`` and ``&``
(Altair's hconcat and vconcat). Layout (about 1,100 px wide)::

    activation heatmap (<= ~400 px)   | filter map
    input map                         | patches of brushed points
                                      | max activation per filter in the brush

The parts, one module each: `heatmap.py`, `filter_map.py`, `input_map.py` and `patches.py` (the
views), `layer_params.py` (the controls and the ``filter`` and ``brush`` selections that link
the views), `layer_data.py` (the ``filters`` and ``points`` rows they are drawn from), all in
`deepeyes_keras/charts/`. Written by the views stage as ``views/step-NNNNNNNN/L<i>.vl.json``
(see `deepeyes_keras/derive/views.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt

from deepeyes_keras.charts.common import finish
from deepeyes_keras.charts.filter_map import filter_map_chart
from deepeyes_keras.charts.heatmap import heatmap_chart
from deepeyes_keras.charts.input_map import input_map_chart
from deepeyes_keras.charts.layer_data import DEFAULT_MAX_VALUES, STALE_FRACTION, layer_rows
from deepeyes_keras.charts.layer_params import layer_params
from deepeyes_keras.charts.patches import patch_bars_chart, patches_chart

__all__ = ["layer_spec", "STALE_FRACTION"]


def layer_spec(
    *,
    layer: str,
    step: int,
    max_activation,
    frequency,
    reliability_age,
    filter_xy,
    filter_label,
    filter_strength,
    points_xy,
    point_label,
    point_activation,
    thumbnails: Sequence[str | None],
    n_labels: int,
    max_points: int = 2000,
    seed: int = 0,
    point_step: Sequence[int] | None = None,
    stale_fraction: float = STALE_FRACTION,
    max_values: int = DEFAULT_MAX_VALUES,
    selected_filter: int | None = None,
) -> dict:
    """One layer's heatmap, filter map, input map and patch view, linked, as one spec dict.

    Args:
        layer: layer name (title). step: the snapshot step.
        max_activation, frequency, reliability_age: per filter (F,).
        filter_xy: (F, 2) filter-map embedding; filter_label: (F,) ints, -1 = never fired;
            filter_strength: (F,) in [0, 1].
        points_xy: (n, 2) input-map embedding; point_label: (n,) ints; point_activation: (n, F);
            thumbnails: n PNG data URLs or None (see `deepeyes_keras/derive/thumbnails.py`).
        n_labels: number of labels d (colour domain "0".."d-1", plus "none").
        max_points: at most this many points are shown (a seeded subsample, original order).
        seed: seed of that subsample.
        point_step: (n,) step at which each point was sampled; default `step` for all.
        stale_fraction: a max is stale when reliability_age > stale_fraction * step.
        max_values: bound on shown points x F (the activation arrays dominate the spec's size):
            wide layers show fewer points, min(max_points, max_values // F).
        selected_filter: filter selected when the page opens (None: no selection).

    Returns:
        A Vega-Lite v6 spec dict with params heatmap_mode, heatmap_sort, overlay, filter, brush.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> spec = layer_spec(layer="conv1", step=10, max_activation=rng.random(4),
        ...     frequency=rng.random(4), reliability_age=[0, 1, 8, 2], filter_xy=rng.random((4, 2)),
        ...     filter_label=[0, 1, -1, 0], filter_strength=rng.random(4),
        ...     points_xy=rng.random((5, 2)), point_label=[0, 1, 0, 1, 1],
        ...     point_activation=rng.random((5, 4)), thumbnails=[None] * 5, n_labels=2)
        >>> sorted(p["name"] for p in spec["params"])
        ['brush', 'filter', 'heatmap_mode', 'heatmap_sort', 'overlay']
    """
    rows = layer_rows(
        step=step, max_activation=max_activation, frequency=frequency,
        reliability_age=reliability_age, filter_xy=filter_xy, filter_label=filter_label,
        filter_strength=filter_strength, points_xy=points_xy, point_label=point_label,
        point_activation=point_activation, thumbnails=thumbnails, max_points=max_points,
        seed=seed, point_step=point_step, stale_fraction=stale_fraction, max_values=max_values,
        selected_filter=selected_filter,
    )  # fmt: skip
    params = layer_params(selected_filter=selected_filter)
    filters, points = alt.Data(name="filters"), alt.Data(name="points")
    picked, brush, n_filters = params.picked, params.brush, rows.n_filters

    heatmap = heatmap_chart(filters, n_filters=n_filters, picked=picked)
    filter_map = filter_map_chart(filters, n_filters=n_filters, n_labels=n_labels, picked=picked)
    input_map = input_map_chart(
        points, n_labels=n_labels, n_shown=len(rows.points), n_points=rows.n_points, brush=brush
    )
    patches = patches_chart(points, brush=brush)
    bars = patch_bars_chart(points, n_filters=n_filters, brush=brush, picked=picked)

    top = (heatmap | filter_map).properties(spacing=40)
    bottom = (input_map | (patches & bars)).properties(spacing=40)
    # The top-level params go in at construction: vconcat then lifts the brush from its view
    # beside them (setting params afterwards would drop it).
    chart = alt.vconcat(
        top, bottom, params=params.top_level(), title=f"{layer}, step {int(step)}"
    ).resolve_scale(color="independent", size="independent")
    return finish(chart, {"filters": rows.filters, "points": rows.points})
