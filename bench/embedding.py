"""Scaling of the embeddings behind the input map and the filter map: wall time and peak memory.

Input map (``derive.embedding.input_map`` at its defaults: 250 early-exaggeration + 500
iterations; openTSNE, Barnes-Hut below 10,000 points, FFT interpolation from 10,000) of clustered
synthetic descriptors (50 dimensions, 20 Gaussian clusters) at 1k, 5k, 10k, 20k and 100k points,
and at 10k with the maps worker's shorter schedule for a layer's first map (``maps.SCHEDULE``:
150 + 250; case ``worker:10000``); filter map (``filter_map``, 750 iterations) of synthetic
co-activation similarities for 50, 500 and 4,096 filters. Beside each time, the layout's share of
each point's 10 nearest neighbours kept (see ``--schedules``; computed off the clock, over 5,000
points at most). Each case runs in a fresh Python process so that its peak resident memory is its
own (VmHWM, reset after a warm-up call; ``ru_maxrss`` where that cannot be reset); the time is that
of the call alone (data generated, modules imported and one tiny warm-up call made beforehand). A
case that passes ``--timeout`` is reported as such.

    python bench/embedding.py              # every case (about 20 min here)
    python bench/embedding.py --quick      # 1k points and 50 filters, fewer iterations: for CI
    python bench/embedding.py --jobs 1     # the same with one thread (see the results page)
    python bench/embedding.py --only input:10000,worker:10000  # some cases only
    python bench/embedding.py --trace 10000   # where one input map's time goes, 50 iterations
                                              # at a time (see below)

``--schedules`` times the maps stage's embeddings with ``maps.SCHEDULE`` (what the maps worker
runs) and with ``maps.SCHEDULE_BEFORE`` (the schedule until issue 15, item 3), interleaved in one
process, and prints beside each time the quality of the layouts it made: the share of each point's
10 nearest neighbours in descriptor space that are among its 10 nearest on the map (averaged over
points; for a filter map, neighbours by the distance ``1 - phi``) and scikit-learn's
trustworthiness (k = 10). Without ``--run`` on a generated sequence of snapshots (clustered
descriptors; a reservoir that swaps 15% of its instances per snapshot; co-activations drifting);
with ``--run RUN`` on a recorded run: ``compute_missing_maps`` on fresh copies of it without maps,
three ways: the schedule before, one layer at a time (the code before); ``SCHEDULE``, one layer at
a time; and ``SCHEDULE`` as the maps stage runs it, layers side by side where cores are idle.

    python bench/embedding.py --schedules                      # generated snapshots
    python bench/embedding.py --schedules --run RUN --repeats 2  # a recorded run

``--trace N`` runs one N-point input map through ``input_map``'s own set-up and phases (exact
neighbours up to 10,000 points, FFT gradient from 10,000, 250 early-exaggeration + 500
iterations) and prints, every 50 iterations, the time those iterations took, the
embedding's extent (openTSNE's FFT grid has about one interval per unit of extent and dimension),
the KL divergence and the share of each point's 10 nearest neighbours kept in 2-D (computed off
the clock). It is what explains the 10,000-point time on the results page.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from _schedules import neighbours_kept  # noqa: E402

INPUT_SIZES = (1_000, 5_000, 10_000, 20_000, 100_000)
FILTER_SIZES = (50, 500, 4_096)
DIMENSIONS = 50
TARGET_10K_S = 15.0


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two tiny cases: for CI")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds allowed per case (default 900)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="threads of openTSNE (default: the package's own setting)",
    )
    parser.add_argument(
        "--iter-100k",
        type=int,
        default=500,
        help="iterations after early exaggeration for 100k points (default 500, "
        "the function's default)",
    )
    parser.add_argument("--only", help="comma-separated cases, e.g. input:10000,filter:500")
    parser.add_argument(
        "--trace",
        type=int,
        metavar="N",
        help="trace one N-point input map, 50 iterations at a time",
    )
    parser.add_argument(
        "--schedules",
        action="store_true",
        help="the maps stage's schedule against the one before: time and quality",
    )
    parser.add_argument("--run", help="with --schedules: a recorded run directory")
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="with --schedules: interleaved repetitions of each (default 2)",
    )
    parser.add_argument("--case", nargs=3, metavar=("KIND", "N", "ITER"), help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the raw results here")
    return parser.parse_args(argv)


def clustered(n: int, dim: int = DIMENSIONS, clusters: int = 20, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(clusters, dim))
    scales = rng.uniform(0.5, 2.0, clusters)
    label = rng.integers(0, clusters, n)
    x = centres[label] + rng.normal(size=(n, dim)) * scales[label, None]
    return x.astype("float32")


def similarities(n_filters: int, seed: int = 0, labels: int = 10):
    """A plausible weighted-Jaccard matrix: filters near each other in a latent space co-fire."""
    import numpy as np

    rng = np.random.default_rng(seed)
    groups = max(2, n_filters // 16)
    centre = rng.normal(size=(groups, 5))
    z = centre[rng.integers(0, groups, n_filters)] + 0.3 * rng.normal(size=(n_filters, 5))
    sq = (z * z).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    phi = np.exp(-d2 / 4.0)
    np.fill_diagonal(phi, 1.0)
    label_activation = rng.gamma(0.5, size=(n_filters, labels))
    return phi, label_activation


def trace(n: int, *, early: int = 250, main: int = 500, every: int = 50) -> list[list[str]]:
    """Per-`every`-iteration cost, extent and quality of one input map (see the module doc)."""
    import numpy as np

    from deepeyes_keras.derive import tsne

    x = clustered(n)

    def kept(y) -> float:  # share of the 10 nearest neighbours in 50-D that stay nearest in 2-D
        return neighbours_kept(x, y, queries=n)

    perplexity = min(30.0, (n - 1) / 3.0)  # input_map's default, clamped as it clamps it
    y0 = tsne.small_init(tsne.pca_coords(x, 0), 0)
    began = time.perf_counter()
    emb = tsne.tsne_embedding(x, "euclidean", perplexity, y0, 0)
    rows = [
        [
            "affinities (neighbours, perplexity)",
            "-",
            f"{time.perf_counter() - began:.2f}",
            "-",
            "-",
            "-",
            "-",
        ]
    ]
    clock = {"mark": 0.0, "done": 0}

    for phase, (iters, factor, momentum) in zip(
        ("early exaggeration", "normal"), tsne.input_phases(early, main), strict=True
    ):

        def tick(iteration, error, current, phase=phase):
            seconds = time.perf_counter() - clock["mark"]
            steps = iteration - clock["done"]
            extent = float(np.ptp(np.asarray(current), axis=0).max())
            rows.append(
                [
                    f"{phase}, iterations {clock['done'] + 1}-{iteration}",
                    str(steps),
                    f"{seconds:.2f}",
                    f"{1000 * seconds / steps:.1f}",
                    f"{extent:.3g}",
                    f"{error:.3f}",
                    f"{kept(np.asarray(current)):.3f}",
                ]
            )
            clock["done"] = iteration
            clock["mark"] = time.perf_counter()  # the quality check above stays off the clock

        clock.update(mark=time.perf_counter(), done=0)
        emb = emb.optimize(
            iters,
            exaggeration=factor,
            momentum=momentum,
            callbacks=tick,
            callbacks_every_iters=every,
            inplace=True,
        )
    return rows


def run_case(kind: str, n: int, n_iter: int, jobs: int | None) -> dict:
    """Runs one case in this process; returns its time and memory."""
    from deepeyes_keras.derive import embedding, maps, tsne

    if jobs is not None:
        tsne.THREADS = jobs  # benchmark knob: the package fixes the thread count
    # Warm-up on tiny data: imports and first-call costs stay out of the clock (the maps worker
    # pays them once per run, not once per map).
    embedding.input_map(clustered(200, seed=1), seed=0, n_iter=20, early_iter=10)
    embedding.filter_map(*similarities(40, seed=1), seed=0, n_iter=250)

    if kind in ("input", "worker"):
        # worker: a layer's first input map as the maps stage runs it (maps.SCHEDULE)
        fresh = maps.SCHEDULE
        options = dict(early_iter=fresh.fresh_early, theta=fresh.theta) if kind == "worker" else {}
        data = clustered(n)
        reset = _reset_peak_rss()
        before = _common.rss_mb()
        began = time.perf_counter()
        xy = embedding.input_map(data, seed=0, n_iter=n_iter, **options)
    else:
        phi, label_activation = similarities(n)
        reset = _reset_peak_rss()
        before = _common.rss_mb()
        began = time.perf_counter()
        xy = embedding.filter_map(phi, label_activation, seed=0, n_iter=n_iter).xy
    seconds = time.perf_counter() - began
    peak = _peak_rss_mb()
    # Off the clock and after the peak: how well the layout keeps each point's neighbours.
    kept = (
        neighbours_kept(1.0 - phi, xy, precomputed=True)
        if kind == "filter"
        else (neighbours_kept(data, xy))
    )
    return {
        "seconds": seconds,
        "peak_rss_mb": peak,
        "rss_before_mb": before,
        "threads": tsne.THREADS,
        "peak_reset": reset,
        "kept": kept,
    }


def _reset_peak_rss() -> bool:
    """Resets this process's peak RSS (Linux >= 4.0: clear_refs 5): the warm-up is not counted."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM), else ru_maxrss, in MB (10^6 bytes)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def spawn(kind, n, n_iter, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--case", kind, str(n), str(n_iter)]
    if args.jobs is not None:
        cmd += ["--jobs", str(args.jobs)]
    began = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"timeout": True, "seconds": time.perf_counter() - began}
    if done.returncode != 0:
        raise RuntimeError(f"case {kind} {n} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse(argv)
    if args.case:
        kind, n, n_iter = args.case
        print(json.dumps(run_case(kind, int(n), int(n_iter), args.jobs)))
        return
    if args.schedules:
        print(_common.machine_line(tensorflow=False))
        from _schedules import report

        print(report(args.run, repeats=args.repeats, quick=args.quick, jobs=args.jobs))
        print(
            f"\nCommand: python bench/embedding.py "
            f"{' '.join(sys.argv[1:] if argv is None else argv)}"
        )
        return
    if args.trace:
        print(_common.machine_line(tensorflow=False))
        from deepeyes_keras.derive import tsne

        if args.jobs is not None:
            tsne.THREADS = args.jobs
        rows = trace(args.trace, **({"early": 20, "main": 20, "every": 10} if args.quick else {}))
        print(
            f"\nInput map of {args.trace:,} clustered points x {DIMENSIONS} dims, openTSNE "
            f"with {tsne.THREADS} thread(s); extent: the larger side of the layout.\n"
        )
        print(
            _common.table(
                [
                    "phase",
                    "iterations",
                    "seconds",
                    "ms per iteration",
                    "extent",
                    "KL divergence",
                    "10-NN kept",
                ],
                rows,
            )
        )
        total = sum(float(r[2]) for r in rows)
        print(f"\nTotal {total:.1f} s (the quality checks excluded).")
        return
    from deepeyes_keras.derive import maps

    if args.quick:
        cases = [("input", 1_000, 100), ("filter", 50, 250)]
    else:
        cases = [("input", n, args.iter_100k if n >= 100_000 else 500) for n in INPUT_SIZES]
        cases.insert(3, ("worker", 10_000, maps.SCHEDULE.fresh_main))
        cases += [("filter", n, 750) for n in FILTER_SIZES]
    if args.only:
        wanted = {tuple(item.split(":")) for item in args.only.split(",")}
        cases = [c for c in cases if (c[0], str(c[1])) in wanted]
    print(_common.machine_line(tensorflow=False))
    rows, results = [], []
    for kind, n, n_iter in cases:
        _common.log(f"{kind} map, {n:,} points ...")
        res = dict(spawn(kind, n, n_iter, args), kind=kind, n=n, n_iter=n_iter)
        results.append(res)
        if kind in ("input", "worker"):
            what = f"input map, {n:,} points x {DIMENSIONS} dims"
            method = "FFT" if n >= 10_000 else "Barnes-Hut"
            early = maps.SCHEDULE.fresh_early if kind == "worker" else 250
            schedule = f"{early} + {n_iter} ({method})"
            if kind == "worker":
                schedule += ", the maps worker's schedule for a layer's first map"
        else:
            what = f"filter map, {n:,} filters"
            schedule = f"{n_iter} (Barnes-Hut, precomputed)"
        if res.get("timeout"):
            rows.append([what, schedule, f"> {args.timeout:.0f} (timeout)", "-", "-", "-"])
        else:
            rows.append(
                [
                    what,
                    schedule,
                    f"{res['seconds']:.1f}",
                    f"{res['kept']:.3f}",
                    f"{res['peak_rss_mb']:.0f}",
                    f"{res['peak_rss_mb'] - res['rss_before_mb']:.0f}",
                ]
            )
        _common.log(f"  {rows[-1]}")
    threads = next((r["threads"] for r in results if "threads" in r), "?")
    print(f"\nopenTSNE with {threads} thread(s); each case in a fresh process.\n")
    print(
        _common.table(
            [
                "case",
                "iterations",
                "wall time (s)",
                "10-NN kept",
                "peak RSS (MB)",
                "peak RSS above the process before the call (MB)",
            ],
            rows,
        )
    )
    for ten_k in (r for r in results if r["kind"] != "filter" and r["n"] == 10_000):
        secs = ten_k["seconds"]
        verdict = "missed" if ten_k.get("timeout") or secs > TARGET_10K_S else "met"
        early = maps.SCHEDULE.fresh_early if ten_k["kind"] == "worker" else 250
        print(
            f"\nTarget: 10,000-point input map in at most {TARGET_10K_S:.0f} s, {early} + "
            f"{ten_k['n_iter']} iterations: {verdict} ({secs:.1f} s)."
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    command = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"\nCommand: python bench/embedding.py {command}".rstrip())


if __name__ == "__main__":
    main()
