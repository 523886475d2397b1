"""The linked views of one layer as ONE top-level Vega-Lite spec (selections link only inside one).

Layout (about 1,100 px wide)::

    activation heatmap (<= ~400 px)   | filter map
    input map                         | patches of brushed points
                                      | max activation per filter in the brush

Named params, all top-level:

* ``heatmap_mode`` (radio "max" | "frequency"): the value that colours the heatmap, chosen by a
  calculate transform: ``heatmap_mode == 'frequency' ? datum.frequency : datum.max``.
* ``heatmap_sort`` (radio "index" | "value"): cell order; a ``row_number`` window over
  ``heatmap_sort == 'value' ? -value : filter`` gives each filter its rank, and the rank its cell
  (column = rank % cols, row = floor(rank / cols)).
* ``filter`` (point selection on field "filter", one filter at a time, double click clears),
  driven by the heatmap, the filter map and the patch-view bars (its ``views``), highlighting the
  selected filter in all three and read by the input map as ``filter.filter[0]``.
* ``overlay`` (radio "label" | "filter" | "max over all filters", default "filter"): the input
  map's colour. "filter" shows the selected filter's activation at each point; while no filter is
  selected it falls back to label colours. "max over all filters" shows max_k a_k at each point
  (points dark everywhere: patterns no filter detects, T3).
* ``brush`` (interval selection on the input map's label layer; Altair names that view
  ``input_map_0`` inside the concat): the points the patch view shows (all while empty): up to
  48 thumbnails, and per filter the max of its normalised activation over the brushed points
  (for layers wider than 256 filters, the 64 highest).

Activations travel as one array per point, ``a`` = round(100 * a_k / max over shown points of
a_k) for each filter k (ints 0..100, activations clamped at 0; a filter silent on every shown
point is all 0). An array is ~3x smaller than columns a0..a{F-1} (no repeated keys) and is read
as ``datum.a[k]``; ``amax`` = max_k a[k] is precomputed. The bars flatten ``a`` against
``sequence(0, length(datum.a))`` to get (filter, activation) rows. At most `max_points` points
(seeded subsample) and at most `max_values` points x F values are shown, which bounds the spec
(2,000 points x 500 filters: about 3.6 MB of activations).

A filter's maximum is *stale* (drawn small and faded) when ``reliability_age > stale_fraction *
step`` (default 0.5: the filter last reached theta * mu more than half the run ago).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import altair as alt
import numpy as np

from deepeyes_keras.charts import clean_number, finish, label_name, label_scale

__all__ = ["layer_spec", "heatmap_grid", "OVERLAY_EXPR", "STALE_FRACTION"]

STALE_FRACTION = 0.5  # age / step above which a filter's max is drawn as stale
HEATMAP_WIDTH = 400  # upper bound in px of the heatmap grid (cells shrink down to MIN_CELL)
MIN_CELL, MAX_CELL = 4, 40
MAP_SIZE = 360  # filter map and input map, px
MAX_PATCHES, PATCH_COLUMNS, PATCH_CELL = 48, 8, 36
WIDE_LAYER, TOP_FILTERS = 256, 64  # above WIDE_LAYER filters the bars show the TOP_FILTERS best
COLOR_SCHEME = "viridis"
SELECTED_COLOR = "#000000"
DEFAULT_MAX_VALUES = 1_000_000  # bound on points x filters activation values in one spec
OVERLAY_MODES = ("label", "filter", "max over all filters")
# The input map's overlay value: the selected filter's normalised activation, the max over all
# filters, or null (label colours). `filter.filter` is the point selection's array of values.
OVERLAY_EXPR = (
    "overlay == 'filter' && isValid(filter.filter) && length(filter.filter) > 0"
    " ? datum.a[filter.filter[0]] / 100"
    " : (overlay == 'max over all filters' ? datum.amax / 100 : null)"
)


def heatmap_grid(n_filters: int, *, width: int = HEATMAP_WIDTH) -> tuple[int, int, int]:
    """(columns, rows, cell px) of the heatmap: ceil(sqrt(F)) columns, cells within `width`.

    Example:
        >>> heatmap_grid(4096)
        (64, 64, 6)
    """
    cols = max(1, math.ceil(math.sqrt(n_filters)))
    rows = max(1, math.ceil(n_filters / cols))
    cell = int(min(MAX_CELL, max(MIN_CELL, width // cols)))
    return cols, rows, cell


def _array(name: str, values, shape: tuple[int | None, ...]) -> np.ndarray:
    """`values` as a float array of `shape` (None: any length), or a ValueError naming it."""
    arr = np.asarray(values, dtype=np.float64)
    if len(shape) == 1:
        arr = arr.ravel()
    ok = arr.ndim == len(shape) and all(
        w is None or w == g for w, g in zip(shape, arr.shape, strict=True)
    )
    if not ok:
        expected = "(" + ", ".join("any" if w is None else str(w) for w in shape) + ")"
        raise ValueError(
            f"Invalid value for argument {name}. Received: shape={arr.shape}. Expected {expected}."
        )
    return arr


def _point_rows(xy, label, activation, thumbnails, steps, keep) -> list[dict]:
    act = np.nan_to_num(activation[keep], nan=0.0, posinf=0.0, neginf=0.0).clip(min=0.0)
    top = act.max(axis=0) if len(keep) else np.zeros(activation.shape[1])
    scaled = np.rint(100.0 * act / np.where(top > 0, top, 1.0)).astype(int)
    return [
        {"point": int(i), "x": clean_number(xy[i, 0]), "y": clean_number(xy[i, 1]),
         "label": label_name(label[i]), "step": int(steps[i]), "image": thumbnails[i],
         "a": scaled[r].tolist(), "amax": int(scaled[r].max(initial=0))}
        for r, i in enumerate(keep)
    ]  # fmt: skip


def _grid(cols: int, rows: int, x: str, y: str) -> dict:
    """x/y encodings placing integer (col, row) on a grid, row 0 on top, no axes."""
    return {
        "x": alt.X(f"{x}:Q", axis=None, scale=alt.Scale(domain=[-0.5, cols - 0.5], nice=False)),
        "y": alt.Y(f"{y}:Q", axis=None,
                   scale=alt.Scale(domain=[-0.5, rows - 0.5], nice=False, reverse=True)),
    }  # fmt: skip


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
            thumbnails: n PNG data URLs or None (see `deepeyes_keras.thumbnails`).
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
        >>> rng = np.random.default_rng(0)
        >>> spec = layer_spec(layer="conv1", step=10, max_activation=rng.random(4),
        ...     frequency=rng.random(4), reliability_age=[0, 1, 8, 2], filter_xy=rng.random((4, 2)),
        ...     filter_label=[0, 1, -1, 0], filter_strength=rng.random(4),
        ...     points_xy=rng.random((5, 2)), point_label=[0, 1, 0, 1, 1],
        ...     point_activation=rng.random((5, 4)), thumbnails=[None] * 5, n_labels=2)
        >>> sorted(p["name"] for p in spec["params"])
        ['brush', 'filter', 'heatmap_mode', 'heatmap_sort', 'overlay']
    """
    mu = _array("max_activation", max_activation, (None,))
    n_filters = mu.shape[0]
    if n_filters < 1:
        raise ValueError("Invalid value for argument max_activation. Received: 0 filters.")
    per_filter = {
        name: _array(name, values, (n_filters,))
        for name, values in [("frequency", frequency), ("reliability_age", reliability_age),
                             ("filter_label", filter_label), ("filter_strength", filter_strength)]
    }  # fmt: skip
    fxy = _array("filter_xy", filter_xy, (n_filters, 2))
    pxy = _array("points_xy", points_xy, (None, 2)) if len(points_xy) else np.zeros((0, 2))
    n_points = pxy.shape[0]
    act = _array("point_activation", point_activation if n_points else np.zeros((0, n_filters)),
                 (n_points, n_filters))  # fmt: skip
    plabel = _array("point_label", point_label, (n_points,))
    psteps = _array("point_step", [step] * n_points if point_step is None else point_step,
                    (n_points,))  # fmt: skip
    if len(thumbnails) != n_points:
        raise ValueError(f"Invalid value for argument thumbnails. Received: {len(thumbnails)} "
                         f"items. Expected {n_points} (one per point, None allowed).")  # fmt: skip
    if max_points < 1 or max_values < 1:
        raise ValueError(f"Invalid bounds. Received: max_points={max_points}, "
                         f"max_values={max_values}. Expected both >= 1.")  # fmt: skip
    if selected_filter is not None and not 0 <= int(selected_filter) < n_filters:
        raise ValueError(f"Invalid value for argument selected_filter. Received: "
                         f"{selected_filter}. Expected None or 0..{n_filters - 1}.")  # fmt: skip

    shown = min(max_points, max(1, max_values // n_filters))
    keep = np.arange(n_points)
    if n_points > shown:
        keep = np.sort(np.random.default_rng(seed).choice(n_points, shown, replace=False))
    points = _point_rows(pxy, plabel, act, list(thumbnails), psteps, keep)
    age = per_filter["reliability_age"]
    stale = age > stale_fraction * max(int(step), 1)
    filters = [
        {"filter": k, "max": clean_number(mu[k]),
         "frequency": clean_number(per_filter["frequency"][k]), "age": clean_number(age[k]),
         "stale": bool(stale[k]), "x": clean_number(fxy[k, 0]), "y": clean_number(fxy[k, 1]),
         "label": label_name(per_filter["filter_label"][k]),
         "strength": clean_number(per_filter["filter_strength"][k])}
        for k in range(n_filters)
    ]  # fmt: skip

    def radio(name: str, value: str, options: list[str], text: str) -> alt.Parameter:
        return alt.param(name=name, value=value, bind=alt.binding_radio(options=options, name=text))

    heatmap_mode = radio("heatmap_mode", "max", ["max", "frequency"], "heatmap colour ")
    heatmap_sort = radio("heatmap_sort", "index", ["index", "value"], "heatmap order ")
    overlay = radio("overlay", "filter", list(OVERLAY_MODES), "input map colour ")
    brush = alt.selection_interval(name="brush", encodings=["x", "y"])
    # One point selection driven by several views, declared once at the top level with its views
    # (adding one selection object to several Altair charts works too, but warns at every build).
    # `selection` only supplies the predicate {"param": "filter", "empty": false} for highlights.
    selection = alt.selection_point(name="filter", fields=["filter"], toggle=False)
    picked = alt.when(selection, empty=False)
    filter_param = alt.TopLevelSelectionParameter(
        name="filter",
        select=alt.PointSelectionConfig(type="point", fields=["filter"], toggle=False,
                                        clear="dblclick"),
        views=["heatmap", "filter_map", "patch_bars"],
        **({} if selected_filter is None else {"value": [{"filter": int(selected_filter)}]}),
    )  # fmt: skip
    filters_data, points_data = alt.Data(name="filters"), alt.Data(name="points")
    no_axis = alt.Axis(title=None, labels=False, ticks=False, domain=False, grid=False)
    map_xy = {
        "x": alt.X("x:Q", axis=no_axis, scale=alt.Scale(zero=False)),
        "y": alt.Y("y:Q", axis=no_axis, scale=alt.Scale(zero=False)),
    }
    labels = label_scale(n_labels)

    cols, rows, cell = heatmap_grid(n_filters)
    heatmap = (
        alt.Chart(filters_data, name="heatmap",
                  title=f"activation heatmap ({n_filters} filters; small, faded = stale max)")
        .transform_calculate(value="heatmap_mode == 'frequency' ? datum.frequency : datum.max")
        .transform_calculate(sort_key="heatmap_sort == 'value' ? "
                             "(isValid(datum.value) ? -datum.value : 1e300) : datum.filter")
        .transform_window(rank="row_number()",
                          sort=[alt.SortField("sort_key"), alt.SortField("filter")])
        .transform_calculate(col=f"(datum.rank - 1) % {cols}",
                             row=f"floor((datum.rank - 1) / {cols})")
        .mark_square(cursor="pointer", strokeWidth=2)
        .encode(
            **_grid(cols, rows, "col", "row"),
            color=alt.Color("value:Q", scale=alt.Scale(scheme=COLOR_SCHEME)),
            size=alt.when("datum.stale").then(alt.value((0.45 * cell) ** 2))
            .otherwise(alt.value((0.92 * cell) ** 2)),
            opacity=alt.when("datum.stale").then(alt.value(0.45)).otherwise(alt.value(1.0)),
            stroke=picked.then(alt.value(SELECTED_COLOR)).otherwise(alt.value(None)),
            tooltip=["filter:Q", alt.Tooltip("max:Q", format=".4~g"),
                     alt.Tooltip("frequency:Q", format=".3f"), "age:Q", "stale:N"],
        )
        .properties(width=cols * cell, height=rows * cell)
    )  # fmt: skip

    big = min(260.0, max(30.0, 16_000.0 / n_filters))  # circle area shrinks for wide layers
    filter_map = (
        alt.Chart(filters_data, name="filter_map", title="filter map (colour: driving label)")
        .mark_circle(cursor="pointer", stroke=SELECTED_COLOR)
        .encode(
            **map_xy,
            color=alt.Color("label:N", scale=labels),
            size=alt.Size("strength:Q", scale=alt.Scale(domain=[0, 1], range=[big / 20, big])),
            strokeWidth=picked.then(alt.value(2.5)).otherwise(alt.value(0)),
            opacity=picked.then(alt.value(1.0)).otherwise(alt.value(0.8)),
            tooltip=["filter:Q", "label:N", alt.Tooltip("strength:Q", format=".2f"),
                     alt.Tooltip("max:Q", format=".4~g"), alt.Tooltip("frequency:Q", format=".3f")],
        )
        .properties(width=MAP_SIZE, height=MAP_SIZE)
    )  # fmt: skip

    point_tooltip = ["image:N", "label:N", "step:Q", "point:Q"]
    by_label = (
        alt.Chart(name="input_map")
        .mark_circle(size=22, opacity=0.85)
        .encode(**map_xy, color=alt.Color("label:N", scale=labels), tooltip=point_tooltip)
        .add_params(brush)
    )
    by_overlay = (
        alt.Chart()  # unnamed: Altair lists every named layer in the brush's views
        .transform_calculate(ov=OVERLAY_EXPR)
        .transform_filter("isValid(datum.ov)")
        .mark_circle(size=22, opacity=1.0)
        .encode(**map_xy,
                color=alt.Color("ov:Q", scale=alt.Scale(domain=[0, 1], scheme=COLOR_SCHEME),
                                legend=alt.Legend(title="activation / max")),
                tooltip=[*point_tooltip, alt.Tooltip("ov:Q", title="activation", format=".2f")])
    )  # fmt: skip
    input_map = (
        alt.layer(by_label, by_overlay, data=points_data)
        .resolve_scale(color="independent")
        .properties(width=MAP_SIZE + 60, height=MAP_SIZE + 60,
                    title=f"input map ({len(points)} of {n_points} instances; drag to brush)")
    )  # fmt: skip

    patch_rows = math.ceil(MAX_PATCHES / PATCH_COLUMNS)
    patches = (
        alt.Chart(points_data, name="patches",
                  title=f"patches of brushed points (first {MAX_PATCHES}; all when none)")
        .transform_filter(brush)
        .transform_filter("isValid(datum.image)")
        .transform_window(slot="row_number()")
        .transform_filter(f"datum.slot <= {MAX_PATCHES}")
        .transform_calculate(pcol=f"(datum.slot - 1) % {PATCH_COLUMNS}",
                             prow=f"floor((datum.slot - 1) / {PATCH_COLUMNS})")
        .mark_image(width=PATCH_CELL - 4, height=PATCH_CELL - 4)
        .encode(**_grid(PATCH_COLUMNS, patch_rows, "pcol", "prow"), url="image:N",
                tooltip=["label:N", "point:Q"])
        .properties(width=PATCH_COLUMNS * PATCH_CELL, height=patch_rows * PATCH_CELL)
    )  # fmt: skip

    wide = n_filters > WIDE_LAYER
    bars = (
        alt.Chart(points_data, name="patch_bars",
                  title="max activation per filter in the brush (/ filter's max over points)"
                  + (f", top {TOP_FILTERS}" if wide else ""))
        .transform_filter(brush)
        .transform_calculate(k="sequence(0, length(datum.a))")
        .transform_flatten(["a", "k"], as_=["act", "filter"])
        .transform_aggregate(top="max(act)", groupby=["filter"])
        .transform_calculate(top="datum.top / 100")
    )  # fmt: skip
    if wide:
        bars = bars.transform_window(
            order="row_number()", sort=[alt.SortField("top", order="descending")]
        ).transform_filter(f"datum.order <= {TOP_FILTERS}")
    bars = (
        bars.mark_bar(cursor="pointer")
        .encode(
            x=alt.X("filter:O", sort="ascending", axis=alt.Axis(labelOverlap=True)),
            y=alt.Y("top:Q", title="max activation", scale=alt.Scale(domain=[0, 1])),
            color=picked.then(alt.value("#f58518")).otherwise(alt.value("#4c78a8")),
            tooltip=["filter:O", alt.Tooltip("top:Q", title="max activation", format=".2f")],
        )
        .properties(width=PATCH_COLUMNS * PATCH_CELL + 40, height=130)
    )

    chart = alt.vconcat(
        alt.hconcat(heatmap, filter_map, spacing=40),
        alt.hconcat(input_map, alt.vconcat(patches, bars), spacing=40),
        params=[heatmap_mode.param, heatmap_sort.param, overlay.param, filter_param],
        title=f"{layer}, step {int(step)}",
    ).resolve_scale(color="independent", size="independent")
    return finish(chart, {"filters": filters, "points": points})
