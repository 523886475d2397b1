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
- **T4 oversized layer.** The width the layer's recent activations need
  (:func:`deepeyes_keras.derive.width.suggested_width`: twice the signal rank, the directions
  above the noise of the sample, with the evidence and the cumulative explained-variance curve);
  a cut is proposed when it removes at least ``width.min_cut`` of the layer. Beside it, the
  redundant groups: live filters linked when their weighted Jaccard similarity is at least
  ``redundancy_jaccard``; each connected group of two or more is redundant.
- **T5 unnecessary or missing layers.** Linear-probe and k-NN accuracy of the labels on every
  layer's recent instances (step >= (1 - ``recent_fraction``) x the snapshot's step, when at
  least ``recent_min_instances`` exist; a conv layer through one pooled descriptor per image).
  Every hidden dense layer's *input* is probed too, on the same instances: its recorded neuronal
  receptive fields, the flattened input that the paper's input map of the layer embeds
  (:func:`deepeyes_keras.derive.probes.input_probe`). Along the depth
  (:func:`deepeyes_keras.derive.probes.necessity`), a hidden layer that adds less than
  ``necessity.min_gain`` to what it receives (over its input when probed, else over the layer
  before), or comes after separability saturated (its own input included), may be unnecessary.
  A removal is proposed for every such *hidden dense* layer, after a dense layer or after a
  Flatten (never for a conv layer: its pooled descriptor is not what the next layer sees); the
  redesign keeps it only if the graph builds without the layer. A last hidden layer far below
  the output suggests more capacity.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from deepeyes_keras.derive import probes
from deepeyes_keras.derive.probes import NecessityThresholds, necessity, pool_by_image, probe
from deepeyes_keras.derive.transfer import TransferThresholds, layer_transfer
from deepeyes_keras.derive.width import WidthThresholds, suggested_width
from deepeyes_keras.run.layout import write_json
from deepeyes_keras.run.reader import load_run


@dataclass(frozen=True)
class Thresholds:
    """Named thresholds of the findings (see the module docstring for each rule).

    ``width`` and ``necessity`` hold the T4 and T5 rules' own thresholds
    (:class:`~deepeyes_keras.derive.width.WidthThresholds`,
    :class:`~deepeyes_keras.derive.probes.NecessityThresholds`).
    """

    stable_window: int = 3
    stable_excess: float = 0.02
    dead_max_fraction: float = 0.01
    dead_frequency: float = 0.001
    always_on_frequency: float = 0.9
    undetected_fraction: float = 0.1
    redundancy_jaccard: float = 0.8
    probe_folds: int = 5
    probe_neighbors: int = 5
    recent_fraction: float = 0.5
    recent_min_instances: int = 200
    probe_max_instances: int = 1000
    width: WidthThresholds = field(default_factory=WidthThresholds)
    necessity: NecessityThresholds = field(default_factory=NecessityThresholds)
    transfer: TransferThresholds = field(default_factory=TransferThresholds)


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


def recent_instances(samples, step: int, t: Thresholds = Thresholds()) -> np.ndarray:
    """Rows of the reservoir sampled in the recent part of training (all, when too few).

    Activations are recorded with the weights of their step: T4 and T5 judge the network as it is
    now on the instances sampled at step >= (1 - recent_fraction) x ``step``, when at least
    ``recent_min_instances`` exist.
    """
    recent = samples.step >= (1 - t.recent_fraction) * step
    if recent.sum() < t.recent_min_instances:
        recent = np.ones(len(samples), bool)
    return recent


def width_finding(activations, dead, groups, t: Thresholds = Thresholds()) -> dict:
    """T4: redundant groups and the activation-based suggested width, with its evidence."""
    s = suggested_width(activations, dead=dead, redundant_groups=groups, thresholds=t.width)
    v = s.variance
    return {
        "redundant_groups": groups,
        "redundancy_width": int(s.redundancy_width),
        "signal_rank": int(s.signal.rank),
        "rank_method": s.signal.method,
        "noise_share": round(float(s.signal.noise_share), 4),
        "gavish_donoho": int(s.signal.gavish_donoho),
        "variance_count": int(v.k),
        "participation_ratio": round(float(v.participation_ratio), 2),
        "effective_rank": round(float(v.effective_rank), 2),
        "cumulative_variance": [round(float(c), 4) for c in v.cumulative],
        "instances": int(v.instances),
        "sample_limited": bool(s.sample_limited),
        "suggested_width": int(s.width),
        "oversized": bool(s.cut),
        "text": s.text,
    }


def probe_finding(samples, rows, kind: str, t: Thresholds = Thresholds(), seed: int = 0) -> dict:
    """T5 evidence of one layer: linear-probe and k-NN accuracy of the labels, and chance.

    Dense layers are probed on their output vectors (one per image); conv layers on one
    descriptor per image, the mean of its sampled positions' vectors. At most
    ``probe_max_instances`` descriptors, the most recent, bound the cost.
    """
    acts, labels = samples.activation[rows], samples.label[rows]
    descriptor = "activation vector"
    if kind != "dense":
        pooled = pool_by_image(acts, samples.image[rows], labels)
        acts, labels = pooled.features, pooled.labels
        descriptor = "mean over the image's sampled positions"
    if len(labels) > t.probe_max_instances:
        acts, labels = acts[-t.probe_max_instances :], labels[-t.probe_max_instances :]
    result = probe(acts, labels, seed=seed, folds=t.probe_folds, neighbors=t.probe_neighbors)
    return {
        "accuracy": None if result.linear is None else round(result.linear, 4),
        "linear": None if result.linear is None else round(result.linear, 4),
        "knn": None if result.knn is None else round(result.knn, 4),
        "chance": None if result.chance is None else round(result.chance, 4),
        "instances": int(result.instances),
        "descriptor": descriptor,
        "reason": result.reason,
    }


def layer_findings(run, name: str, snapshot_index: int = -1, t: Thresholds = Thresholds()) -> dict:
    """T1-T4 and the T5 evidence (probe accuracy) for one layer at one snapshot of a run."""
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
    rows = recent_instances(samples, snap.step, t)
    t5 = probe_finding(samples, rows, info["kind"], t)
    t5["since_step"] = int(samples.step[rows].min()) if rows.any() else None
    return {
        "layer": name,
        "kind": info["kind"],
        "n_filters": n_filters,
        "step": snap.step,
        "T1": t1,
        "T2": t2,
        "T3": {"undetected_share": round(t3, 4), "instances": int(len(samples))},
        "T4": width_finding(samples.activation[rows], t2["dead"], groups, t),
        "T5": t5,
        "transfer": layer_transfer(run, layer, rows, t2["dead"], t),  # fine-tuning advice
    }


def depth_suggestions(run, layers: dict, t: Thresholds = Thresholds()) -> tuple[dict, list]:
    """T5 along the depth: the necessity result and the suggestions it makes.

    A removal is proposed for every flagged hidden dense layer (after a dense layer or after a
    Flatten: its input probe, ``T5.input_accuracy``, measures what it receives); a flagged conv
    layer is reported without a proposal. Whether the graph can be built without the layer is
    the redesign's check (:func:`deepeyes_keras.redesign.build.buildable`).
    """
    names = run.layer_names
    inputs = {n: layers[n]["T5"].get("input_accuracy") for n in names}
    result = necessity(
        [(n, layers[n]["T5"]["accuracy"]) for n in names],
        inputs={n: a for n, a in inputs.items() if a is not None},
        thresholds=t.necessity,
    )
    suggestions = []
    for i, entry in enumerate(result.layers[:-1]):
        if not (entry.removable or entry.after_saturation):
            continue
        if entry.removable and entry.input_gain is not None:
            why = (
                f"{entry.name} adds {entry.input_gain:+.3f} linear-probe accuracy over its "
                f"input ({entry.input_accuracy:.3f} on {probes.input_entry(entry.name)})"
            )
        elif entry.removable and entry.gain is not None:
            why = f"{entry.name} adds {entry.gain:+.3f} linear-probe accuracy over {names[i - 1]}"
        else:
            why = f"separability already saturates at {result.saturated_at}"
        suggestion = {"task": "T5", "layer": entry.name, "text": f"{why}: it may be unnecessary"}
        if layers[entry.name]["kind"] == "dense":
            suggestion["remove"] = [entry.name]
        else:
            suggestion["text"] += " (not proposed: only a hidden dense layer is removed)"
        suggestions.append(suggestion)
    if result.needs_capacity and len(names) >= 2:
        last = names[-2]
        acc = layers[last]["T5"]["accuracy"]
        suggestions.append(
            {
                "task": "T5",
                "layer": last,
                "add_capacity": True,
                "text": f"labels are not yet separable after the last hidden layer {last} "
                f"(linear probe {acc:.3f}): more capacity may be needed",
            }
        )
    for entry in result.layers:
        layers[entry.name]["T5"].update(
            gain=None if entry.gain is None else round(entry.gain, 4),
            input_gain=None if entry.input_gain is None else round(entry.input_gain, 4),
            removable=bool(entry.removable),
            after_saturation=bool(entry.after_saturation),
        )
    return {
        "metric": result.metric,
        "saturated_at": result.saturated_at,
        "needs_capacity": bool(result.needs_capacity),
        "reasons": result.reasons,
    }, suggestions


def run_findings(run, snapshot_index: int = -1, t: Thresholds = Thresholds()) -> dict:
    """Findings of every analysed layer, plus the layer-level T5 suggestions and T4 widths."""
    layers = {name: layer_findings(run, name, snapshot_index, t) for name in run.layer_names}
    output_name = run.layer_names[-1] if run.layer_names else None
    snap = run.snapshots[snapshot_index]
    for name in [n for n in run.layer_names[:-1] if layers[n]["kind"] == "dense"]:
        s = snap.layers[name].samples  # what the hidden dense layer receives: its input map
        rows = recent_instances(s, snap.step, t)
        limits = dict(max_instances=t.probe_max_instances, folds=t.probe_folds)
        got = probes.input_probe(
            s.descriptor[rows], s.label[rows], neighbors=t.probe_neighbors, **limits
        )
        layers[name]["T5"].update(got)
    depth, suggestions = depth_suggestions(run, layers, t) if layers else ({}, [])
    removed = {n for s in suggestions for n in s.get("remove", [])}
    widths = {
        n: f["T4"]["suggested_width"]
        for n, f in layers.items()
        if f["T4"]["oversized"] and n != output_name and n not in removed
    }
    step = layers[output_name]["step"] if output_name else None
    return {
        "step": step,
        "thresholds": asdict(t),
        "layers": layers,
        "necessity": depth,
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
            "signal_rank": f["T4"].get("signal_rank"),
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
        # Compact (no indent): half the bytes of a snapshot's findings (issue 16's run budget).
        findings = {"findings": result, "summary": summarize(result)}
        write_json(run.layout.findings(snap.step), findings, indent=None)
        written += 1
    if run.snapshots and written:
        last = run.snapshots[-1]
        if last.findings_summary is not None:
            write_json(run.layout.latest_findings, last.findings_summary)
    return written
