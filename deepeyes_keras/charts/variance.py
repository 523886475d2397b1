"""The T4 evidence: a layer's cumulative explained-variance curve and the width it needs.

A view of the layer page (`deepeyes_keras/charts/layer.py`), drawn only when the snapshot's
findings hold the T4 width estimate (`deepeyes_keras/derive/width.py`), from two datasets:

* ``variance``: one row per number of principal directions k = 1..F, ``share`` = the part of the
  layer's output variance that the first k directions hold (the findings' ``cumulative_variance``).
  At most `MAX_CURVE_POINTS` rows: wider layers keep geometrically spaced k and the rules' k.
* ``variance_rules``: the signal rank r (directions above the sample's noise) and the suggested
  width (F when no cut is proposed), drawn as vertical rules named in the legend.

Its layers: the curve; its points (the unit named ``variance``; ``variance_1`` inside the
page), which carry the ``keep`` selection (`deepeyes_keras/charts/layer_params.py`: a click picks
a width k, the suggested width to start with; the heatmap fades the filters beyond the k
strongest); a dashed rule at 0.99, where the k(0.99) count crosses; the two rules; a rule at the
picked k with the share it keeps. Layers wider than `LOG_ABOVE` filters get a log x axis: their
curves rise within the first few percent of k, where r and the suggested width lie.

Example:
    >>> rows = variance_rows([0.6, 0.9, 1.0], n_filters=3, signal_rank=2, suggested_width=3)
    >>> rows.curve[1], [r["k"] for r in rows.rules]
    ({'k': 2, 'share': 0.9}, [2, 3])
"""

from __future__ import annotations

import textwrap
from typing import NamedTuple

import altair as alt
import numpy as np

from deepeyes_keras.charts.common import SELECTED_COLOR, clean_number, placed

__all__ = [
    "VARIANCE_VIEW",
    "KEEP_PARAM",
    "MAX_CURVE_POINTS",
    "VarianceRows",
    "variance_rows",
    "variance_chart",
    "log_axis",
]

# The curve's points, which carry the `keep` selection (inside the page's concat Altair names
# this layer variance_<i>, as it does the input map's, and lists it in the selection's views).
VARIANCE_VIEW = "variance"
KEEP_PARAM = "keep"
MAX_CURVE_POINTS = 4096
LOG_ABOVE = 100  # filters above which the x axis is logarithmic
DELTA = 0.99  # the share of the k(delta) count (WidthThresholds.delta)
WIDTH, HEIGHT, WRAP = 360, 170, 68  # px, px, characters per subtitle line
CURVE_COLOR, DELTA_COLOR = "#4c78a8", "#888888"
RANK_COLOR, SUGGESTED_COLOR = "#e45756", "#54a24b"
ROUNDING = 1e-3  # the findings round shares to 4 digits: slack for checks of the curve


class VarianceRows(NamedTuple):
    """The rows of the variance view: the curve's and the two rules'."""

    curve: list[dict]
    rules: list[dict]


def variance_rows(
    cumulative_variance, *, n_filters: int, signal_rank: int, suggested_width: int
) -> VarianceRows:
    """The curve rows (k, share) and the rule rows (k, label), checked against the layer's F.

    Raises:
        ValueError: a curve not of length F, not within [0, 1] or decreasing, or a rank or
            width outside 0..F (1..F for the width), with the value received.
    """
    share = _checked_curve(cumulative_variance, n_filters)
    for name, value, low in [
        ("signal_rank", signal_rank, 0),
        ("suggested_width", suggested_width, 1),
    ]:
        if not low <= int(value) <= n_filters:
            raise ValueError(
                f"Invalid value for argument {name}. Received: {name}={value}. "
                f"Expected {low}..{n_filters}."
            )
    r, s = int(signal_rank), int(suggested_width)
    ks = np.arange(1, n_filters + 1)
    if n_filters > MAX_CURVE_POINTS:
        spaced = np.rint(np.geomspace(1, n_filters, MAX_CURVE_POINTS - 3)).astype(int)
        ks = np.unique(np.concatenate([spaced, [max(r, 1), s, n_filters]]))
    curve = [{"k": int(k), "share": clean_number(min(max(share[k - 1], 0.0), 1.0))} for k in ks]
    rules = [
        {"k": r, "label": f"signal rank r = {r}"},
        {"k": s, "label": f"suggested width {s}"},
    ]
    return VarianceRows(curve, rules)


def _checked_curve(cumulative_variance, n_filters: int) -> np.ndarray:
    """The curve as a float array of F shares, or a ValueError saying what is wrong with it."""
    share = np.asarray(cumulative_variance, dtype=np.float64).ravel()
    if share.shape != (n_filters,):
        raise ValueError(
            "Invalid value for argument cumulative_variance. Received: "
            f"{share.size} values. Expected {n_filters} (one per filter)."
        )
    inside = np.isfinite(share).all() and -ROUNDING <= share.min() <= share.max() <= 1 + ROUNDING
    if not (inside and (np.diff(share) >= -ROUNDING).all()):
        raise ValueError(
            "Invalid value for argument cumulative_variance. Received: "
            f"{share[:5].tolist()}... Expected non-decreasing shares in [0, 1]."
        )
    return share


def variance_chart(
    curve: alt.Data,
    rules: alt.Data,
    *,
    n_filters: int,
    signal_rank: int,
    suggested_width: int,
    oversized: bool,
    text: str | None,
    keep: alt.Parameter,
    kept: alt.When,
    log: bool | None = None,
) -> alt.LayerChart:
    """The explained-variance curve of `n_filters` filters and its rules; its points add `keep`.

    `kept` is the predicate of the picked k (``alt.when(keep, empty=False)``). `log`: whether
    the x axis is logarithmic; None: `log_axis` of `n_filters` and `signal_rank`. The rank,
    width, verdict and text may be template slots (`deepeyes_keras/charts/common.py`), `log`
    given.

    Example:
        >>> keep = alt.selection_point(name="keep", fields=["k"])
        >>> chart = variance_chart(alt.Data(name="variance"), alt.Data(name="variance_rules"),
        ...     n_filters=64, signal_rank=4, suggested_width=8, oversized=True, text=None,
        ...     keep=keep, kept=alt.when(keep, empty=False))
        >>> chart.to_dict()["title"]["text"]
        'Width needed (T4): 8 of 64 filters (cut proposed)'
    """
    log = log_axis(n_filters, signal_rank) if log is None else log
    x = alt.X(
        "k:Q",
        title="directions kept, k" + (" (log scale)" if log else ""),
        scale=alt.Scale(type="log", domain=[1, n_filters], nice=False)
        if log
        else alt.Scale(domain=[0, n_filters], nice=False),
    )
    y = alt.Y("share:Q", title="share of variance", scale=alt.Scale(domain=[0, 1]),
              axis=alt.Axis(format="%"))  # fmt: skip
    return alt.layer(
        alt.Chart(curve).mark_line(color=CURVE_COLOR).encode(x=x, y=y),
        _curve_points(curve, x, y, keep, kept),
        *_delta_rule(curve),
        _rules(rules, signal_rank=signal_rank, suggested_width=suggested_width),
        *_picked(curve),
    ).properties(
        width=WIDTH,
        height=HEIGHT,
        title=alt.Title(
            f"Width needed (T4): {suggested_width} of {n_filters} filters"
            + placed(oversized, _verdict),
            subtitle=placed(text, _subtitle),
            anchor="start",
        ),
    )


def log_axis(n_filters: int, signal_rank: int) -> bool:
    """Whether the curve of a layer of `n_filters` filters is drawn on a log x axis."""
    return n_filters > LOG_ABOVE and signal_rank >= 1


def _verdict(oversized: bool) -> str:
    return " (cut proposed)" if oversized else " (no cut)"


def _subtitle(text: str | None) -> list[str]:
    """The evidence sentence, wrapped, then how to use the pick (and what it is not)."""
    howto = (
        "Click the curve to pick a width k: the heatmap fades the filters beyond the k with the "
        "highest max activation, a visual aid (the rule counts directions, not filters). "
        "Double-click shows all."
    )
    return textwrap.wrap(text or "", WRAP) + textwrap.wrap(howto, WRAP)


def _curve_points(
    curve: alt.Data, x: alt.X, y: alt.Y, keep: alt.Parameter, kept: alt.When
) -> alt.Chart:
    """One point per k, which carry the ``keep`` selection; the picked one drawn large."""
    return (
        alt.Chart(curve, name=VARIANCE_VIEW)
        .mark_circle(cursor="pointer")
        .encode(
            x=x, y=y,
            size=kept.then(alt.value(90)).otherwise(alt.value(16)),
            color=kept.then(alt.value(SELECTED_COLOR)).otherwise(alt.value(CURVE_COLOR)),
            opacity=kept.then(alt.value(1.0)).otherwise(alt.value(0.5)),
            tooltip=[alt.Tooltip("k:Q", title="directions"),
                     alt.Tooltip("share:Q", title="share of variance", format=".2%")],
        )
        .add_params(keep)
    )  # fmt: skip


def _delta_rule(curve: alt.Data) -> tuple[alt.Chart, alt.Chart]:
    """The dashed rule at `DELTA` and its label (one row: the curve aggregated to a count)."""
    one = alt.Chart(curve).transform_aggregate(n="count()")
    rule = one.mark_rule(color=DELTA_COLOR, strokeDash=[4, 4]).encode(y=alt.datum(DELTA))
    label = one.mark_text(
        align="left", baseline="bottom", dx=4, dy=-2, color=DELTA_COLOR, text=f"{DELTA:.0%}"
    ).encode(x=alt.value(0), y=alt.datum(DELTA))
    return rule, label


def _rules(rules: alt.Data, *, signal_rank: int, suggested_width: int) -> alt.Chart:
    """Vertical rules at the signal rank (dashed) and the suggested width, named in the legend."""
    labels = [f"signal rank r = {signal_rank}", f"suggested width {suggested_width}"]
    return (
        alt.Chart(rules)
        .mark_rule(strokeWidth=2)
        .encode(
            x="k:Q",
            color=alt.Color("label:N", scale=alt.Scale(domain=labels,
                                                       range=[RANK_COLOR, SUGGESTED_COLOR]),
                            legend=alt.Legend(title=None, orient="bottom")),
            # No legend of its own: the page shares strokeDash scales (its colours are
            # independent), so that legend would land beside the filter map.
            strokeDash=alt.StrokeDash("label:N", legend=None,
                                      scale=alt.Scale(domain=labels, range=[[6, 3], [1, 0]])),
            tooltip=[alt.Tooltip("label:N", title="rule"), alt.Tooltip("k:Q", title="k")],
        )
    )  # fmt: skip


def _picked(curve: alt.Data) -> tuple[alt.Chart, alt.Chart]:
    """A rule at the picked k and, in the free lower-right corner, the share it keeps."""
    picked = alt.Chart(curve).transform_filter({"param": KEEP_PARAM, "empty": False})
    rule = picked.mark_rule(color=SELECTED_COLOR, opacity=0.5).encode(x="k:Q")
    label = (
        picked.transform_calculate(
            text="'keep ' + datum.k + ': ' + format(datum.share, '.1%') + ' of the variance'")
        .mark_text(align="right", baseline="bottom", color=SELECTED_COLOR)
        .encode(x=alt.value(WIDTH - 4), y=alt.value(HEIGHT - 4), text="text:N")
    )  # fmt: skip
    return rule, label
