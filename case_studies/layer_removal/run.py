"""Case study: an unnecessary layer, found by the tool's T5 findings and removed (paper §5.2).

An analogue of the DeepEyes paper's mitotic-figure detection (AMIDA), on generated data: the
AMIDA patches cannot be downloaded here, so :mod:`patches` draws two-class 32 x 32 patches of
cell-like blobs on a textured background, a positive holding a small, dark, elongated target at
its centre. The network has the paper's shape: 4 conv layers of 8-16-16-32 filters (3 x 3,
ReLU; max-pooling after conv1, conv2 and conv4), a dense layer of 100 units (fc1, after the
Flatten) and a dense layer of 2 outputs (fc2).

One command::

    python case_studies/layer_removal/run.py                 # 3 seeds x 1,000 iterations
    python case_studies/layer_removal/run.py --variant hard  # fainter target, 2,000 iterations
    python case_studies/layer_removal/run.py --quick         # CI: 1 seed, 60 iterations, temp

For each seed it

1. trains the network (Adam 1e-3, batch 32, a seeded shuffle of 6,000 training patches) with
   :class:`~deepeyes_keras.DeepEyesCallback` watching (run ``amida-seed<s>``) and computes the
   findings of every snapshot with the tool's rules (:mod:`deepeyes_keras.derive.findings`);
2. reads the layers the T5 findings propose to remove at the last snapshot: the tool's
   proposal (:func:`deepeyes_keras.redesign.proposal.proposal_from_findings`), kept only where the
   graph can be built without them (:func:`deepeyes_keras.redesign.build.buildable`); nothing in
   this script names the layer;
3. removes them with :func:`deepeyes_keras.resize.resize_model` (fresh weights, same compile
   settings), trains that network on the same schedule and seed, also watched
   (``amida-removed-seed<s>``);
4. evaluates both on 2,000 generated test patches.

It prints a Markdown table (layers, parameters, test accuracy mean +- sd over the seeds,
difference from the original, training time) and writes it with the T5 evidence per seed to
``results.md`` and ``results.json`` beside this file (or under ``--out``; ``--variant hard``:
``results-hard.*``, runs ``amida-hard-*``). Only the T5
removals are trained; when the proposal also holds T4 widths they are recorded, not trained (this
study is about the layer).

Training time is the wall time of ``model.fit`` with DeepEyes recording (``maps=False``: the
input and filter maps of the first seed's last snapshot are computed after ``fit``); on a shared
machine it is noisy. Runs are named deterministically so that the case-study page
(``viewer_site/case-studies/layer-removal.md``) can embed their charts.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(HERE.parent)]

from _common import fresh_run_dir, mean_sd, print_summary, rel, write_results  # noqa: E402
from patches import HARD, make_patches  # noqa: E402  (this folder's generator)

BATCH = 32
FULL = {"steps": 1000, "train": 6000, "test": 2000, "reservoir_size": 2000, "seeds": [0, 1, 2]}
QUICK = {"steps": 60, "train": 1000, "test": 500, "reservoir_size": 300, "seeds": [0]}
VARIANTS = {  # generator settings, iterations, and the prefix of run and result names
    "default": {"data": {}, "steps": 1000, "prefix": "amida", "results": "results"},
    "hard": {"data": HARD, "steps": 2000, "prefix": "amida-hard", "results": "results-hard"},
}
DATA_SEEDS = {"train": 1, "test": 2}  # one data set for every seed: seeds vary the training
PAPER = {"accuracy": 0.959, "conv": [8, 16, 16, 32], "dense": [100, 2]}  # reported, not ours
ROLES = {
    "original": "original (conv 8-16-16-32, fc1 100, fc2 2)",
    "removed": "without the layer(s) T5 proposes to remove",
}


def build_model(seed: int):
    """The paper's AMIDA shape on 32 x 32 x 1 patches, compiled (Adam 1e-3, logits)."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool2"),
            layers.Conv2D(16, 3, padding="same", activation="relu", name="conv3"),
            layers.Conv2D(32, 3, padding="same", activation="relu", name="conv4"),
            layers.MaxPooling2D(name="pool4"),
            layers.Flatten(name="flatten"),
            layers.Dense(100, activation="relu", name="fc1"),
            layers.Dense(2, name="fc2"),
        ],
        name="amida_analogue",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def layer_list(model) -> str:
    """``conv1 8, conv2 16, ..., fc2 2``: the layers with a width, in order."""
    parts = []
    for layer in model.layers:
        width = getattr(layer, "filters", None) or getattr(layer, "units", None)
        if isinstance(width, int):
            parts.append(f"{layer.name} {width}")
    return ", ".join(parts)


def compute_last_maps(run_dir: Path, *, seed: int) -> int:
    """Input and filter maps of every layer at the run's last snapshot (the linked views)."""
    from deepeyes_keras.derive.maps import layer_maps
    from deepeyes_keras.run.layout import write_npz
    from deepeyes_keras.run.reader import load_run

    run = load_run(run_dir)
    snap = run.snapshots[-1]
    for layer in snap.layers.values():
        write_npz(run.layout.maps(layer.key, snap.step), layer_maps(layer, seed=seed))
    return len(snap.layers)


def train_watched(model, data, *, run_name, out, cfg, seed, maps, verbose) -> dict:
    """Trains ``model`` with DeepEyes watching, evaluates it, writes findings and views."""
    import tensorflow as tf
    from threadpoolctl import threadpool_limits

    from deepeyes_keras import DeepEyesCallback
    from deepeyes_keras.derive.findings import write_findings
    from deepeyes_keras.derive.views import write_views

    (x, y), (x_test, y_test) = data
    run_dir = fresh_run_dir(out, run_name)
    stream = (tf.data.Dataset.from_tensor_slices((x, y))
              .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
              .repeat().batch(BATCH).prefetch(2))  # fmt: skip
    cb = DeepEyesCallback(
        log_dir=out,
        run_name=run_name,
        seed=seed,
        maps=False,
        reservoir_size=cfg["reservoir_size"],
        snapshot_every=max(1, cfg["steps"] // 12),
        verbose=0,
    )
    began = time.perf_counter()
    model.fit(stream, epochs=1, steps_per_epoch=cfg["steps"], verbose=0, callbacks=[cb])
    train_seconds = time.perf_counter() - began
    _, accuracy = model.evaluate(x_test, y_test, batch_size=500, verbose=0)
    began = time.perf_counter()
    # One BLAS thread: spinning OpenMP threads beside other jobs cost far more than they give.
    with threadpool_limits(1):
        n_maps = compute_last_maps(run_dir, seed=seed) if maps else 0
        write_findings(run_dir)
    write_views(run_dir)
    result = {
        "run": run_name,
        "run_dir": rel(run_dir),
        "layers": layer_list(model),
        "parameters": int(model.count_params()),
        "test_accuracy": float(accuracy),
        "train_seconds": round(train_seconds, 2),
        "analysis_seconds": round(time.perf_counter() - began, 2),
        "maps": n_maps,
        "steps": cfg["steps"],
    }
    if verbose:
        print(
            f"  {run_name}: test accuracy {accuracy:.4f}, {result['parameters']:,} parameters, "
            f"fit {train_seconds:.0f} s, findings and views {result['analysis_seconds']:.0f} s",
            flush=True,
        )
    return result


T5_KEYS = ("linear", "knn", "chance", "input_accuracy", "gain", "input_gain", "removable",
           "after_saturation", "instances")  # fmt: skip


def t5_evidence(run_dir: Path) -> dict:
    """The last snapshot's T5 numbers per layer, the necessity verdict and the suggestions."""
    from deepeyes_keras.run.reader import load_run

    run = load_run(run_dir)
    snap = next(s for s in reversed(run.snapshots) if s.findings is not None)
    f = snap.findings
    return {
        "step": snap.step,
        "layers": {
            name: {k: layer["T5"].get(k) for k in T5_KEYS}
            | {"stable": layer["T1"]["stable"], "n_filters": layer["n_filters"]}
            for name, layer in f["layers"].items()
        },
        "necessity": f.get("necessity"),
        "suggestions": [s for s in f.get("suggestions") or [] if s.get("task") == "T5"],
        "thresholds": f["thresholds"]["necessity"],
    }


def tool_removal(run_dir: Path, original) -> dict:
    """The T5 removals of the tool's proposal at the last snapshot, as the graph can take them."""
    from deepeyes_keras.redesign.build import buildable
    from deepeyes_keras.redesign.proposal import propose
    from deepeyes_keras.run.reader import load_run

    run = load_run(run_dir)
    proposal = buildable(original, propose(run))
    return {
        "remove": list(proposal.remove),
        "widths_not_trained": dict(proposal.widths),
        "reasons": {n: proposal.reasons.get(n, "") for n in proposal.remove},
    }


def run_seed(seed: int, data, *, out: Path, cfg: dict, maps: bool, verbose: int) -> dict:
    from deepeyes_keras.resize import resize_model

    prefix = cfg["prefix"]
    original = build_model(seed)
    nets = {"original": train_watched(original, data, run_name=f"{prefix}-seed{seed}", out=out,
                                      cfg=cfg, seed=seed, maps=maps, verbose=verbose)}  # fmt: skip
    evidence = t5_evidence(out / f"{prefix}-seed{seed}")
    removal = tool_removal(out / f"{prefix}-seed{seed}", build_model(seed))
    if removal["remove"]:
        fresh = build_model(seed)
        smaller = resize_model(fresh, remove=removal["remove"], name="amida_removed")
        import keras

        keras.utils.set_random_seed(seed)  # the same stream and a seeded initialisation
        nets["removed"] = train_watched(smaller, data, run_name=f"{prefix}-removed-seed{seed}",
                                        out=out, cfg=cfg, seed=seed, maps=maps,
                                        verbose=verbose)  # fmt: skip
    elif verbose:
        print(f"  seed {seed}: the findings propose no removal; nothing more to train")
    return {"seed": seed, "networks": nets, "t5": evidence, "removal": removal}


def summarize(per_seed: list[dict]) -> list[dict]:
    """One row per network role: accuracies and times over the seeds that trained it."""
    base = {s["seed"]: s["networks"]["original"]["test_accuracy"] for s in per_seed}
    rows = []
    for role, label in ROLES.items():
        nets = [(s["seed"], s["networks"][role]) for s in per_seed if role in s["networks"]]
        if not nets:
            continue
        acc = [100 * n["test_accuracy"] for _, n in nets]
        rows.append(
            {
                "role": role,
                "label": label,
                "layers": sorted({n["layers"] for _, n in nets}),
                "parameters": sorted({n["parameters"] for _, n in nets}),
                "accuracy": mean_sd(acc),
                "delta_pp": [100 * (n["test_accuracy"] - base[s]) for s, n in nets],
                "train_seconds": mean_sd([n["train_seconds"] for _, n in nets]),
                "seeds": [s for s, _ in nets],
            }
        )
    return rows


def markdown_table(rows: list[dict]) -> str:
    out = [
        "| network | layers | parameters | test accuracy, % (mean ± sd) | vs original, pp "
        "(mean ± sd) | training time, s (mean ± sd) | seeds |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        params = " – ".join(f"{p:,}" for p in (r["parameters"][0], r["parameters"][-1]))
        params = f"{r['parameters'][0]:,}" if len(r["parameters"]) == 1 else params
        mean, sd = mean_sd(r["delta_pp"])
        delta = "—" if r["role"] == "original" else f"{mean:+.2f} ± {sd:.2f}"
        out.append(
            f"| {r['label']} | {' / '.join(r['layers'])} | {params} | "
            f"{r['accuracy'][0]:.2f} ± {r['accuracy'][1]:.2f} | {delta} | "
            f"{r['train_seconds'][0]:.0f} ± {r['train_seconds'][1]:.0f} | {len(r['seeds'])} |"
        )
    return "\n".join(out)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.3f}"


def evidence_table(t5: dict) -> str:
    """The T5 numbers of one seed's original run, one row per analysed layer."""
    out = [
        "| layer | width | linear probe | 5-NN | probe of its input | gain over the layer "
        "before | gain over its input | flagged |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, e in t5["layers"].items():
        flags = [f for f, on in (("adds too little", e["removable"]),
                                 ("after saturation", e["after_saturation"])) if on]  # fmt: skip
        gain = None if e["gain"] is None else f"{e['gain']:+.3f}"
        input_gain = None if e["input_gain"] is None else f"{e['input_gain']:+.3f}"
        out.append(
            f"| {name} | {e['n_filters']} | {_fmt(e['linear'])} | {_fmt(e['knn'])} | "
            f"{_fmt(e['input_accuracy'])} | {gain or '-'} | {input_gain or '-'} | "
            f"{', '.join(flags) or '-'} |"
        )
    return "\n".join(out)


def results_markdown(report: dict) -> str:
    cfg = report["config"]
    t = report["per_seed"][0]["t5"]["thresholds"]
    out = [
        "# Layer-removal case study (an analogue of the paper's §5.2): results",
        "",
        f"Produced by `{report['command']}` on {report['finished']} "
        f"({cfg['cpus']} CPU cores, TensorFlow {report['versions']['tensorflow']}, Keras "
        f"{report['versions']['keras']}); the whole command took "
        f"{report['total_seconds'] / 60:.1f} min.",
        f"Generated patches (`case_studies/layer_removal/patches.py`, variant "
        f"`{cfg['variant']}`), {cfg['train']:,} for "
        f"training and {cfg['test']:,} for the test; {cfg['steps']} iterations at batch "
        f"{BATCH}; seeds {cfg['seeds']}. This is an analogue on generated data, not the AMIDA "
        "data set.",
        "",
        report["table"],
        "",
        f"Paper (its reported number, not ours): {100 * PAPER['accuracy']:.1f}% test accuracy "
        "on AMIDA after removing a dense layer, about the same as before.",
        "",
        "## The T5 findings per seed (original network, last snapshot)",
        "",
        "Rules: `deepeyes_keras.derive.findings` and `deepeyes_keras.derive.probes`, site page "
        "Reference > Findings. Linear probe: 5-fold cross-validated ridge probe of the labels on "
        "the layer's recent output vectors (conv layers: the mean of an image's sampled "
        "positions); *probe of its input*: the same probe on a hidden dense layer's recorded "
        "input vectors (its input map). A hidden layer *adds too little* when it gains less "
        f"than {t['min_gain']} over its input (else over the layer before); it comes *after "
        f"saturation* when an earlier entry (its input included) is within {t['min_gain']} of "
        "the best. A flagged hidden dense layer is proposed for removal.",
        "",
    ]
    for s in report["per_seed"]:
        out += [f"### Seed {s['seed']} (findings at step {s['t5']['step']})", "",
                evidence_table(s["t5"]), ""]  # fmt: skip
        for sug in s["t5"]["suggestions"]:
            out.append(f"- T5: {sug['text']}")
        removal = s["removal"]
        out += [
            "",
            "Removed and retrained: "
            + (", ".join(removal["remove"]) if removal["remove"] else "nothing (no removal "
               "proposed)")
            + "."
            + (f" T4 widths in the same proposal, not trained: {removal['widths_not_trained']}."
               if removal["widths_not_trained"] else ""),
            "",
        ]  # fmt: skip
    return "\n".join(out)


def _sanity(report: dict, out: Path) -> None:
    """--quick: the outputs a CI run must have produced."""
    from deepeyes_keras.run.reader import load_run

    for s in report["per_seed"]:
        for entry in s["networks"].values():
            run = load_run(out / entry["run"])
            assert run.snapshots and run.snapshots[-1].findings, f"{entry['run']}: no findings"
            assert 0.0 <= entry["test_accuracy"] <= 1.0
        assert set(s["t5"]["layers"]) >= {"conv1", "conv4", "fc1", "fc2"}, "T5 evidence missing"
    lines = [line for line in report["table"].splitlines()[2:] if line.startswith("|")]
    assert lines and lines[0].startswith(f"| {ROLES['original']} |"), "no table"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true",
                   help=f"CI mode: {QUICK['steps']} iterations, one seed, {QUICK['train']} "
                   "training patches, a temporary --out; checks the outputs")  # fmt: skip
    p.add_argument("--variant", choices=sorted(VARIANTS), default="default",
                   help="the data: the default patches, or a harder variant (fainter target, "
                   "more noise; 2000 iterations; runs amida-hard-*, results-hard.md/json)",
                   )  # fmt: skip
    p.add_argument("--steps", type=int, default=None,
                   help="training iterations (default 1000; 2000 for --variant hard)")  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2)")
    p.add_argument("--out", type=Path, default=None,
                   help="runs directory (default case_studies/layer_removal/runs; with --quick a "
                   "temporary one); results.md/json go beside this script, or into --out",
                   )  # fmt: skip
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1))
    return p.parse_args(argv)


def main(argv=None) -> dict:
    began = time.perf_counter()
    args = parse_args(argv)
    variant = VARIANTS[args.variant]
    cfg = dict(QUICK if args.quick else dict(FULL, steps=variant["steps"]))
    cfg.update(variant=args.variant, prefix=variant["prefix"])
    cfg["steps"] = args.steps or cfg["steps"]
    cfg["seeds"] = args.seeds or cfg["seeds"]
    if args.steps is not None and args.steps < 1:
        raise SystemExit(f"--steps must be >= 1. Received: {args.steps}.")
    if args.out is not None:
        out = results_dir = args.out.resolve()
    elif args.quick:
        out = results_dir = Path(tempfile.mkdtemp(prefix="deepeyes-layer-removal-"))
    else:
        out, results_dir = HERE / "runs", HERE
    out.mkdir(parents=True, exist_ok=True)

    import keras
    import tensorflow as tf

    data = (make_patches(cfg["train"], seed=DATA_SEEDS["train"], **variant["data"]),
            make_patches(cfg["test"], seed=DATA_SEEDS["test"], **variant["data"]))  # fmt: skip
    print(f"Layer-removal case study: {cfg['steps']} iterations x seeds {cfg['seeds']}; runs in "
          f"{out}", flush=True)  # fmt: skip
    per_seed = []
    for i, seed in enumerate(cfg["seeds"]):
        print(f"Seed {seed}", flush=True)
        per_seed.append(run_seed(seed, data, out=out, cfg=cfg, maps=i == 0 and not args.quick,
                                 verbose=args.verbose))  # fmt: skip
    rows = summarize(per_seed)
    command = (
        "python case_studies/layer_removal/run.py"
        + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    )
    report = {
        "command": command,
        "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
        "config": dict(
            cfg,
            batch=BATCH,
            quick=args.quick,
            data_seeds=DATA_SEEDS,
            runs_dir=rel(out),
            cpus=os.cpu_count(),
        ),  # fmt: skip
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
        },  # fmt: skip
        "paper": PAPER,
        "rows": rows,
        "per_seed": per_seed,
        "table": markdown_table(rows),
    }
    report["total_seconds"] = round(time.perf_counter() - began, 1)
    name = variant["results"]
    print_summary(report, str(write_results(report, results_dir, name, results_markdown)))
    if args.quick:
        _sanity(report, out)
        print("quick mode: outputs check out")
    return report


if __name__ == "__main__":
    main()
