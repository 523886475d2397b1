"""Case study: fine-tuning a pretrained CNN to a new task, and which layers to keep (paper §5.1).

An analogue of the paper's AlexNet-to-Flickr-Style study on data we ship (the paper's data and
pretrained weights cannot be downloaded here): a small CNN pretrained on MNIST digits is
fine-tuned to tell the *style* a digit is drawn in (plain, bold, thin, italic, noisy, faint;
:mod:`styles`), a related but different task on the same images.

One command::

    python case_studies/fine_tuning/run.py            # 3 seeds
    python case_studies/fine_tuning/run.py --quick    # CI: fewer images and steps, 1 seed

It

1. pretrains the CNN on 30,000 MNIST digits (run ``pretrain-digits``), with DeepEyes watching;
2. for each seed, builds the style model the way users do: the pretrained network as a nested
   ``backbone`` model (conv1, conv2, fc1), and a new 6-way ``styles`` head; trains the head with
   the backbone frozen while DeepEyes records every layer, the backbone's by their
   ``backbone/...`` paths (run ``ft-head-seed<s>``): the pretrained filters as they respond to
   the new data;
3. reads the tool's findings of that run (:mod:`deepeyes_keras.derive.transfer`: per layer
   keep or retrain, per class how many filters respond, T3 on patterned instances) and its
   fine-tuning plan (:func:`~deepeyes_keras.derive.transfer.fine_tuning_plan`), the same rules
   as for any network;
4. fine-tunes from the same pretrained weights with the plan (``ft-tool-seed<s>``: the planned
   layers frozen, the rest trained) and with the obvious alternative, retraining all layers
   (``ft-all-seed<s>``); freezing all but the head is the run of step 2. These two runs are
   recorded too (snapshots and views); their findings, not needed for the table, are left to
   ``deepeyes report RUN --save``, to keep the command short;
5. writes a table (test accuracy and training time, mean +- sd over the seeds) to
   ``results.md`` and ``results.json`` beside this file (or under ``--out``).

Training time is the wall time of ``model.fit`` with DeepEyes recording (``maps=False``: the maps
of the seed-0 runs are computed after ``fit``); on a shared machine it is noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist.npz"
sys.path[:0] = [str(HERE), str(HERE.parent)]

from _common import fresh_run_dir, mean_sd_text, rel, write_results  # noqa: E402  (case_studies/_common.py)
from styles import STYLES, styled  # noqa: E402  (this folder's module)

BATCH = 64
SNAPSHOT_EVERY = 100  # steps: 6 snapshots of a fine-tuning, enough for T1's 3 transitions
FULL = {"pretrain": 30_000, "train": 12_000, "test": 10_000, "epochs": 3, "reservoir": 2000}
QUICK = {"pretrain": 3_000, "train": 1_500, "test": 500, "epochs": 1, "reservoir": 300}
VARIANTS = {
    "tool": "the tool's plan",
    "all": "retrain all layers",
    "head": "freeze all but the head",
}


def backbone(name: str = "backbone"):
    """The pretrained network without its head: conv1 16, conv2 32 (5 x 5, ReLU), fc1 64."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(16, 5, activation="relu", name="conv1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(32, 5, activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(64, activation="relu", name="fc1"),
        ],
        name=name,
    )


def with_head(base, classes: int, name: str):
    """``base`` nested in a new model with a fresh ``classes``-way head (logits)."""
    import keras

    inputs = keras.Input((28, 28, 1), name="image")
    head = keras.layers.Dense(classes, name="styles" if classes == len(STYLES) else "digits")
    model = keras.Model(inputs, head(base(inputs)), name=name)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def freeze(model, paths) -> list[str]:
    """Freezes the layers named by path (``backbone/conv1``); returns the trainable layers."""
    for path in paths:
        layer = model
        for part in path.split("/"):
            layer = layer.get_layer(part)
        layer.trainable = False
    return [v.path for v in model.trainable_weights]


def train_watched(
    model, data, *, run_name, out, epochs, seed, reservoir, maps, findings=True
) -> dict:
    """Fits ``model`` with DeepEyes watching; evaluates; writes findings (every snapshot, when
    ``findings``), views, and the last snapshot's maps (when ``maps``)."""
    import keras

    from deepeyes_keras import DeepEyesCallback
    from deepeyes_keras.derive.findings import write_findings
    from deepeyes_keras.derive.views import write_views

    (x, y), (x_test, y_test) = data
    run_dir = fresh_run_dir(out, run_name)
    keras.utils.set_random_seed(seed)
    cb = DeepEyesCallback(
        log_dir=out,
        run_name=run_name,
        seed=seed,
        maps=False,
        reservoir_size=reservoir,
        snapshot_every=SNAPSHOT_EVERY,
        verbose=0,
    )
    began = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0, callbacks=[cb])
    seconds = time.perf_counter() - began
    _, accuracy = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
    if maps:  # only the last snapshot's: the page shows the state at the end
        from deepeyes_keras.derive.maps import layer_maps
        from deepeyes_keras.run.layout import write_npz
        from deepeyes_keras.run.reader import load_run

        run = load_run(run_dir)
        for layer in run.snapshots[-1].layers.values():
            arrays = layer_maps(layer, seed=seed)
            write_npz(run.layout.maps(layer.key, run.snapshots[-1].step), arrays)
    if findings:
        write_findings(run_dir)
    write_views(run_dir)
    return {
        "run": run_name,
        "run_dir": rel(run_dir),
        "test_accuracy": round(float(accuracy), 4),
        "train_seconds": round(seconds, 2),
        "steps": int(model.optimizer.iterations.numpy()),
        "trainable_parameters": int(sum(int(w.numpy().size) for w in model.trainable_weights)),
    }


def last_findings(run_dir: Path) -> dict:
    from deepeyes_keras.run.reader import load_run

    run = load_run(run_dir)
    for snap in reversed(run.snapshots):
        if snap.findings is not None:
            return snap.findings
    raise ValueError(f"Run {run_dir} has no findings; run `deepeyes report {run_dir} --save`.")


def transfer_summary(findings: dict) -> dict:
    """Per layer: verdict, reasons, live share, T3 on patterns, filters per class, weak classes."""
    rows = {}
    for name, f in findings["layers"].items():
        tr = f["transfer"]
        rows[name] = {
            "verdict": tr["verdict"],
            "reasons": tr["reasons"],
            "live_share": tr["live_share"],
            "dead": len(f["T2"]["dead"]),
            "n_filters": f["n_filters"],
            "undetected_patterns": tr["undetected_patterns"]["share"],
            "undetected_per_class": tr["undetected_patterns"]["per_class"],
            "filters_per_class": tr["classes"]["filters_per_class"],
            "weak_classes": [STYLES[c] for c in tr["classes"]["weak_classes"]],
            "unselective": tr["classes"]["unselective"],
            "selective": {k: STYLES[v] for k, v in tr["classes"]["selective"].items()},
            "probe": f["T5"].get("linear"),
        }
    return rows


def run_seed(seed, pretrained, data, *, out, cfg, maps) -> dict:
    """Step 2-4 for one seed: the watched head run, the tool's plan, the two fine-tunings."""
    from deepeyes_keras.derive.transfer import fine_tuning_plan

    def fresh():
        base = backbone()
        base.set_weights(pretrained)
        return with_head(base, len(STYLES), name="styler")

    common = dict(out=out, epochs=cfg["epochs"], seed=seed, reservoir=cfg["reservoir"])
    nets, frozen = {}, {}
    model = fresh()
    frozen["head"] = ["backbone/conv1", "backbone/conv2", "backbone/fc1"]
    freeze(model, frozen["head"])
    nets["head"] = train_watched(model, data, run_name=f"ft-head-seed{seed}", maps=maps, **common)
    findings = last_findings(out / nets["head"]["run"])
    plan = fine_tuning_plan(findings)
    for variant, paths in (("tool", plan["freeze"]), ("all", [])):
        model = fresh()
        freeze(model, paths)
        frozen[variant] = list(paths)
        name = f"ft-{variant}-seed{seed}"
        # Findings of these runs are not needed for the table (`deepeyes report RUN --save`).
        nets[variant] = train_watched(
            model, data, run_name=name, maps=False, findings=False, **common
        )
    for variant, entry in nets.items():
        entry["frozen"] = frozen[variant]
        print(
            f"  seed {seed} {variant}: frozen {frozen[variant] or 'none'}, test accuracy "
            f"{entry['test_accuracy']:.4f}, fit {entry['train_seconds']:.1f} s",
            flush=True,
        )
    return {
        "seed": seed,
        "findings_step": findings["step"],
        "plan": plan,
        "transfer": transfer_summary(findings),
        "thresholds": findings["thresholds"].get("transfer"),
        "networks": nets,
    }


def table(per_seed: list[dict]) -> tuple[list[dict], str]:
    rows = []
    for variant, label in VARIANTS.items():
        nets = [s["networks"][variant] for s in per_seed]
        frozen = sorted({", ".join(n["frozen"]) or "none" for n in nets})
        rows.append({
            "variant": variant,
            "label": label,
            "frozen": frozen,
            "accuracy": [n["test_accuracy"] for n in nets],
            "seconds": [n["train_seconds"] for n in nets],
            "trainable_parameters": sorted({n["trainable_parameters"] for n in nets}),
        })  # fmt: skip
    lines = [
        "| fine-tuning | frozen layers | trainable parameters | test accuracy % (mean ± sd) "
        "| fit time s (mean ± sd) | seeds |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {' / '.join(r['frozen'])} | "
            f"{' / '.join(f'{p:,}' for p in r['trainable_parameters'])} | "
            f"{mean_sd_text(r['accuracy'], 100)} | {mean_sd_text(r['seconds'])} | "
            f"{len(r['accuracy'])} |"
        )
    return rows, "\n".join(lines)


def findings_table(summary: dict) -> str:
    lines = [
        "| layer | verdict | live filters | T3 on patterns | filters responding per class "
        f"({', '.join(STYLES)}) | weakly covered | unselective filters | probe |",
        "|---|---|---:|---:|---|---|---:|---:|",
    ]
    for name, r in summary.items():
        undetected = "-" if r["undetected_patterns"] is None else f"{r['undetected_patterns']:.0%}"
        probe = "-" if r["probe"] is None else f"{r['probe']:.3f}"
        per_class = " / ".join("-" if v is None else str(v) for v in r["filters_per_class"])
        lines.append(
            f"| {name} | {r['verdict']} | {r['n_filters'] - r['dead']} of {r['n_filters']} | "
            f"{undetected} | {per_class} | {', '.join(r['weak_classes']) or 'none'} | "
            f"{len(r['unselective'])} | {probe} |"
        )
    return "\n".join(lines)


def results_markdown(report: dict) -> str:
    cfg = report["config"]
    out = [
        "# Fine-tuning case study: results",
        "",
        f"Produced by `{report['command']}` on {report['finished']} ({cfg['cpus']} CPU cores, "
        f"TensorFlow {report['versions']['tensorflow']}, Keras {report['versions']['keras']}); "
        f"the whole command took {report['total_seconds'] / 60:.1f} min.",
        f"An analogue of the paper's §5.1 on MNIST: pretrained on {cfg['pretrain']:,} digits "
        f"(test accuracy {100 * report['pretrain']['test_accuracy']:.2f}% on the digits), "
        f"fine-tuned to {len(STYLES)} styles on {cfg['train']:,} other training images for "
        f"{cfg['epochs']} epoch(s) at batch {BATCH}; {cfg['test']:,} styled test images; "
        f"seeds {cfg['seeds']}.",
        "",
        report["table"],
        "",
        "## The tool's findings (run ft-head-seed<s>: head trained, backbone frozen)",
        "",
    ]
    for s in report["per_seed"]:
        plan = s["plan"]
        out += [
            f"### Seed {s['seed']} (step {s['findings_step']})",
            "",
            findings_table(s["transfer"]),
            "",
            f"Plan: freeze {', '.join(plan['freeze']) or 'nothing'}; retrain "
            f"{', '.join(plan['retrain'])}.",
            "",
        ]
        out += [
            f"- {name}: retrain because {'; '.join(r['reasons'])}."
            for name, r in s["transfer"].items()
            if r["reasons"]
        ]
        out.append("")
    out.append(f"Thresholds: {json.dumps(report['per_seed'][0]['thresholds'], sort_keys=True)}")
    return "\n".join(out)


def _sanity(report: dict) -> None:
    """--quick: what a CI run must have produced."""
    lines = [line for line in report["table"].splitlines()[2:] if line.startswith("|")]
    if len(lines) != len(VARIANTS):
        raise SystemExit(f"the table has {len(lines)} rows, expected {len(VARIANTS)}")
    for s in report["per_seed"]:
        if set(s["networks"]) != set(VARIANTS) or not s["transfer"]:
            raise SystemExit(f"seed {s['seed']}: missing networks or findings")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist", help="MNIST .npz in Keras's layout (default: $DEEPEYES_MNIST, "
                   f"then {SHARED_MNIST} if present, else Keras's downloader)")  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2)")
    p.add_argument("--quick", action="store_true", help="CI mode: small data, 1 seed, temp --out")
    p.add_argument("--out", type=Path, default=None, help="runs directory (default runs/ here; "
                   "results.md/json go beside this script, or into --out when given)")  # fmt: skip
    p.add_argument("--no-maps", action="store_true", help="no input/filter maps (seed 0 only)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    began = time.perf_counter()
    args = parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    cfg["seeds"] = args.seeds or ([0] if args.quick else [0, 1, 2])
    if args.out is not None:
        out = results_dir = args.out.resolve()
    elif args.quick:
        out = results_dir = Path(tempfile.mkdtemp(prefix="deepeyes-fine-tuning-"))
    else:
        out, results_dir = HERE / "runs", HERE
    out.mkdir(parents=True, exist_ok=True)
    mnist = args.mnist or os.environ.get("DEEPEYES_MNIST")
    mnist = mnist or (str(SHARED_MNIST) if SHARED_MNIST.is_file() else None)

    import keras
    import tensorflow as tf

    from deepeyes_keras.data import load_mnist

    (x, y), (x_test, y_test) = load_mnist(mnist)
    n_pre, n_train, n_test = cfg["pretrain"], cfg["train"], cfg["test"]
    digits = ((x[:n_pre, ..., None] / 255.0).astype("float32"), y[:n_pre])
    digits_test = ((x_test[:n_test, ..., None] / 255.0).astype("float32"), y_test[:n_test])
    style_train = styled(x[n_pre : n_pre + n_train], seed=1000)  # images the backbone never saw
    style_test = styled(x_test[:n_test], seed=2000)
    print(f"Fine-tuning case study: seeds {cfg['seeds']}; runs in {out}", flush=True)

    keras.utils.set_random_seed(0)
    base = backbone()
    pre = train_watched(
        with_head(base, 10, name="digits_cnn"), (digits, digits_test), run_name="pretrain-digits",
        out=out, epochs=1, seed=0, reservoir=cfg["reservoir"], maps=False,
    )  # fmt: skip
    print(f"  pretrained on digits: test accuracy {pre['test_accuracy']:.4f}", flush=True)
    pretrained = base.get_weights()
    per_seed = [
        run_seed(seed, pretrained, (style_train, style_test), out=out, cfg=cfg,
                 maps=not args.no_maps and i == 0)
        for i, seed in enumerate(cfg["seeds"])
    ]  # fmt: skip
    rows, text = table(per_seed)
    command = (
        "python case_studies/fine_tuning/run.py"
        + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    )
    report = {
        "command": command,
        "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
        "config": dict(
            cfg,
            quick=args.quick,
            batch=BATCH,
            styles=list(STYLES),
            runs_dir=rel(out),
            cpus=os.cpu_count(),
        ),  # fmt: skip
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
        },  # fmt: skip
        "pretrain": pre,
        "rows": rows,
        "table": text,
        "per_seed": per_seed,
    }
    report["total_seconds"] = round(time.perf_counter() - began, 1)
    write_results(report, results_dir, "results", results_markdown, sort_keys=True)
    print("\n" + text + f"\n\nTotal {report['total_seconds'] / 60:.1f} min; results in "
          f"{results_dir / 'results.md'}", flush=True)  # fmt: skip
    if args.quick:
        _sanity(report)
        print("quick mode: outputs check out")
    return report


if __name__ == "__main__":
    main()
