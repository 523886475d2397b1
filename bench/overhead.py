"""Training overhead of DeepEyes against plain fit and TensorBoard's histograms.

Five networks (``--model``): the paper's MNIST LeNet (its recipe in the case study), a VGG-style
CNN, a small ResNet (BatchNorm, residual adds) and keras.applications' MobileNetV2 (alpha 0.35,
at its defaults otherwise) on generated 32x32x3 images, and a dense MLP on generated tabular
data, each for 2 epochs at batch 64 (``--quick --model all`` leaves MobileNetV2 out).
Configurations run interleaved within each repetition, in a rotated order, so machine noise hits
them alike; each ratio compares a fit with the plain fit of the same repetition. The table gives
the median and min-max over the repetitions.

``DeepEyesCallback()`` (defaults) starts a background process at idle priority that computes
the input and filter maps while training runs; whatever it costs training (shared caches and
memory bandwidth, sibling hyper-threads) is part of the fit time measured. ``fit`` does not wait
for the last maps: the column "maps after fit" is the time they needed once fit had returned,
measured in the first repetition (at most ``--maps-timeout`` seconds; a wait cut short is marked
"capped"); in later repetitions the maps process is stopped when fit returns, so that every fit
starts on idle cores. At defaults, on a machine without GPU and with fewer than 8 cores, the maps
wait until fit returns (``maps_during_training=None``); the configuration with
``maps_during_training=True`` shows what computing them during training costs there.
``--diagnostic`` adds ``DeepEyesCallback(maps=False)``, the recorder alone.

tf.data's autotuning thread makes an iterator's destruction wait, at random, for the rest of its
optimisation period: seconds, at every epoch's end and at the end of ``fit``, in plain fits and in
watched ones (an upstream race; the benchmarks page shows the evidence). The column "tf.data
teardown" is that time in each fit (``_common.teardown_probe``) and "ratio without teardown"
the ratio once it is taken out of both fits; ``--pipeline dataset`` feeds every fit a tf.data
pipeline with autotuning off, where the wait never happens.

Besides wall time, the table gives the CPU time of the training process (user + system, all its
threads; the maps process is a separate process and not included): on a shared virtual machine
wall time drifts by tens of percent from minute to minute, CPU time much less.

    python bench/overhead.py                  # LeNet: 2 epochs x 5 repetitions (about 15 min here)
    python bench/overhead.py --model all      # all five networks (about an hour here)
    python bench/overhead.py --quick          # a few seconds per model: CI runs this
    python bench/overhead.py --images 12800 --pipeline dataset   # 400 steps, no teardown wait
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

_common.quiet_tensorflow()


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_fit_arguments(parser, repeats=5)
    parser.add_argument("--no-tensorboard", action="store_true")
    parser.add_argument("--diagnostic", action="store_true",
                        help="add DeepEyesCallback(maps=False): the recorder alone")
    parser.add_argument("--maps-timeout", type=float, default=900.0,
                        help="longest wait for the background maps after a fit; then they are "
                             "stopped and the wait is reported as capped (default 900 s)")
    parser.add_argument("--quick", action="store_true",
                        help="1 epoch of 10 steps (one snapshot), 1 repetition, small "
                             "reservoir; models other than lenet only plain and with the "
                             "default callback: for CI")
    parser.add_argument("--images", type=int, default=None,
                        help="train on the first N examples only (issue 15's 400-step LeNet "
                             "case: --images 12800)")
    parser.add_argument("--pipeline", choices=list(PIPELINES), default="arrays",
                        help="arrays: fit(x, y) as most scripts do (default); dataset: a tf.data "
                             "pipeline with autotuning off, which removes tf.data's random "
                             "teardown wait from every fit (see _common.tf_dataset); "
                             "dataset-autotune: the same pipeline with autotuning on")
    parser.add_argument("--json", help="also write the raw results here")
    return parser.parse_args(argv)


PIPELINES = {"arrays": "NumPy arrays", "dataset": "tf.data pipeline, autotuning off",
             "dataset-autotune": "tf.data pipeline, autotuning on"}
QUICK_FULL_MODEL = "lenet"  # --quick: the one model fitted under every configuration


def configurations(tmp, *, quick, tensorboard, diagnostic, every=True):
    """The fits compared; ``every=False``: only the plain fit and the default callback."""
    import keras

    from deepeyes_keras import DeepEyesCallback

    # Quick mode keeps the background maps cheap (t-SNE of 256 points, not 2,000).
    extra = {"reservoir_size": 256} if quick else {}
    shown = "DeepEyesCallback(reservoir_size=256)" if quick else "DeepEyesCallback()"
    configs = {"plain fit": lambda: []}
    configs[shown] = lambda: [DeepEyesCallback(log_dir=tmp, verbose=0, **extra)]
    if not every:
        return configs
    during = shown.replace("()", "(maps_during_training=True)").replace(
        "=256)", "=256, maps_during_training=True)")
    configs[during] = lambda: [
        DeepEyesCallback(log_dir=tmp, verbose=0, maps_during_training=True, **extra)]
    if diagnostic:
        configs[shown.replace("()", "(maps=False)").replace("=256)", "=256, maps=False)")] = (
            lambda: [DeepEyesCallback(log_dir=tmp, verbose=0, maps=False, **extra)])
    if tensorboard:
        try:
            import tensorboard as _tb  # noqa: F401

            configs["TensorBoard(histogram_freq=1)"] = lambda: [
                keras.callbacks.TensorBoard(log_dir=os.path.join(tmp, "tb"), histogram_freq=1)
            ]
        except ImportError:
            _common.log("tensorboard is not installed (pip install -e '.[bench]'): skipping it")
    return configs


def bench_model(model_name, args):
    import keras

    x, y, data_desc = _common.load_data(model_name, mnist=args.mnist, n=args.images)
    times: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    cpu_ratios: dict[str, list[float]] = {}
    maps_after: dict[str, list[float]] = {}
    capped: dict[str, int] = {}
    waits: dict[str, list[float]] = {}
    trimmed_ratios: dict[str, list[float]] = {}
    batch = 64
    with tempfile.TemporaryDirectory() as tmp:
        # Quick mode (CI) tries every configuration on the first model only: the others are
        # there to show that each network still builds and records.
        every = not args.quick or model_name == QUICK_FULL_MODEL
        configs = configurations(tmp, quick=args.quick, tensorboard=not args.no_tensorboard,
                                 diagnostic=args.diagnostic, every=every)
        names = list(configs)
        # Warm-up: TensorFlow's first fit in a process pays one-off start-up costs.
        warm = _common.build_model(model_name, seed=99)
        warm.fit(x[:batch * 3], y[:batch * 3], batch_size=batch, epochs=1, verbose=0)
        del warm
        for rep in range(args.repeats):
            order = names[rep % len(names):] + names[:rep % len(names)]
            elapsed_by, cpu_by, wait_by = {}, {}, {}
            for name in order:
                keras.utils.set_random_seed(rep)
                net = _common.build_model(model_name, seed=rep)
                probe = _common.teardown_probe()
                callbacks = configs[name]()
                data = ({"x": x, "y": y, "batch_size": batch} if args.pipeline == "arrays" else
                        {"x": _common.tf_dataset(x, y, batch, seed=rep,
                                                 autotune=args.pipeline == "dataset-autotune")})
                gc.collect()
                began, began_cpu = time.perf_counter(), _common.cpu_seconds()
                net.fit(**data, epochs=args.epochs, steps_per_epoch=args.steps, verbose=0,
                        callbacks=callbacks + [probe])
                elapsed_by[name] = time.perf_counter() - began
                cpu_by[name] = _common.cpu_seconds() - began_cpu
                wait_by[name] = probe.returned()
                for cb in callbacks:  # maps finish in the background: not part of fit's time,
                    if hasattr(cb, "wait_for_maps"):  # but must not slow the next configuration
                        limit = args.maps_timeout if rep == 0 else 0.0
                        waited, finished = _common.wait_for_maps(cb, limit)
                        if cb.maps and rep == 0:
                            maps_after.setdefault(name, []).append(waited)
                            capped[name] = capped.get(name, 0) + (not finished)
                _common.log(f"{model_name} repeat {rep + 1}/{args.repeats} {name:40s} "
                            f"{elapsed_by[name]:7.2f} s, CPU {cpu_by[name]:7.2f} s, "
                            f"teardown {wait_by[name]:5.2f} s")
                del net, callbacks
            for name in names:
                times.setdefault(name, []).append(elapsed_by[name])
                ratios.setdefault(name, []).append(elapsed_by[name] / elapsed_by["plain fit"])
                cpu.setdefault(name, []).append(cpu_by[name])
                cpu_ratios.setdefault(name, []).append(cpu_by[name] / cpu_by["plain fit"])
                waits.setdefault(name, []).append(wait_by[name])
                trimmed_ratios.setdefault(name, []).append(
                    (elapsed_by[name] - wait_by[name])
                    / (elapsed_by["plain fit"] - wait_by["plain fit"]))
    steps = args.epochs * (args.steps or -(-len(x) // batch))
    net = _common.build_model(model_name)
    title = (f"**{model_name}**: {_common.describe_model(model_name, net)}; {data_desc}; "
             f"batch {batch}, {args.epochs} epoch(s) = {steps:,} steps; {args.repeats} "
             f"interleaved repetition(s); input: "
             + PIPELINES[args.pipeline] + ".")
    rows = []
    for name in names:
        rows.append([
            name,
            _common.spread(times[name], "{:.1f}"),
            _common.spread(ratios[name], "{:.3f}"),
            _common.spread(cpu[name], "{:.1f}"),
            _common.spread(cpu_ratios[name], "{:.3f}"),
            _common.spread(waits[name], "{:.2f}"),
            _common.spread(trimmed_ratios[name], "{:.3f}"),
            (_common.spread(maps_after[name], "{:.1f}")
             + (f", capped {capped[name]}x" if capped.get(name) else "")
             if name in maps_after else "-"),
        ])
    headers = ["configuration", "fit time (s), median (min-max)",
               "ratio to plain fit, median (min-max)", "training process CPU (s)",
               "CPU ratio to plain fit", "tf.data teardown (s)",
               "ratio without teardown", "maps after fit returned (s)"]
    return title, _common.table(headers, rows), {
        "times": times, "ratios": ratios, "cpu_seconds": cpu, "cpu_ratios": cpu_ratios,
        "maps_after_fit": maps_after, "capped": capped, "teardown_seconds": waits,
        "ratios_without_teardown": trimmed_ratios,
        "steps": steps}


def main(argv=None):
    args = parse(argv)
    if args.quick:
        args.epochs, args.repeats, args.steps = 1, 1, 10
    models = list(_common.MODELS) if args.model == "all" else [args.model]
    if args.quick and args.model == "all":  # CI: MobileNetV2's tracing alone outlasts the rest
        models.remove("mobilenet")
    print(_common.machine_line())
    results = {}
    for model_name in models:
        title, text, raw = bench_model(model_name, args)
        results[model_name] = raw
        print(f"\n{title}\n\n{text}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    print(f"\nCommand: python bench/overhead.py {' '.join(sys.argv[1:] if argv is None else argv)}"
          .rstrip())


if __name__ == "__main__":
    main()
