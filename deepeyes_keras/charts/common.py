"""What every view shares: number cleaning, colours, the label scale, axis-free layouts, `finish`.

Nothing here draws a view. The view modules (`overview.py`, `histograms.py` and the five parts of
the layer page, composed in `layer.py`) build their charts from these pieces, so a label has the
same colour in every view and every spec leaves in the same JSON-ready shape: numbers rounded
to 4 significant digits, non-finite values replaced by None (JSON null), every param explicitly
named, and no global Altair state touched (no data transformer, no theme: configuration is
inline).

Templates (`build_template`, `Slot`, `placed`): building a spec with Altair costs far more than
its data (about a second for a layer page, mostly Altair copying and validating the composed
views), while a page's structure hardly changes from one snapshot to the next. A `Template` is
a spec built once with a `Slot` (a placeholder text) in place of each per-snapshot value; its
`Template.fill` puts the values in. A view that converts such a value does it through
`placed(value, convert)`, which the template records, so the values filled in are the ones the
view would have computed.

Example:
    >>> clean_list([3.14159, float("nan"), 2.0])
    [3.142, None, 2]
    >>> label_scale(2).to_dict()["domain"]
    ['0', '1', 'none']
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, NamedTuple

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
    "Slot",
    "Template",
    "placed",
    "build_template",
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
        x0, x1, y0, y1 = (placed(v, clean_number) for v in extent)  # a value or a Slot
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


# Slot texts: a name between two private-use characters (no constant of a view holds them; the
# values filled in, a layer's name among them, are not read again).
_OPEN, _CLOSE = "\ue000", "\ue001"
_SLOT_TEXT = re.compile(f"{_OPEN}[^{_OPEN}{_CLOSE}]*{_CLOSE}")
# The conversions `placed` records while a template is built: slot text -> (source, convert).
_RECIPES: ContextVar[dict[str, tuple[str, Callable]] | None] = ContextVar(
    "deepeyes_template_recipes", default=None
)


class Slot(str):
    """Stands for a per-snapshot value while a `Template` is built (see `build_template`).

    Its text marks where the value goes: a whole string (then the value itself, of any JSON
    type) or part of one (then its text, as an f-string writes it). Being a string, it can stand
    only where the Vega-Lite schema accepts one (Altair validates as the chart is built): texts,
    expressions, scale domains, param and selection values; a value in a number-only property
    (a mark's size, a chart's width) belongs to the template's key instead. It has no truth
    value: a view whose structure depends on a value must take that structure as an argument.
    """

    __slots__ = ()

    def __bool__(self) -> bool:
        raise TypeError(
            f"Invalid use of the template slot {str(self)!r}: its value is unknown while the "
            "template is built. Convert it with placed(value, convert), or pass what the view's "
            "structure depends on as an argument of its own."
        )


def placed(value: Any, convert: Callable[[Any], Any]) -> Any:
    """``convert(value)``; while a template is built and `value` is a `Slot`, a Slot for it.

    `convert` must depend on its argument only: `Template.fill` applies it to each snapshot's
    value.

    Example:
        >>> placed(2.5, int)
        2
    """
    if not isinstance(value, Slot):
        return convert(value)
    recipes = _RECIPES.get()
    if recipes is None:
        raise RuntimeError(f"Invalid use of the template slot {str(value)!r} outside "
                           "build_template.")  # fmt: skip
    derived = Slot(f"{value[:-1]}.{len(recipes)}{_CLOSE}")
    recipes[derived] = (str(value), convert)
    return derived


class Template(NamedTuple):
    """A spec built once with `Slot` placeholders; `fill` gives the spec of given values.

    Attributes:
        spec: the JSON-ready spec with the slots' texts (never modified).
        names: the values `fill` needs.
        recipes: slot text -> (source slot text, convert), recorded by `placed`.
    """

    spec: dict
    names: tuple[str, ...]
    recipes: Mapping[str, tuple[str, Callable]]

    def fill(self, values: Mapping[str, Any]) -> dict:
        """A new spec: `spec` with every slot replaced by its value (ValueError: one missing)."""
        missing = sorted(set(self.names) - set(values))
        if missing:
            raise ValueError(f"Invalid template values. Received no value for {missing}. "
                             f"Expected values for {list(self.names)}.")  # fmt: skip
        resolved = {f"{_OPEN}{name}{_CLOSE}": values[name] for name in self.names}
        for text, (source, convert) in self.recipes.items():  # a source is recorded first
            resolved[text] = convert(resolved[source])
        return _filled(self.spec, resolved)


def _filled(node: Any, resolved: Mapping[str, Any]) -> Any:
    """`node` (JSON-like) copied, slot texts replaced by their values."""
    if isinstance(node, str):
        if _OPEN not in node:
            return node
        if node in resolved:
            return resolved[node]
        return _SLOT_TEXT.sub(lambda m: format(resolved[m.group()], ""), node)
    if isinstance(node, dict):
        return {key: _filled(value, resolved) for key, value in node.items()}
    if isinstance(node, list):
        return [_filled(value, resolved) for value in node]
    return node


def build_template(
    build: Callable[[Mapping[str, Slot]], alt.TopLevelMixin], names: Sequence[str]
) -> Template:
    """The template of the chart `build` makes from a `Slot` for each of `names`.

    The chart is converted with `finish` (validated against the Vega-Lite schema) once.

    Example:
        >>> double = lambda v: 2 * v
        >>> t = build_template(lambda s: alt.Chart(alt.Data(name="rows"), title=s["title"])
        ...     .mark_point().encode(x=alt.X("x:Q", scale=alt.Scale(
        ...         domain=[0, placed(s["top"], double)]))), ["title", "top"])
        >>> spec = t.fill({"title": "step 10", "top": 4})
        >>> spec["title"], spec["encoding"]["x"]["scale"]["domain"]
        ('step 10', [0, 8])
    """
    slots = {name: Slot(f"{_OPEN}{name}{_CLOSE}") for name in names}
    recipes: dict[str, tuple[str, Callable]] = {}
    token = _RECIPES.set(recipes)
    try:
        spec = finish(build(slots))
    finally:
        _RECIPES.reset(token)
    return Template(spec, tuple(names), recipes)
