"""From the recorded numbers to design advice: the paper's tasks T1-T5, with their evidence.

Plain functions over run records (NumPy and scikit-learn only, no TensorFlow). Every threshold is
a field of :class:`Thresholds` with a documented default; every finding carries the numbers it
rests on, so a reader can check it in the views.

- **T1 stable layer** (our automatic score; the paper judged by eye). For consecutive snapshots
  a and b, the *change* is the earth mover's distance between their interval perplexity
  histograms (normalised; in units of the histogram's range), and the *noise* the distance two
  samples of the pooled distribution would show by chance (:func:`histogram_change`). The
  *excess change* is ``max(0, change - noise)``. A layer is stable at a snapshot
  when the excess change of each of its last ``stable_window`` transitions is at most
  ``stable_excess``; it *became stable* at the first snapshot from which it stays stable to the
  latest one.
- **T2 degenerate filters.** Dead: ``max_activation <= dead_max_fraction * median(max)`` of the
  layer, or ``frequency <= dead_frequency``. Always on: ``frequency >= always_on_frequency``.
- **T3 undetected patterns.** Share of the reservoir's instances on which no filter responds:
  every activation below ``undetected_fraction`` x that filter's max.
- **T4 oversized layer.** Filters not dead are linked when their weighted Jaccard similarity is at
  least ``redundancy_jaccard``; each connected group of two or more is redundant. Suggested width
  = F - dead - sum(group size - 1), at least 1.
- **T5 unnecessary or missing layers.** Separability of the labels in a dense layer's output:
  5-fold cross-validated k-NN accuracy (k = 5) on the reservoir's activation vectors sampled in
  the recent part of training (step >= (1 - ``recent_fraction``) x the snapshot's step, when at
  least ``recent_min_instances`` such instances exist; else all), beside the chance level (share
  of the most frequent label). A hidden dense layer that already separates
  the labels (>= ``separable_accuracy``) followed by another hidden dense layer suggests the later
  one may be unnecessary; a last hidden layer below ``capacity_accuracy`` suggests more capacity.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from deepeyes_keras.run.layout import write_json
from deepeyes_keras.run.reader import load_run


@dataclass(frozen=True)
class Thresholds:
    """Named thresholds of the findings (see the module docstring for each rule)."""

    stable_window: int = 3
    stable_excess: float = 0.02
    dead_max_fraction: float = 0.01
    dead_frequency: float = 0.001
    always_on_frequency: float = 0.9
    undetected_fraction: float = 0.1
    redundancy_jaccard: float = 0.8
    separable_accuracy: float = 0.97
    capacity_accuracy: float = 0.9
    knn_neighbors: int = 5
    knn_folds: int = 5
    recent_fraction: float = 0.5
    recent_min_instances: int = 200


def histogram_change(prev: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """(earth mover's change, expected change by chance) between two interval histograms.

    The change is the 1-D earth mover's distance between the normalised histograms, in units of
    the histogram's range: ``sum_i |C_b[i] - C_a[i]| / (bins - 1)`` with C the cumulative sums.
    Mass moving to a neighbouring bin counts little (a population sitting on a bin edge flips
    between two bins by chance); mass moving far counts a lot. The chance level is the expected
    distance between two samples of the pooled distribution,
    ``sqrt(2/pi) * sum_i sqrt(P_i (1 - P_i) (1/n_a + 1/n_b)) / (bins - 1)``.
    """
    prev = np.asarray(prev, np.float64)
    cur = np.asarray(cur, np.float64)
    n_a, n_b = prev.sum(), cur.sum()
    if n_a <= 0 or n_b <= 0 or len(prev) < 2:
        return 0.0, 0.0
    span = len(prev) - 1
    change = np.abs(np.cumsum(cur / n_b) - np.cumsum(prev / n_a)).sum() / span
    pooled = np.clip(np.cumsum((prev + cur) / (n_a + n_b)), 0.0, 1.0)
    spread = np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    noise = math.sqrt(2 / math.pi) * spread.sum() / span
    return float(change), float(noise)


def stability(histograms: list[np.ndarray], steps: list[int], t: Thresholds = Thresholds()) -> dict:
    """T1 for one layer from its interval histograms at successive snapshots."""
    excess = [None]
    for prev, cur in zip(histograms[:-1], histograms[1:], strict=True):
        change, noise = histogram_change(prev, cur)
        excess.append(max(0.0, change - noise))
    stable_at = [
        i >= t.stable_window
        and all(
            e is not None and e <= t.stable_excess for e in excess[i - t.stable_window + 1 : i + 1]
        )
        for i in range(len(histograms))
    ]
    since = None
    for i in range(len(stable_at) - 1, -1, -1):
        if not stable_at[i]:
            break
        since = steps[i]
    return {
        "stable": bool(stable_at[-1]) if stable_at else False,
        "stable_since_step": since,
        "excess_change": [None if e is None else round(e, 4) for e in excess],
        "steps": list(steps),
    }


def degenerate_filters(max_activation, frequency, t: Thresholds = Thresholds()) -> dict:
    """T2: indices of dead and always-on filters."""
    mu = np.asarray(max_activation, np.float64)
    freq = np.asarray(frequency, np.float64)
    reference = float(np.median(mu)) if len(mu) else 0.0
    dead = (mu <= t.dead_max_fraction * reference) | (freq <= t.dead_frequency)
    always = (freq >= t.always_on_frequency) & ~dead
    return {
        "dead": np.flatnonzero(dead).tolist(),
        "always_on": np.flatnonzero(always).tolist(),
        "median_max_activation": reference,
    }


def undetected_share(activation, max_activation, t: Thresholds = Thresholds()) -> float:
    """T3: share of instances where every filter stays below its fraction of its max."""
    a = np.maximum(np.asarray(activation, np.float64), 0)
    mu = np.asarray(max_activation, np.float64)
    if a.size == 0:
        return 0.0
    responds = (a >= t.undetected_fraction * mu[None, :]) & (a > 0)
    return float(1.0 - responds.any(axis=1).mean())


def redundant_groups(jaccard, dead: list[int], t: Thresholds = Thresholds()) -> list[list[int]]:
    """T4: connected groups (size >= 2) of live filters with Jaccard >= the threshold."""
    phi = np.asarray(jaccard, np.float64)
    n = phi.shape[0]
    live = np.ones(n, bool)
    live[list(dead)] = False
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows, cols = np.nonzero(np.triu(phi >= t.redundancy_jaccard, k=1))
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        if live[i] and live[j]:
            parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in np.flatnonzero(live).tolist():
        groups.setdefault(root(i), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def separability(vectors, labels, t: Thresholds = Thresholds(), seed: int = 0) -> dict:
    """T5 evidence: cross-validated k-NN accuracy of the labels, and the chance level."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    x = np.nan_to_num(np.asarray(vectors, np.float64))
    y = np.asarray(labels)
    keep = y >= 0
    x, y = x[keep], y[keep]
    if len(y) == 0:
        return {"accuracy": None, "chance": None, "instances": 0}
    counts = np.bincount(y)
    chance = float(counts.max() / len(y))
    folds = min(t.knn_folds, int(counts[counts > 0].min()))
    if folds < 2 or len(counts[counts > 0]) < 2:
        return {"accuracy": None, "chance": chance, "instances": int(len(y))}
    knn = KNeighborsClassifier(n_neighbors=min(t.knn_neighbors, len(y) - 1))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    accuracy = float(cross_val_score(knn, x, y, cv=cv).mean())
    return {"accuracy": round(accuracy, 4), "chance": round(chance, 4), "instances": int(len(y))}


def layer_findings(run, name: str, snapshot_index: int = -1, t: Thresholds = Thresholds()) -> dict:
    """T1-T4 (and T5 evidence for dense layers) for one layer at one snapshot of a run."""
    snaps = run.snapshots[: snapshot_index % len(run.snapshots) + 1]
    snap = snaps[-1]
    layer = snap.layers[name]
    info = layer.info
    n_filters = int(info["n_filters"])
    t1 = stability([s.layers[name].perplexity_histogram for s in snaps], [s.step for s in snaps], t)
    t2 = degenerate_filters(layer.max_activation, layer.frequency, t)
    samples = layer.samples
    t3 = undetected_share(samples.activation, layer.max_activation, t)
    groups = redundant_groups(layer.jaccard, t2["dead"], t)
    suggested = max(1, n_filters - len(t2["dead"]) - sum(len(g) - 1 for g in groups))
    out = {
        "layer": name,
        "kind": info["kind"],
        "n_filters": n_filters,
        "step": snap.step,
        "T1": t1,
        "T2": t2,
        "T3": {"undetected_share": round(t3, 4), "instances": int(len(samples))},
        "T4": {
            "redundant_groups": groups,
            "suggested_width": int(suggested),
            "oversized": bool(suggested < n_filters),
        },
    }
    if info["kind"] == "dense":
        # Activations are recorded with the weights of their step: judge separability on the
        # instances of the recent part of training, when there are enough of them.
        recent = samples.step >= (1 - t.recent_fraction) * snap.step
        if recent.sum() < t.recent_min_instances:
            recent = np.ones(len(samples), bool)
        out["T5"] = separability(samples.activation[recent], samples.label[recent], t)
        out["T5"]["since_step"] = int(samples.step[recent].min()) if recent.any() else None
    return out


def run_findings(run, snapshot_index: int = -1, t: Thresholds = Thresholds()) -> dict:
    """Findings of every analysed layer, plus the layer-level T5 suggestions."""
    layers = {name: layer_findings(run, name, snapshot_index, t) for name in run.layer_names}
    output_name = run.layer_names[-1] if run.layer_names else None
    hidden_dense = [n for n in run.layer_names if layers[n]["kind"] == "dense" and n != output_name]
    suggestions = []
    for i, name in enumerate(hidden_dense):
        acc = layers[name]["T5"]["accuracy"]
        if acc is not None and acc >= t.separable_accuracy and i + 1 < len(hidden_dense):
            later = hidden_dense[i + 1 :]
            suggestions.append(
                {
                    "task": "T5",
                    "layer": name,
                    "remove": later,
                    "text": f"labels are already separable after {name} (k-NN accuracy {acc:.3f}); "
                    f"the later hidden dense layer(s) {later} may be unnecessary",
                }
            )
            break
    if hidden_dense:
        last = hidden_dense[-1]
        acc = layers[last]["T5"]["accuracy"]
        if acc is not None and acc < t.capacity_accuracy:
            suggestions.append(
                {
                    "task": "T5",
                    "layer": last,
                    "add_capacity": True,
                    "text": f"labels are not yet separable after the last hidden layer {last} "
                    f"(k-NN accuracy {acc:.3f}): more capacity may be needed",
                }
            )
    widths = {
        n: f["T4"]["suggested_width"]
        for n, f in layers.items()
        if f["T4"]["oversized"] and n != output_name
    }
    step = layers[output_name]["step"] if output_name else None
    return {
        "step": step,
        "thresholds": asdict(t),
        "layers": layers,
        "suggestions": suggestions,
        "suggested_widths": widths,
    }


def summarize(result: dict) -> dict:
    """The short form shown in reports and on the run page."""
    rows = {}
    for name, f in result["layers"].items():
        rows[name] = {
            "stable": f["T1"]["stable"],
            "stable_since_step": f["T1"]["stable_since_step"],
            "dead": len(f["T2"]["dead"]),
            "always_on": len(f["T2"]["always_on"]),
            "undetected_share": f["T3"]["undetected_share"],
            "redundant_groups": len(f["T4"]["redundant_groups"]),
            "n_filters": f["n_filters"],
            "suggested_width": f["T4"]["suggested_width"],
            "separability": f.get("T5", {}).get("accuracy"),
        }
    return {
        "step": result["step"],
        "layers": rows,
        "suggestions": result["suggestions"],
        "suggested_widths": result["suggested_widths"],
    }


def write_findings(run_dir, *, overwrite: bool = False, t: Thresholds = Thresholds()) -> int:
    """Writes the findings of every snapshot that lacks them; returns how many were written.

    The findings stage's own files (:mod:`deepeyes_keras.run.layout`): ``findings/step-N.json``
    per snapshot (``{"findings": <run_findings result>, "summary": <summarize result>}``) and
    ``findings.json``, the latest summary. Read them back with ``snapshot.findings`` and
    ``snapshot.findings_summary``. Snapshot records, which the recorder owns, are never touched.
    A run of schema 1, whose records hold findings, gets files of its own only with
    ``overwrite=True`` (its findings still load from the records).
    """
    run = load_run(run_dir)
    written = 0
    for i, snap in enumerate(run.snapshots):
        if snap.findings is not None and not overwrite:
            continue
        result = run_findings(run, i, t)
        write_json(
            run.layout.findings(snap.step), {"findings": result, "summary": summarize(result)}
        )
        written += 1
    if run.snapshots and written:
        last = run.snapshots[-1]
        if last.findings_summary is not None:
            write_json(run.layout.latest_findings, last.findings_summary)
    return written
