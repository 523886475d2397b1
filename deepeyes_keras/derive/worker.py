"""The background process that keeps a run's maps, views and findings up to date.

:class:`MapWorker` starts ``python -m deepeyes_keras.derive.worker`` at idle priority (no
TensorFlow, no interpreter lock shared with training) and tells it when a snapshot lands; the
process runs :func:`deepeyes_keras.derive.pipeline.update_run`. When the maps are computed during
training it runs the whole pipeline after each snapshot; otherwise (``maps_during_training``) it
writes only the views meanwhile and computes every map once fit returns.
``DeepEyesCallback.wait_for_maps()`` and the interpreter's exit wait for it, so every snapshot
gets its maps. The worker never imports the user's script (``multiprocessing``'s spawn would).
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import threading
import time


def _worker_main(run_dir: str, max_points: int, seed: int) -> None:
    """The worker process: ``python -m deepeyes_keras.derive.worker RUN POINTS SEED``.

    Reads one line per snapshot notice ("snapshot") or "stop" on stdin, and writes one JSON line
    per event on stdout. It never imports TensorFlow, nor the user's script (which
    ``multiprocessing``'s spawn would re-import, re-running an unguarded training script).
    """
    import warnings

    warnings.filterwarnings("ignore", message="Loky-backed parallel loops")
    from deepeyes_keras.derive.pipeline import update_run, update_views
    from deepeyes_keras.derive.views import ThumbnailCache

    def send(*event):
        print(json.dumps(event), flush=True)

    cache = ThumbnailCache()
    for line in sys.stdin:
        message = line.strip()
        try:
            if message == "views":  # maps deferred until training ends: the cheap views only
                update_views(run_dir, cache=cache)
                continue
            update_run(
                run_dir,
                max_points=max_points,
                seed=seed,
                progress=lambda d, t, m: send("progress", d, t, m),
                cache=cache,
            )
        except Exception as err:  # noqa: BLE001 - reported to the parent, which shows it
            send("error", repr(err))
        if message == "stop":
            break
    send("stopped")


# How the worker starts: lower its priority FIRST, then import anything. Linux sets scheduling per
# thread and new threads inherit it, so the policy must be set before numpy's BLAS pool or
# openTSNE's threads exist (a `nice` after `import numpy` leaves those threads at full priority).
# SCHED_IDLE runs the worker only on otherwise idle cores, and a training thread that wakes up
# takes its core back at once; where it is not available, nice 19 is the fallback. The worker
# ignores SIGINT: a Ctrl-C while the parent waits for the maps is the parent's to handle.
_LAUNCH = """
import os, runpy, signal
# Ctrl-C in the terminal reaches the whole process group: the parent decides (MapWorker.wait).
signal.signal(signal.SIGINT, signal.SIG_IGN)
try:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
except (AttributeError, OSError):
    try:
        os.nice(19)
    except (AttributeError, OSError):
        pass
runpy.run_module("deepeyes_keras.derive.worker", run_name="__main__", alter_sys=True)
"""


class MapWorker:
    """A background process that keeps a run's maps and views up to date.

    Args:
        run_dir: the run directory.
        max_points: bound on the points of each input map.
        seed: seed of the embeddings.
    """

    def __init__(self, run_dir, *, max_points: int = 2000, seed: int = 0, threads: int = 2):
        env = dict(os.environ)
        for name in ("DEEPEYES_MAP_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "MKL_NUM_THREADS"):  # fmt: skip
            env[name] = str(int(threads))
        self._process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, str(run_dir), str(max_points), str(seed)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
        )
        self.run_dir = str(run_dir)
        self._events: queue.Queue = queue.Queue()
        # Read the worker's output continuously so its pipe never fills up and blocks it.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.errors: list[str] = []
        self.accepting = True
        self._stopped = False
        # A script that ends right after fit() still gets every map: wait for them at exit.
        atexit.register(self.wait)

    def _read(self):
        for line in self._process.stdout:
            try:
                self._events.put(json.loads(line))
            except ValueError:
                continue
        self._events.put(["stopped"])

    def _send(self, message: str) -> None:
        try:
            self._process.stdin.write(message + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            self.accepting = False

    def notify(self, *, views_only: bool = False) -> None:
        """Tells the worker a snapshot landed (cheap; never blocks training).

        With ``views_only`` it writes only the run-wide views (curves, histograms) for now; the
        maps of every snapshot so far follow at the next plain notice or at :meth:`finish`.
        """
        if self.accepting:
            self._send("views" if views_only else "snapshot")

    def finish(self) -> None:
        """Lets the worker catch up with the last snapshots, then stop; does not wait."""
        if self.accepting:
            self._send("stop")
            self.accepting = False
            try:
                self._process.stdin.close()
            except OSError:
                pass

    def wait(self, *, verbose: bool = True, timeout: float | None = None) -> None:
        """Waits, showing progress and an estimate, until the worker has written every map.

        Ctrl-C stops the worker cleanly (what it wrote is kept) and says how to finish later.
        """
        self.finish()
        began = time.perf_counter()
        progress = MapProgress(verbose=verbose)
        try:
            while not self._stopped:
                left = None if timeout is None else timeout - (time.perf_counter() - began)
                if left is not None and left <= 0:
                    break
                try:  # short waits: a Ctrl-C is seen at once
                    event = self._events.get(timeout=0.5 if left is None else min(0.5, left))
                except queue.Empty:
                    continue
                if event[0] == "stopped":
                    self._stopped = True
                elif event[0] == "error":
                    self.errors.append(event[1])
                    print(f"DeepEyes: computing maps failed: {event[1]}", flush=True)
                elif event[0] == "progress":
                    progress.update(*event[1:])
        except KeyboardInterrupt:
            self._process.terminate()
            self._stopped = True
            progress.end()
            print(
                f"DeepEyes: stopped computing maps ({progress.done} of {progress.total or '?'} "
                f"written, kept). Run `deepeyes maps {self.run_dir}` to compute the rest.",
                flush=True,
            )
        progress.end()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.terminate()
        atexit.unregister(self.wait)


class MapProgress:
    """The maps' progress while a script waits: a bar with an estimate of the time left.

    On a terminal one line is redrawn in place; in a log (not a terminal) a line is printed every
    8 maps and at the last. The estimate is the mean time per map so far times the maps left.
    """

    def __init__(self, *, verbose: bool = True, stream=None):
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self.done, self.total = 0, 0
        self.started: float | None = None
        self.inline = False

    def update(self, done: int, total: int, text: str) -> None:
        now = time.perf_counter()
        if self.started is None:
            self.started = now
        self.done, self.total = int(done), int(total)
        if not self.verbose:
            return
        line = self.line(text, now)
        if self.stream.isatty():
            self.stream.write("\r" + line.ljust(100)[:100])
            self.stream.flush()
            self.inline = True
        elif self.done == self.total or self.done % 8 == 0:
            print(line, file=self.stream, flush=True)

    def line(self, text: str, now: float) -> str:
        width = 20
        filled = round(width * self.done / self.total) if self.total else 0
        bar = "#" * filled + "." * (width - filled)
        left = ""
        if 0 < self.done < self.total and self.started is not None and now > self.started:
            seconds = (now - self.started) / self.done * (self.total - self.done)
            left = (
                f", about {seconds / 60:.0f} min left"
                if seconds >= 90
                else (f", about {seconds:.0f} s left")
            )
        return f"DeepEyes: maps [{bar}] {self.done}/{self.total}{left} ({text})"

    def end(self) -> None:
        if self.inline:
            self.stream.write("\n")
            self.stream.flush()
            self.inline = False


if __name__ == "__main__":
    _worker_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
