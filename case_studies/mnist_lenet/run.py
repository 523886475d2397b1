"""Case study: the DeepEyes paper's MNIST LeNet, its findings, and the redesign they suggest.

One command::

    python case_studies/mnist_lenet/run.py                 # 3 seeds x 2,000 iterations
    python case_studies/mnist_lenet/run.py --quick         # CI: 60 iterations, 1 seed, temp dir
    python case_studies/mnist_lenet/run.py --refresh-findings  # no training: findings of the
                                                               # existing runs, under today's rules

For each seed it

1. trains the paper's Caffe LeNet (``deepeyes_keras.models.lenet``, 431,080 parameters; SGD momentum
   0.9, "inv" schedule, L2 0.00025, batch 64, inputs / 256) for ``--steps`` iterations with
   :class:`~deepeyes_keras.DeepEyesCallback` watching (run ``lenet-seed<s>``), then computes the
   run's views and the findings of every snapshot, and its input and filter maps at the snapshots
   the paper discusses (steps 10, 80, 300 and the last; first seed only unless ``--maps all``);
2. takes the tool's own redesign proposal from the findings of the last snapshot
   (:func:`deepeyes_keras.redesign.proposal.proposal_from_findings`, through the thin
   :func:`redesign_from_findings`; the policy is the tool's, and nothing in it knows about MNIST
   or about the paper's answer), and compares, layer by layer, the proposal at the step each layer
   became stable (T1) with the proposal at the end
   (:func:`deepeyes_keras.redesign.proposal.proposal_history`);
3. builds that network with :func:`deepeyes_keras.resize.resize_model` and trains it on the same
   schedule, also watched (run ``lenet-redesign-seed<s>``);
4. trains the paper's redesign (conv1 20 -> 10, fc1 500 -> 100), labelled as the paper's, for
   comparison (run ``lenet-paper-seed<s>``);
5. evaluates every network on the MNIST test set.

It then prints a Markdown table (parameters and the ratio original / network, test accuracy
mean +- sd over the seeds, difference from the original in percentage points, training time) and
writes it with the details to ``results.md`` and ``results.json`` beside this file (or under
``--out`` when given). Paths in ``results.json`` are relative to the repository when the runs lie
inside it.

``--refresh-findings`` trains nothing: it recomputes the findings of the runs an earlier command
wrote (every snapshot, as ``deepeyes report RUN --save`` does), takes the proposal again and
rewrites ``results.md`` and ``results.json``, keeping the accuracy figures. When the redesign
proposed under the current rules differs from the one that was trained, ``results.md`` says so:
the accuracy table then belongs to the earlier rules until the full command is run again.

The proposal (the tool's policy, documented in :mod:`deepeyes_keras.redesign.proposal`): every
layer a T5 suggestion proposes to remove is removed; every other hidden layer T4 calls oversized
gets exactly its suggested width, but only when it is stable (T1) at that snapshot and T5 does not
ask for more capacity there; the output layer is never changed.

Training time is the wall time of ``model.fit`` with the DeepEyes callback recording its statistics
(``maps=False``: the maps are computed after ``fit``, so no background process competes for the
cores while it is timed); on a shared machine it is noisy.

Runs are named deterministically (``lenet-seed0``, ``lenet-redesign-seed0``, ``lenet-paper-seed0``,
...) so that the case-study page can embed their charts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist.npz"
sys.path.insert(0, str(HERE.parent))

from _common import fresh_run_dir, mean_sd_text, print_summary, rel, write_results  # noqa: E402

BATCH = 64
PAPER_WIDTHS = {"conv1": 10, "fc1": 100}
PAPER = {  # the paper's reported numbers, not ours
    "original_parameters": 431_080,
    "redesign_parameters": 93_920,
    "redesign_accuracy": 0.982,
    "stable_after": 300,
}
# Snapshots whose input and filter maps are computed (the last snapshot always is): the steps the
# paper discusses. Maps are the costly part (a t-SNE per layer and snapshot), so not every one.
MAP_STEPS = (10, 80, 300)
QUICK = {"steps": 60, "test_images": 1000, "reservoir_size": 300}
ROLES = {
    "original": "LeNet (paper's original)",
    "redesign": "redesign derived from the findings (the tool's proposal)",
    "paper": "paper's redesign (conv1 10, fc1 100; for comparison, not derived by the tool)",
}
# T4 evidence kept in results.json (the explained-variance curve stays in the run's findings).
T4_FIELDS = (
    "signal_rank",
    "rank_method",
    "noise_share",
    "variance_count",
    "participation_ratio",
    "suggested_width",
    "oversized",
    "redundant_groups",
    "text",
)


# --------------------------------------------------------------------------- the tool's proposal


def _accuracy(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def layer_evidence(f: dict, neighbors: int | None = None) -> str:
    """The T4 and T5 evidence of one layer's findings (``findings["layers"][name]``), in brief."""
    t4, t5 = f.get("T4") or {}, f.get("T5") or {}
    parts = [f"{f.get('n_filters')} filters"]
    if t4.get("signal_rank") is not None:
        method = "Gavish-Donoho" if t4.get("rank_method") == "gavish-donoho" else "variance"
        share = t4.get("noise_share")
        parts.append(
            f"T4 signal rank {t4['signal_rank']} ({method}"
            + ("" if share is None else f", noise {share:.0%} of the variance")
            + f"), suggested width {t4.get('suggested_width')}"
            + (" (oversized)" if t4.get("oversized") else "")
        )
    if t5:
        gain = t5.get("gain")
        flags = [
            flag
            for flag, on in (
                ("removable", t5.get("removable")),
                ("after saturation", t5.get("after_saturation")),
            )
            if on
        ]
        parts.append(
            f"T5 linear probe {_accuracy(t5.get('linear', t5.get('accuracy')))}, "
            f"{neighbors or 'k'}-NN {_accuracy(t5.get('knn'))}, chance "
            f"{_accuracy(t5.get('chance'))} on {t5.get('instances')} instances"
            + ("" if gain is None else f", gain {gain:+.3f} over the layer before")
            + (f" ({', '.join(flags)})" if flags else "")
        )
    return "; ".join(parts)


def redesign_from_findings(findings: dict, manifest: dict, *, run_name: str = "") -> dict:
    """The tool's proposal for one snapshot's findings, as the case study records it.

    A thin wrapper of :func:`deepeyes_keras.redesign.proposal.proposal_from_findings` (the policy
    is the tool's; this adds only the notes).

    Args:
        findings: one snapshot's findings (``snapshot.findings``, or
            :func:`deepeyes_keras.derive.findings.run_findings`).
        manifest: the run's manifest (its ``analysed_layers``: names and widths, output last).
        run_name: the run's name, recorded in the proposal.

    Returns:
        ``{"widths": {layer: width}, "remove": [layer, ...], "notes": [str, ...]}``: one note per
        analysed layer, with what was done, the proposal's reason and the T4/T5 evidence.

    Example:
        >>> run = load_run("runs/lenet-seed0")                                 # doctest: +SKIP
        >>> redesign_from_findings(run.snapshots[-1].findings, run.manifest)   # doctest: +SKIP
        {'widths': {}, 'remove': [], 'notes': [...]}
    """
    from deepeyes_keras.redesign.proposal import proposal_from_findings

    proposal = proposal_from_findings(run_name, findings, manifest)
    names = [info["name"] for info in manifest.get("analysed_layers") or []]
    layers = findings.get("layers") or {}
    neighbors = (findings.get("thresholds") or {}).get("probe_neighbors")
    t5_texts: dict[str, list[str]] = {}
    for s in findings.get("suggestions") or []:
        t5_texts.setdefault(s.get("layer"), []).append(s.get("text", ""))
    notes = []
    for name in [n for n in names if n in layers] + [n for n in layers if n not in names]:
        current = proposal.original_widths.get(name, layers[name].get("n_filters"))
        if name in proposal.remove:
            action = "removed"
        elif name in proposal.widths:
            action = f"{current} -> {proposal.widths[name]}"
        elif names and name == names[-1]:
            action = "kept (the output layer is never changed)"
        else:
            action = "kept"
        why = [proposal.reasons[name]] if proposal.reasons.get(name) else []
        why += [text for text in t5_texts.get(name, []) if text and text not in why]
        notes.append(
            f"{name}: {action}" + (f" ({'; '.join(why)})" if why else "") + ". Evidence: "
            f"{layer_evidence(layers[name], neighbors)}."
        )
    return {"widths": dict(proposal.widths), "remove": list(proposal.remove), "notes": notes}


# --------------------------------------------------------------------------- training


def _scaled(x):
    return x[..., None].astype("float32") / 256.0  # Caffe's scale


def compute_maps(run_dir: Path, steps, *, seed: int) -> int:
    """Input and filter maps of the snapshots at ``steps`` (nearest kept) and the last one.

    ``steps=None`` computes every snapshot's maps (``deepeyes maps RUN``). Layouts are carried
    from one computed snapshot to the next, as the maps worker does.
    """
    from deepeyes_keras.derive.maps import compute_missing_maps, layer_maps
    from deepeyes_keras.run.layout import write_npz
    from deepeyes_keras.run.reader import load_run

    if steps is None:
        return compute_missing_maps(run_dir, seed=seed)
    run = load_run(run_dir)
    have = [snap.step for snap in run.snapshots]
    wanted = {min(have, key=lambda h: (abs(h - s), h)) for s in steps} | {have[-1]}
    previous: dict[str, dict] = {}
    written = 0
    for snap in run.snapshots:
        if snap.step not in wanted:
            continue
        for layer in snap.layers.values():
            arrays = layer_maps(layer, previous=previous.get(layer.key), seed=seed)
            write_npz(run.layout.maps(layer.key, snap.step), arrays)
            previous[layer.key] = arrays
            written += 1
    return written


def train_watched(
    model,
    x,
    y,
    x_test,
    y_test,
    *,
    run_name: str,
    out: Path,
    steps: int,
    seed: int,
    reservoir_size: int,
    maps: bool,
    map_steps,
    verbose: int,
) -> dict:
    """Trains ``model`` for ``steps`` iterations with DeepEyes watching; evaluates it.

    The callback records with ``maps=False``, so that no background process competes with
    training for the cores while it is timed; the maps (when ``maps``), the views and the findings
    are computed right after ``fit``, as ``deepeyes maps RUN`` would.
    """
    import keras
    import tensorflow as tf

    from deepeyes_keras import DeepEyesCallback
    from deepeyes_keras.derive.findings import write_findings
    from deepeyes_keras.derive.views import write_views

    run_dir = fresh_run_dir(out, run_name)
    keras.utils.set_random_seed(seed)
    data = (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
            .repeat().batch(BATCH).prefetch(2))  # fmt: skip
    cb = DeepEyesCallback(
        log_dir=out,
        run_name=run_name,
        seed=seed,
        maps=False,
        reservoir_size=reservoir_size,
        verbose=0,
    )
    began = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=2 if verbose else 0, callbacks=[cb])
    train_seconds = time.perf_counter() - began
    _, accuracy = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
    began = time.perf_counter()
    n_maps = compute_maps(run_dir, map_steps, seed=seed) if maps else 0
    # Findings first, as the pipeline does: a layer view draws its snapshot's T4 evidence.
    write_findings(run_dir)
    write_views(run_dir)  # overview and histograms always; layer views where maps exist
    analysis_seconds = time.perf_counter() - began
    result = {
        "run": run_name,
        "run_dir": rel(run_dir),
        "parameters": int(model.count_params()),
        "widths": {
            layer.name: int(getattr(layer, "filters", None) or layer.units)
            for layer in model.layers
            if hasattr(layer, "filters") or hasattr(layer, "units")
        },
        "test_accuracy": float(accuracy),
        "train_seconds": round(train_seconds, 2),
        "maps": n_maps,
        "analysis_seconds": round(analysis_seconds, 2),
        "steps": steps,
    }
    if verbose:
        print(
            f"  {run_name}: test accuracy {accuracy:.4f}, {result['parameters']:,} parameters, "
            f"fit {train_seconds:.0f} s; {n_maps} maps, views and findings "
            f"{analysis_seconds:.0f} s",
            flush=True,
        )
    return result


def latest_findings(run) -> dict:
    """The findings of the run's last snapshot that has them (written by ``write_findings``)."""
    for snap in reversed(run.snapshots):
        if snap.findings is not None:
            return snap.findings
    raise ValueError(
        f"Run {run.name!r} has no findings. Run `deepeyes maps {run.path}` (or this script "
        "with --refresh-findings) first."
    )


def seed_findings(run_dir: Path, *, verbose: int = 0) -> dict:
    """The findings of an original run at its last snapshot, the proposal and its history.

    Reads the stored findings of every snapshot (``write_findings`` must have run). Returns the
    findings fields of a ``per_seed`` entry of ``results.json``: ``findings_step``,
    ``findings_summary``, ``findings_report``, ``findings_thresholds``, ``necessity``,
    ``width_evidence`` (T4 per layer, without the variance curve), ``separability`` (T5 per
    layer), ``redesign`` (:func:`redesign_from_findings`), ``redesign_matches_paper`` and
    ``progressive`` (:func:`~deepeyes_keras.redesign.proposal.proposal_history`: per stable layer,
    its width in the proposal at the step it became stable and in the final one).
    """
    from deepeyes_keras.derive.findings import summarize
    from deepeyes_keras.derive.report import format_report
    from deepeyes_keras.redesign.proposal import proposal_history
    from deepeyes_keras.run.reader import load_run

    run = load_run(run_dir)
    findings = latest_findings(run)
    summary = summarize(findings)
    redesign = redesign_from_findings(findings, run.manifest, run_name=run.name)
    progressive = proposal_history(run)
    if verbose:
        print(format_report(summary))
        print("The tool's proposal:")
        for note in redesign["notes"]:
            print(f"  - {note}")
        print(progressive_table(progressive))
    layers = findings["layers"]
    return {
        "findings_step": findings["step"],
        "findings_summary": summary,
        "findings_report": format_report(summary),
        "findings_thresholds": findings["thresholds"],
        "necessity": findings.get("necessity") or {},
        "width_evidence": {
            name: {k: f["T4"][k] for k in T4_FIELDS if k in f["T4"]} for name, f in layers.items()
        },
        "separability": {name: f["T5"] for name, f in layers.items() if f.get("T5") is not None},
        "redesign": redesign,
        "redesign_matches_paper": redesign["widths"] == PAPER_WIDTHS and not redesign["remove"],
        "progressive": progressive,
    }


def run_seed(seed: int, data, *, out: Path, verbose: int, **train) -> dict:
    """Original, findings, the tool's redesign and the paper's redesign for one seed.

    ``train`` holds the other keyword arguments of :func:`train_watched` (steps, reservoir_size,
    maps, map_steps).
    """
    from deepeyes_keras.models import compile_lenet, lenet
    from deepeyes_keras.resize import resize_model

    (x, y), (x_test, y_test) = data
    kw = dict(out=out, seed=seed, verbose=verbose, **train)
    original = compile_lenet(lenet(seed=seed))
    results = {
        "original": train_watched(
            original, x, y, x_test, y_test, run_name=f"lenet-seed{seed}", **kw
        )
    }
    found = seed_findings(out / f"lenet-seed{seed}", verbose=verbose)
    redesign = found["redesign"]
    model = resize_model(
        original, redesign["widths"], remove=redesign["remove"], name="lenet_redesign"
    )
    results["redesign"] = train_watched(
        model, x, y, x_test, y_test, run_name=f"lenet-redesign-seed{seed}", **kw
    )
    paper = resize_model(original, PAPER_WIDTHS, name="lenet_paper_redesign")
    results["paper"] = train_watched(
        paper, x, y, x_test, y_test, run_name=f"lenet-paper-seed{seed}", **kw
    )
    return {"seed": seed, **found, "networks": results}


# --------------------------------------------------------------------------- reporting


def _widths_text(widths: dict[str, int]) -> str:
    hidden = [f"{n} {w}" for n, w in widths.items() if n != list(widths)[-1]]
    return ", ".join(hidden)


def _span(values, fmt: str) -> str:
    """``values`` formatted with ``fmt``, as one value or "lowest – highest"."""
    low, high = min(values), max(values)
    return format(low, fmt) if low == high else f"{format(low, fmt)} – {format(high, fmt)}"


def summarize(per_seed: list[dict]) -> list[dict]:
    """One row per network role, aggregated over seeds (differences and ratios are per seed)."""
    rows = []
    for role, label in ROLES.items():
        seeds = [s for s in per_seed if role in s["networks"]]
        if not seeds:
            continue
        entries = [s["networks"][role] for s in seeds]
        originals = [s["networks"]["original"] for s in seeds]
        deltas = [
            e["test_accuracy"] - o["test_accuracy"] for e, o in zip(entries, originals, strict=True)
        ]
        ratios = [
            o["parameters"] / e["parameters"] for e, o in zip(entries, originals, strict=True)
        ]
        rows.append(
            {
                "role": role,
                "network": label,
                "widths": " / ".join(sorted({_widths_text(e["widths"]) for e in entries})),
                "parameters": sorted({e["parameters"] for e in entries}),
                "parameter_ratio": [round(r, 4) for r in ratios],
                "seeds": len(entries),
                "test_accuracy": [e["test_accuracy"] for e in entries],
                "train_seconds": [e["train_seconds"] for e in entries],
                "accuracy_mean": statistics.fmean(e["test_accuracy"] for e in entries),
                "delta_pp": [round(100 * d, 4) for d in deltas],
                "delta_pp_mean": 100 * statistics.fmean(deltas),
            }
        )
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| network | widths (conv1, conv2, fc1) | parameters | parameters, original / this "
        "| test accuracy, % (mean ± sd) | vs original, pp (mean ± sd) "
        "| training time, s (mean ± sd) | seeds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        original = r["role"] == "original"
        delta = "—" if original else mean_sd_text(r["delta_pp"])
        if not original and not delta.startswith("-"):
            delta = "+" + delta
        ratio = "1" if original else _span(r["parameter_ratio"], ".2f") + "×"
        lines.append(
            f"| {r['network']} | {r['widths']} | {_span(r['parameters'], ',')} | {ratio} | "
            f"{mean_sd_text(r['test_accuracy'], 100)} | {delta} | "
            f"{mean_sd_text(r['train_seconds'], digits=0)} | {r['seeds']} |"
        )
    return "\n".join(lines)


def _redesign_text(redesign: dict) -> str:
    return f"{redesign['widths'] or 'no change'}" + (
        f", remove {redesign['remove']}" if redesign["remove"] else ""
    )


def progressive_table(rows: list[dict]) -> str:
    """The proposal at the step each layer became stable against the final one (Markdown)."""
    if not rows:
        return "No layer is stable (T1) at the last snapshot: there is nothing to compare yet."

    def width(row, when):
        return "removed" if row[f"removed_{when}"] else str(row[f"width_{when}"])

    lines = [
        "| layer | stable since step | width then | width at the end | same? |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['stable_since_step']} | {width(r, 'then')} | "
            f"{width(r, 'final')} | {'yes' if r['same'] else 'no'} |"
        )
    return "\n".join(lines)


def findings_legend(thresholds: dict) -> str:
    """What the findings tables and the proposal notes mean, with the thresholds used.

    Args:
        thresholds: ``findings["thresholds"]`` (``asdict`` of
            :class:`~deepeyes_keras.derive.findings.Thresholds`, with the nested ``width`` and
            ``necessity`` rules).
    """
    t, w, n = thresholds, thresholds["width"], thresholds["necessity"]
    capacity = (
        ""
        if n.get("capacity_accuracy") is None
        else f", or below {n['capacity_accuracy']} in absolute terms,"
    )
    return " ".join(
        [
            "Rules: `deepeyes_keras.derive.findings`, site page Reference > Findings.",
            "*stable since* (T1, our score; the paper judged by eye): the first snapshot from "
            f"which each of the last {t['stable_window']} transitions has an excess change of at "
            f"most {t['stable_excess']} (earth mover's distance between consecutive perplexity "
            "histograms, in units of their range, minus the distance expected by chance); `-` = "
            "not stable at the last snapshot.",
            "T4 and T5 read the reservoir's instances sampled in the recent part of training "
            f"(step >= {1 - t['recent_fraction']:g} x the snapshot's step, when at least "
            f"{t['recent_min_instances']}).",
            "*suggest width* (T4): the signal rank r is the number of singular values of the "
            "layer's centred activations above the Gavish-Donoho hard threshold, when the noise "
            f"that threshold implies holds at most {w['noise_share']:.0%} of the variance "
            f"(otherwise, with no noise floor visible, the directions holding {w['delta']:.0%} of "
            f"the variance); the suggested width is ceil({w['width_factor']:g} x r), at most the "
            f"live filters, and the layer is called oversized only when that cuts at least "
            f"{w['min_cut']:.0%} of it.",
            f"*probe acc.* (T5): {t['probe_folds']}-fold cross-validated accuracy of a linear "
            f"probe of the labels ({t['probe_neighbors']}-NN beside it) on the layer's output "
            "vectors (a conv layer: one descriptor per image, the mean over its sampled "
            f"positions), on at most {t['probe_max_instances']} recent instances.",
            "Necessity (T5 along the depth): a hidden layer that gains less than "
            f"{n['min_gain']} probe accuracy over what it receives (a dense layer: its own input, "
            "probed on the same instances; otherwise the layer before), or comes after "
            f"separability saturated (within {n['min_gain']} of the best), may be unnecessary (a "
            "removal is proposed for a hidden dense layer, never for a conv layer); the last "
            "hidden layer more "
            f"than {n['capacity_gap']} below the output{capacity} suggests more capacity.",
            "The proposal (`deepeyes_keras.redesign.proposal.proposal_from_findings`) removes "
            "what T5 proposes to remove and gives every other oversized hidden layer exactly its "
            "suggested width when the layer is stable (T1) at that snapshot and T5 does not ask "
            "for more capacity there; the output layer is never changed.",
        ]
    )


def _seed_markdown(s: dict) -> list[str]:
    out = [
        f"### Seed {s['seed']} (findings at step {s['findings_step']})",
        "",
        "```text",
        s["findings_report"],
        "```",
        "",
    ]
    reasons = (s.get("necessity") or {}).get("reasons") or []
    if reasons:
        out += [f"Necessity (T5): {'; '.join(reasons)}.", ""]
    out += ["The tool's proposal, per layer:", ""]
    out += [f"- {note}" for note in s["redesign"]["notes"]]
    verdict = (
        "matches the paper's redesign"
        if s["redesign_matches_paper"]
        else "differs from the paper's conv1 10 / fc1 100"
    )
    out += ["", f"Proposed redesign: {_redesign_text(s['redesign'])} ({verdict})."]
    if s.get("trained_redesign"):
        out += [
            f"The redesign trained (under the earlier rules) was "
            f"{_redesign_text(s['trained_redesign'])}: its accuracy row is not that of "
            "the redesign proposed now."
        ]
    out += [
        "",
        "Progressive: the proposal read at the step each layer became stable (T1), against the "
        f"proposal at step {s['findings_step']}:",
        "",
        progressive_table(s.get("progressive") or []),
        "",
    ]
    return out


def results_markdown(report: dict) -> str:
    cfg = report["config"]
    out = [
        "# MNIST LeNet case study: results",
        "",
        f"Produced by `{report['command']}` on {report['finished']} "
        f"({cfg['cpus']} CPU cores, TensorFlow {report['versions']['tensorflow']}, "
        f"Keras {report['versions']['keras']}); the whole command took "
        f"{report['total_seconds'] / 60:.1f} min.",
        f"{cfg['steps']} iterations at batch {BATCH}, seeds {cfg['seeds']}, "
        f"{cfg['test_images']:,} test images.",
    ]
    refreshed = report.get("findings_refreshed")
    stale = [s for s in report["per_seed"] if s.get("trained_redesign")]
    if refreshed:
        out += [
            "",
            f"Findings recomputed on these runs by `{refreshed['command']}` on "
            f"{refreshed['finished']} (no training), under the rules described with the "
            "findings below; the accuracy figures and training times are the training "
            "command's. "
            + (
                "The redesign proposed under the current rules differs from the one trained in "
                f"seed(s) {', '.join(str(s['seed']) for s in stale)} (below): **the accuracy "
                "table was produced under the earlier rules; rerun the training command to "
                "refresh it.**"
                if stale
                else "The redesign proposed under the current rules is the one that was trained "
                "in every seed, so the accuracy table stands."
            ),
        ]
    out += [
        "",
        report["table"],
        "",
        f"Paper (its reported numbers, not ours): {PAPER['original_parameters']:,} -> "
        f"{PAPER['redesign_parameters']:,} parameters (conv1 20 -> 10, fc1 500 -> 100), "
        f"{100 * PAPER['redesign_accuracy']:.1f}% test accuracy for the redesign after 2,000 "
        "iterations.",
        "",
        "## Findings and the tool's proposal per seed",
        "",
    ]
    thresholds = next((s["findings_thresholds"] for s in report["per_seed"]
                       if s.get("findings_thresholds")), None)  # fmt: skip
    if thresholds:
        out += [findings_legend(thresholds), ""]
    for s in report["per_seed"]:
        out += _seed_markdown(s)
    return "\n".join(out)


def refresh_findings(results_dir: Path, out: Path, *, verbose: int = 1) -> dict:
    """--refresh-findings: findings of the existing runs under the current rules, no training.

    Rewrites the findings of every run in ``results.json`` (all snapshots, as ``deepeyes report
    RUN --save`` does) and its views (which draw the findings' T4 evidence), takes the proposal
    of each seed again from its original run, and rewrites ``results.json`` and ``results.md``
    (the table is rebuilt from the recorded accuracies). Where the redesign proposed now differs
    from the one that was trained, the entry keeps the trained one as ``trained_redesign``.
    """
    from deepeyes_keras.derive.findings import write_findings
    from deepeyes_keras.derive.views import write_views

    report = json.loads((results_dir / "results.json").read_text())
    for s in report["per_seed"]:
        for entry in s["networks"].values():
            write_findings(out / entry["run"], overwrite=True)
            write_views(out / entry["run"], overwrite=True)  # layer views draw the T4 evidence
            entry["run_dir"] = rel(out / entry["run"])
        trained = s.get("trained_redesign") or s["redesign"]
        s.pop("trained_redesign", None)
        s.update(seed_findings(out / f"lenet-seed{s['seed']}", verbose=verbose))
        new = s["redesign"]
        if (new["widths"], sorted(new["remove"])) != (trained["widths"], sorted(trained["remove"])):
            s["trained_redesign"] = {"widths": trained["widths"], "remove": trained["remove"]}
    report["config"]["runs_dir"] = rel(out)
    report["config"].pop("round_to", None)  # the policy of an earlier version of this script
    report["rows"] = summarize(report["per_seed"])
    report["table"] = markdown_table(report["rows"])
    report["findings_refreshed"] = {
        "command": "python case_studies/mnist_lenet/run.py --refresh-findings",
        "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    write_results(report, results_dir, "results", results_markdown)
    stale = [s["seed"] for s in report["per_seed"] if s.get("trained_redesign")]
    print(
        f"Findings refreshed; results in {results_dir / 'results.md'} and results.json. "
        + (
            f"The proposed redesign changed in seed(s) {stale}: rerun the full command to "
            "refresh the accuracy table."
            if stale
            else "The proposed redesign is unchanged: the accuracy table stands."
        )
    )
    return report


# --------------------------------------------------------------------------- main


def _sanity(report: dict, out: Path) -> None:
    """--quick: the outputs a CI run must have produced."""
    from deepeyes_keras.run.reader import load_run

    for s in report["per_seed"]:
        for entry in s["networks"].values():
            run = load_run(out / entry["run"])
            assert run.snapshots, f"{entry['run']}: no snapshots"
            assert (run.path / "findings.json").is_file(), f"{entry['run']}: no findings.json"
            assert run.snapshots[-1].findings, f"{entry['run']}: no findings"
            assert 0.0 <= entry["test_accuracy"] <= 1.0
        assert s["findings_summary"]["layers"], "empty findings"
        assert isinstance(s["progressive"], list), "no progressive comparison"
        assert set(s["redesign"]) == {"widths", "remove", "notes"} and s["redesign"]["notes"]
    rows = [line for line in report["table"].splitlines()[2:] if line.startswith("|")]
    assert len(rows) == len(ROLES), f"the table has {len(rows)} rows, expected {len(ROLES)}"
    for row, label in zip(rows, ROLES.values(), strict=True):
        assert row.startswith(f"| {label} |"), f"row {row!r} is not {label!r}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--mnist",
        help="MNIST .npz in Keras's layout (default: $DEEPEYES_MNIST, then "
        f"{SHARED_MNIST} if present, else Keras's downloader)",
    )
    p.add_argument("--steps", type=int, default=None, help="training iterations (default 2000)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"CI mode: {QUICK['steps']} iterations, one seed, "
        f"{QUICK['test_images']} test images, a temporary --out; checks outputs",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="runs directory (default case_studies/mnist_lenet/runs; with --quick a "
        "temporary directory); results.md/json go beside this script, or into "
        "--out when it is given",
    )
    p.add_argument(
        "--maps",
        choices=("first-seed", "all", "none"),
        default=None,
        help="which runs get input and filter maps (the linked layer views): the "
        "first seed's (default), every run's, or none (default with --quick); "
        "every run gets its findings, training curves and histograms",
    )
    p.add_argument(
        "--map-steps",
        nargs="+",
        default=[str(v) for v in MAP_STEPS],
        help="snapshots (nearest steps) whose maps are computed, besides the last one; 'all' for "
        f"every snapshot (default {' '.join(map(str, MAP_STEPS))})",
    )
    p.add_argument(
        "--refresh-findings",
        action="store_true",
        help="train nothing: recompute the findings of the runs in results.json under the "
        "current rules, take the tool's proposal again, rewrite results.md/json",
    )
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1))
    return p.parse_args(argv)


def main(argv=None) -> dict:
    began = time.perf_counter()
    args = parse_args(argv)
    if args.refresh_findings and args.quick:
        raise SystemExit("--refresh-findings reads the runs of an earlier run; not with --quick")
    steps = args.steps or (QUICK["steps"] if args.quick else 2000)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    if args.out is not None:
        out, results_dir = args.out.resolve(), args.out.resolve()
    elif args.quick:
        out = Path(tempfile.mkdtemp(prefix="deepeyes-case-study-"))
        results_dir = out
    else:
        out, results_dir = HERE / "runs", HERE
    if args.refresh_findings:
        return refresh_findings(results_dir, out, verbose=args.verbose)
    out.mkdir(parents=True, exist_ok=True)
    mnist = (
        args.mnist
        or os.environ.get("DEEPEYES_MNIST")
        or (str(SHARED_MNIST) if SHARED_MNIST.is_file() else None)
    )

    import keras
    import tensorflow as tf

    from deepeyes_keras.data import load_mnist

    (x, y), (x_test, y_test) = load_mnist(mnist)
    x, x_test = _scaled(x), _scaled(x_test)
    if args.quick:
        x_test, y_test = x_test[: QUICK["test_images"]], y_test[: QUICK["test_images"]]
    reservoir_size = QUICK["reservoir_size"] if args.quick else 2000
    print(f"MNIST LeNet case study: {steps} iterations x seeds {seeds}; runs in {out}", flush=True)

    maps = args.maps or ("none" if args.quick else "first-seed")
    per_seed = []
    for i, seed in enumerate(seeds):
        print(f"Seed {seed}", flush=True)
        with_maps = maps == "all" or (maps == "first-seed" and i == 0)
        per_seed.append(
            run_seed(
                seed,
                ((x, y), (x_test, y_test)),
                out=out,
                steps=steps,
                reservoir_size=reservoir_size,
                maps=with_maps,
                map_steps=None if args.map_steps == ["all"] else [int(v) for v in args.map_steps],
                verbose=args.verbose,
            )
        )
    rows = summarize(per_seed)
    command = (
        "python case_studies/mnist_lenet/run.py"
        + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    )
    report = {
        "command": command,
        "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
        "total_seconds": round(time.perf_counter() - began, 1),
        "config": {
            "steps": steps,
            "batch": BATCH,
            "seeds": seeds,
            "quick": args.quick,
            "test_images": int(len(x_test)),
            "reservoir_size": reservoir_size,
            "proposal": "deepeyes_keras.redesign.proposal.proposal_from_findings",
            "map_steps": args.map_steps,
            "maps": maps,
            "runs_dir": rel(out),
            "cpus": os.cpu_count(),
        },
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
        },
        "paper": dict(PAPER, redesign_widths=PAPER_WIDTHS),
        "rows": rows,
        "per_seed": per_seed,
    }
    report["table"] = markdown_table(rows)
    report["total_seconds"] = round(time.perf_counter() - began, 1)
    write_results(report, results_dir, "results", results_markdown)
    print_summary(report, f"{results_dir / 'results.md'} and results.json; runs in {out}")
    if args.quick:
        _sanity(report, out)
        print("quick mode: outputs check out")
    return report


if __name__ == "__main__":
    main()
