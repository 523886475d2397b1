"""The patch view: thumbnails of the brushed points and, per filter, their max activation.

Two views of the layer page (`deepeyes_keras/charts/layer.py`), both drawn from the ``points``
rows and filtered by the input map's ``brush`` (all points while it is empty):

* ``patches``: up to 48 input-space thumbnails (PNG data URLs, see
  `deepeyes_keras/derive/thumbnails.py`) on an 8-column grid.
* ``patch_bars``: per filter, the max of its normalised activation over the brushed points (for
  layers wider than 256 filters, the 64 highest); the bars flatten ``a`` against
  ``sequence(0, length(datum.a))`` to get (filter, activation) rows. A click selects the filter
  (the ``filter`` selection), whose bar turns orange.

Example:
    >>> brush = alt.selection_interval(name="brush")
    >>> patches_chart(alt.Data(name="points"), brush=brush).to_dict()["encoding"]["url"]
    {'field': 'image', 'type': 'nominal'}
"""

from __future__ import annotations

import math

import altair as alt

from deepeyes_keras.charts.common import grid_xy

__all__ = ["PATCHES_VIEW", "PATCH_BARS_VIEW", "patches_chart", "patch_bars_chart"]

PATCHES_VIEW, PATCH_BARS_VIEW = "patches", "patch_bars"
MAX_PATCHES, PATCH_COLUMNS, PATCH_CELL = 48, 8, 36
WIDE_LAYER, TOP_FILTERS = 256, 64  # above WIDE_LAYER filters the bars show the TOP_FILTERS best


def patches_chart(points: alt.Data, *, brush: alt.Parameter) -> alt.Chart:
    """The first `MAX_PATCHES` thumbnails of the points inside `brush` (points without one skip)."""
    patch_rows = math.ceil(MAX_PATCHES / PATCH_COLUMNS)
    return (
        alt.Chart(points, name=PATCHES_VIEW,
                  title=f"patches of brushed points (first {MAX_PATCHES}; all when none)")
        .transform_filter(brush)
        .transform_filter("isValid(datum.image)")
        .transform_window(slot="row_number()")
        .transform_filter(f"datum.slot <= {MAX_PATCHES}")
        .transform_calculate(pcol=f"(datum.slot - 1) % {PATCH_COLUMNS}",
                             prow=f"floor((datum.slot - 1) / {PATCH_COLUMNS})")
        .mark_image(width=PATCH_CELL - 4, height=PATCH_CELL - 4)
        .encode(**grid_xy(PATCH_COLUMNS, patch_rows, "pcol", "prow"), url="image:N",
                tooltip=["label:N", "point:Q"])
        .properties(width=PATCH_COLUMNS * PATCH_CELL, height=patch_rows * PATCH_CELL)
    )  # fmt: skip


def patch_bars_chart(
    points: alt.Data, *, n_filters: int, brush: alt.Parameter, picked: alt.When
) -> alt.Chart:
    """Per filter, the max normalised activation over the brushed points; `picked` colours one.

    Example:
        >>> picked = alt.when(alt.selection_point(name="filter"), empty=False)
        >>> bars = patch_bars_chart(alt.Data(name="points"), n_filters=300,
        ...                         brush=alt.selection_interval(name="brush"), picked=picked)
        >>> bars.to_dict()["title"].endswith(", top 64")
        True
    """
    wide = n_filters > WIDE_LAYER
    bars = (
        alt.Chart(points, name=PATCH_BARS_VIEW,
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
    return (
        bars.mark_bar(cursor="pointer")
        .encode(
            x=alt.X("filter:O", sort="ascending", axis=alt.Axis(labelOverlap=True)),
            y=alt.Y("top:Q", title="max activation", scale=alt.Scale(domain=[0, 1])),
            color=picked.then(alt.value("#f58518")).otherwise(alt.value("#4c78a8")),
            tooltip=["filter:O", alt.Tooltip("top:Q", title="max activation", format=".2f")],
        )
        .properties(width=PATCH_COLUMNS * PATCH_CELL + 40, height=130)
    )
