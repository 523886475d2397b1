"""The ``deepeyes`` command line."""

from __future__ import annotations

import argparse
import os
import sys

from deepeyes_keras.run.layout import RunLayout, printable


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
        print(f"[{done}/{total}] {printable(message)}", flush=True)

    done = update_run(args.run, max_points=args.max_points, seed=args.seed, progress=progress)
    print(
        f"{done.maps} maps, {done.views} views and findings of {done.findings} snapshots "
        f"written to {args.run}"
    )
    return 0


def _tensorboard(args) -> int:
    from deepeyes_keras.derive.tensorboard import write_events

    done = write_events(args.run, log_dir=args.log_dir)
    if done.directory is None:
        raise ValueError(
            f"{args.run} was recorded without DeepEyesCallback(tensorboard=...): pass --log-dir "
            "DIR, the TensorBoard log directory to write its events to."
        )
    steps = ", ".join(map(str, done.steps)) or "none new"
    print(f"TensorBoard events of steps {steps} written to {done.directory}")
    if done.waiting:
        print(f"{done.waiting} snapshot(s) have no findings yet: `deepeyes maps {args.run}`")
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
        printable(
            f"Run {run.name} ({run.status}, {model.get('name')}, "
            f"{model.get('parameters', '?')} parameters)"
        )
    )
    print(format_report(summary))
    return 0


def _export(args) -> int:
    from deepeyes_keras.export import export_markdown

    page = export_markdown(args.run, args.out, image_format=args.image_format, step=args.step)
    print(f"Markdown with images written to {page}")
    return 0


def _publish(args) -> int:
    from deepeyes_keras.derive.publish import publish, published_size

    jobs: dict[str, dict] = {}  # run directory -> what to publish
    if args.run:
        jobs[args.run] = {"layers": args.layer or None, "steps": args.step or None}
    for page in args.page or []:
        for run_dir, layer, step in _page_blocks(page, args.runs):
            job = jobs.setdefault(run_dir, {"pairs": []})
            if layer is not None and (layer, step) not in job["pairs"]:
                job["pairs"].append((layer, step))
    if not jobs:
        raise ValueError(
            "Nothing to publish: give a RUN, or --page PAGE.md with `publish: yes` blocks."
        )
    for run_dir, job in jobs.items():
        if "pairs" in job and not job["pairs"]:  # only run-wide views (histograms, curves)
            job = {"layers": []}
        manifest = publish(run_dir, args.out, **job, progress=print)
        print(
            f"{run_dir}: published to {manifest.parent} ({published_size(manifest) / 1e6:.1f} MB)"
        )
    return 0


def _page_blocks(page: str, roots: list[str]) -> list[tuple[str, str | None, int | None]]:
    """``(run directory, layer, step)`` of every ``publish: yes`` deepeyes block of a page."""
    from pathlib import Path

    from deepeyes_keras.run.layout import is_run_dir
    from deepeyes_keras.site.blocks import parse_block, replace_blocks

    found: list[dict] = []
    replace_blocks(
        Path(page).read_text(encoding="utf-8"), lambda b: found.append(parse_block(b)) or ""
    )
    out = []
    for opts in found:
        if opts.get("publish", "").lower() not in ("yes", "true", "1"):
            continue
        name = opts.get("run", "")
        dirs = [Path(r) for r in roots] + [Path(r) / name for r in roots]
        run_dir = next((d for d in dirs if is_run_dir(d) and (d.name == name)), None)
        if run_dir is None:
            raise ValueError(f"{page}: no run {name!r} under --runs {roots}.")
        layer = (
            opts.get("layer")
            if opts.get("view", "layer" if "layer" in opts else "") == "layer"
            else None
        )
        step = int(opts["step"]) if "step" in opts and layer is not None else None
        out.append((str(run_dir), layer, step))
    return out


def _redesign(args) -> int:
    from deepeyes_keras.redesign.hook import load_hook
    from deepeyes_keras.redesign.verify import verify_proposal, write_proposal
    from deepeyes_keras.run.reader import load_run

    if args.verify and not args.hook:
        raise ValueError(
            "--verify needs --hook FILE: a Python file whose build_data() returns the data to "
            "retrain on (see viewer_site/guide/redesign.md)."
        )
    run = load_run(args.run)
    hook = load_hook(args.hook) if args.hook else None
    given = read_proposal(args.proposal, run) if args.proposal else None
    source = f"file {args.proposal}" if args.proposal else None
    proposal = write_proposal(run, given, hook=hook, step=args.step, source=source)
    print(proposal_text(proposal, run.proposal or {}))
    if given is None:
        print(history_text(run))
    print(f"Proposal written to {run.layout.proposal}")
    if not args.verify:
        return 0
    result = verify_proposal(
        run,
        hook_path=hook,
        seeds=args.seeds,
        proposal=proposal,
        progress=lambda line: print(line, flush=True),
    )
    if result["status"] == "finished":
        print(comparison_text(result))
    print(f"Verification written to {run.layout.verification}")
    return 0


def history_text(run) -> str:
    """Progressive: each layer's width in the proposal at the step it became stable, and now."""
    from deepeyes_keras.redesign.proposal import proposal_history

    rows = proposal_history(run)
    if not rows:
        return "No layer is stable yet: the proposal may still change."
    lines = ["Proposal when each layer became stable, against now:"]
    for r in rows:
        then = "removed" if r["removed_then"] else r["width_then"]
        now = "removed" if r["removed_final"] else r["width_final"]
        verdict = "same" if r["same"] else f"differs by {r['difference']:+d}"
        if r["difference"] is None or r["removed_then"] != r["removed_final"]:
            verdict = "same" if r["same"] else "differs"
        lines.append(
            f"  {r['layer']}: stable since step {r['stable_since_step']}: {then} then, "
            f"{now} now ({verdict})"
        )
    return "\n".join(lines)


def read_proposal(path: str, run):
    """A proposal for ``run`` from a JSON file like proposal.json (``widths``, ``remove``)."""
    from deepeyes_keras.redesign.proposal import Proposal
    from deepeyes_keras.run.layout import read_json

    data = read_json(path)
    widths = data.get("widths", {}) if isinstance(data, dict) else None
    remove = data.get("remove", []) if isinstance(data, dict) else None
    if not isinstance(widths, dict) or not isinstance(remove, list):
        raise ValueError(
            f"--proposal {path}: expected a JSON object like proposal.json, e.g. "
            '{"widths": {"conv1": 10}, "remove": ["fc2"]}. '
            f"Received: {type(data).__name__} {str(data)[:80]}."
        )
    original = {i["name"]: int(i["n_filters"]) for i in run.manifest.get("analysed_layers") or []}
    return Proposal.from_dict({"run": run.name, "step": None, "original_widths": original, **data})


def proposal_text(proposal, written: dict) -> str:
    """The proposal in lines: each change with its reason, and the parameters before -> after."""
    source = written.get("source", "findings")
    origin = f"the findings at step {proposal.step}" if source == "findings" else source
    lines = [f"Proposal for run {proposal.run!r}, from {origin}:"]
    if not proposal.changes:
        lines.append("  no change: every analysed layer keeps its width and place.")
    for name, width in proposal.widths.items():
        before = proposal.original_widths.get(name, "?")
        reason = proposal.reasons.get(name)
        lines.append(f"  {name}: {before} -> {width}" + (f"  ({reason})" if reason else ""))
    for name in proposal.remove:
        reason = proposal.reasons.get(name)
        lines.append(f"  {name}: remove" + (f"  ({reason})" if reason else ""))
    before, after = proposal.parameters_before, proposal.parameters_after
    if before and after is not None:
        lines.append(f"Parameters: {before:,} -> {after:,} ({after / before:.2f} x)")
    else:
        lines.append(f"Parameters: unknown ({written.get('parameters_error', 'not counted')})")
    return "\n".join(lines)


def mean_sd(stats: dict, scale: float = 1.0, digits: int = 2) -> str:
    mean, sd = stats["mean"] * scale, stats.get("sd")
    return f"{mean:.{digits}f}" + ("" if sd is None else f" ± {sd * scale:.{digits}f}")


def comparison_text(result: dict) -> str:
    """The verification as a table: network, widths, parameters, test metric, training time."""
    accuracy = result["metric"]["name"] == "accuracy"
    scale = 100.0 if accuracy else 1.0
    metric = "test accuracy, %" if accuracy else f"test {result['metric']['key']}"
    heads = ["network", "widths", "parameters", f"{metric} (mean ± sd)", "training, s"]
    rows = [heads]
    for role, net in result["networks"].items():
        widths = ", ".join(f"{k} {v}" for k, v in net["widths"].items())
        if net.get("removed"):
            widths += f" ({', '.join(net['removed'])} removed)"
        test = mean_sd(net["test"], scale, 2 if accuracy else 4)
        rows.append([role, widths, f"{net['parameters']:,}", test, mean_sd(net["train_seconds"])])
    sizes = [max(len(r[i]) for r in rows) for i in range(len(heads))]
    lines = ["  ".join(c.ljust(n) for c, n in zip(r, sizes, strict=True)).rstrip() for r in rows]
    diff = result["difference"]
    per_seed = ", ".join(f"{v:+.2f}" for v in diff["per_seed"])
    seeds = ", ".join(map(str, result["seeds_done"]))
    lines.append(
        f"Difference (proposal - original): {diff['mean']:+.2f} {diff['unit']} "
        f"(per seed: {per_seed}); seeds {seeds}, each network trained from fresh weights on "
        "the same data and fit settings."
    )
    return "\n".join(lines)


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
    tensorboard = sub.add_parser(
        "tensorboard", help="write a run's findings and histograms as TensorBoard events"
    )
    tensorboard.add_argument("run", help="run directory")
    tensorboard.add_argument(
        "--log-dir",
        default=None,
        metavar="DIR",
        help="TensorBoard log directory; the events go to DIR/deepeyes-<run name> "
        "(default: the run's DeepEyesCallback(tensorboard=...))",
    )
    tensorboard.set_defaults(func=_tensorboard)
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
    publish = sub.add_parser(
        "publish",
        help="freeze views of a run into small self-contained files a wiki can hold",
    )
    publish.add_argument("run", nargs="?", help="run directory (or use --page)")
    publish.add_argument(
        "--layer", action="append", help="a layer to publish (repeat; default all)"
    )
    publish.add_argument(
        "--step", action="append", type=int, help="a snapshot step (repeat; default the last)"
    )
    publish.add_argument(
        "--page", action="append", help="publish the `publish: yes` deepeyes blocks of this page"
    )
    publish.add_argument(
        "--runs", action="append", default=[], help="directory of the runs the pages name"
    )
    publish.add_argument("--out", required=True, help="directory of the published runs")
    publish.set_defaults(func=_publish)
    redesign = sub.add_parser(
        "redesign",
        help="turn a run's findings into a smaller network; with --verify, retrain and compare",
    )
    redesign.add_argument("run", help="run directory (with findings: `deepeyes maps RUN`)")
    redesign.add_argument(
        "--step", type=int, default=None, help="snapshot of the findings (default: the last)"
    )
    redesign.add_argument(
        "--verify",
        action="store_true",
        help="train the original and the proposal on the same data and seeds (needs --hook)",
    )
    redesign.add_argument(
        "--hook", default=None, help="Python file with build_data() (see the redesign guide)"
    )
    redesign.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="seeds (default: the hook's SEEDS)"
    )
    redesign.add_argument(
        "--proposal",
        default=None,
        help="verify this proposal (JSON like proposal.json) instead of the findings' one",
    )
    redesign.set_defaults(func=_redesign)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "out", "") is None:
        args.out = RunLayout(args.run).export_dir
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, PermissionError) as err:
        # names and paths in the message are the user's: no escape sequence reaches the terminal
        text = "\n".join(printable(line) for line in str(err).split("\n"))
        print(f"deepeyes {args.command}: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
