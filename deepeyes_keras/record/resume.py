"""Interrupted and resumed training: which run a training continues, and how the two are linked.

A run killed mid-epoch keeps every completed snapshot (each is written atomically). When the
training starts again (a plain re-run of the script, or with ``keras.callbacks.BackupAndRestore``
restoring its last backup), DeepEyes starts a **new run linked to the interrupted one** instead
of appending to it: the statistics and reservoirs of the killed process are gone, and a restored
model re-does the steps after its backup, so appending would mix two histories. The new run is
named ``<previous>-resumed`` (then ``-resumed-2``...); its manifest's ``resumed_from`` names the
previous run, the step it resumes at (the restored optimizer's iteration count, which the new
run's step numbers continue from) and the previous run's snapshots after that step, which the new
run supersedes. The previous run is never modified; its missing maps are computed in the
background. ``viewer_site/reference/faults.md`` tells the whole story.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from deepeyes_keras.record.arguments import MAX_NAME_BYTES
from deepeyes_keras.run.layout import MANIFEST, is_run_dir, read_json


def dated_name(model_name: str) -> str:
    """The default run name, ``<date>-<time>-<model name>``, cut to a file name's length."""
    name = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{model_name}".encode()[:MAX_NAME_BYTES]
    return name.decode(errors="ignore")


def restored_step(model) -> int:
    """The optimizer's iteration count (a restored model's training step), 0 without one."""
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    try:
        return int(iterations.numpy()) if iterations is not None else 0
    except (AttributeError, TypeError, ValueError):
        return 0


def _manifest(path: Path) -> dict:
    try:
        return read_json(Path(path) / MANIFEST)
    except (OSError, ValueError):
        return {}


def interrupted_run(log_dir, *, run_name: str | None, model_name: str, at_step: int):
    """The run a starting training continues, or None.

    * With a ``run_name`` whose directory holds a run: that run, if it did not finish (it was
      killed) or the model was restored past step 0; a finished run with a fresh model is not
      continued (the caller refuses to overwrite it).
    * With a dated name: only a restored model (``at_step > 0``) continues a run: the newest
      run of the same model name in ``log_dir`` that did not finish.
    """
    log_dir = Path(log_dir)
    if run_name:
        path = log_dir / run_name
        if not is_run_dir(path):
            return None
        finished = _manifest(path).get("status") == "finished"
        return path if (not finished or at_step > 0) else None
    if at_step <= 0 or not log_dir.is_dir():
        return None
    candidates = []
    for path in log_dir.iterdir():
        if not (path.is_dir() and is_run_dir(path)):
            continue
        manifest = _manifest(path)
        if (
            manifest.get("status") != "finished"
            and (manifest.get("model") or {}).get("name") == model_name
        ):
            candidates.append((str(manifest.get("created") or ""), path.name, path))
    return max(candidates)[2] if candidates else None


def resumed_name(previous: Path) -> Path:
    """Where the linked run goes: ``<previous>-resumed`` (the writer adds ``-2``... if taken)."""
    name = previous.name
    base = name if name.endswith("-resumed") else f"{name}-resumed"
    return previous.parent / base


def link(previous: Path, *, at_step: int) -> dict:
    """The new run's ``resumed_from`` manifest entry."""
    manifest = _manifest(previous)
    steps = [int(s["step"]) for s in manifest.get("snapshots") or [] if "step" in s]
    return {
        "run": str(manifest.get("run_name") or previous.name),
        "path": str(previous),
        "at_step": int(at_step),
        "previous_status": manifest.get("status"),
        "previous_last_step": max(steps, default=None),
        "superseded_steps": [s for s in steps if s > at_step],
    }


def plan_run(log_dir, run_name: str | None, run_dir: Path, model) -> tuple[Path, dict | None, bool]:
    """Where a starting training writes: ``(run directory, resumed_from entry or None, unique)``.

    ``unique``: the writer claims the directory exclusively (``-2``, ``-3``... if taken).

    Raises:
        FileExistsError: ``run_name`` names a finished run and the model is fresh.
    """
    at_step = restored_step(model)
    previous = interrupted_run(log_dir, run_name=run_name, model_name=model.name, at_step=at_step)
    if previous is None:
        if run_name and is_run_dir(run_dir):
            raise FileExistsError(
                f"DeepEyesCallback: run directory {str(run_dir)!r} already holds a finished run. "
                "Pass another run_name (or none, for a dated name), or delete that directory. "
                "(Calling fit again with the same callback continues its run; an interrupted run "
                "is continued by a linked '-resumed' run.)"
            )
        return run_dir, None, not run_name
    return resumed_name(previous), link(previous, at_step=at_step), True
