"""Fine-tuning advice: which classes a layer's filters respond to, and whether to keep the layer.

The paper (§5.1) fine-tunes an ImageNet AlexNet to image styles and reads from DeepEyes which
layers stay useful, which leave input patches undetected and which classes hardly any filter
responds to. This module turns those readings into rules (ours, not the paper's; every threshold
is a field of :class:`TransferThresholds`), computed from one layer's recorded numbers at one
snapshot: the reservoir's recent instances with their labels and input-space patches, each
filter's max activation and its T2 verdict. NumPy only.

- **Class response.** For live filter i and class c, ``m[i, c]`` is the mean (clamped)
  activation of i over the recent instances of class c, divided by the filter's max activation
  ``mu_i``. Filter i *responds to* c when ``m[i, c] >= class_response x max_c m[i, c]`` (close
  to its best class) and ``m[i, c] >= min_response`` (not barely active). A class is *weakly
  covered* when at most ``weak_class_share`` of the live filters respond to it (none at all
  always counts); a filter that responds to every class present is *unselective* (the paper's
  "face" filter that fires across all styles).
- **Undetected patterns (T3 on patterns).** T3 counts instances on which every filter stays below
  the findings' ``undetected_fraction`` x its max; here only instances whose input-space patch
  shows a pattern count (contrast, max - min, above ``blank_contrast`` x the largest contrast in
  the sample): a blank background window is no pattern a filter should detect. Given overall and
  per class.
- **Keep or retrain.** A hidden layer's filters *stay useful* for the task being trained when at
  least ``min_live_share`` of them are live (not T2-dead on the new data) and at most
  ``max_undetected`` of the patterned instances go undetected; otherwise the advice is to retrain
  it. The output layer is the new task's head: always trained. Since a layer's input changes
  when a layer below it is retrained, :func:`fine_tuning_plan` freezes the layers before the first
  one to retrain and retrains the rest.

Example:
    >>> import numpy as np
    >>> acts = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.0, 0.9]])
    >>> r = class_response(acts, np.array([0, 1, 0, 1]), np.array([1.0, 1.0]), dead=[], n_classes=2)
    >>> r["filters_per_class"], r["unselective"]
    ([1, 1], [])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEEP, RETRAIN, HEAD = "keep", "retrain", "retrain (output layer)"


@dataclass(frozen=True)
class TransferThresholds:
    """Named thresholds of the fine-tuning findings (see the module docstring for each rule).

    Attributes:
        class_response: a filter responds to a class when its mean activation on the class is at
            least this share of its mean on its best class. 0.5: the same half-of-the-best cut
            the paper's frequency activation uses (beta).
        min_response: ... and at least this share of its max activation: a filter whose mean on
            a class is under 5% of its peak is all but silent there.
        weak_class_share: a class is weakly covered when at most this share of the live filters
            respond to it. 0.1: one filter in ten.
        blank_contrast: an input-space patch shows a pattern when its contrast (max - min) is
            above this share of the largest contrast in the sample.
        min_live_share: a layer stays useful only if at least this share of its filters are live
            on the new data. 0.75: a quarter of the filters dead on the new task is a layer built
            for the old one.
        max_undetected: ... and at most this share of its patterned instances are undetected.
            0.25: one pattern in four unseen by every filter.
    """

    class_response: float = 0.5
    min_response: float = 0.05
    weak_class_share: float = 0.1
    blank_contrast: float = 0.05
    min_live_share: float = 0.75
    max_undetected: float = 0.25

    def __post_init__(self):
        bad = [f"{k}={v!r}" for k, v in vars(self).items() if not 0.0 <= v <= 1.0]
        if bad:
            raise ValueError(
                f"Invalid TransferThresholds. Received: {', '.join(bad)}. Expected every "
                "threshold in [0, 1] (they are shares)."
            )


def class_means(activation, labels, max_activation, n_classes: int) -> np.ndarray:
    """``m[i, c]``: mean clamped activation of filter i on class c over its max (NaN: no class)."""
    a = np.maximum(np.asarray(activation, np.float64), 0.0)
    labels = np.asarray(labels)
    mu = np.asarray(max_activation, np.float64)
    out = np.full((a.shape[1], n_classes), np.nan)
    for c in range(n_classes):
        rows = labels == c
        if rows.any():
            out[:, c] = a[rows].mean(axis=0) / np.where(mu > 0, mu, np.inf)
    return out


def class_response(
    activation,
    labels,
    max_activation,
    *,
    dead,
    n_classes: int,
    t: TransferThresholds = TransferThresholds(),
) -> dict:
    """Which classes each live filter responds to, and which classes few filters respond to.

    Args:
        activation: (n, F) activation vectors of the instances.
        labels: (n,) their labels (-1: unknown, ignored).
        max_activation: (F,) each filter's max activation mu_i.
        dead: indices of dead filters (T2), left out.
        n_classes: number of classes d (labels 0..d-1).
        t: the thresholds.

    Returns:
        A dict with ``relative_mean`` (F x d, ``m``; None where a class has no instance),
        ``instances_per_class``, ``filters_per_class`` (live filters responding to each class;
        None where a class has no instance), ``live_filters``, ``weak_classes``,
        ``selective`` (``{"filter index": class}`` for live filters responding to one class
        only) and ``unselective`` (live filters responding to every class present).
    """
    m = class_means(activation, labels, max_activation, n_classes)
    labels = np.asarray(labels)
    counts = [int((labels == c).sum()) for c in range(n_classes)]
    present = np.array(counts) > 0
    live = np.ones(m.shape[0], bool)
    live[list(dead)] = False
    filled = np.nan_to_num(m, nan=0.0)
    best = filled.max(axis=1, keepdims=True)
    responds = (filled >= t.class_response * best) & (filled >= t.min_response) & live[:, None]
    responds &= present[None, :]
    n_live = int(live.sum())
    per_class = [int(v) if present[c] else None for c, v in enumerate(responds.sum(axis=0))]
    weak = [
        c
        for c, v in enumerate(per_class)
        if v is not None and (v == 0 or v <= t.weak_class_share * n_live)
    ]
    hits = responds.sum(axis=1)
    # Keys are strings, as they read back from the findings' JSON.
    selective = {
        str(i): int(np.flatnonzero(responds[i])[0]) for i in np.flatnonzero(live & (hits == 1))
    }
    everywhere = live & (hits == present.sum()) & (present.sum() > 1)
    return {
        "relative_mean": [[None if np.isnan(v) else round(float(v), 4) for v in row] for row in m],
        "instances_per_class": counts,
        "filters_per_class": per_class,
        "live_filters": n_live,
        "weak_classes": weak,
        "selective": selective,
        "unselective": np.flatnonzero(everywhere).tolist(),
    }


def patterned(patch, t: TransferThresholds = TransferThresholds()) -> np.ndarray:
    """Which instances' input-space patches show a pattern (contrast above the blank level)."""
    p = np.asarray(patch, np.float64).reshape(len(patch), -1)
    if p.size == 0:
        return np.zeros(len(p), bool)
    contrast = p.max(axis=1) - p.min(axis=1)
    top = float(contrast.max()) if len(contrast) else 0.0
    return contrast > t.blank_contrast * top if top > 0 else np.zeros(len(p), bool)


def undetected_patterns(
    activation,
    labels,
    max_activation,
    has_pattern,
    *,
    n_classes: int,
    level: float = 0.1,
) -> dict:
    """T3 restricted to patterned instances: overall and per class (None: no such instance).

    An instance is detected when some filter reaches ``level`` x its max (the findings'
    ``undetected_fraction``).
    """
    a = np.maximum(np.asarray(activation, np.float64), 0.0)
    mu = np.asarray(max_activation, np.float64)
    detected = ((a >= level * mu[None, :]) & (a > 0)).any(axis=1)
    labels = np.asarray(labels)
    has_pattern = np.asarray(has_pattern, bool)

    def share(rows):
        rows = rows & has_pattern
        return round(float(1.0 - detected[rows].mean()), 4) if rows.any() else None

    return {
        "share": share(np.ones(len(a), bool)),
        "patterned": int(has_pattern.sum()),
        "instances": int(len(a)),
        "per_class": [share(labels == c) for c in range(n_classes)],
    }


def layer_verdict(
    n_filters: int, dead, undetected: float | None, *, output: bool, t=TransferThresholds()
) -> dict:
    """Keep or retrain one layer, with the reasons (see the module docstring)."""
    live_share = 1.0 - len(dead) / n_filters if n_filters else 0.0
    if output:
        return {"verdict": HEAD, "live_share": round(live_share, 4), "reasons": []}
    reasons = []
    if live_share < t.min_live_share:
        reasons.append(
            f"only {live_share:.0%} of its filters are live on this data "
            f"(at least {t.min_live_share:.0%} needed)"
        )
    if undetected is not None and undetected > t.max_undetected:
        reasons.append(
            f"{undetected:.0%} of the patterned instances go undetected "
            f"(at most {t.max_undetected:.0%})"
        )
    return {
        "verdict": RETRAIN if reasons else KEEP,
        "live_share": round(live_share, 4),
        "reasons": reasons,
    }


def transfer_finding(
    layer, rows, dead, *, output: bool, level: float = 0.1, t=TransferThresholds()
) -> dict:
    """The fine-tuning findings of one layer at one snapshot (``layers[l]["transfer"]``).

    Args:
        layer: a :class:`~deepeyes_keras.run.reader.LayerSnapshot`.
        rows: boolean mask of the reservoir instances to judge (the findings' recent ones).
        dead: the layer's dead filters (T2).
        output: whether it is the model's output layer (the new task's head).
        level: the T3 detection level (the findings' ``undetected_fraction``).
        t: the thresholds.
    """
    samples = layer.samples
    acts, labels = samples.activation[rows], samples.label[rows]
    mu = np.asarray(layer.max_activation, np.float64)
    label_sums = layer.label_activation
    n_classes = int(np.shape(label_sums)[1]) if np.ndim(label_sums) == 2 else 0
    n_classes = max(n_classes, int(labels.max()) + 1 if len(labels) else 0)
    response = class_response(acts, labels, mu, dead=dead, n_classes=n_classes, t=t)
    missed = undetected_patterns(
        acts, labels, mu, patterned(samples.patch[rows], t), n_classes=n_classes, level=level
    )
    verdict = layer_verdict(len(mu), dead, missed["share"], output=output, t=t)
    return {"classes": response, "undetected_patterns": missed, **verdict}


def layer_transfer(run, layer, rows, dead, t) -> dict:
    """:func:`transfer_finding` as the findings call it: ``t`` is their ``Thresholds`` (its
    ``transfer`` and ``undetected_fraction``); the run's last analysed layer is the output."""
    output = layer.name == run.layer_names[-1]
    return transfer_finding(
        layer, rows, dead, output=output, level=t.undetected_fraction, t=t.transfer
    )


def fine_tuning_plan(findings: dict) -> dict:
    """Which layers to freeze and which to retrain, from one snapshot's findings.

    Layers are taken in the findings' order (the run's analysed layers, input to output): those
    before the first layer whose verdict is not "keep" are frozen, the rest retrained (a layer's
    input changes when a layer below it is retrained).

    Returns:
        ``{"freeze": [...], "retrain": [...], "first_retrained": name or None}``.
    """
    names = [n for n, f in (findings.get("layers") or {}).items() if "transfer" in f]
    freeze: list[str] = []
    for name in names:
        if findings["layers"][name]["transfer"]["verdict"] != KEEP:
            break
        freeze.append(name)
    rest = names[len(freeze) :]
    return {"freeze": freeze, "retrain": rest, "first_retrained": rest[0] if rest else None}
