"""Disk footprint of a DeepEyes run: MNIST LeNet for 2,000 steps at the callback's defaults.

The run is the one ``deepeyes demo`` (``make demo``) records, maps and views included (the script
waits for them).

    python bench/run_size.py            # 2,000 steps (a few minutes here, mostly the maps)
    python bench/run_size.py --quick    # 10 steps (one snapshot), 256-instance reservoir: for CI
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

_common.quiet_tensorflow()

# Budgets of a 2,000-step LeNet run at the defaults (viewer_site/reference/benchmarks.md).
RUN_BUDGET_MB, SITE_BUDGET_MB, PAGE_BUDGET_MB = 50, 30, 2


def _quick_run(mnist: str, log_dir: str) -> Path:
    from deepeyes_keras import DeepEyesCallback

    x, y, _ = _common.load_data("lenet", mnist=mnist, n=10 * 64)
    net = _common.build_model("lenet", seed=0)
    cb = DeepEyesCallback(log_dir=log_dir, run_name="size", reservoir_size=256, verbose=0)
    net.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[cb])
    cb.wait_for_maps(verbose=False)
    return Path(cb.run_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default=_common.DEFAULT_MNIST)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)

    from deepeyes_keras import load_run
    from deepeyes_keras.demo import train_demo

    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            run_dir, what = _quick_run(args.mnist, tmp), "10 steps, reservoir_size=256"
        else:
            run_dir = train_demo(mnist=args.mnist, steps=args.steps, log_dir=tmp,
                                 run_name="size", verbose=0)
            what = f"{args.steps:,} steps (deepeyes demo), callback defaults"
        files = [p for p in Path(run_dir).rglob("*") if p.is_file()]
        total = sum(p.stat().st_size for p in files)
        by_kind: dict[str, list[int]] = {}
        for p in files:
            parts = p.relative_to(run_dir).parts
            kind = parts[0] if len(parts) > 1 else "(top level: manifest, findings)"
            by_kind.setdefault(kind, []).append(p.stat().st_size)
        run = load_run(run_dir)
        print(f"MNIST LeNet, {what}: {len(run.snapshots)} snapshots of {len(run.layer_names)} "
              f"layers, {len(files)} files, {total / 1e6:.1f} MB in all.\n")
        rows = [[kind, str(len(sizes)), f"{sum(sizes) / 1e6:.2f}"]
                for kind, sizes in sorted(by_kind.items())]
        rows.append(["**total**", str(len(files)), f"**{total / 1e6:.1f}**"])
        print(_common.table(["folder", "files", "MB (10^6 bytes)"], rows))
        views = [p for p in files if p.name.endswith(".vl.json")]
        site_data = sum(p.stat().st_size for p in views)  # the site copies the views
        largest = max(views, key=lambda p: p.stat().st_size, default=None)
        largest_mb = largest.stat().st_size / 1e6 if largest else 0.0
        budget_rows = [
            ["run directory", f"{total / 1e6:.1f} MB", f"{RUN_BUDGET_MB} MB"],
            ["site data (every view)", f"{site_data / 1e6:.1f} MB", f"{SITE_BUDGET_MB} MB"],
            [f"largest page's data ({largest.relative_to(run_dir) if largest else '-'})",
             f"{largest_mb:.2f} MB", f"{PAGE_BUDGET_MB} MB"],
        ]  # fmt: skip
        for row, value in zip(budget_rows, (total, site_data, largest_mb * 1e6), strict=True):
            row.append("met" if value <= float(row[2].split()[0]) * 1e6 else "NOT met")
        print("\nBudgets (issue 16), for the 2,000-step run; a --quick run is far below them:\n")
        print(_common.table(["measure", "value", "budget", "met?"], budget_rows))
    print(f"\nCommand: python bench/run_size.py {' '.join(sys.argv[1:] if argv is None else argv)}"
          .rstrip())


if __name__ == "__main__":
    main()
