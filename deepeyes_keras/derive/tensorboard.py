"""DeepEyes numbers as TensorBoard events, next to a team's loss curves.

For every snapshot whose findings are written (:mod:`deepeyes_keras.derive.findings`), one event
at the snapshot's step holds, per analysed layer, the scalars ``deepeyes/<layer>/<name>`` of
:data:`SCALARS` and the interval perplexity histogram ``deepeyes/<layer>/perplexity`` (the 30
equal-width bins over [1, F] and their counts). Layer names keep their slashes
(``deepeyes/backbone/conv1/dead``).

The events go to ``<log dir>/deepeyes-<run name>``, outside the run directory, so TensorBoard
shows the run as a run of its own. They are written without TensorFlow: the records are framed by
TensorBoard's pure-Python :class:`~tensorboard.summary.writer.record_writer.RecordWriter` (its
``EventFileWriter`` would import TensorFlow to make a directory). Each batch of new steps is one
new event file, complete before it appears (written under another name, then renamed); the
directory's ``deepeyes_written.json`` lists each file and its steps, so no step is written twice
(a step counts as written while its file exists: delete the files to write them again).

Example:
    >>> from deepeyes_keras.derive.tensorboard import write_events
    >>> write_events("deepeyes_runs/lenet-demo", log_dir="tb_logs")  # doctest: +SKIP
    Written(directory=PosixPath('tb_logs/deepeyes-lenet-demo'), steps=(10, 20, 40), waiting=0)
"""

from __future__ import annotations

import io
import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary
from tensorboard.summary.writer.record_writer import RecordWriter

from deepeyes_keras.run.layout import N_BINS, read_json, write_json
from deepeyes_keras.run.reader import load_run

SETTING = "tensorboard"
"""Key of the TensorBoard log directory in the manifest's ``settings`` (None: no events)."""

WRITTEN = "deepeyes_written.json"
"""The file, inside the TensorBoard directory, listing each event file and the steps it holds."""

PREFIX = "deepeyes"
SCALARS = (
    "dead",
    "always_on",
    "stability",
    "stable",
    "undetected_share",
    "suggested_width",
    "separability",
)
"""Scalar names of every layer, in the order they are written (see :func:`layer_scalars`)."""


@dataclass(frozen=True)
class Written:
    """What one call wrote: its TensorBoard directory (None when the run has none), the new steps,
    and how many snapshots still wait for their findings."""

    directory: Path | None
    steps: tuple[int, ...]
    waiting: int


def tensorboard_dir(log_dir, run_name: str) -> Path:
    """The TensorBoard run of a DeepEyes run: ``<log_dir>/deepeyes-<run name>``."""
    return Path(log_dir) / f"{PREFIX}-{run_name}"


def tag(layer: str, name: str) -> str:
    """``deepeyes/<layer>/<name>``; the layer's own slashes are kept."""
    return f"{PREFIX}/{layer}/{name}"


def layer_scalars(finding: dict) -> dict[str, float]:
    """The scalars of one layer's findings at one snapshot (a value the findings lack is left out).

    - ``dead``, ``always_on``: how many filters T2 finds dead and always on;
    - ``stability``: T1's excess change of the interval histogram since the previous snapshot
      (0 = no change beyond chance; none at the first snapshot);
    - ``stable``: 1 when T1 calls the layer stable at this snapshot, else 0;
    - ``undetected_share``: T3's share of instances no filter responds to;
    - ``suggested_width``: T4's suggested width;
    - ``separability``: T5's linear-probe accuracy of the labels (none when too few instances).
    """
    t1, t2, t4, t5 = (finding.get(k, {}) for k in ("T1", "T2", "T4", "T5"))
    excess = t1.get("excess_change") or [None]
    values = {
        "dead": len(t2.get("dead", [])),
        "always_on": len(t2.get("always_on", [])),
        "stability": excess[-1],
        "stable": int(bool(t1.get("stable"))),
        "undetected_share": finding.get("T3", {}).get("undetected_share"),
        "suggested_width": t4.get("suggested_width"),
        "separability": t5.get("accuracy"),
    }
    return {k: float(v) for k, v in values.items() if v is not None}


def bin_edges(n_filters: int) -> np.ndarray:
    """The 31 edges of the 30 perplexity bins over [1, F] (F = 1: over [0, 1], all in the last)."""
    low = 1.0 if n_filters > 1 else 0.0
    return np.linspace(low, float(max(n_filters, 1)), N_BINS + 1)


def histogram_proto(counts, n_filters: int) -> HistogramProto:
    """One interval perplexity histogram as TensorBoard's: bin i spans ``[edges[i], edges[i+1]]``
    (``bucket_limit`` holds the upper edges, ``min`` and ``max`` the ends)."""
    counts = np.asarray(counts, np.float64)
    edges = bin_edges(n_filters)
    centres = (edges[:-1] + edges[1:]) / 2
    return HistogramProto(
        min=float(edges[0]),
        max=float(edges[-1]),
        num=float(counts.sum()),
        sum=float((counts * centres).sum()),
        sum_squares=float((counts * centres**2).sum()),
        bucket_limit=[float(e) for e in edges[1:]],
        bucket=[float(c) for c in counts],
    )


def snapshot_event(snapshot, findings: dict) -> Event:
    """One event at the snapshot's step: every layer's scalars and perplexity histogram."""
    values = []
    for name, layer in snapshot.layers.items():
        finding = findings.get("layers", {}).get(name)
        if finding is None:
            continue
        for key, value in layer_scalars(finding).items():
            values.append(Summary.Value(tag=tag(name, key), simple_value=value))
        histogram = histogram_proto(layer.perplexity_histogram, int(layer.info["n_filters"]))
        values.append(Summary.Value(tag=tag(name, "perplexity"), histo=histogram))
    summary = Summary(value=values)
    return Event(wall_time=wall_time(snapshot.time), step=snapshot.step, summary=summary)


def wall_time(stamp) -> float:
    """The snapshot's time (ISO 8601) as seconds since the epoch; now if it has none."""
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return time.time()


def encode(events: list[Event]) -> bytes:
    """An event file's bytes: the file-version event, then ``events``, as TFRecords."""
    buffer = io.BytesIO()
    writer = RecordWriter(buffer)
    header = Event(wall_time=time.time(), file_version="brain.Event:2")
    for event in [header, *events]:
        writer.write(event.SerializeToString())
    return buffer.getvalue()


def written_steps(directory: Path, ledger: dict) -> set[int]:
    """Steps of the ledger's event files that still exist."""
    return {
        int(step)
        for name, steps in ledger.get("files", {}).items()
        if (directory / name).is_file()
        for step in steps
    }


def read_ledger(directory: Path) -> dict:
    path = directory / WRITTEN
    if not path.is_file():
        return {"files": {}}
    ledger = read_json(path)
    if not isinstance(ledger, dict) or not isinstance(ledger.get("files"), dict):
        raise ValueError(f"{path} is not a DeepEyes list of written steps; delete it to rewrite")
    return ledger


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Holds the directory's lock (the worker and ``deepeyes tensorboard`` may run together)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one writer at a time is the user's to ensure
        yield
        return
    with open(directory / ".deepeyes.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def recorded_log_dir(run) -> str | None:
    """The TensorBoard log directory the run was recorded with (``tensorboard=``), or None."""
    return (run.manifest.get("settings") or {}).get(SETTING)


def write_events(run_dir, log_dir=None) -> Written:
    """Appends the events of every snapshot that has findings and is not yet written.

    Args:
        run_dir: the run directory.
        log_dir: the TensorBoard log directory; default the one the run was recorded with
            (``DeepEyesCallback(tensorboard=...)``). Without either, nothing is written.

    Raises:
        OSError: when the directory or a file cannot be written.
    """
    return write_run_events(load_run(run_dir), log_dir)


def write_run_events(run, log_dir=None) -> Written:
    """:func:`write_events` for a run already loaded (:func:`deepeyes_keras.load_run`)."""
    log_dir = recorded_log_dir(run) if log_dir is None else log_dir
    if log_dir is None:
        return Written(None, (), 0)
    directory = tensorboard_dir(log_dir, run.name)
    directory.mkdir(parents=True, exist_ok=True)
    with locked(directory):
        ledger = read_ledger(directory)
        done = written_steps(directory, ledger)
        events, waiting = [], 0
        for snap in run.snapshots:
            if snap.step in done:
                continue
            findings = snap.findings
            if findings is None:
                waiting += 1
                continue
            events.append(snapshot_event(snap, findings))
        if not events:
            return Written(directory, (), waiting)
        steps = tuple(e.step for e in events)
        # Names sort in writing order (TensorBoard reads a directory's files in name order).
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{len(ledger['files']):06d}."
            f"{socket.gethostname()}.{PREFIX}"
        )
        tmp = directory / f".{PREFIX}-batch.tmp-{os.getpid()}"
        try:
            tmp.write_bytes(encode(events))
            # Listed first: a crash before the rename leaves a listed file that does not exist,
            # whose steps are then written again (never twice).
            ledger["files"][name] = list(steps)
            write_json(directory / WRITTEN, ledger)
            os.replace(tmp, directory / name)
        finally:
            tmp.unlink(missing_ok=True)
    return Written(directory, steps, waiting)


def update_tensorboard(run_dir) -> int:
    """:func:`write_events` for the pipeline: a failure is a warning, never an error.

    Returns how many steps were written (0 when the run records no TensorBoard directory).
    """
    where = f"the TensorBoard directory of {run_dir}"
    try:
        run = load_run(run_dir)
        log_dir = recorded_log_dir(run)
        if log_dir is None:
            return 0
        where = str(tensorboard_dir(log_dir, run.name))
        return len(write_run_events(run, log_dir).steps)
    except Exception as err:  # noqa: BLE001 - TensorBoard events must never stop the maps
        warnings.warn(
            f"DeepEyes could not write TensorBoard events to {where}: {err!r}. The maps, "
            f"findings and views go on; `deepeyes tensorboard {run_dir}` writes them later.",
            RuntimeWarning,
            stacklevel=2,
        )
        return 0
