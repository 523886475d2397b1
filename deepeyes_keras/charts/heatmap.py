"""The activation heatmap: one square cell per filter, coloured by its max or its frequency.

A view of the layer page (`deepeyes_keras/charts/layer.py`), named ``heatmap``, drawn from the
``filters`` rows. Two radio params drive it through its transforms:

* ``heatmap_mode`` ("max" | "frequency"): the value that colours a cell, chosen by a calculate
  transform: ``heatmap_mode == 'frequency' ? datum.frequency : datum.max``.
* ``heatmap_sort`` ("index" | "value"): cell order; a ``row_number`` window over
  ``heatmap_sort == 'value' ? -value : filter`` gives each filter its rank, and the rank its cell
  (column = rank % cols, row = floor(rank / cols)).

A click selects the cell's filter (the ``filter`` selection), which is outlined; a stale max is
drawn small and faded.

With the T4 evidence on the page (`deepeyes_keras/charts/variance.py`), the ``keep`` selection
(a width k picked on the variance curve) fades the cells of the filters that a width of k would
not keep, the filters ranked by max activation (``max_rank``, a second ``row_number`` window, ties
by index): ``kept`` is true while nothing is picked or ``max_rank <= keep.k[0]``.

Example:
    >>> heatmap_grid(20)
    (5, 4, 40)
"""

from __future__ import annotations

import math

import altair as alt

from deepeyes_keras.charts.common import COLOR_SCHEME, SELECTED_COLOR, grid_xy

__all__ = [
    "HEATMAP_VIEW",
    "HEATMAP_WIDTH",
    "KEPT_EXPR",
    "heatmap_grid",
    "heatmap_chart",
    "with_width_ranking",
]

HEATMAP_VIEW = "heatmap"
HEATMAP_WIDTH = 400  # upper bound in px of the heatmap grid (cells shrink down to MIN_CELL)
MIN_CELL, MAX_CELL = 4, 40
# Whether a width of k (picked on the variance curve: the `keep` selection) keeps a filter.
KEPT_EXPR = "!(isValid(keep.k) && length(keep.k) > 0) || datum.max_rank <= keep.k[0]"
FADED = 0.12  # opacity of a filter beyond the picked width
KEPT_SUBTITLE = "pale: beyond the width picked on the variance curve (filters ranked by max)"


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


def heatmap_chart(
    filters: alt.Data, *, n_filters: int, picked: alt.When, with_keep: bool = False
) -> alt.Chart:
    """The heatmap of `n_filters` filters from the `filters` rows; `picked` outlines a cell.

    `with_keep`: read the ``keep`` selection (the page has a variance curve) and fade the filters
    beyond the picked width.

    Example:
        >>> picked = alt.when(alt.selection_point(name="filter"), empty=False)
        >>> chart = heatmap_chart(alt.Data(name="filters"), n_filters=20, picked=picked)
        >>> chart.to_dict()["width"], chart.to_dict()["height"]
        (200, 160)
    """
    cols, rows, cell = heatmap_grid(n_filters)
    title = f"activation heatmap ({n_filters} filters; small, faded = stale max)"
    chart = alt.Chart(filters, name=HEATMAP_VIEW, title=title)
    opacity = alt.when("datum.stale").then(alt.value(0.45))
    tooltip = ["filter:Q", alt.Tooltip("max:Q", format=".4~g"),
               alt.Tooltip("frequency:Q", format=".3f"), "age:Q", "stale:N"]  # fmt: skip
    if with_keep:
        chart = chart.properties(title=alt.Title(title, subtitle=KEPT_SUBTITLE))
        chart, opacity = with_width_ranking(chart), alt.when("!datum.kept").then(
            alt.value(FADED)).when("datum.stale").then(alt.value(0.45))  # fmt: skip
        tooltip += [alt.Tooltip("max_rank:Q", title="rank by max"), "kept:N"]
    return (
        chart
        .transform_calculate(value="heatmap_mode == 'frequency' ? datum.frequency : datum.max")
        .transform_calculate(sort_key="heatmap_sort == 'value' ? "
                             "(isValid(datum.value) ? -datum.value : 1e300) : datum.filter")
        .transform_window(rank="row_number()",
                          sort=[alt.SortField("sort_key"), alt.SortField("filter")])
        .transform_calculate(col=f"(datum.rank - 1) % {cols}",
                             row=f"floor((datum.rank - 1) / {cols})")
        .mark_square(cursor="pointer", strokeWidth=2)
        .encode(
            **grid_xy(cols, rows, "col", "row"),
            color=alt.Color("value:Q", scale=alt.Scale(scheme=COLOR_SCHEME)),
            size=alt.when("datum.stale").then(alt.value((0.45 * cell) ** 2))
            .otherwise(alt.value((0.92 * cell) ** 2)),
            opacity=opacity.otherwise(alt.value(1.0)),
            stroke=picked.then(alt.value(SELECTED_COLOR)).otherwise(alt.value(None)),
            tooltip=tooltip,
        )
        .properties(width=cols * cell, height=rows * cell)
    )  # fmt: skip


def with_width_ranking(chart: alt.Chart) -> alt.Chart:
    """`chart` (of the ``filters`` rows) with ``max_rank`` and ``kept`` computed for each filter.

    ``max_rank``: 1 for the highest max activation (filters that never fired last, ties by
    index); ``kept``: `KEPT_EXPR`, whether the width picked in the ``keep`` selection keeps it.
    """
    return (
        chart.transform_calculate(max_key="isValid(datum.max) ? -datum.max : 1e300")
        .transform_window(max_rank="row_number()",
                          sort=[alt.SortField("max_key"), alt.SortField("filter")])
        .transform_calculate(kept=KEPT_EXPR)
    )  # fmt: skip
