"""Disk footprint of a DeepEyes run and of its site: MNIST LeNet for 2,000 steps at the defaults.

The run is the one ``deepeyes demo`` (``make demo``) records, maps and views included (the script
waits for them). The site is built from it with mkdocs (theme mkdocs, the deepeyes plugin), and
its data is what the site serves of the run: the files the plugin copies (the views and the
thumbnails files their layers share), as they are on disk (gzipped layer views are served
gzipped). A layer page's data is one snapshot's layer view and its layer's thumbnails file.

    python bench/run_size.py            # 2,000 steps (a few minutes here, mostly the maps)
    python bench/run_size.py --quick    # 10 steps (one snapshot), 256-instance reservoir: for CI
    python bench/run_size.py --run DIR  # a run recorded before (e.g. its views rewritten)
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


def build_site(run_dir: Path, root: Path) -> Path:
    """Builds a site showing only ``run_dir``; returns its directory."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    (root / "docs").mkdir(parents=True)
    (root / "docs" / "index.md").write_text("# Run size\n")
    config = root / "mkdocs.yml"
    config.write_text(
        "site_name: size\ndocs_dir: docs\nsite_dir: site\ntheme:\n  name: mkdocs\n"
        f"plugins:\n  - deepeyes:\n      run_list: [{run_dir}]\n"
    )
    loaded = load_config(config_file=str(config))
    build(loaded)
    return Path(loaded.site_dir)


def page_data(run_dir: Path) -> tuple[int, str]:
    """Bytes of the largest layer page's data (one snapshot's view and its layer's thumbnails
    file) and what it is."""
    from deepeyes_keras.run.reader import load_run

    run = load_run(run_dir)
    layout, best = run.layout, (0, "-")
    for snap in run.snapshots:
        for layer in snap.layers.values():
            view = layout.view_file(layer.key, snap.step)
            if not view.is_file():
                continue
            shared = layout.thumbnails(layer.key)
            named = view == layout.view(layer.key, snap.step) and shared.is_file()
            size = view.stat().st_size + (shared.stat().st_size if named else 0)
            what = layout.relative(view) + (f" + {layout.relative(shared)}" if named else "")
            best = max(best, (size, what))
    return best


def folder_table(run_dir: Path) -> tuple[int, int, str]:
    """(bytes, files, Markdown table of the run's bytes by folder)."""
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    by_kind: dict[str, list[int]] = {}
    for p in files:
        parts = p.relative_to(run_dir).parts
        kind = parts[0] if len(parts) > 1 else "(top level: manifest, findings)"
        if parts[0] == "views" and len(parts) > 2:
            kind = "views/thumbnails" if parts[1] == "thumbnails" else "views/step-*"
        by_kind.setdefault(kind, []).append(p.stat().st_size)
    rows = [[kind, str(len(sizes)), f"{sum(sizes) / 1e6:.2f}"]
            for kind, sizes in sorted(by_kind.items())]  # fmt: skip
    rows.append(["**total**", str(len(files)), f"**{total / 1e6:.1f}**"])
    return total, len(files), _common.table(["folder", "files", "MB (10^6 bytes)"], rows)


def report(run_dir: Path, what: str, tmp: Path) -> None:
    from deepeyes_keras.run.reader import load_run

    total, n_files, table = folder_table(run_dir)
    run = load_run(run_dir)
    print(f"MNIST LeNet, {what}: {len(run.snapshots)} snapshots of {len(run.layer_names)} "
          f"layers, {n_files} files, {total / 1e6:.1f} MB in all.\n")  # fmt: skip
    print(table)
    site = build_site(run_dir, tmp / "site")
    site_files = [p for p in site.rglob("*") if p.is_file()]
    site_total = sum(p.stat().st_size for p in site_files)
    run_files = site / "deepeyes" / run_dir.name  # what the plugin copied of the run (its slug)
    site_data = sum(p.stat().st_size for p in run_files.rglob("*") if p.is_file()
                    and "views" in p.relative_to(run_files).parts)  # fmt: skip
    page, which = page_data(run_dir)
    budget_rows = [
        ["run directory", f"{total / 1e6:.1f} MB", f"{RUN_BUDGET_MB} MB", total],
        ["built site (every file)", f"{site_total / 1e6:.1f} MB", f"{SITE_BUDGET_MB} MB",
         site_total],
        ["site data (the run's views and thumbnails)", f"{site_data / 1e6:.1f} MB", "-", None],
        [f"largest page's data ({which})", f"{page / 1e6:.2f} MB", f"{PAGE_BUDGET_MB} MB", page],
    ]  # fmt: skip
    for row in budget_rows:
        value = row.pop()
        if value is None:
            row.append("-")
        else:
            row.append("met" if value <= float(row[2].split()[0]) * 1e6 else "NOT met")
    print("\nBudgets (issue 16), for the 2,000-step run; a --quick run is far below them:\n")
    print(_common.table(["measure", "value", "budget", "met?"], budget_rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default=_common.DEFAULT_MNIST)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--run", help="measure this run directory instead of recording one")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        if args.run:
            run_dir, what = Path(args.run).resolve(), f"the run {args.run}"
        elif args.quick:
            run_dir, what = _quick_run(args.mnist, tmp), "10 steps, reservoir_size=256"
        else:
            from deepeyes_keras.demo import train_demo

            run_dir = Path(train_demo(mnist=args.mnist, steps=args.steps, log_dir=tmp,
                                      run_name="size", verbose=0))  # fmt: skip
            what = f"{args.steps:,} steps (deepeyes demo), callback defaults"
        report(run_dir, what, Path(tmp))
    given = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"\nCommand: python bench/run_size.py {given}".rstrip())


if __name__ == "__main__":
    main()
