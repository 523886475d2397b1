"""The overview: training curves over steps, one panel per metric, read as TensorBoard reads them.

Keras logs, at each step, the *running average* of a metric since the start of the epoch, which
jumps at every epoch boundary. The overview turns it back into per-step values, draws those
faint and a smoothed curve over them (exponential moving average, TensorBoard's default weight
0.6, debiased), and puts the validation values of the epoch-end logs (``val_<name>``) in the
same panel. Written by the views stage as ``views/overview.vl.json`` (see
`deepeyes_keras/derive/views.py`).

Per-step values: with n_t the number of batches of the epoch up to step t (t - start + 1), the
running average m_t gives the mean over the batches of (t_prev, t] as
(n_t m_t - n_prev m_prev) / (n_t - n_prev) (the value of step t itself when steps follow one by
one; Keras weights the loss by batch size, so a short last batch of an epoch makes that step's
value approximate). Epoch starts come, in this order, from a per-step ``epoch`` list in the
metrics, from the epoch-end logs (their training values equal the running average of the epoch's
last step, which finds that step), or, lacking both, from a reset test: a step whose value,
read as a continuation, lies more than `RESET_FACTOR` times the epoch's median deviation away
(for every metric at once, after at least `RESET_MIN_STEPS` steps) starts a new epoch.

Example:
    >>> spec = overview_spec({"step": [1, 2, 3], "loss": [2.3, 1.1, None]})
    >>> sorted(v["name"] for v in spec["vconcat"])
    ['metric_loss']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import altair as alt
import numpy as np

from deepeyes_keras.charts.common import clean_list, clean_number, finish

__all__ = ["overview_spec", "per_step_values", "epoch_starts", "smooth", "SMOOTHING"]

SMOOTHING = 0.6  # weight of the moving average (TensorBoard's default)
RESET_FACTOR, RESET_MIN_STEPS = 8.0, 8  # the reset test, used only without epoch information
SERIES = ("per step", "smoothed", "validation")
SERIES_COLORS = ("#9ecae9", "#1f77b4", "#f58518")
MATCH_TOLERANCE = 1e-6  # relative: an epoch-end log value equals its last step's running mean


def smooth(values: Sequence[float], weight: float = SMOOTHING) -> np.ndarray:
    """Debiased exponential moving average: s_t = w s_{t-1} + (1 - w) v_t, over 1 - w^t.

    Example:
        >>> smooth([1.0, 1.0, 4.0], 0.5).round(3).tolist()
        [1.0, 1.0, 2.714]
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"Invalid smoothing weight. Received: {weight}. Expected 0 <= w < 1.")
    out, acc, norm = [], 0.0, 0.0
    for v in np.asarray(values, dtype=np.float64):
        acc, norm = weight * acc + (1.0 - weight) * v, weight * norm + (1.0 - weight)
        out.append(acc / norm)
    return np.array(out)


def epoch_starts(
    steps: Sequence[int],
    running: Mapping[str, Sequence[float]],
    *,
    epochs: Sequence[int] | None = None,
    epoch_logs: Sequence[Mapping] = (),
) -> list[int]:
    """Indices (into `steps`) where an epoch starts; always begins with 0.

    Args:
        steps: the logged steps, increasing.
        running: per metric, Keras's running averages at those steps (NaN: unknown).
        epochs: the epoch of each step, when recorded.
        epoch_logs: the epoch-end logs, in order (their training values find each epoch's end).

    Example:
        >>> epoch_starts([1, 2, 3, 4], {"loss": [4.0, 3.0, 1.0, 1.5]}, epochs=[0, 0, 1, 1])
        [0, 2]
    """
    n = len(steps)
    if epochs is not None:
        return [0] + [i for i in range(1, n) if epochs[i] != epochs[i - 1]]
    starts, position = [0], 0
    for log in epoch_logs:
        names = [k for k in running if isinstance(log.get(k), int | float)]
        if not names:
            break
        end = next((i for i in range(position, n) if all(
            _close(running[k][i], float(log[k])) for k in names)), None)  # fmt: skip
        if end is None:
            break
        position = end + 1
        if position < n:
            starts.append(position)
    if len(starts) > 1 or not n:
        return starts
    return _reset_starts(steps, running)


def _close(a: float, b: float) -> bool:
    return math.isfinite(a) and abs(a - b) <= MATCH_TOLERANCE * max(1.0, abs(b))


def _reset_starts(steps: Sequence[int], running: Mapping[str, Sequence[float]]) -> list[int]:
    """Epoch starts found by the reset test (no epoch information given)."""
    starts = [0]
    deviations: dict[str, list[float]] = {k: [] for k in running}
    for i in range(1, len(steps)):
        start = starts[-1]
        if i - start < RESET_MIN_STEPS:
            flags = [False]
        else:
            flags = []
            for name, m in running.items():
                value = _continued(steps, m, start, i)
                dev = abs(value - m[i - 1])
                history = deviations[name]
                scale = float(np.median(history)) if history else 0.0
                flags.append(math.isfinite(dev) and scale > 0 and dev > RESET_FACTOR * scale)
        if all(flags):
            starts.append(i)
            deviations = {k: [] for k in running}
            continue
        for name, m in running.items():
            value = _continued(steps, m, start, i)
            if math.isfinite(value) and math.isfinite(m[i - 1]):
                deviations[name].append(abs(value - m[i - 1]))
    return starts


def _continued(steps, m, start: int, i: int) -> float:
    """The mean over (steps[i-1], steps[i]] of a running average begun at index `start`."""
    return _between(steps, m, start, i - 1, i)


def _between(steps, m, start: int, j: int, i: int) -> float:
    """The mean over (steps[j], steps[i]] of a running average begun at index `start`."""
    base = steps[start] - 1
    n_now, n_before = steps[i] - base, steps[j] - base
    return (n_now * m[i] - n_before * m[j]) / max(n_now - n_before, 1)


def per_step_values(steps: Sequence[int], running: Sequence[float], starts: Sequence[int]):
    """Per-step values from Keras's running averages, epochs starting at indices `starts`.

    Example:
        >>> per_step_values([1, 2, 3, 4], [2.0, 1.5, 4.0, 3.0], [0, 2]).tolist()
        [2.0, 1.0, 4.0, 2.0]
    """
    m = np.asarray(running, dtype=np.float64)
    out = np.full(len(m), np.nan)
    bounds = [*starts, len(m)]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=False):
        out[start] = m[start]
        last = start if math.isfinite(m[start]) else None  # the last step with a known mean
        for i in range(start + 1, stop):
            if not math.isfinite(m[i]):
                continue
            if last is None:  # nothing known earlier in the epoch: the mean is all we have
                out[i] = m[i]
            else:
                out[i] = _between(steps, m, start, last, i)
            last = i
    return out


def overview_spec(
    metrics: Mapping[str, Sequence],
    *,
    epoch_logs: Sequence[Mapping] = (),
    smoothing: float = SMOOTHING,
    width: int = 560,
    height: int = 140,
) -> dict:
    """Training curves over steps: per panel the per-step values, smoothed, and validation.

    Args:
        metrics: ``{"step": [...], "loss": [...], "accuracy": [...], ...}`` as Keras logs them
            per step (running averages over the epoch); every list as long as "step"; None (or
            NaN) marks an unknown value. An optional ``"epoch"`` list gives each step's epoch.
            Panels follow the key order.
        epoch_logs: the epoch-end logs (``{"epoch": 0, "loss": ..., "val_loss": ...}``) in
            order; ``val_<name>`` is drawn in panel <name> at the epoch's last step.
        smoothing: weight of the moving average, 0 <= w < 1 (0: no smoothing).
        width, height: size of one panel in pixels.

    Returns:
        A Vega-Lite spec dict (a vconcat; each panel named ``metric_<name>``). With no metric
        besides "step" the spec holds a single text panel saying so.

    Example:
        >>> spec = overview_spec({"step": [10, 20], "loss": [1.5, 0.9], "accuracy": [0.5, 0.7]})
        >>> [v["name"] for v in spec["vconcat"]]
        ['metric_loss', 'metric_accuracy']
    """
    names, rows, last_step = _metric_rows(metrics, epoch_logs, smoothing)
    base = alt.Chart(alt.Data(name="metrics"))
    panels = [
        _metric_panel(base, name, rows, last_step, width=width, height=height) for name in names
    ]
    if not panels:
        panels.append(
            alt.Chart(alt.Data(values=[{"text": "no metrics recorded yet"}]), name="metric_none")
            .mark_text(size=14)
            .encode(text="text:N")
            .properties(width=width, height=40)
        )
    return finish(alt.vconcat(*panels), {"metrics": rows} if names else None)


def _metric_rows(metrics, epoch_logs, smoothing) -> tuple[list[str], list[dict], int]:
    """Metric names (key order), long-form rows {metric, series, step, value}, the last step."""
    if "step" not in metrics:
        raise ValueError(
            f"Invalid metrics: no 'step' list. Received keys: {sorted(metrics)}. Expected "
            "{'step': [...], 'loss': [...], ...}."
        )
    names = [k for k in metrics if k not in ("step", "epoch")]
    bad = {k: len(metrics[k]) for k in [*names, "epoch"] if k in metrics
           and len(metrics[k]) != len(metrics["step"])}  # fmt: skip
    if bad:
        raise ValueError(
            f"Invalid metrics: every list must be as long as 'step' ({len(metrics['step'])}). "
            f"Received lengths: {bad}."
        )
    steps_all = [clean_number(s) for s in metrics["step"]]
    keep = [i for i, s in enumerate(steps_all) if s is not None]
    steps = [int(steps_all[i]) for i in keep]
    running = {k: [_float(metrics[k][i]) for i in keep] for k in names}
    epochs = [metrics["epoch"][i] for i in keep] if "epoch" in metrics else None
    logs = [dict(log) for log in epoch_logs]
    starts = epoch_starts(steps, running, epochs=epochs, epoch_logs=logs)
    rows: list[dict] = []
    for name in names:
        raw = per_step_values(steps, running[name], starts)
        known = np.isfinite(raw)
        smoothed = np.full(len(raw), np.nan)
        smoothed[known] = smooth(raw[known], smoothing)
        for series, values in (("per step", raw), ("smoothed", smoothed)):
            pairs = zip(steps, clean_list(values), strict=True)
            rows += [{"metric": name, "series": series, "step": s, "value": v}
                     for s, v in pairs if v is not None]  # fmt: skip
    ends = [starts[i + 1] - 1 for i in range(len(starts) - 1)] + ([len(steps) - 1] if steps else [])
    for e, log in enumerate(logs):
        step = log.get("step", steps[ends[e]] if e < len(ends) else None)
        for name in names:
            value = clean_number(_float(log.get(f"val_{name}")))
            if step is not None and value is not None:
                rows.append({"metric": name, "series": "validation", "step": int(step),
                             "value": value})  # fmt: skip
    shown = [n for n in names if any(r["metric"] == n for r in rows)]
    return shown, rows, (steps[-1] if steps else 1)


def _float(value) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _metric_panel(base: alt.Chart, name: str, rows, last_step: int, *, width, height):
    """Panel of one metric: faint per-step values, the smoothed line, validation points."""
    # The y axis is zoomed to the smoothed and validation values (the per-step noise is clipped).
    framed = [r["value"] for r in rows if r["metric"] == name and r["series"] != "per step"]
    lo, hi = (min(framed), max(framed)) if framed else (0.0, 1.0)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
    first = min((r["step"] for r in rows if r["metric"] == name), default=0)
    x_domain = [min(first, last_step - 1), last_step]
    y_domain = [clean_number(lo - pad), clean_number(hi + pad)]
    x = alt.X("step:Q", title="step", scale=alt.Scale(domain=x_domain, nice=False))
    y = alt.Y("value:Q", title=name, scale=alt.Scale(domain=y_domain, nice=False))
    color = alt.Color("series:N", title=None,
                      scale=alt.Scale(domain=list(SERIES), range=list(SERIES_COLORS)),
                      legend=alt.Legend(orient="top"))  # fmt: skip
    tooltip = [alt.Tooltip("series:N"), alt.Tooltip("step:Q"),
               alt.Tooltip("value:Q", title=name, format=".4~g")]  # fmt: skip
    panel = base.transform_filter(alt.datum.metric == name)
    raw = panel.transform_filter(alt.datum.series == "per step").mark_line(
        strokeWidth=1, opacity=0.45, clip=True)  # fmt: skip
    line = panel.transform_filter(alt.datum.series == "smoothed").mark_line(strokeWidth=1.8)
    val = panel.transform_filter(alt.datum.series == "validation").mark_line(
        strokeWidth=1.5, point=alt.OverlayMarkDef(size=18, filled=True))  # fmt: skip
    # Hover targets for the tooltip: small, nearly transparent (a line's tooltip is its first row).
    hover = panel.transform_filter(alt.datum.series != "per step").mark_point(
        size=30, opacity=0.01, filled=True)  # fmt: skip
    layers = [chart.encode(x=x, y=y, color=color) for chart in (raw, line, val)]
    layers.append(hover.encode(x=x, y=y, color=color, tooltip=tooltip))
    return alt.layer(*layers).properties(name=f"metric_{name}", width=width, height=height,
                                         title=name)  # fmt: skip
