"""The ``deepeyes`` command line."""

from __future__ import annotations

import argparse
import os
import sys

from deepeyes_keras.run.layout import RunLayout


def _demo(args) -> int:
    from deepeyes_keras.demo import train_demo

    mnist = args.mnist or os.environ.get("DEEPEYES_MNIST")
    train_demo(
        mnist=mnist,
        steps=args.steps,
        log_dir=args.log_dir,
        run_name=args.run_name,
        seed=args.seed,
        verbose=0 if args.quiet else 1,
    )
    return 0


def _maps(args) -> int:
    from deepeyes_keras.derive.pipeline import update_run

    def progress(done, total, message):
        print(f"[{done}/{total}] {message}", flush=True)

    done = update_run(args.run, max_points=args.max_points, seed=args.seed, progress=progress)
    print(
        f"{done.maps} maps, {done.views} views and findings of {done.findings} snapshots "
        f"written to {args.run}"
    )
    return 0


def _report(args) -> int:
    from deepeyes_keras.derive.findings import run_findings, summarize, write_findings
    from deepeyes_keras.derive.report import format_report
    from deepeyes_keras.run.reader import load_run

    run = load_run(args.run)
    if not run.snapshots:
        print(f"{args.run}: no snapshots yet")
        return 1
    # Computed afresh (a second or so), so the report always follows the current rules.
    summary = summarize(run_findings(run))
    if args.save:
        write_findings(args.run, overwrite=True)
    model = run.manifest.get("model", {})
    print(
        f"Run {run.name} ({run.status}, {model.get('name')}, "
        f"{model.get('parameters', '?')} parameters)"
    )
    print(format_report(summary))
    return 0


def _export(args) -> int:
    from deepeyes_keras.export import export_markdown

    page = export_markdown(args.run, args.out, image_format=args.image_format, step=args.step)
    print(f"Markdown with images written to {page}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepeyes", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a network with DeepEyes watching")
    demo.add_argument(
        "--mnist",
        help="MNIST .npz (Keras layout); default: $DEEPEYES_MNIST, "
        "else scikit-learn's digits (no download)",
    )
    demo.add_argument("--steps", type=int, default=2000, help="training iterations (batch 64)")
    demo.add_argument("--log-dir", default="deepeyes_runs", help="directory of the runs")
    demo.add_argument("--run-name", default=None, help="name of the run directory")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress output")
    demo.set_defaults(func=_demo)
    maps = sub.add_parser(
        "maps", help="compute the maps, chart views and findings a run still lacks"
    )
    maps.add_argument("run", help="run directory")
    maps.add_argument("--max-points", type=int, default=2000, help="points per input map")
    maps.add_argument("--seed", type=int, default=0)
    maps.set_defaults(func=_maps)
    report = sub.add_parser("report", help="print a run's findings (T1-T5) as a table")
    report.add_argument("run", help="run directory")
    report.add_argument(
        "--save", action="store_true", help="also rewrite the run's findings files with them"
    )
    report.set_defaults(func=_report)
    export = sub.add_parser("export", help="write a run's views as Markdown with images")
    export.add_argument("run", help="run directory")
    export.add_argument(
        "--format", choices=["markdown"], default="markdown", help="output format (markdown)"
    )
    export.add_argument("--out", default=None, help="output directory (default RUN/export)")
    export.add_argument("--image-format", choices=["png", "svg"], default="png")
    export.add_argument(
        "--step",
        type=int,
        default=None,
        help="snapshot of the layer views (default: the last with views)",
    )
    export.set_defaults(func=_export)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "out", "") is None:
        args.out = RunLayout(args.run).export_dir
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, PermissionError) as err:
        print(f"deepeyes {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
