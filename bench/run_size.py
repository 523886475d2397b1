"""Disk footprint of a DeepEyes run: MNIST LeNet for 2,000 steps at the callback's defaults.

    python bench/run_size.py            # 2,000 steps (about a minute here)
    python bench/run_size.py --quick    # 60 steps, for CI
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from deepeyes_keras import load_run
from deepeyes_keras.demo import train_demo


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default=os.environ.get("DEEPEYES_MNIST",
                                                          "../shared/data/mnist.npz"))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    steps = 60 if args.quick else args.steps
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = train_demo(mnist=args.mnist, steps=steps, log_dir=tmp, run_name="size",
                             verbose=0)
        files = [p for p in Path(run_dir).rglob("*") if p.is_file()]
        total = sum(p.stat().st_size for p in files)
        by_kind = {}
        for p in files:
            kind = p.relative_to(run_dir).parts[0]
            by_kind[kind] = by_kind.get(kind, 0) + p.stat().st_size
        run = load_run(run_dir)
        print(f"{steps} steps, {len(run.snapshots)} snapshots, {len(run.layer_names)} layers, "
              f"{len(files)} files: {total / 1e6:.1f} MB")
        for kind, size in sorted(by_kind.items()):
            print(f"  {kind:12s} {size / 1e6:7.1f} MB")


if __name__ == "__main__":
    main()
