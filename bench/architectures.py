"""keras.applications networks at defaults under DeepEyesCallback(): layers, memory, time, outputs.

Each of MobileNetV2 (alpha 0.35, 32x32), ResNet50 (96x96) and EfficientNetB0 (64x64), built with
``weights=None`` and 10 classes, trains for 2 epochs on 64 random images (batch 16) in a fresh
Python process, once without and once with ``DeepEyesCallback()`` at its defaults. Reported: the
layers DeepEyes watches (of the analysable ones), the recorder's variables (exact bytes, summed
over its tf.Variables, and the budget rule's estimate), the peak resident memory of the process
in both configurations, the fit time, and then the snapshots, maps, views and findings that
``deepeyes maps RUN`` writes from the run.

Target (issue 12): the recorder's variables at most 256 MB on ResNet50 at 96x96 at defaults.

    python bench/architectures.py            # the three networks (~10 min on 2 cores)
    python bench/architectures.py --quick    # MobileNetV2 only, 1 epoch: for CI
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

_common.quiet_tensorflow()

TARGET_MB = 256.0
NETWORKS = {
    "MobileNetV2": ("MobileNetV2", (32, 32, 3), {"alpha": 0.35}),
    "ResNet50": ("ResNet50", (96, 96, 3), {}),
    "EfficientNetB0": ("EfficientNetB0", (64, 64, 3), {}),
}


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="MobileNetV2 only, 1 epoch: for CI")
    parser.add_argument("--network", choices=sorted(NETWORKS), action="append")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # network, config, out json
    return parser.parse_args(argv)


def child(network: str, config: str, out: str, epochs: int) -> None:
    import warnings

    import keras
    import numpy as np

    name, shape, extra = NETWORKS[network]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=shape, classes=10, **extra)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.random((64, *shape)).astype("float32")
    y = rng.integers(0, 10, 64)
    result = {"network": network, "config": config, "parameters": int(model.count_params())}
    callbacks = []
    log_dir = tempfile.mkdtemp(prefix="deepeyes-arch-")
    if config == "deepeyes":
        from deepeyes_keras import DeepEyesCallback

        cb = DeepEyesCallback(log_dir=log_dir, run_name=network, maps=False, verbose=0)
        callbacks.append(cb)
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=callbacks)
    result["fit_s"] = time.perf_counter() - began
    result["fit_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if config == "deepeyes":
        from deepeyes_keras.derive.pipeline import update_run
        from deepeyes_keras.record.selection import resolve_layers
        from deepeyes_keras.run.reader import load_run

        recorder = cb._recorder
        result["recorder_bytes"] = int(sum(v.numpy().nbytes for v in _recorder_variables(recorder)))
        result["estimated_bytes"] = int(recorder.estimated_bytes)
        result["analysable"] = len(resolve_layers(model)[0])
        result["watched"] = len(recorder.taps)
        began = time.perf_counter()
        update_run(cb.run_dir)
        result["maps_s"] = time.perf_counter() - began
        run = load_run(cb.run_dir)
        last = run.snapshots[-1]
        result["snapshots"] = len(run.snapshots)
        result["maps"] = sum(
            1 for s in run.snapshots for n in run.layer_names if s.layers[n].maps is not None
        )
        result["findings"] = last.findings is not None
        result["views"] = len(list((cb.run_dir / "views").rglob("*.json")))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(out, "w") as handle:
        json.dump(result, handle)


def _recorder_variables(recorder):
    out = [recorder.step, recorder.captured_y, *recorder.captured_x]
    for stats, res in zip(recorder.stats, recorder.reservoirs, strict=True):
        out += list(stats.variables().values()) + list(res.variables().values())
    return out


def main(argv=None):
    args = parse(argv)
    if args.child:
        child(*args.child, epochs=args.epochs)
        return
    networks = args.network or (["MobileNetV2"] if args.quick else list(NETWORKS))
    epochs = 1 if args.quick else args.epochs
    print(_common.machine_line(tensorflow=False))
    rows, results = [], {}
    for network in networks:
        for config in ("plain", "deepeyes"):
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
                out = tmp.name
            _common.log(f"{network}: {config}")
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--epochs",
                    str(epochs),
                    "--child",
                    network,
                    config,
                    out,
                ],
                capture_output=True,
                text=True,
            )
            if done.returncode:
                sys.stderr.write(done.stderr[-4000:])
                raise SystemExit(f"{network} ({config}) failed")
            with open(out) as handle:
                results[network, config] = json.load(handle)
            os.unlink(out)
        plain, de = results[network, "plain"], results[network, "deepeyes"]
        rows.append(
            [
                f"**{network}**",
                f"{de['parameters']:,}",
                f"{de['watched']} of {de['analysable']}",
                f"{de['recorder_bytes'] / 2**20:.0f} ({de['estimated_bytes'] / 2**20:.0f})",
                f"{plain['fit_rss_mb']:.0f} / {de['fit_rss_mb']:.0f} / {de['peak_rss_mb']:.0f}",
                f"{plain['fit_s']:.1f} / {de['fit_s']:.1f}",
                f"{de['snapshots']} / {de['maps']} / {de['views']} / "
                f"{'yes' if de['findings'] else 'no'}",
                f"{de['maps_s']:.0f}",
            ]
        )
    print(f"{epochs} epoch(s) of 4 steps (64 random images, batch 16), weights=None, 10 classes.\n")
    print(
        _common.table(
            [
                "network",
                "parameters",
                "layers watched",
                "recorder MB (estimate)",
                "peak RSS MB: plain fit / DeepEyes fit / and maps",
                "fit s plain / DeepEyes",
                "snapshots / layer maps / views / findings",
                "maps s",
            ],
            rows,
        )
    )
    if ("ResNet50", "deepeyes") in results:
        mb = results["ResNet50", "deepeyes"]["recorder_bytes"] / 2**20
        verdict = "met" if mb <= TARGET_MB else "missed"
        print(
            f"\nTarget: recorder at most {TARGET_MB:.0f} MB on ResNet50 96x96: {mb:.0f} MB, "
            f"{verdict}."
        )


if __name__ == "__main__":
    main()
