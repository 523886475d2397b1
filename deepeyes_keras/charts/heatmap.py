"""The activation heatmap: one square cell per filter, coloured by its max or its frequency.

A view of the layer page (`deepeyes_keras/charts/layer.py`), named ``heatmap``, drawn from the
``filters`` rows. Two radio params drive it through its transforms:

* ``heatmap_mode`` ("max" | "frequency"): the value that colours a cell, chosen by a calculate
  transform: ``heatmap_mode == 'frequency' ? datum.frequency : datum.max``.
* ``heatmap_sort`` ("index" | "value"): cell order; a ``row_number`` window over
  ``heatmap_sort == 'value' ? -value : filter`` gives each filter its rank, and the rank its cell
  (column = rank % cols, row = floor(rank / cols)).

* ``heatmap_range`` ("fixed across snapshots" | "per snapshot"): the colour scale spans 0 to
  ``heatmap_top`` in max mode (a param the viewer raises to the largest max of the snapshots
  viewed on the page, so one colour is one value from snapshot to snapshot; maxima only grow
  during a run) and 0..1 in frequency mode; or 0 to this snapshot's largest value.

The legend names what the colour shows ("max activation" or "frequency (> 0.5 max)": two
legends, the other one transparent). Layers of at most `LABELS_UP_TO` filters print each
filter's index on its cell; every cell's tooltip names it. A click selects the cell's filter
(the ``filter`` selection), which is outlined; a stale max is drawn small and faded.

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

from deepeyes_keras.charts.common import COLOR_SCHEME, SELECTED_COLOR, grid_xy, placed

__all__ = [
    "HEATMAP_VIEW",
    "HEATMAP_WIDTH",
    "KEPT_EXPR",
    "RANGE_OPTIONS",
    "MAX_TITLE",
    "FREQUENCY_TITLE",
    "heatmap_grid",
    "heatmap_chart",
    "domain_top_expr",
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


# The colour range: "fixed" spans 0..heatmap_top (the largest max of the snapshots viewed, which
# the viewer carries from one snapshot to the next: maxima only grow in a run) or 0..1 for
# frequencies; "per snapshot" spans 0..this snapshot's largest value.
RANGE_OPTIONS = ("fixed across snapshots", "per snapshot")
LABELS_UP_TO = 100  # filters: above this the cells carry no index label (hover shows it)
MIN_LABEL_CELL = 16  # px: smaller cells carry no index label
MAX_TITLE = "max activation"
FREQUENCY_TITLE = "frequency (> 0.5 max)"  # share of instances above beta x the filter's max


def domain_top_expr(top_max: float, top_frequency: float) -> str:
    """The upper end of the heatmap's colour scale, by mode and range choice (a Vega expr).

    Either value may be a template `Slot` (`deepeyes_keras/charts/common.py`); 0 counts as 1.
    """
    top_max, top_frequency = placed(top_max, _nonzero), placed(top_frequency, _nonzero)
    return (
        f"heatmap_range == '{RANGE_OPTIONS[1]}' ? (heatmap_mode == 'frequency' ? "
        f"{top_frequency} : {top_max}) : (heatmap_mode == 'frequency' ? 1 : "
        f"max(heatmap_top, {top_max}))"
    )


def _nonzero(value: float) -> float:
    return value or 1


def heatmap_chart(
    filters: alt.Data,
    *,
    n_filters: int,
    picked: alt.When,
    with_keep: bool = False,
    top_max: float = 1.0,
    top_frequency: float = 1.0,
) -> alt.LayerChart:
    """The heatmap of `n_filters` filters from the `filters` rows; `picked` outlines a cell.

    `with_keep`: read the ``keep`` selection (the page has a variance curve) and fade the filters
    beyond the picked width. `top_max`, `top_frequency`: the largest max activation and
    frequency of this snapshot (the "per snapshot" colour range).

    Layers: the cells (the unit named ``heatmap``, which the ``filter`` selection listens to),
    the filter index on each cell for small layers, and two legends of which the one of the
    chosen mode shows ("max activation" or "frequency"; a Vega-Lite legend title cannot change).

    Example:
        >>> picked = alt.when(alt.selection_point(name="filter"), empty=False)
        >>> chart = heatmap_chart(alt.Data(name="filters"), n_filters=20, picked=picked)
        >>> chart.to_dict()["width"], chart.to_dict()["height"]
        (200, 160)
    """
    cols, rows, cell = heatmap_grid(n_filters)
    title = f"activation heatmap ({n_filters} filters; small, faded = stale max)"
    top = domain_top_expr(top_max, top_frequency)
    scale = alt.Scale(scheme=COLOR_SCHEME, domain=alt.ExprRef(f"[0, {top}]"))
    opacity = alt.when("datum.stale").then(alt.value(0.45))
    tooltip = ["filter:Q", alt.Tooltip("max:Q", format=".4~g"),
               alt.Tooltip("frequency:Q", format=".3f"), "age:Q", "stale:N"]  # fmt: skip
    cells = alt.Chart(name=HEATMAP_VIEW)
    if with_keep:
        cells, opacity = with_width_ranking(cells), alt.when("!datum.kept").then(
            alt.value(FADED)).when("datum.stale").then(alt.value(0.45))  # fmt: skip
        tooltip += [alt.Tooltip("max_rank:Q", title="rank by max"), "kept:N"]
    cells = (
        _on_grid(cells, cols)
        .mark_square(cursor="pointer", strokeWidth=2)
        .encode(
            **grid_xy(cols, rows, "col", "row"),
            color=alt.Color("value:Q", scale=scale, legend=None),
            size=alt.when("datum.stale").then(alt.value((0.45 * cell) ** 2))
            .otherwise(alt.value((0.92 * cell) ** 2)),
            opacity=opacity.otherwise(alt.value(1.0)),
            stroke=picked.then(alt.value(SELECTED_COLOR)).otherwise(alt.value(None)),
            tooltip=tooltip,
        )
        .properties(width=cols * cell, height=rows * cell)
    )  # fmt: skip
    layers = [cells]
    if n_filters <= LABELS_UP_TO and cell >= MIN_LABEL_CELL:
        layers.append(_index_labels(cols, rows, cell, top))
    layers += [_mode_legend("max", MAX_TITLE, top, cols, rows),
               _mode_legend("frequency", FREQUENCY_TITLE, top, cols, rows)]  # fmt: skip
    chart = alt.layer(*layers, data=filters).resolve_scale(color="independent")
    subtitle = [KEPT_SUBTITLE] if with_keep else []
    return chart.properties(title=alt.Title(title, subtitle=subtitle) if subtitle else title)


def _on_grid(chart: alt.Chart, cols: int) -> alt.Chart:
    """`chart` with each filter's colour value, rank (the chosen order) and grid cell."""
    return (
        chart.transform_calculate(value="heatmap_mode == 'frequency' ? datum.frequency : datum.max")
        .transform_calculate(sort_key="heatmap_sort == 'value' ? "
                             "(isValid(datum.value) ? -datum.value : 1e300) : datum.filter")
        .transform_window(rank="row_number()",
                          sort=[alt.SortField("sort_key"), alt.SortField("filter")])
        .transform_calculate(col=f"(datum.rank - 1) % {cols}",
                             row=f"floor((datum.rank - 1) / {cols})")
    )  # fmt: skip


def _index_labels(cols: int, rows: int, cell: int, top: str) -> alt.Chart:
    """The filter index on each cell, light on dark cells and dark on light ones."""
    light = f"isValid(datum.value) && datum.value / ({top}) > 0.6"
    return (
        _on_grid(alt.Chart(), cols)
        .mark_text(fontSize=max(9, min(13, cell // 3)), cursor="pointer", aria=False)
        .encode(**grid_xy(cols, rows, "col", "row"), text="filter:Q",
                color=alt.when(light).then(alt.value("#222222")).otherwise(alt.value("#ffffff")),
                tooltip=["filter:Q", alt.Tooltip("max:Q", format=".4~g"),
                         alt.Tooltip("frequency:Q", format=".3f")])
    )  # fmt: skip


def _mode_legend(mode: str, title: str, top: str, cols: int, rows: int) -> alt.Chart:
    """An empty layer whose colour legend (title `title`) shows while heatmap_mode is `mode`."""
    shown = alt.ExprRef(f"heatmap_mode == '{mode}' ? 1 : 0")
    legend = alt.Legend(title=title, orient="right", gradientLength=110, titleLimit=150,
                        gradientOpacity=shown, labelOpacity=shown, titleOpacity=shown,
                        format=".0%" if mode == "frequency" else ".3~g")  # fmt: skip
    return (
        alt.Chart()
        .transform_filter("false")
        .mark_square()
        .encode(**grid_xy(cols, rows, "col", "row"),
                color=alt.Color("value:Q", legend=legend, scale=alt.Scale(
                    scheme=COLOR_SCHEME, domain=alt.ExprRef(f"[0, {top}]"))))
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
