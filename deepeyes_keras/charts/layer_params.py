"""The named params that link the views of a layer page, and its controls (four radio groups).

Draws nothing itself: the radio groups are the page's controls, bound to top-level params, and
the selections are what the views share (see `deepeyes_keras/charts/layer.py` for the page):

* ``heatmap_mode`` (radio "max" | "frequency") and ``heatmap_sort`` (radio "index" | "value"):
  read by the heatmap's transforms (`deepeyes_keras/charts/heatmap.py`); ``heatmap_range``
  (radio "fixed across snapshots" | "per snapshot") and ``heatmap_top`` (unbound: the top of the
  fixed max range, which the viewer carries across snapshots) by its colour scale.
* ``overlay`` (radio "label" | "filter" | "max over all filters", default "filter"): read by the
  input map's overlay layer (`deepeyes_keras/charts/input_map.py`).
* ``filter`` (point selection on field "filter", one filter at a time, double click clears),
  driven by the heatmap, the filter map and the patch-view bars (its ``views``), highlighting the
  selected filter in all three and read by the input map as ``filter.filter[0]``.
* ``brush`` (interval selection), added to the input map and filtering the patch view
  (`deepeyes_keras/charts/patches.py`).
* ``keep`` (point selection on field "k", only when the page draws the T4 evidence), added to
  the points of the explained-variance curve (`deepeyes_keras/charts/variance.py`): a click
  picks a width k, the suggested width to start with; the heatmap fades the filters beyond the k
  strongest (by max activation), read as ``keep.k[0]``. A double click clears it: every filter
  is shown.

Example:
    >>> params = layer_params(selected_filter=3)
    >>> [p.name for p in params.top_level()]
    ['heatmap_mode', 'heatmap_sort', 'heatmap_range', 'heatmap_top', 'overlay', 'filter']
    >>> params.top_level()[-1].value
    [{'filter': 3}]
    >>> layer_params(keep_width=8).keep.param.value
    [{'k': 8}]
"""

from __future__ import annotations

from dataclasses import dataclass

import altair as alt

from deepeyes_keras.charts.common import clean_number, placed
from deepeyes_keras.charts.filter_map import FILTER_MAP_VIEW
from deepeyes_keras.charts.heatmap import HEATMAP_VIEW, RANGE_OPTIONS
from deepeyes_keras.charts.patches import PATCH_BARS_VIEW
from deepeyes_keras.charts.variance import KEEP_PARAM

__all__ = ["LayerParams", "layer_params", "OVERLAY_MODES", "FILTER_VIEWS"]

OVERLAY_MODES = ("label", "filter", "max over all filters")
FILTER_VIEWS = (HEATMAP_VIEW, FILTER_MAP_VIEW, PATCH_BARS_VIEW)  # the views that select a filter


@dataclass(frozen=True)
class LayerParams:
    """The params of one layer page.

    Attributes:
        heatmap_mode, heatmap_sort, overlay: the radio-bound params.
        brush: the interval selection; the input map adds it, the patch view filters by it.
        keep: the ``keep`` point selection, which the variance curve adds, or None (no T4
            evidence on the page).
        kept: ``alt.when(keep selection, empty=False)``, the predicate of the picked k, or None.
        picked: ``alt.when(filter selection, empty=False)``: the highlight predicate of the
            selected filter, for conditional encodings.
        filter: the ``filter`` point selection, declared once at the top level with its views.
    """

    heatmap_mode: alt.Parameter
    heatmap_sort: alt.Parameter
    heatmap_range: alt.Parameter
    heatmap_top: alt.Parameter
    overlay: alt.Parameter
    brush: alt.Parameter
    picked: alt.When
    filter: alt.TopLevelSelectionParameter
    keep: alt.Parameter | None = None
    kept: alt.When | None = None

    def top_level(self) -> list:
        """The params declared on the page's top-level chart (brush, keep: on their views)."""
        return [self.heatmap_mode.param, self.heatmap_sort.param, self.heatmap_range.param,
                self.heatmap_top.param, self.overlay.param, self.filter]  # fmt: skip


def _top_value(top_max: float) -> float:
    return clean_number(top_max) or 1


def _radio(name: str, value: str, options: list[str], text: str) -> alt.Parameter:
    return alt.param(name=name, value=value, bind=alt.binding_radio(options=options, name=text))


def layer_params(
    *, selected_filter: int | None = None, keep_width: int | None = None, top_max: float = 1.0
) -> LayerParams:
    """The params of a layer page.

    The values may be template slots (`deepeyes_keras/charts/common.py`).

    Args:
        top_max: the largest max activation of the snapshot: where ``heatmap_top`` starts.
        selected_filter: the filter selected when the page opens (None: none).
        keep_width: the width the ``keep`` selection starts at (the suggested width); None: the
            page has no variance curve and no ``keep`` param.
    """
    heatmap_mode = _radio("heatmap_mode", "max", ["max", "frequency"], "heatmap colour ")
    heatmap_sort = _radio("heatmap_sort", "index", ["index", "value"], "heatmap order ")
    heatmap_range = _radio("heatmap_range", RANGE_OPTIONS[0], list(RANGE_OPTIONS),
                           "heatmap colour range ")  # fmt: skip
    heatmap_top = alt.param(name="heatmap_top", value=placed(top_max, _top_value))
    overlay = _radio("overlay", "filter", list(OVERLAY_MODES), "input map colour ")
    brush = alt.selection_interval(name="brush", encodings=["x", "y"])
    # One point selection driven by several views, declared once at the top level with its views
    # (adding one selection object to several Altair charts works too, but warns at every build).
    # `selection` only supplies the predicate {"param": "filter", "empty": false} for highlights.
    selection = alt.selection_point(name="filter", fields=["filter"], toggle=False)
    initial = (
        {} if selected_filter is None else {"value": [{"filter": placed(selected_filter, int)}]}
    )
    filter_param = alt.TopLevelSelectionParameter(
        name="filter",
        select=alt.PointSelectionConfig(
            type="point", fields=["filter"], toggle=False, clear="dblclick"
        ),
        views=list(FILTER_VIEWS),
        **initial,
    )
    keep, kept = None, None
    if keep_width is not None:
        # A click, not a hover: the pick must stay put while the pointer travels to the heatmap.
        keep = alt.selection_point(
            name=KEEP_PARAM,
            fields=["k"],
            nearest=True,
            on="click",
            toggle=False,
            clear="dblclick",
            value=[{"k": placed(keep_width, int)}],
        )
        kept = alt.when(keep, empty=False)
    return LayerParams(
        heatmap_mode=heatmap_mode,
        heatmap_sort=heatmap_sort,
        heatmap_range=heatmap_range,
        heatmap_top=heatmap_top,
        overlay=overlay,
        brush=brush,
        picked=alt.when(selection, empty=False),
        filter=filter_param,
        keep=keep,
        kept=kept,
    )
