"""Training overhead of DeepEyes against plain fit (and TensorBoard's histograms, if installed).

MNIST LeNet (DESIGN.md section 3), batch 64. Configurations are interleaved within each
repetition so machine noise hits them alike; the table reports the median wall time of ``fit``
and each configuration's median ratio to plain ``fit`` of the same repetition, with min-max.

    python bench/overhead.py                 # 2 epochs x 3 repetitions (about 10 minutes here)
    python bench/overhead.py --quick         # a few seconds: CI runs this so the script cannot rot
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import tempfile
import time

import keras
import numpy as np

from deepeyes_keras import DeepEyesCallback
from deepeyes_keras.data import load_mnist
from deepeyes_keras.models import compile_lenet, lenet


def parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default=os.environ.get("DEEPEYES_MNIST",
                                                          "../shared/data/mnist.npz"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="limit steps per epoch")
    parser.add_argument("--quick", action="store_true", help="tiny run for CI")
    parser.add_argument("--json", help="also write the results here")
    return parser.parse_args()


def configurations(tmp):
    configs = {"plain fit": lambda: []}
    configs["DeepEyesCallback()"] = lambda: [DeepEyesCallback(log_dir=tmp, verbose=0)]
    try:
        import tensorboard  # noqa: F401

        configs["TensorBoard(histogram_freq=1)"] = lambda: [
            keras.callbacks.TensorBoard(log_dir=os.path.join(tmp, "tb"), histogram_freq=1)
        ]
    except ImportError:
        print("tensorboard is not installed (pip install -e '.[bench]'): skipping it")
    return configs


def main():
    args = parse()
    if args.quick:
        args.epochs, args.repeats, args.steps = 1, 1, 30
    (x, y), _ = load_mnist(args.mnist)
    x = x[..., None].astype("float32") / 256.0
    times: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    maps_wait: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        configs = configurations(tmp)
        for rep in range(args.repeats):
            base = None
            for name, make_callbacks in configs.items():
                keras.utils.set_random_seed(rep)
                model = compile_lenet(lenet(seed=rep))
                callbacks = make_callbacks()
                gc.collect()
                began = time.perf_counter()
                model.fit(x, y, batch_size=64, epochs=args.epochs, steps_per_epoch=args.steps,
                          verbose=0, callbacks=callbacks)
                elapsed = time.perf_counter() - began
                for cb in callbacks:  # maps finish in the background: not part of fit's time,
                    if hasattr(cb, "wait_for_maps"):  # but must not slow the next configuration
                        waited = time.perf_counter()
                        cb.wait_for_maps(verbose=False)
                        maps_wait.append(time.perf_counter() - waited)
                base = elapsed if base is None else base
                times.setdefault(name, []).append(elapsed)
                ratios.setdefault(name, []).append(elapsed / base)
                print(f"repeat {rep + 1}/{args.repeats} {name:32s} {elapsed:7.2f} s", flush=True)
    steps = args.epochs * (args.steps or int(np.ceil(len(x) / 64)))
    print(f"\nMNIST LeNet, batch 64, {args.epochs} epoch(s) = {steps} steps, {args.repeats} "
          f"interleaved repetitions; {os.cpu_count()} CPU cores, {platform.processor() or 'cpu'}")
    print("| configuration | fit time, median (s) | ratio to plain fit, median (min-max) |")
    print("|---|---|---|")
    for name in times:
        r = ratios[name]
        print(f"| {name} | {statistics.median(times[name]):.1f} | "
              f"{statistics.median(r):.3f} ({min(r):.3f}-{max(r):.3f}) |")
    if maps_wait:
        print(f"\nAfter fit returned, the background maps needed {statistics.median(maps_wait):.1f} s "
              "more (median).")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"times": times, "ratios": ratios, "steps": steps}, handle, indent=1)


if __name__ == "__main__":
    main()
