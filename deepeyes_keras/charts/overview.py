"""The overview: loss, accuracy and any other metric over steps, one line panel per metric.

Written by the views stage as ``views/overview.vl.json`` (see `deepeyes_keras/derive/views.py`).

Example:
    >>> spec = overview_spec({"step": [1, 2, 3], "loss": [2.3, 1.1, None]})
    >>> sorted(v["name"] for v in spec["vconcat"])
    ['metric_loss']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import altair as alt

from deepeyes_keras.charts.common import clean_list, finish

__all__ = ["overview_spec"]


def overview_spec(metrics: Mapping[str, Sequence], *, width: int = 560, height: int = 140) -> dict:
    """Training metrics over steps, one panel per metric.

    Args:
        metrics: ``{"step": [...], "loss": [...], "accuracy": [...], ...}``; every list as long as
            "step"; None (or NaN) marks a step where the metric is unknown. Panels follow the
            key order of `metrics`.
        width, height: size of one panel in pixels.

    Returns:
        A Vega-Lite spec dict (a vconcat; each panel named ``metric_<name>``). With no metric
        besides "step" the spec holds a single text panel saying so.

    Example:
        >>> spec = overview_spec({"step": [10, 20], "loss": [1.5, 0.9], "accuracy": [0.5, 0.7]})
        >>> [v["name"] for v in spec["vconcat"]]
        ['metric_loss', 'metric_accuracy']
    """
    names, rows = _metric_rows(metrics)
    base = alt.Chart(alt.Data(name="metrics"))
    panels = [_metric_panel(base, name, width=width, height=height) for name in names]
    if not panels:
        panels.append(
            alt.Chart(alt.Data(values=[{"text": "no metrics recorded yet"}]), name="metric_none")
            .mark_text(size=14)
            .encode(text="text:N")
            .properties(width=width, height=40)
        )
    return finish(alt.vconcat(*panels), {"metrics": rows} if names else None)


def _metric_rows(metrics: Mapping[str, Sequence]) -> tuple[list[str], list[dict]]:
    """The metric names (key order) and the long-form rows {metric, step, value}, nulls dropped."""
    if "step" not in metrics:
        raise ValueError(
            f"Invalid metrics: no 'step' list. Received keys: {sorted(metrics)}. Expected "
            "{'step': [...], 'loss': [...], ...}."
        )
    steps = clean_list(metrics["step"])
    names = [k for k in metrics if k != "step"]
    bad = {k: len(metrics[k]) for k in names if len(metrics[k]) != len(steps)}
    if bad:
        raise ValueError(
            f"Invalid metrics: every list must be as long as 'step' ({len(steps)}). "
            f"Received lengths: {bad}."
        )
    rows = []
    for name in names:
        for step, value in zip(steps, clean_list(metrics[name]), strict=True):
            if step is not None and value is not None:
                rows.append({"metric": name, "step": step, "value": value})
    return names, rows


def _metric_panel(base: alt.Chart, name: str, *, width: int, height: int) -> alt.Chart:
    """The line of one metric over steps, with points and a tooltip."""
    line = base.mark_line(point=True).encode(
        x=alt.X("step:Q", title="step", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("value:Q", title=name, scale=alt.Scale(zero=False)),
        tooltip=[alt.Tooltip("step:Q"), alt.Tooltip("value:Q", title=name, format=".4~g")],
    )
    return line.transform_filter(alt.datum.metric == name).properties(
        name=f"metric_{name}", width=width, height=height, title=name
    )
