"""How long the training loop stands still at each DeepEyes snapshot, against the work done off it.

One ``fit`` with ``DeepEyesCallback()`` at its defaults (maps on). After every snapshot the
callback sets ``last_blocking_seconds``: the time the training loop waited while the snapshot was
read from the TensorFlow variables (``read_seconds`` in the snapshot record) and written to disk.
Everything else (input and filter maps, chart views, findings) runs in the low-priority background
process; each map file records its ``seconds`` (wall time inside that process, which shares the
cores with training). Finally the maps are recomputed in the foreground, alone, with the same
code (``compute_missing_maps``), to separate the work itself from the waiting for a core.

    python bench/blocking.py                  # LeNet, 1,000 steps (about 10 min here)
    python bench/blocking.py --model all      # LeNet, VGG-style and dense
    python bench/blocking.py --quick          # a few seconds: CI runs this
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

_common.quiet_tensorflow()

TARGET_BLOCKING_S = 0.2


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=[*_common.MODELS, "all"], default="lenet")
    parser.add_argument("--mnist", default=_common.DEFAULT_MNIST)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--no-recompute", action="store_true",
                        help="skip recomputing the maps in the foreground")
    parser.add_argument("--quick", action="store_true",
                        help="20 steps (2 snapshots), reservoir of 256 instances: for CI")
    parser.add_argument("--json", help="also write the raw results here")
    return parser.parse_args(argv)


def _blocking_probe(deepeyes):
    """A callback placed after DeepEyes: collects last_blocking_seconds after each snapshot."""
    import keras

    class Probe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def _take(self):
            value = getattr(deepeyes, "last_blocking_seconds", None)
            if value is not None:
                self.seconds.append(float(value))
                deepeyes.last_blocking_seconds = None

        def on_train_batch_end(self, batch, logs=None):
            self._take()

        def on_train_end(self, logs=None):
            self._take()

    return Probe()


def _maps_seconds(run_dir: Path) -> dict[str, dict[int, tuple[float, int]]]:
    """{layer key: {step: (seconds, points)}} from the maps files."""
    import numpy as np

    out: dict[str, dict[int, tuple[float, int]]] = {}
    for path in sorted((run_dir / "maps").glob("L*/step-*.npz")):
        with np.load(path) as data:
            out.setdefault(path.parent.name, {})[int(path.stem.split("-")[1])] = (
                float(data["seconds"]), int(len(data["uid"])))
    return out


def bench_model(model_name, args, tmp):
    from deepeyes_keras import DeepEyesCallback, load_run
    from deepeyes_keras.derive.maps import compute_missing_maps

    x, y, data_desc = _common.load_data(model_name, mnist=args.mnist)
    net = _common.build_model(model_name, seed=0)
    extra = {"reservoir_size": 256} if args.quick else {}
    deepeyes = DeepEyesCallback(log_dir=tmp, run_name=model_name, verbose=0, **extra)
    probe = _blocking_probe(deepeyes)
    batch = 64
    epochs = -(-args.steps * batch // len(x))
    steps_per_epoch = -(-args.steps // epochs)
    began = time.perf_counter()
    net.fit(x, y, batch_size=batch, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0,
            callbacks=[deepeyes, probe])
    fit_s = time.perf_counter() - began
    waited = time.perf_counter()
    deepeyes.wait_for_maps(verbose=False)
    after_s = time.perf_counter() - waited
    run_dir = Path(deepeyes.run_dir)
    run = load_run(run_dir)
    blocked = probe.seconds
    reads = [float(s.record.get("read_seconds", float("nan"))) for s in run.snapshots]
    if len(blocked) != len(run.snapshots):
        raise RuntimeError(f"{len(blocked)} blocking times for {len(run.snapshots)} snapshots")
    writes = [b - r for b, r in zip(blocked, reads, strict=True)]
    maps = _maps_seconds(run_dir)
    layer_names = {info["key"]: info["name"] for info in run.manifest["analysed_layers"]}
    per_snapshot = [sum(maps[k][s.step][0] for k in maps if s.step in maps[k])
                    for s in run.snapshots]
    alone = {}
    if not args.no_recompute:
        shutil.rmtree(run_dir / "maps")
        compute_missing_maps(run_dir)
        alone = _maps_seconds(run_dir)
    alone_per_snapshot = [sum(alone[k][s.step][0] for k in alone if s.step in alone[k])
                          for s in run.snapshots] if alone else []

    steps = run.snapshots[-1].step
    title = (f"**{model_name}**: {_common.describe_model(model_name, net)}; {data_desc}; batch "
             f"{batch}, {steps:,} steps, {len(run.snapshots)} snapshots of "
             f"{len(layer_names)} layers; fit took {fit_s:.1f} s, of which the loop was blocked "
             f"{sum(blocked):.2f} s at snapshots; the maps needed {after_s:.1f} s more after fit "
             "returned.")
    med = statistics.median
    summary = _common.table(
        ["per snapshot", "median (s)", "max (s)", "total (s)"],
        [
            ["training loop blocked (last_blocking_seconds)", f"{med(blocked):.3f}",
             f"{max(blocked):.3f}", f"{sum(blocked):.2f}"],
            ["- reading the statistics (read_seconds)", f"{med(reads):.3f}", f"{max(reads):.3f}",
             f"{sum(reads):.2f}"],
            ["- writing the snapshot, notifying the worker", f"{med(writes):.3f}",
             f"{max(writes):.3f}", f"{sum(writes):.2f}"],
            ["off the training thread: maps of all layers, in the background",
             f"{med(per_snapshot):.2f}", f"{max(per_snapshot):.2f}", f"{sum(per_snapshot):.1f}"],
            *([["the same maps recomputed in the foreground, alone",
                f"{med(alone_per_snapshot):.2f}", f"{max(alone_per_snapshot):.2f}",
                f"{sum(alone_per_snapshot):.1f}"]] if alone else []),
        ],
    )
    rows = []
    for key in sorted(maps, key=lambda k: int(k[1:])):
        secs = [v[0] for v in maps[key].values()]
        points = [v[1] for v in maps[key].values()]
        row = [layer_names.get(key, key), f"{min(points):,}-{max(points):,}",
               f"{med(secs):.2f}", f"{max(secs):.2f}"]
        if alone:
            alone_secs = [v[0] for v in alone[key].values()]
            row += [f"{med(alone_secs):.2f}", f"{max(alone_secs):.2f}"]
        rows.append(row)
    headers = ["layer", "input-map points", "maps in background, median (s)", "max (s)"]
    if alone:
        headers += ["recomputed alone, median (s)", "max (s)"]
    per_layer = _common.table(headers, rows)
    raw = {"blocked": blocked, "read": reads, "maps_background": maps, "maps_alone": alone,
           "fit_seconds": fit_s, "maps_after_fit": after_s,
           "steps": [s.step for s in run.snapshots]}
    return title, summary, per_layer, raw


def main(argv=None):
    args = parse(argv)
    if args.quick:
        args.steps = 20
    models = list(_common.MODELS) if args.model == "all" else [args.model]
    print(_common.machine_line())
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in models:
            title, summary, per_layer, raw = bench_model(model_name, args, tmp)
            results[model_name] = raw
            worst = max(raw["blocked"])
            verdict = "met" if worst <= TARGET_BLOCKING_S else "missed"
            print(f"\n{title}\n\n{summary}\n\n{per_layer}\n\nTarget: training blocked at most "
                  f"{TARGET_BLOCKING_S} s per snapshot: {verdict} (worst {worst:.3f} s).",
                  flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1, default=str)
    print(f"\nCommand: python bench/blocking.py {' '.join(sys.argv[1:] if argv is None else argv)}"
          .rstrip())


if __name__ == "__main__":
    main()
