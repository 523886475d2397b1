"""Where the recorder's overhead goes: a fit with DeepEyes timed part by part, against plain fit.

The benchmark models of ``overhead.py`` (same data, 2 epochs at batch 64). A plain fit and a fit
with ``DeepEyesCallback(maps=False)`` (the recorder alone: no background maps process) run
alternately (``--repeats`` times, median shown). During the DeepEyes fit, thin timers wrap:

- ``DeepEyesCallback.on_train_batch_end``: the per-step hook (Python, every step);
- ``Recorder.measure``: the compiled measurement on sampled steps; its first call traces it;
- ``DeepEyesCallback._snapshot``: reading the statistics and writing a snapshot;

and the rest of the hook (reading the step counter, the metrics Keras hands it) is the hook's
time minus those two. What remains of the difference between the two fits is the capture inside
the train step plus whatever the hook changes in Keras's loop (it converts each step's logs
to Python numbers), plus noise. These wrap internals: when one is renamed the row says "n/a".

    python bench/profile_fit.py --model lenet    # 2 epochs, 3 pairs (about 5 min here)
    python bench/profile_fit.py --quick          # a few seconds: for CI
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

_common.quiet_tensorflow()


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_fit_arguments(parser, repeats=3)
    parser.add_argument("--quick", action="store_true", help="30 steps, 1 pair: for CI")
    return parser.parse_args(argv)


class Timers:
    def __init__(self):
        self.calls: dict[str, list[float]] = {}

    def wrap(self, owner, name: str, key: str) -> bool:
        original = getattr(owner, name, None)
        if original is None:
            return False

        @functools.wraps(original)
        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.calls.setdefault(key, []).append(time.perf_counter() - began)

        setattr(owner, name, timed)
        return True


def profile_model(model_name, args):
    import keras

    from deepeyes_keras import DeepEyesCallback

    x, y, data_desc = _common.load_data(model_name, mnist=args.mnist)
    batch = 64
    warm = _common.build_model(model_name, seed=99)
    warm.fit(x[:batch * 3], y[:batch * 3], batch_size=batch, epochs=1, verbose=0)
    plain_s, deepeyes_s, parts = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for config in (("plain", "deepeyes") if rep % 2 == 0 else ("deepeyes", "plain")):
                keras.utils.set_random_seed(rep)
                net = _common.build_model(model_name, seed=rep)
                callbacks, timers = [], Timers()
                if config == "deepeyes":
                    cb = DeepEyesCallback(log_dir=tmp, maps=False, verbose=0)
                    ok = {
                        "hook": timers.wrap(cb, "on_train_batch_end", "hook"),
                        "snapshot": timers.wrap(cb, "_snapshot", "snapshot"),
                    }
                    callbacks = [cb]
                if config == "deepeyes":
                    cb.set_model(net)  # builds the recorder before fit so that it can be wrapped
                    recorder = getattr(cb, "_recorder", None)
                    ok["measure"] = recorder is not None and timers.wrap(recorder, "measure",
                                                                         "measure")
                began = time.perf_counter()
                net.fit(x, y, batch_size=batch, epochs=args.epochs, steps_per_epoch=args.steps,
                        verbose=0, callbacks=callbacks)
                elapsed = time.perf_counter() - began
                if config == "plain":
                    plain_s.append(elapsed)
                else:
                    deepeyes_s.append(elapsed)
                    parts.append((timers.calls, ok))
                _common.log(f"{model_name} pair {rep + 1}/{args.repeats} {config:9s} "
                            f"{elapsed:6.2f} s")
                del net
    steps = args.epochs * (args.steps or -(-len(x) // batch))
    med = statistics.median
    plain = med(plain_s)

    def part(key):
        if not all(ok.get(key) for _, ok in parts):
            return None
        return [calls.get(key, []) for calls, _ in parts]

    rows = [["plain fit", "-", f"{plain:.2f}", "-", "1.000"],
            ["fit with DeepEyesCallback(maps=False)", "-", f"{med(deepeyes_s):.2f}", "-",
             f"{med(d / p for d, p in zip(deepeyes_s, plain_s, strict=True)):.3f}"]]

    def add(label, per_rep):
        if per_rep is None:
            rows.append([label, "n/a", "n/a", "n/a", "n/a"])
            return
        totals = [sum(v) for v in per_rep]
        counts = [len(v) for v in per_rep]
        flat = [t for v in per_rep for t in v]
        per_call = f"{1000 * med(flat):.1f}" if flat else "-"
        rows.append([label, str(int(med(counts))), f"{med(totals):.2f}", per_call,
                     f"{med(totals) / plain:+.3f}"])

    hook, measure, snapshot = part("hook"), part("measure"), part("snapshot")
    add("per-step hook on_train_batch_end, in all", hook)
    add("- measurement: first call (traces the tf.function)",
        None if measure is None else [v[:1] for v in measure])
    add("- measurement: other calls", None if measure is None else [v[1:] for v in measure])
    add("- snapshots (read + write)", snapshot)
    if None not in (hook, measure, snapshot):
        rest = [[sum(h) - sum(m) - sum(s)] for h, m, s in zip(hook, measure, snapshot,
                                                               strict=True)]
        rows.append(["- rest of the hook (step counter, metrics), total", str(steps),
                     f"{med(r[0] for r in rest):.2f}",
                     f"{1000 * med(r[0] for r in rest) / steps:.2f}",
                     f"{med(r[0] for r in rest) / plain:+.3f}"])
        outside = [d - p - sum(h) for d, p, h in zip(deepeyes_s, plain_s, hook, strict=True)]
        rows.append(["outside the hook: capture in the train step, Keras's log conversion, "
                     "noise", "-", f"{med(outside):+.2f}", "-", f"{med(outside) / plain:+.3f}"])
    title = (f"**{model_name}**: {data_desc}; batch {batch}, {args.epochs} epoch(s) = {steps:,} "
             f"steps; median of {args.repeats} alternating pair(s).")
    return title, _common.table(["part", "calls", "seconds", "ms per call",
                                 "share of plain fit"], rows)


def main(argv=None):
    args = parse(argv)
    if args.quick:
        args.epochs, args.repeats, args.steps = 1, 1, 30
    models = list(_common.MODELS) if args.model == "all" else [args.model]
    print(_common.machine_line())
    for model_name in models:
        title, text = profile_model(model_name, args)
        print(f"\n{title}\n\n{text}", flush=True)
    print(f"\nCommand: python bench/profile_fit.py "
          f"{' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())


if __name__ == "__main__":
    main()
