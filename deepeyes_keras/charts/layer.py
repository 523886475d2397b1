"""The page of one layer: five or six linked views as ONE top-level Vega-Lite spec.

Selections link only inside one spec, so the views are composed here with Altair's hconcat and
vconcat. Layout (about 1,100 px wide)::

    activation heatmap (<= ~400 px)   | filter map
    [width needed (T4): the curve]    |
    input map                         | patches of brushed points
                                      | max activation per filter in the brush

The parts, one module each: `heatmap.py`, `filter_map.py`, `input_map.py`, `patches.py` and
`variance.py` (the views; the last only when the T4 evidence is given), `layer_params.py` (the
controls and the ``filter``, ``brush`` and ``keep`` selections that link the views),
`layer_data.py` (the ``filters`` and ``points`` rows they are drawn from), all in
`deepeyes_keras/charts/`. Written by the views stage as ``views/step-NNNNNNNN/L<i>.vl.json``
(see `deepeyes_keras/derive/views.py`).

Altair takes about half a second to build the page (copying the views as it composes them
and lifts their selections, then validating the spec), far longer than its data rows; but the
page's structure depends only on a few facts of the layer (`PageShape`: its width, the number
of labels, whether T4 evidence, weights or a selected filter are given), the same at every
snapshot of a run. So `layer_spec` builds each shape once per process, with placeholders for a
snapshot's values (`layer_template`; see `build_template` in `deepeyes_keras/charts/common.py`),
and fills in each snapshot's title, counts, ranges, extents and selections: the spec Altair
would build, in milliseconds. ``layer_spec(..., cached=False)`` builds it from the values.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import altair as alt

from deepeyes_keras.charts.common import Template, build_template, finish, padded_extent
from deepeyes_keras.charts.filter_map import filter_map_chart
from deepeyes_keras.charts.heatmap import heatmap_chart
from deepeyes_keras.charts.input_map import input_map_chart
from deepeyes_keras.charts.layer_data import DEFAULT_MAX_VALUES, STALE_FRACTION, layer_rows
from deepeyes_keras.charts.layer_params import FILTER_VIEWS, layer_params
from deepeyes_keras.charts.patches import patch_bars_chart, patches_chart
from deepeyes_keras.charts.variance import log_axis, variance_chart, variance_rows
from deepeyes_keras.run.layout import strict_json

__all__ = ["layer_spec", "layer_chart", "layer_template", "PageShape", "STALE_FRACTION"]

TEMPLATES = 64  # page shapes whose templates a process keeps (a run has about one per layer)


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
    point_weight: Sequence[int] | None = None,
    activation_codes: bool = False,
    point_uid: Sequence[int] | None = None,  # (n,) instance ids: rows carry uid, not image
    cumulative_variance=None,
    signal_rank: int | None = None,
    suggested_width: int | None = None,
    oversized: bool = False,
    width_text: str | None = None,
    cached: bool = True,
) -> dict:
    """One layer's heatmap, filter map, input map and patch view, linked, as one spec dict.

    Args:
        layer: layer name (title). step: the snapshot step.
        max_activation, frequency, reliability_age: per filter (F,).
        filter_xy: (F, 2) filter-map embedding; filter_label: (F,) ints, -1 = never fired;
            filter_strength: (F,) in [0, 1].
        points_xy: (n, 2) input-map embedding; point_label: (n,) ints; point_activation: (n, F);
            thumbnails: n PNG data URLs or None (see `deepeyes_keras/derive/thumbnails.py`).
        n_labels: number of labels d (colour domain "0".."d-1", plus "none").
        max_points: at most this many points are shown (a seeded subsample, original order).
        seed: seed of that subsample.
        point_step: (n,) step at which each point was sampled; default `step` for all.
        stale_fraction: a max is stale when reliability_age > stale_fraction * step.
        max_values: bound on shown points x F (the activation arrays dominate the spec's size):
            wide layers show fewer points, min(max_points, max_values // F).
        selected_filter: filter selected when the page opens (None: no selection).
        point_weight: (n,) instances each point stands for (identical descriptors); each point
            row then carries ``weight``. None: no ``weight`` field.
        activation_codes: each point's ``a`` as one character per filter (a third of the
            size; see `deepeyes_keras/charts/layer_data.py`) instead of an array of ints.
        cumulative_variance: the T4 evidence (`deepeyes_keras/derive/width.py`), (F,): the
            share of the output variance held by the first 1..F principal directions. None
            (the default): no variance view and no ``keep`` param.
        signal_rank, suggested_width: the T4 signal rank and suggested width (F when no cut);
            required with `cumulative_variance`. The ``keep`` pick starts at the width.
        oversized: whether T4 proposes a cut (the view's title says so).
        width_text: the T4 evidence sentence, shown under the view's title.
        cached: reuse the page's template (`layer_template`, built with Altair once per
            `PageShape`) and fill in this snapshot's values; False: build the whole chart with
            Altair (validated), the same spec, about ten times slower.

    Returns:
        A Vega-Lite v6 spec dict with params heatmap_mode, heatmap_sort, heatmap_range,
        heatmap_top, overlay, filter, brush (and keep, with `cumulative_variance`).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> spec = layer_spec(layer="conv1", step=10, max_activation=rng.random(4),
        ...     frequency=rng.random(4), reliability_age=[0, 1, 8, 2], filter_xy=rng.random((4, 2)),
        ...     filter_label=[0, 1, -1, 0], filter_strength=rng.random(4),
        ...     points_xy=rng.random((5, 2)), point_label=[0, 1, 0, 1, 1],
        ...     point_activation=rng.random((5, 4)), thumbnails=[None] * 5, n_labels=2)
        >>> sorted(p["name"] for p in spec["params"])[:4]
        ['brush', 'filter', 'heatmap_mode', 'heatmap_range']
    """
    rows = layer_rows(
        step=step, max_activation=max_activation, frequency=frequency,
        reliability_age=reliability_age, filter_xy=filter_xy, filter_label=filter_label,
        filter_strength=filter_strength, points_xy=points_xy, point_label=point_label,
        point_activation=point_activation, thumbnails=thumbnails, max_points=max_points,
        seed=seed, point_step=point_step, stale_fraction=stale_fraction, max_values=max_values,
        selected_filter=selected_filter, point_weight=point_weight,
        activation_codes=activation_codes, point_uid=point_uid,
    )  # fmt: skip
    with_width = _width_given(cumulative_variance, signal_rank, suggested_width)
    datasets = {"filters": rows.filters, "points": rows.points}
    tops = {k: max([f[k] for f in rows.filters if f[k] is not None], default=1.0)
            for k in ("max", "frequency")}  # fmt: skip
    max_weight = max((p["weight"] for p in rows.points if "weight" in p), default=None)
    values = {"title": f"{layer}, step {int(step)}", "top_max": tops["max"],
              "top_frequency": tops["frequency"], "selected_filter": selected_filter,
              "n_shown": len(rows.points), "n_points": rows.n_points, "max_weight": max_weight,
              **dict(zip(EXTENT, padded_extent(rows.points), strict=True))}  # fmt: skip
    if with_width:
        width_rows = variance_rows(
            cumulative_variance,
            n_filters=rows.n_filters,
            signal_rank=signal_rank,
            suggested_width=suggested_width,
        )
        datasets |= {"variance": width_rows.curve, "variance_rules": width_rows.rules}
        values |= {"signal_rank": int(signal_rank), "suggested_width": int(suggested_width),
                   "oversized": bool(oversized), "width_text": width_text}  # fmt: skip
    shape = PageShape(
        n_filters=rows.n_filters,
        n_labels=n_labels,
        with_width=with_width,
        log_axis=with_width and log_axis(rows.n_filters, int(signal_rank)),
        weighted=max_weight is not None,
        selected=selected_filter is not None,
    )
    if not cached:  # built with Altair from this snapshot's values (validated)
        return restore_view_names(finish(layer_chart(shape, values), datasets), FILTER_VIEWS)
    spec = layer_template(shape).fill(values)
    spec["datasets"] = datasets
    return strict_json(spec)[0]


class PageShape(NamedTuple):
    """What the structure of a layer page depends on: pages of one shape share a template."""

    n_filters: int
    n_labels: int
    with_width: bool  # the T4 evidence: the variance view and the keep param
    log_axis: bool  # the variance curve on a log x axis (`variance.log_axis`)
    weighted: bool  # the point rows carry weight
    selected: bool  # a filter is selected when the page opens


EXTENT = ("x_min", "x_max", "y_min", "y_max")  # the input map's domains (`padded_extent`)


def value_names(shape: PageShape) -> tuple[str, ...]:
    """The per-snapshot values a page of `shape` shows (the keys of `layer_chart`'s values)."""
    return ("title", "top_max", "top_frequency", "n_shown", "n_points", *EXTENT,
            *(["selected_filter"] if shape.selected else []),
            *(["max_weight"] if shape.weighted else []),
            *(["signal_rank", "suggested_width", "oversized", "width_text"]
              if shape.with_width else []))  # fmt: skip


def layer_chart(shape: PageShape, values: Mapping[str, Any]) -> alt.VConcatChart:
    """The page of `shape` as an Altair chart, from `values` (`value_names`): each a snapshot's
    value or a template `Slot` (`deepeyes_keras/charts/common.py`)."""
    v = values
    params = layer_params(
        selected_filter=v["selected_filter"] if shape.selected else None,
        top_max=v["top_max"],
        keep_width=v["suggested_width"] if shape.with_width else None,
    )
    filters, points = alt.Data(name="filters"), alt.Data(name="points")
    picked, brush, n_filters = params.picked, params.brush, shape.n_filters
    heatmap = heatmap_chart(filters, n_filters=n_filters, picked=picked,
                            with_keep=shape.with_width, top_max=v["top_max"],
                            top_frequency=v["top_frequency"])  # fmt: skip
    if shape.with_width:
        variance = variance_chart(
            alt.Data(name="variance"), alt.Data(name="variance_rules"), n_filters=n_filters,
            signal_rank=v["signal_rank"], suggested_width=v["suggested_width"],
            oversized=v["oversized"], text=v["width_text"], keep=params.keep, kept=params.kept,
            log=shape.log_axis,
        )  # fmt: skip
        heatmap = alt.vconcat(heatmap, variance, spacing=30)
    filter_map = filter_map_chart(filters, n_filters=n_filters, n_labels=shape.n_labels,
                                  picked=picked)  # fmt: skip
    input_map = input_map_chart(
        points, n_labels=shape.n_labels, n_shown=v["n_shown"], n_points=v["n_points"],
        brush=brush, extent=tuple(v[k] for k in EXTENT),
        max_weight=v["max_weight"] if shape.weighted else None,
    )  # fmt: skip
    patches = patches_chart(points, brush=brush)
    bars = patch_bars_chart(points, n_filters=n_filters, brush=brush, picked=picked)

    # Each view keeps its own colour and size scales (the variance rules' colours are not labels).
    # Set as the concats are made: each later change would copy the whole chart again.
    own = alt.Resolve(scale=alt.ScaleResolveMap(color="independent", size="independent"))
    top = alt.hconcat(heatmap, filter_map, spacing=40, resolve=own)
    bottom = alt.hconcat(input_map, alt.vconcat(patches, bars), spacing=40, resolve=own)
    # The top-level params go in at construction: vconcat then lifts the brush from its view
    # beside them (setting params afterwards would drop it).
    return alt.vconcat(top, bottom, params=params.top_level(), title=v["title"], resolve=own)


@functools.lru_cache(maxsize=TEMPLATES)
def layer_template(shape: PageShape) -> Template:
    """The template of the pages of `shape`, built (and validated) once per process."""
    template = build_template(functools.partial(layer_chart, shape), value_names(shape))
    restore_view_names(template.spec, FILTER_VIEWS)
    return template


def restore_view_names(spec: dict, names: Sequence[str]) -> dict:
    """`spec` with the units Altair renamed inside layers (``heatmap_0``) named `names` again.

    Altair suffixes a named unit of a layer inside a concat with its position; the ``filter``
    selection lists its views by their given names, and tests and readers find the marks as
    ``heatmap_marks``. Each name must belong to one unit.
    """
    wanted = set(names)

    def walk(node):
        if isinstance(node, dict):
            name = node.get("name")
            if "mark" in node and isinstance(name, str) and name not in wanted:
                base, _, suffix = name.rpartition("_")
                if base in wanted and suffix.isdigit():
                    node["name"] = base
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    return spec


def _width_given(cumulative_variance, signal_rank, suggested_width) -> bool:
    """Whether the T4 evidence is given: all three of its arguments, or none (ValueError)."""
    given = {"cumulative_variance": cumulative_variance is not None,
             "signal_rank": signal_rank is not None,
             "suggested_width": suggested_width is not None}  # fmt: skip
    if any(given.values()) and not all(given.values()):
        missing = sorted(name for name, ok in given.items() if not ok)
        raise ValueError(f"Invalid T4 evidence. Received: {missing} = None. Expected "
                         "cumulative_variance, signal_rank and suggested_width together, "
                         "or none of them.")  # fmt: skip
    return all(given.values())
