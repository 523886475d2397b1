"""The patch view: thumbnails of the brushed points and, per filter, their max activation.

Two views of the layer page (`deepeyes_keras/charts/layer.py`), both drawn from the ``points``
rows and filtered by the input map's ``brush`` (all points while it is empty):

* ``patches``: up to 48 input-space thumbnails (PNG data URLs, see
  `deepeyes_keras/derive/thumbnails.py`) on an 8-column grid.
* ``patch_bars``: per filter, the max of its normalised activation over the brushed points (for
  layers wider than 256 filters, the 64 highest); with nothing brushed, the mean over all points
  in grey (the max over all points is 1 for every filter by construction); the bars flatten
  ``a`` against ``sequence(0, length(datum.a))`` to get (filter, activation) rows. A click
  selects the filter (the ``filter`` selection), whose bar turns orange.

Example:
    >>> brush = alt.selection_interval(name="brush")
    >>> patches_chart(alt.Data(name="points"), brush=brush).to_dict()["encoding"]["url"]
    {'field': 'image', 'type': 'nominal'}
"""

from __future__ import annotations

import math

import altair as alt

from deepeyes_keras.charts.common import grid_xy
from deepeyes_keras.charts.layer_data import code_value_expr

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


BRUSHED = "isValid(brush.x)"  # the input map's brush holds an interval (its fields: x, y)
BAR_TOOLTIP = "max activation (mean without a brush)"
BRUSHED_TITLE = "max activation per filter in the brush (/ filter's max over points)"
EMPTY_TITLE = "nothing brushed: mean activation per filter over all points (drag on the input map)"


def patch_bars_chart(
    points: alt.Data, *, n_filters: int, brush: alt.Parameter, picked: alt.When
) -> alt.Chart:
    """Per filter, the max normalised activation over the brushed points; `picked` colours one.

    With nothing brushed the max over every point is 1 for every filter by construction (the
    activations are normalised by it), which says nothing: the bars then show the mean over all
    shown points, in grey, and the title says so.

    Example:
        >>> picked = alt.when(alt.selection_point(name="filter"), empty=False)
        >>> bars = patch_bars_chart(alt.Data(name="points"), n_filters=300,
        ...                         brush=alt.selection_interval(name="brush"), picked=picked)
        >>> bars.to_dict()["title"]["subtitle"]
        'top 64 filters'
    """
    wide = n_filters > WIDE_LAYER
    title = alt.Title(alt.ExprRef(f"{BRUSHED} ? {BRUSHED_TITLE!r} : {EMPTY_TITLE!r}"),
                      subtitle=f"top {TOP_FILTERS} filters" if wide else "")  # fmt: skip
    bars = (
        alt.Chart(points, name=PATCH_BARS_VIEW, title=title)
        .transform_filter(brush)
        # `a` is an array of ints 0..100 or a string of codes (layer_data.py): as 0..100 rows.
        .transform_calculate(k="sequence(0, length(datum.a))",
                             values="isString(datum.a) ? split(datum.a, '') : datum.a")
        .transform_flatten(["values", "k"], as_=["act", "filter"])
        .transform_calculate(act=f"isString(datum.act) ? 100 * {code_value_expr('datum.act')}"
                                 " : datum.act")
        .transform_aggregate(top="max(act)", mean="mean(act)", groupby=["filter"])
        .transform_calculate(top=f"({BRUSHED} ? datum.top : datum.mean) / 100")
    )  # fmt: skip
    if wide:
        bars = bars.transform_window(
            order="row_number()", sort=[alt.SortField("top", order="descending")]
        ).transform_filter(f"datum.order <= {TOP_FILTERS}")
    bar_color = alt.ExprRef(f"{BRUSHED} ? '#4c78a8' : '#9a9a9a'")
    return (
        bars.mark_bar(cursor="pointer")
        .encode(
            x=alt.X("filter:O", sort="ascending", title="filter",
                    axis=alt.Axis(labelOverlap=True, labelFontSize=11, titleFontSize=12,
                                  labelAngle=0 if n_filters <= 32 else -90)),
            y=alt.Y("top:Q", title="activation / filter's max", scale=alt.Scale(domain=[0, 1]),
                    axis=alt.Axis(labelFontSize=11, titleFontSize=11, format=".1f")),
            color=picked.then(alt.value("#f58518")).otherwise(alt.value(bar_color)),
            tooltip=["filter:O", alt.Tooltip("top:Q", title=BAR_TOOLTIP, format=".2f")],
        )
        .properties(width=PATCH_COLUMNS * PATCH_CELL + 40, height=130)
    )  # fmt: skip
