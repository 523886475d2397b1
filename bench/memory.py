"""Resident memory over 10 epochs of training with DeepEyes watching, against plain fit.

MNIST LeNet at batch 64. To bound the time, each epoch is 200 steps over the first 12,800 training
images (2,000 steps in all: 24 snapshots at the callback's defaults, enough to fill every
reservoir and to write many sample chunks). Each configuration runs in a fresh Python process; a
callback records the process's resident set size (RSS) at every epoch end, and that of the
background maps process. The maps process is stopped when fit returns (its memory, not its
results, is measured here).

Target (issue 6): growth at most 50 MB over the 10 epochs, taken from the end of epoch 1 (the
first epoch holds one-off costs: tracing the train step, the tap model, the reservoirs) to the end
of epoch 10; the largest growth from one epoch end to the next is shown too.

    python bench/memory.py            # 10 epochs x 200 steps, both configurations (~5 min here)
    python bench/memory.py --quick    # 3 epochs x 10 steps: for CI
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

_common.quiet_tensorflow()

TARGET_GROWTH_MB = 50.0
CONFIGS = ("plain fit", "DeepEyesCallback()")


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default=_common.DEFAULT_MNIST)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=200, help="steps per epoch")
    parser.add_argument("--quick", action="store_true", help="3 epochs x 10 steps: for CI")
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--log-dir", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the raw results here")
    return parser.parse_args(argv)


def _worker_pids() -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process().children(recursive=True)
            if "deepeyes_keras.derive.maps" in " ".join(p.cmdline())]


def run_config(args) -> dict:
    """Trains in this process; returns RSS before fit and at each epoch end."""
    import keras
    import psutil

    from deepeyes_keras import DeepEyesCallback

    batch = 64
    x, y, _ = _common.load_data("lenet", mnist=args.mnist, n=args.steps * batch)
    net = _common.build_model("lenet", seed=0)
    rss = {"main": [_common.rss_mb()], "worker": [0.0]}

    class Meter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            rss["main"].append(_common.rss_mb())
            rss["worker"].append(sum(_common.rss_mb(pid) for pid in _worker_pids()))

    callbacks = []
    deepeyes = None
    if args.config == "DeepEyesCallback()":
        extra = {"reservoir_size": 256} if args.quick else {}
        deepeyes = DeepEyesCallback(log_dir=args.log_dir, run_name="memory", verbose=0, **extra)
        callbacks.append(deepeyes)
    net.fit(x, y, batch_size=batch, epochs=args.epochs, verbose=0,
            callbacks=[*callbacks, Meter()])
    for pid in _worker_pids():  # the maps of the last snapshots are not needed here
        psutil.Process(pid).terminate()
    if deepeyes is not None:
        try:
            deepeyes.wait_for_maps(verbose=False)
        except RuntimeError:  # the worker was stopped on purpose
            pass
    return rss


def main(argv=None):
    args = parse(argv)
    if args.quick:
        args.epochs, args.steps = 3, 10
    if args.config:
        print(json.dumps(run_config(args)))
        return
    import tempfile

    print(_common.machine_line(tensorflow=False))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in CONFIGS:
            _common.log(f"{config} ...")
            cmd = [sys.executable, os.path.abspath(__file__), "--config", config, "--log-dir", tmp,
                   "--mnist", args.mnist, "--epochs", str(args.epochs), "--steps",
                   str(args.steps)] + (["--quick"] if args.quick else [])
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{config} failed:\n{done.stderr[-3000:]}")
            results[config] = json.loads(done.stdout.strip().splitlines()[-1])
    steps = args.epochs * args.steps
    print(f"\nMNIST LeNet, batch 64, {args.epochs} epochs x {args.steps} steps (the first "
          f"{args.steps * 64:,} training images each epoch) = {steps:,} steps; RSS in MB "
          "(10^6 bytes); each configuration in a fresh process.\n")
    rows = []
    for epoch in range(args.epochs + 1):
        row = ["before fit" if epoch == 0 else str(epoch)]
        for config in CONFIGS:
            row.append(f"{results[config]['main'][epoch]:.0f}")
        row.append(f"{results['DeepEyesCallback()']['worker'][epoch]:.0f}" if epoch else "-")
        rows.append(row)
    print(_common.table(["end of epoch", "plain fit: RSS (MB)", "DeepEyesCallback(): RSS (MB)",
                         "its maps process: RSS (MB)"], rows))
    lines = []
    verdicts = {}
    for config in CONFIGS:
        main_rss = results[config]["main"]
        growth = main_rss[-1] - main_rss[1]
        steps_growth = [b - a for a, b in zip(main_rss[1:-1], main_rss[2:], strict=True)]
        worst = max(steps_growth) if steps_growth else 0.0
        verdicts[config] = growth <= TARGET_GROWTH_MB
        lines.append(f"- {config}: first epoch {main_rss[1] - main_rss[0]:+.0f} MB; epoch 1 to "
                     f"{args.epochs}: {growth:+.0f} MB; largest growth from one epoch end to the "
                     f"next: {worst:+.0f} MB.")
    worker = results["DeepEyesCallback()"]["worker"][1:]
    lines.append(f"- maps process (DeepEyes): {min(worker):.0f}-{max(worker):.0f} MB over the "
                 "epochs.")
    print("\n" + "\n".join(lines))
    ok = verdicts["DeepEyesCallback()"]
    print(f"\nTarget: memory growth at most {TARGET_GROWTH_MB:.0f} MB over {args.epochs} epochs "
          f"with the callback on: {'met' if ok else 'missed'}.")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    print(f"\nCommand: python bench/memory.py {' '.join(sys.argv[1:] if argv is None else argv)}"
          .rstrip())


if __name__ == "__main__":
    main()
