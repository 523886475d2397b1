"""The two datasets of a layer page, checked: one row per filter and one per shown point.

Draws nothing: `layer_rows` validates the arrays given to `deepeyes_keras.charts.layer.layer_spec`
and turns them into the ``filters`` rows (read by the heatmap and the filter map) and the
``points`` rows (read by the input map and the patch view).

Activations travel as one array per point, ``a`` = round(100 * a_k / max over shown points of
a_k) for each filter k (ints 0..100, activations clamped at 0; a filter silent on every shown
point is all 0). An array is ~3x smaller than columns a0..a{F-1} (no repeated keys) and is read
as ``datum.a[k]``; ``amax`` = max_k a[k] is precomputed. At most `max_points` points (seeded
subsample) and at most `max_values` points x F values are shown, which bounds the spec (2,000
points x 500 filters: about 3.6 MB of activations).

With ``activation_codes=True`` (what the views stage writes) ``a`` is instead a string of one
character per filter, ``ACTIVATION_CODES[round(15 * a_k / max)]`` (16 levels, what a
colour ramp shows apart): a third of the size again.
The charts read either form through `activation_expr` (``isString(datum.a)`` tells them apart);
``amax`` stays an int 0..100.

Points may stand for several instances with the same descriptor (`point_weight`, from the maps
stage, which embeds identical descriptors once): their rows carry ``weight``, the count.

Each point row carries its thumbnail as ``image`` (a data URL or None), or, given `point_uid`
(what the views stage writes), the instance's ``uid`` instead: the thumbnails are then shared by
every snapshot's view, in a file of their own that readers join back in before drawing
(`deepeyes_keras/run/view_files.py`); `thumbnails` is then not used.

A filter's maximum is *stale* (drawn small and faded) when ``reliability_age > stale_fraction *
step`` (default 0.5: the filter last reached theta * mu more than half the run ago).

Example:
    >>> rows = layer_rows(step=10, max_activation=[1.0, 2.0], frequency=[0.5, 0.1],
    ...     reliability_age=[0, 8], filter_xy=[[0, 0], [1, 1]], filter_label=[0, -1],
    ...     filter_strength=[1, 0], points_xy=[[0, 1]], point_label=[1],
    ...     point_activation=[[0.5, 2.0]], thumbnails=[None])
    >>> [f["stale"] for f in rows.filters], rows.points[0]["a"]
    ([False, True], [100, 100])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from deepeyes_keras.charts.common import clean_number, label_name

__all__ = [
    "ACTIVATION_CODES",
    "DEFAULT_MAX_VALUES",
    "STALE_FRACTION",
    "LayerRows",
    "activation_expr",
    "code_value_expr",
    "layer_rows",
]

# One character per activation level 0..15 (JSON- and Vega-string-safe, no escapes needed).
# 16 levels: what a colour ramp shows apart; 64 cost 32% more bytes compressed (fc1 of LeNet).
ACTIVATION_CODES = "0123456789ABCDEF"
CODE_TOP = len(ACTIVATION_CODES) - 1


def code_value_expr(char: str) -> str:
    """Vega expression: the activation (0..1) of one code character `char` (an expression)."""
    return f"indexof('{ACTIVATION_CODES}', {char}) / {CODE_TOP}"


def activation_expr(k: str) -> str:
    """Vega expression: the normalised activation (0..1) of filter `k` (an expression) at a
    point, whether its ``a`` is an array of ints 0..100 or a string of codes."""
    return (
        f"(isString(datum.a) ? {code_value_expr(f'substring(datum.a, {k}, ({k}) + 1)')}"
        f" : datum.a[{k}] / 100)"
    )


STALE_FRACTION = 0.5  # age / step above which a filter's max is drawn as stale
DEFAULT_MAX_VALUES = 1_000_000  # bound on points x filters activation values in one spec


class LayerRows(NamedTuple):
    """The rows of a layer page and the counts its titles show."""

    filters: list[dict]
    points: list[dict]
    n_filters: int
    n_points: int  # before subsampling; len(points) are shown


def layer_rows(
    *,
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
    max_points: int = 2000,
    seed: int = 0,
    point_step: Sequence[int] | None = None,
    stale_fraction: float = STALE_FRACTION,
    max_values: int = DEFAULT_MAX_VALUES,
    selected_filter: int | None = None,
    point_weight: Sequence[int] | None = None,
    activation_codes: bool = False,
    point_uid: Sequence[int] | None = None,
) -> LayerRows:
    """Checked filter and point rows; arguments as in `layer_spec`, ValueError naming a bad one."""
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
    weights = None if point_weight is None else _array("point_weight", point_weight, (n_points,))
    if weights is not None and (weights < 1).any():
        raise ValueError("Invalid value for argument point_weight. Received: a weight below 1. "
                         "Expected the number of instances of each point (>= 1).")  # fmt: skip
    _check_options(n_filters, n_points, thumbnails, max_points, max_values, selected_filter)
    uids = None if point_uid is None else _uids(point_uid, n_points)

    shown = min(max_points, max(1, max_values // n_filters))
    keep = np.arange(n_points)
    if n_points > shown:
        keep = np.sort(np.random.default_rng(seed).choice(n_points, shown, replace=False))
    points = _point_rows(pxy, plabel, act, list(thumbnails), psteps, keep, activation_codes)
    if uids is not None:  # the instance names its thumbnail in the shared file
        for row, i in zip(points, keep, strict=True):
            del row["image"]
            row["uid"] = int(uids[i])
    if weights is not None:  # instances each point stands for (identical descriptors)
        for row, i in zip(points, keep, strict=True):
            row["weight"] = int(weights[i])
    stale = per_filter["reliability_age"] > stale_fraction * max(int(step), 1)
    filters = _filter_rows(mu, per_filter, fxy, stale)
    return LayerRows(filters, points, n_filters, n_points)


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


def _uids(point_uid, n_points: int) -> np.ndarray:
    """`point_uid` as n_points integers, or a ValueError saying what is wrong."""
    uids = np.asarray(point_uid)
    if uids.shape != (n_points,) or (n_points and not np.issubdtype(uids.dtype, np.integer)):
        raise ValueError(f"Invalid value for argument point_uid. Received: shape={uids.shape}, "
                         f"dtype={uids.dtype}. Expected {n_points} integer instance ids (one "
                         "per point).")  # fmt: skip
    return uids.astype(np.int64)


def _check_options(n_filters, n_points, thumbnails, max_points, max_values, selected_filter):
    """ValueError for thumbnails of the wrong length, bounds below 1 or an unknown filter."""
    if len(thumbnails) != n_points:
        raise ValueError(f"Invalid value for argument thumbnails. Received: {len(thumbnails)} "
                         f"items. Expected {n_points} (one per point, None allowed).")  # fmt: skip
    if max_points < 1 or max_values < 1:
        raise ValueError(f"Invalid bounds. Received: max_points={max_points}, "
                         f"max_values={max_values}. Expected both >= 1.")  # fmt: skip
    if selected_filter is not None and not 0 <= int(selected_filter) < n_filters:
        raise ValueError(f"Invalid value for argument selected_filter. Received: "
                         f"{selected_filter}. Expected None or 0..{n_filters - 1}.")  # fmt: skip


def _point_rows(xy, label, activation, thumbnails, steps, keep, codes=False) -> list[dict]:
    """One row per kept point: position, label, step, thumbnail and scaled activations."""
    act = np.nan_to_num(activation[keep], nan=0.0, posinf=0.0, neginf=0.0).clip(min=0.0)
    top = act.max(axis=0) if len(keep) else np.zeros(activation.shape[1])
    share = act / np.where(top > 0, top, 1.0)
    scaled = np.rint(100.0 * share).astype(int)
    if codes:
        table = np.array(list(ACTIVATION_CODES))
        level = np.rint(CODE_TOP * share).astype(int)
        values = ["".join(table[row]) for row in level]
    else:
        values = [row.tolist() for row in scaled]
    return [
        {"point": int(i), "x": clean_number(xy[i, 0]), "y": clean_number(xy[i, 1]),
         "label": label_name(label[i]), "step": int(steps[i]), "image": thumbnails[i],
         "a": values[r], "amax": int(scaled[r].max(initial=0))}
        for r, i in enumerate(keep)
    ]  # fmt: skip


def _filter_rows(mu, per_filter, xy, stale) -> list[dict]:
    """One row per filter: max, frequency, age, staleness, filter-map position, label, strength."""
    age = per_filter["reliability_age"]
    return [
        {"filter": k, "max": clean_number(mu[k]),
         "frequency": clean_number(per_filter["frequency"][k]), "age": clean_number(age[k]),
         "stale": bool(stale[k]), "x": clean_number(xy[k, 0]), "y": clean_number(xy[k, 1]),
         "label": label_name(per_filter["filter_label"][k]),
         "strength": clean_number(per_filter["filter_strength"][k])}
        for k in range(len(mu))
    ]  # fmt: skip
