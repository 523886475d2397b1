"""How the tool's T4 width suggestion for the case study's LeNet depends on the width rule.

The case study (``run.py``) uses the findings with their documented default thresholds. T4 now
reads the width from the layer's activations (:func:`deepeyes_keras.derive.width.suggested_width`):
the signal rank r (Gavish-Donoho), the suggested width ``ceil(width_factor x r)`` (at most the
live filters), and a cut only when it removes at least ``min_cut`` of the layer. r itself does not
depend on those two thresholds; the width does. For each original run ``lenet-seed<s>`` this
script recomputes, at the last snapshot and on the same recent instances as the findings, the
suggested width of every hidden layer over a grid of

- ``width_factor``: 1, 1.5, 2 (default 2: retraining at exactly r lost up to 1.3 pp, at 2 r at
  most 0.2 pp, case_studies/width_rule/results.md), and
- ``min_cut``: 0.2, 0.25 (default 0.25),

with the tool's own function (no rule of its own). It reads existing runs, needs no TensorFlow
and takes seconds::

    python case_studies/mnist_lenet/sensitivity.py [--runs case_studies/mnist_lenet/runs]

It prints Markdown tables and writes them to ``sensitivity.md`` beside this script (or ``--out``).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
WIDTH_FACTORS = (1.0, 1.5, 2.0)
MIN_CUTS = (0.2, 0.25)


def layer_inputs(run, t) -> dict[str, tuple]:
    """Per hidden layer at the last snapshot: (recent activations, dead filters, n_filters).

    The instances and dead filters are those the findings use
    (:func:`~deepeyes_keras.derive.findings.recent_instances`,
    :func:`~deepeyes_keras.derive.findings.degenerate_filters`).
    """
    from deepeyes_keras.derive.findings import degenerate_filters, recent_instances

    snap = run.snapshots[-1]
    out = {}
    for name in run.layer_names[:-1]:  # the output layer's width is fixed by the labels
        layer = snap.layers[name]
        samples = layer.samples
        rows = recent_instances(samples, snap.step, t)
        dead = degenerate_filters(layer.max_activation, layer.frequency, t)["dead"]
        out[name] = (samples.activation[rows], dead, int(layer.info["n_filters"]))
    return out


def sweep(inputs: dict[str, tuple], t) -> dict[tuple[float, float], dict]:
    """``{(width_factor, min_cut): {layer: WidthSuggestion}}`` over the grid."""
    from deepeyes_keras.derive.width import suggested_width

    grid = {}
    for factor in WIDTH_FACTORS:
        for cut in MIN_CUTS:
            rule = replace(t.width, width_factor=factor, min_cut=cut)
            grid[(factor, cut)] = {
                name: suggested_width(acts, dead=dead, thresholds=rule)
                for name, (acts, dead, _) in inputs.items()
            }
    return grid


def _cell(s) -> str:
    """The width the rule gives: a cut, or in parentheses a suggestion that is not one."""
    if s.sample_limited:
        return "n/a"
    return str(s.width) if s.cut else f"({s.suggested})"


def _stable_since(run, name: str) -> str:
    findings = run.snapshots[-1].findings
    t1 = ((findings or {}).get("layers", {}).get(name) or {}).get("T1") or {}
    since = t1.get("stable_since_step")
    return "not stable" if since is None else f"stable since step {since}"


def rank_table(runs: list, grids: list[dict]) -> str:
    """Signal rank of every hidden layer per run (it does not depend on the swept thresholds)."""
    names = list(grids[0][next(iter(grids[0]))])
    lines = [
        "| layer | " + " | ".join(run.name for run in runs) + " |",
        "|---|" + "---|" * len(runs),
    ]
    for name in names:
        cells = []
        for run, grid in zip(runs, grids, strict=True):
            s = next(iter(grid.values()))[name]
            how = "Gavish-Donoho" if s.signal.method == "gavish-donoho" else "variance"
            cells.append(
                f"r = {s.signal.rank} ({how}, noise {s.signal.noise_share:.0%}), {s.dead} dead, "
                f"{s.variance.instances} instances; {_stable_since(run, name)}"
            )
        lines.append(f"| {name} ({s.n_filters}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def width_table(grids: list[dict], t) -> str:
    """Suggested width per layer over the grid; cells list the runs in order."""
    names = list(grids[0][next(iter(grids[0]))])
    first = grids[0][next(iter(grids[0]))]
    header = "| width_factor | min_cut | " + " | ".join(
        f"{n} ({first[n].n_filters})" for n in names
    )
    lines = [header + " |", "|---:|---:|" + "---:|" * len(names)]
    for key in grids[0]:
        factor, cut = key
        cells = ["/".join(_cell(grid[key][n]) for grid in grids) for n in names]
        mark = " (default)" if key == (t.width.width_factor, t.width.min_cut) else ""
        lines.append(f"| {factor:g}{mark} | {cut:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> str:
    from deepeyes_keras.derive.findings import Thresholds
    from deepeyes_keras.run.reader import load_run

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=HERE / "runs", help="the case study's runs dir")
    p.add_argument("--out", type=Path, default=None, help="where sensitivity.md goes "
                   "(default: beside this script)")  # fmt: skip
    args = p.parse_args(argv)
    dirs = sorted(args.runs.glob("lenet-seed*"), key=lambda d: int(d.name.removeprefix(
        "lenet-seed")))  # fmt: skip
    if not dirs:
        raise SystemExit(f"No lenet-seed<s> runs under {args.runs}: run run.py first.")
    t = Thresholds()
    runs = [load_run(d) for d in dirs]
    grids = [sweep(layer_inputs(run, t), t) for run in runs]
    steps = sorted({run.snapshots[-1].step for run in runs})
    text = "\n".join([
        "# Sensitivity of the T4 width suggestion to the width rule",
        "",
        f"Original LeNet runs {', '.join(d.name for d in dirs)}, last snapshot (step "
        f"{', '.join(map(str, steps))}), on the instances sampled from step >= "
        f"{1 - t.recent_fraction:g} x that step (as the findings). Produced by `python "
        "case_studies/mnist_lenet/sensitivity.py`.",
        "",
        "Signal rank r of each hidden layer (Gavish-Donoho hard threshold when its implied noise "
        f"holds at most {t.width.noise_share:.0%} of the variance, else the directions holding "
        f"{t.width.delta:.0%} of it); it does not depend on the thresholds below. T1 is read "
        "from the run's stored findings: the proposal resizes only stable layers.",
        "",
        rank_table(runs, grids),
        "",
        "Width the rule gives, ceil(width_factor x r) at most the live filters, per run in the "
        "order above. A number in parentheses is not a cut of at least min_cut: the layer keeps "
        "its width; n/a: too few instances to tell.",
        "",
        width_table(grids, t),
        "",
    ])  # fmt: skip
    out = (args.out or HERE) / "sensitivity.md"
    out.write_text(text)
    print(text)
    print(f"Written to {out}")
    return text


if __name__ == "__main__":
    main()
