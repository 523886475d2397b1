"""What every view shares: number cleaning, colours, the label scale, axis-free layouts, `finish`.

Nothing here draws a view. The view modules (`overview.py`, `histograms.py` and the five parts of
the layer page, composed in `layer.py`) build their charts from these pieces, so a label has the
same colour in every view and every spec leaves in the same JSON-ready shape: numbers rounded
to 4 significant digits, non-finite values replaced by None (JSON null), every param explicitly
named, and no global Altair state touched (no data transformer, no theme: configuration is
inline).

Example:
    >>> clean_list([3.14159, float("nan"), 2.0])
    [3.142, None, 2]
    >>> label_scale(2).to_dict()["domain"]
    ['0', '1', 'none']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import numpy as np

from deepeyes_keras.run.layout import strict_json

__all__ = [
    "SIGNIFICANT_DIGITS",
    "LABEL_PALETTE",
    "NONE_COLOR",
    "INCREASE_COLOR",
    "DECREASE_COLOR",
    "COLOR_SCHEME",
    "SELECTED_COLOR",
    "MAP_SIZE",
    "clean_number",
    "clean_list",
    "label_scale",
    "label_name",
    "grid_xy",
    "scatter_xy",
    "padded_extent",
    "finish",
]

SIGNIFICANT_DIGITS = 4
# Tableau 20, reordered so the first ten are Tableau 10: labels 0..d-1 take colours in order
# (cycling beyond 20 labels); "none" (a filter that never fired) is always grey.
LABEL_PALETTE = (
    "#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b",
    "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac",
    "#9ecae9", "#ffbf79", "#ff9d98", "#88d27a", "#83bcb6",
    "#f2cf5b", "#d6a5c9", "#fcbfd2", "#d8b5a5", "#79706e",
)  # fmt: skip
NONE_COLOR = "#d0d0d0"
INCREASE_COLOR = "#2ca02c"
DECREASE_COLOR = "#d62728"
COLOR_SCHEME = "viridis"  # activations: the heatmap and the input map's overlay
SELECTED_COLOR = "#000000"  # outline of the selected filter
MAP_SIZE = 360  # filter map and input map, px


def clean_number(x: Any, digits: int = SIGNIFICANT_DIGITS) -> float | int | None:
    """`x` rounded to `digits` significant digits; None for None, NaN and infinities.

    Integers (and floats that are whole numbers below 1e15) come back as int, so JSON stays short.

    Example:
        >>> clean_number(3.14159), clean_number(float("nan")), clean_number(2.0)
        (3.142, None, 2)
    """
    if x is None:
        return None
    if isinstance(x, (bool, np.bool_)):
        return int(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    if not math.isfinite(x):
        return None
    if x == 0.0:
        return 0
    r = round(x, digits - 1 - math.floor(math.log10(abs(x))))
    return int(r) if r.is_integer() and abs(r) < 1e15 else r


def clean_list(values: Any, digits: int = SIGNIFICANT_DIGITS) -> list[float | int | None]:
    """`clean_number` over a flat sequence (list, tuple or array).

    Example:
        >>> clean_list((1.23456, None))
        [1.235, None]
    """
    return [clean_number(v, digits) for v in np.asarray(values, dtype=object).ravel()]


def label_scale(n_labels: int, *, with_none: bool = True) -> alt.Scale:
    """The categorical scale shared by the filter map and the input map: "0".."d-1", "none".

    Example:
        >>> label_scale(1).to_dict()["range"]
        ['#4c78a8', '#d0d0d0']
    """
    domain = [str(i) for i in range(n_labels)]
    colors = [LABEL_PALETTE[i % len(LABEL_PALETTE)] for i in range(n_labels)]
    if with_none:
        domain.append("none")
        colors.append(NONE_COLOR)
    return alt.Scale(domain=domain, range=colors)


def label_name(label: Any) -> str:
    """The string a label is shown as: its integer, or "none" for negative, NaN or None.

    Example:
        >>> label_name(2.0), label_name(-1), label_name(float("nan"))
        ('2', 'none', 'none')
    """
    if label is None or not math.isfinite(float(label)):
        return "none"
    value = int(label)
    return "none" if value < 0 else str(value)


def grid_xy(cols: int, rows: int, x: str, y: str) -> dict:
    """x/y encodings placing integer (col, row) fields on a grid, row 0 on top, no axes.

    Used by the heatmap cells and the patch thumbnails.

    Example:
        >>> grid_xy(4, 2, "col", "row")["y"].to_dict()["scale"]["domain"]
        [-0.5, 1.5]
    """
    return {
        "x": alt.X(f"{x}:Q", axis=None, scale=alt.Scale(domain=[-0.5, cols - 0.5], nice=False)),
        "y": alt.Y(
            f"{y}:Q",
            axis=None,
            scale=alt.Scale(domain=[-0.5, rows - 0.5], nice=False, reverse=True),
        ),
    }


def scatter_xy(extent: Sequence[float] | None = None) -> dict:
    """x/y encodings of an embedding (fields "x", "y"): no axes, scales not forced through 0.

    Used by the filter map and the input map, whose coordinates carry no units. `extent`
    (xmin, xmax, ymin, ymax) fixes the domains: a layer that may be empty (the input map's
    overlay) then adds no infinite extent to the shared scales (a console warning in Vega).

    Example:
        >>> scatter_xy()["x"].to_dict()["scale"]
        {'zero': False}
        >>> scatter_xy((0, 1, 2, 3))["y"].to_dict()["scale"]["domain"]
        [2, 3]
    """
    no_axis = alt.Axis(title=None, labels=False, ticks=False, domain=False, grid=False)
    if extent is None:
        xs, ys = alt.Scale(zero=False), alt.Scale(zero=False)
    else:
        x0, x1, y0, y1 = (clean_number(v) for v in extent)
        xs, ys = alt.Scale(domain=[x0, x1], zero=False), alt.Scale(domain=[y0, y1], zero=False)
    return {"x": alt.X("x:Q", axis=no_axis, scale=xs), "y": alt.Y("y:Q", axis=no_axis, scale=ys)}


def padded_extent(rows: Sequence[Mapping], pad: float = 0.04) -> tuple[float, float, float, float]:
    """(xmin, xmax, ymin, ymax) of the rows' "x" and "y", widened by `pad` of each span.

    Example:
        >>> padded_extent([{"x": 0, "y": 0}, {"x": 10, "y": 5}], pad=0.1)
        (-1.0, 11.0, -0.5, 5.5)
    """
    xs = [r["x"] for r in rows if r.get("x") is not None]
    ys = [r["y"] for r in rows if r.get("y") is not None]
    if not xs or not ys:
        return (0.0, 1.0, 0.0, 1.0)
    out = []
    for lo, hi in ((min(xs), max(xs)), (min(ys), max(ys))):
        span = (hi - lo) or 1.0
        out += [float(lo - pad * span), float(hi + pad * span)]
    return tuple(out)


def finish(chart: alt.TopLevelMixin, datasets: Mapping[str, list] | None = None) -> dict:
    """`chart.to_dict()` with the (large) named datasets attached afterwards, JSON-safe.

    Altair validates the spec against the Vega-Lite schema in `to_dict`; data rows are free-form
    JSON in that schema, so validating thousands of rows only costs time. The chart refers to
    them by name (`alt.Data(name=...)`) and they are put under the top-level `datasets` here.
    Non-finite numbers become None (`deepeyes_keras.run.layout.strict_json`).

    Example:
        >>> spec = finish(alt.Chart(alt.Data(name="rows")).mark_point(), {"rows": [{"v": 1}]})
        >>> spec["datasets"], spec["data"]
        ({'rows': [{'v': 1}]}, {'name': 'rows'})
    """
    spec = chart.to_dict()
    if datasets:
        spec["datasets"] = {name: rows for name, rows in datasets.items()}
    return strict_json(spec)[0]
