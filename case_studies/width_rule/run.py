"""Evidence for the width rule (T4): which count of a layer's directions predicts a width that
keeps accuracy, on more than one network and data set.

For each network below: train the original with DeepEyes watching (3 seeds), read the counts of
every hidden layer from the last snapshot's reservoir (recent half of training, raw activations):
the explained-variance counts k(delta), the Gavish-Donoho signal rank r and the tool's suggestion
(:mod:`deepeyes_keras.derive.width`); rebuild the network at each candidate's widths
(:func:`deepeyes_keras.resize.resize_model`), retrain it on the same data, schedule and seeds, and
compare test accuracy and parameters. Writes ``results.md`` beside this file (and ``results.json``).

Networks (all data ships with a package or is generated; MNIST from ``--mnist``):

- ``lenet-mnist``: the paper's Caffe LeNet (20-50-500-10) on MNIST, 2,000 iterations.
- ``mlp512-digits``: a 512-unit hidden layer on scikit-learn's 64-pixel digits (too wide by design).
- ``cnn-digits``: a small CNN (32-64 conv, 128 dense) on the digits as 8x8 images.
- ``mlp-tabular``: a 3-hidden-layer MLP (128-128-128) on a generated 20-feature, 5-class table.
- ``mlp-weather``: a 256-256 MLP on vega-datasets' Seattle weather table (6 features from 4
  measurements and the day of the year, 5 classes): two layers far wider than 6 inputs need.

Usage::

    python case_studies/width_rule/run.py --mnist ../shared/data/mnist.npz      # ~15 min, 2 cores
    python case_studies/width_rule/run.py --quick --out /tmp/width-rule         # CI-sized
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import mean_sd  # noqa: E402  (case_studies/_common.py)

DELTAS = (0.9, 0.95, 0.99)
# The widths retrained: the literature's 99% count, the signal rank r alone, and the tool's rule
# (2 r, no cut below a quarter of the layer: deepeyes_keras.derive.width.suggested_width).
RULES = {
    "k(0.99)": lambda w: w["k0.99"],
    "r": lambda w: w["rank"],
    "1.5 r": lambda w: math.ceil(1.5 * w["rank"]),
    "rule: 2 r": lambda w: w["rule"],
}
SEEDS = (0, 1, 2)


# --------------------------------------------------------------------------------------- networks
def lenet_mnist(mnist: str | None, quick: bool):
    import keras

    from deepeyes_keras.data import load_mnist
    from deepeyes_keras.models import compile_lenet, lenet

    (x, y), (xt, yt) = load_mnist(mnist)
    n = 12_800 if quick else len(x)
    x = x[:n, ..., None].astype("float32") / 256.0
    xt = xt[..., None].astype("float32") / 256.0
    steps = 200 if quick else 2000

    def build(seed):
        keras.utils.set_random_seed(seed)
        return compile_lenet(lenet(seed=seed))

    return dict(build=build, data=(x, y[:n], xt, yt), steps=steps, batch=64)


def digits(flat: bool):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype("float32")
    x = x.reshape(len(x), -1) if flat else x[..., None]
    x, xt, y, yt = train_test_split(x, d.target, test_size=0.25, random_state=0, stratify=d.target)
    return x, y, xt, yt


def compiled(model, lr=1e-3):
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def mlp512_digits(mnist, quick):
    import keras

    def build(seed):
        keras.utils.set_random_seed(seed)
        return compiled(
            keras.Sequential(
                [
                    keras.Input((64,)),
                    keras.layers.Dense(512, activation="relu", name="hidden"),
                    keras.layers.Dense(10, name="out"),
                ],
                name="mlp512",
            )
        )

    return dict(build=build, data=digits(flat=True), steps=300 if quick else 1500, batch=32)


def cnn_digits(mnist, quick):
    import keras

    def build(seed):
        keras.utils.set_random_seed(seed)
        layers = keras.layers
        return compiled(
            keras.Sequential(
                [
                    keras.Input((8, 8, 1)),
                    layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
                    layers.MaxPooling2D(2, name="pool1"),
                    layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
                    layers.Flatten(name="flat"),
                    layers.Dense(128, activation="relu", name="fc1"),
                    layers.Dense(10, name="out"),
                ],
                name="cnn_digits",
            )
        )

    return dict(build=build, data=digits(flat=False), steps=300 if quick else 1500, batch=32)


def tabular():
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    x, y = make_classification(
        n_samples=6000,
        n_features=20,
        n_informative=8,
        n_redundant=4,
        n_classes=5,
        n_clusters_per_class=2,
        class_sep=1.5,
        random_state=0,
    )
    x = ((x - x.mean(0)) / x.std(0)).astype("float32")
    x, xt, y, yt = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return x, y, xt, yt


def mlp_tabular(mnist, quick):
    import keras

    def build(seed):
        keras.utils.set_random_seed(seed)
        layers = keras.layers
        return compiled(
            keras.Sequential(
                [
                    keras.Input((20,)),
                    layers.Dense(128, activation="relu", name="h1"),
                    layers.Dense(128, activation="relu", name="h2"),
                    layers.Dense(128, activation="relu", name="h3"),
                    layers.Dense(5, name="out"),
                ],
                name="mlp_tabular",
            )
        )

    return dict(build=build, data=tabular(), steps=300 if quick else 1500, batch=64)


def weather():
    """vega-datasets' Seattle weather table (ships with the package): 5 weather classes."""
    from sklearn.model_selection import train_test_split
    from vega_datasets import local_data

    df = local_data.seattle_weather()
    day = df["date"].dt.dayofyear.to_numpy() * (2 * np.pi / 365.25)
    cols = [df[c].to_numpy(float) for c in ("precipitation", "temp_max", "temp_min", "wind")]
    x = np.stack([*cols, np.sin(day), np.cos(day)], axis=1)
    x = ((x - x.mean(0)) / x.std(0)).astype("float32")
    y = df["weather"].astype("category").cat.codes.to_numpy().astype("int64")
    x, xt, y, yt = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return x, y, xt, yt


def mlp_weather(mnist, quick):
    import keras

    def build(seed):
        keras.utils.set_random_seed(seed)
        layers = keras.layers
        return compiled(
            keras.Sequential(
                [
                    keras.Input((6,)),
                    layers.Dense(256, activation="relu", name="h1"),
                    layers.Dense(256, activation="relu", name="h2"),
                    layers.Dense(5, name="out"),
                ],
                name="mlp_weather",
            )
        )

    return dict(build=build, data=weather(), steps=300 if quick else 1500, batch=32)


NETWORKS = {
    "lenet-mnist": lenet_mnist,
    "mlp512-digits": mlp512_digits,
    "cnn-digits": cnn_digits,
    "mlp-tabular": mlp_tabular,
    "mlp-weather": mlp_weather,
}


# --------------------------------------------------------------------------------------- training
def train(model, net, seed, callbacks=()):
    import tensorflow as tf

    x, y, xt, yt = net["data"]
    per_epoch = math.ceil(len(x) / net["batch"])
    epochs = max(1, math.ceil(net["steps"] / per_epoch))
    ds = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed)
        .repeat()
        .batch(net["batch"])
    )
    began = time.perf_counter()
    model.fit(
        ds,
        steps_per_epoch=math.ceil(net["steps"] / epochs),
        epochs=epochs,
        verbose=0,
        shuffle=False,  # the dataset is shuffled; Keras would ignore (and warn about) True
        callbacks=list(callbacks),
    )
    seconds = time.perf_counter() - began
    accuracy = float(model.evaluate(xt, yt, verbose=0, batch_size=512)[1])
    return accuracy, seconds


def layer_widths(run_dir: Path) -> dict[str, dict]:
    """Per hidden analysed layer at the last snapshot: the counts and the rule's suggestion."""
    from deepeyes_keras import load_run
    from deepeyes_keras.derive.width import explained_variance_width, suggested_width

    run = load_run(run_dir)
    snap = run.snapshots[-1]
    out = {}
    for name in run.layer_names[:-1]:  # the output layer's width is the number of labels
        samples = snap.layers[name].samples
        recent = samples.step >= snap.step / 2
        acts = samples.activation[recent if recent.sum() >= 200 else slice(None)]
        s = suggested_width(acts)
        row = {
            "n_filters": s.n_filters,
            "instances": len(acts),
            "rank": s.signal.rank,
            "method": s.signal.method,
            "noise_share": round(s.signal.noise_share, 3),
            "gd": s.signal.gavish_donoho,
            "pr": round(float(s.variance.participation_ratio), 1),
            "rule": s.width,
        }
        for delta in DELTAS:
            row[f"k{delta}"] = int(explained_variance_width(acts, delta=delta).k)
        row["k0.99c"] = int(explained_variance_width(acts, delta=0.99, clamp=True).k)
        out[name] = row
    return out


def run_network(name, net, seeds, log_dir: Path, say):
    from deepeyes_keras import DeepEyesCallback
    from deepeyes_keras.resize import resize_model

    original = {"acc": [], "seconds": []}
    widths = None
    params = None
    for seed in seeds:
        model = net["build"](seed)
        params = model.count_params()
        cb = DeepEyesCallback(
            log_dir=str(log_dir), run_name=f"{name}-seed{seed}", maps=False, verbose=0, seed=seed
        )
        acc, sec = train(model, net, seed, [cb])
        original["acc"].append(acc)
        original["seconds"].append(sec)
        if widths is None:
            widths = layer_widths(Path(cb.run_dir))
            proposal = tool_proposal(Path(cb.run_dir))
        say(f"{name} original seed {seed}: accuracy {acc:.4f} ({sec:.0f} s)")
    result = {"parameters": params, "widths": widths, "original": original, "deltas": {}}
    candidates = {
        label: ({n: max(1, min(rule(w), w["n_filters"])) for n, w in widths.items()}, [])
        for label, rule in RULES.items()
    }
    # The tool's whole proposal (T4 widths of stable layers, T5 removals), as deepeyes redesign.
    candidates["tool's proposal"] = (proposal.widths, proposal.remove)
    for label, (new, remove) in candidates.items():
        accs = []
        for seed in seeds:
            smaller = resize_model(net["build"](seed), new, remove=remove)
            acc, _ = train(smaller, net, seed)
            accs.append(acc)
        n_params = smaller.count_params()
        result["deltas"][label] = {
            "widths": {n: new.get(n, w["n_filters"]) for n, w in widths.items()},
            "remove": list(remove),
            "parameters": n_params,
            "acc": accs,
        }
        say(f"{name} {label}: widths {new}, remove {remove}, {n_params:,} params, "
            f"accuracy {np.mean(accs):.4f}")  # fmt: skip
    result["proposal"] = proposal.to_dict()
    return result


def tool_proposal(run_dir: Path):
    """The tool's proposal from the findings of the run's snapshots (``deepeyes redesign``)."""
    from deepeyes_keras import load_run
    from deepeyes_keras.derive.findings import write_findings
    from deepeyes_keras.redesign.proposal import propose

    write_findings(run_dir)
    return propose(load_run(run_dir))


# --------------------------------------------------------------------------------------- report
def widths_text(d: dict) -> str:
    removed = set(d.get("remove") or [])
    return "-".join("x" if n in removed else str(w) for n, w in d["widths"].items())


def table(results: dict) -> str:
    lines = [
        "| network | widths | parameters | test accuracy (mean ± sd) | change vs original |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        base, sd = mean_sd(r["original"]["acc"])
        orig_widths = "-".join(str(w["n_filters"]) for w in r["widths"].values())
        lines.append(
            f"| {name} original | {orig_widths} | {r['parameters']:,} | "
            f"{100 * base:.2f} ± {100 * sd:.2f} | |"
        )
        for delta, d in r["deltas"].items():
            m, s = mean_sd(d["acc"])
            shrink = r["parameters"] / d["parameters"]
            lines.append(
                f"| {name}, {delta} | {widths_text(d)} | "
                f"{d['parameters']:,} ({shrink:.1f}x fewer) | {100 * m:.2f} ± {100 * s:.2f} | "
                f"{100 * (m - base):+.2f} pp |"
            )
    return "\n".join(lines)


def counts_table(results: dict) -> str:
    lines = [
        "| network | layer | F | instances | k(0.9) | k(0.95) | k(0.99) | k(0.99) clamped | "
        "PR | Gavish-Donoho | implied noise share | signal rank r | rule: width |",
        "|" + "---|" * 13,
    ]
    for name, r in results.items():
        for layer, w in r["widths"].items():
            ks = " | ".join(str(w[f"k{d}"]) for d in DELTAS)
            lines.append(
                f"| {name} | {layer} | {w['n_filters']} | {w['instances']} | {ks} | "
                f"{w['k0.99c']} | {w['pr']} | {w['gd']} | {w['noise_share']:.2f} | "
                f"{w['rank']} ({w['method']}) | {w['rule']} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default=os.environ.get("DEEPEYES_MNIST"))
    parser.add_argument("--quick", action="store_true", help="short schedules, 2 seeds")
    parser.add_argument("--networks", nargs="*", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--out", default=str(HERE), help="where results.md/json go")
    args = parser.parse_args(argv)
    seeds = SEEDS[:2] if args.quick else SEEDS
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.networks:
            net = NETWORKS[name](args.mnist, args.quick)
            results[name] = run_network(name, net, seeds, Path(tmp), lambda m: print(m, flush=True))
    minutes = (time.perf_counter() - began) / 60
    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    text = [
        "# Evidence for the width rule",
        "",
        f"Produced by `python case_studies/width_rule/run.py{' --quick' if args.quick else ''}` "
        f"in {minutes:.1f} min on {os.cpu_count()} CPU cores; seeds {list(seeds)}.",
        "",
        "## Explained-variance counts at the last snapshot (seed 0)",
        "",
        counts_table(results),
        "",
        "## Retrained at those widths (raw activations, same data, schedule and seeds)",
        "",
        table(results),
        "",
    ]
    (out / "results.md").write_text("\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
