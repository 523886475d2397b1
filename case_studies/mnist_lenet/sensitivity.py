"""How the tool's T4 width suggestion for the case study's LeNet depends on its two thresholds.

The case study (``run.py``) uses the findings with their documented default thresholds. This
script asks what those thresholds would have to be for the tool to suggest the paper's redesign:
for each original run ``lenet-seed<s>`` it recomputes, at the last snapshot, the T4 suggested
width of every hidden layer (filters - dead - redundant duplicates, exactly the rule of
:func:`deepeyes_keras.derive.findings.layer_findings`) over a grid of

- ``dead_max_fraction``: a filter is dead when its max activation is at most this fraction of the
  layer's median max (default 0.01), and
- ``redundancy_jaccard``: filters whose weighted Jaccard similarity is at least this are redundant
  (default 0.8),

and the same width rounded up to a multiple of 10 (the case study's policy). It needs no
TensorFlow and takes seconds::

    python case_studies/mnist_lenet/sensitivity.py [--runs case_studies/mnist_lenet/runs]

It prints a Markdown table and writes it to ``sensitivity.md`` beside the runs' ``results.md``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEAD_FRACTIONS = (0.01, 0.1, 0.25, 0.5)
JACCARDS = (0.8, 0.7, 0.6, 0.5, 0.4)
ROUND_TO = 10


def suggested_widths(run, t) -> dict[str, int]:
    """T4 suggested width of every hidden analysed layer at the run's last snapshot."""
    from deepeyes_keras.derive.findings import degenerate_filters, redundant_groups

    snap = run.snapshots[-1]
    out = {}
    for name in run.layer_names[:-1]:  # the output layer's width is fixed by the labels
        layer = snap.layers[name]
        dead = degenerate_filters(layer.max_activation, layer.frequency, t)["dead"]
        groups = redundant_groups(layer.jaccard, dead, t)
        n = int(layer.info["n_filters"])
        out[name] = max(1, n - len(dead) - sum(len(g) - 1 for g in groups))
    return out


def _rounded(width: int, current: int) -> int:
    return min(current, ROUND_TO * -(-width // ROUND_TO))


def table(runs: list) -> str:
    from deepeyes_keras.derive.findings import Thresholds

    names = runs[0].layer_names[:-1]
    current = {n: int(runs[0].snapshots[-1].layers[n].info["n_filters"]) for n in names}
    header = "| dead if max ≤ × median | redundant if Jaccard ≥ | " + " | ".join(
        f"{n} ({current[n]}): suggested → rounded up" for n in names
    )
    lines = [header + " |", "|---:|---:|" + "---|" * len(names)]
    default = Thresholds()
    for dead in DEAD_FRACTIONS:
        for jac in JACCARDS:
            t = replace(default, dead_max_fraction=dead, redundancy_jaccard=jac)
            per_run = [suggested_widths(run, t) for run in runs]
            cells = []
            for n in names:
                raw = "/".join(str(w[n]) for w in per_run)
                rounded = "/".join(str(_rounded(w[n], current[n])) for w in per_run)
                cells.append(f"{raw} → {rounded}")
            mark = " (default)" if (dead, jac) == (default.dead_max_fraction,
                                                   default.redundancy_jaccard) else ""  # fmt: skip
            lines.append(f"| {dead}{mark} | {jac} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> str:
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
    runs = [load_run(d) for d in dirs]
    steps = sorted({run.snapshots[-1].step for run in runs})
    text = "\n".join([
        "# Sensitivity of the T4 width suggestion to its thresholds",
        "",
        f"Original LeNet runs {', '.join(d.name for d in dirs)} (cells list the runs in that "
        f"order), last snapshot (step {', '.join(map(str, steps))}). Frequency rule for dead "
        "filters unchanged (≤ 0.001). Produced by `python case_studies/mnist_lenet/"
        "sensitivity.py`.",
        "",
        table(runs),
        "",
    ])  # fmt: skip
    out = (args.out or HERE) / "sensitivity.md"
    out.write_text(text)
    print(text)
    print(f"Written to {out}")
    return text


if __name__ == "__main__":
    main()
