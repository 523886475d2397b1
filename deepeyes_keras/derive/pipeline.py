"""The derived stages of a run, in order: maps, then findings, then views.

:func:`update_run` is the one pipeline: the background worker
(:mod:`deepeyes_keras.derive.worker`) runs it after each snapshot (or once fit returns), and
``deepeyes maps RUN`` runs it on a finished or interrupted run. Each step is idempotent and writes
only its own files, so running it again only fills in what is missing. Findings come before the
views because a layer view draws the T4 evidence (the explained-variance curve) of its snapshot.
Right after the findings, a run recorded with ``DeepEyesCallback(tensorboard=...)`` gets the
TensorBoard events of its new findings (:mod:`deepeyes_keras.derive.tensorboard`).

Example:
    >>> from deepeyes_keras.derive.pipeline import update_run
    >>> update_run("deepeyes_runs/lenet-demo")                  # doctest: +SKIP
    Updated(maps=63, findings=21, views=65)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from deepeyes_keras.derive.findings import write_findings
from deepeyes_keras.derive.maps import compute_missing_maps
from deepeyes_keras.derive.tensorboard import update_tensorboard
from deepeyes_keras.derive.tsne import limited_threads, threads_now
from deepeyes_keras.derive.views import ThumbnailCache, write_views

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Updated:
    """What one pass of the pipeline wrote: maps, snapshots' findings and view files."""

    maps: int
    findings: int
    views: int


def update_run(
    run_dir,
    *,
    max_points: int = 2000,
    seed: int = 0,
    progress: Progress | None = None,
    cache: ThumbnailCache | None = None,
) -> Updated:
    """Computes the maps, findings and views a run still lacks.

    Args:
        run_dir: the run directory.
        max_points: bound on the points of each input map.
        seed: seed of the embeddings.
        progress: optional ``callable(done, total, message)``, called after each map.
        cache: thumbnail cache to reuse across calls (the worker keeps one).
    """
    # Each stage on as many threads as the cores other processes leave idle (derive/tsne.py):
    # BLAS threads spinning on contended cores burn CPU without progress (issue 15).
    with limited_threads(threads_now()):
        maps = compute_missing_maps(run_dir, max_points=max_points, seed=seed, progress=progress)
    with limited_threads(threads_now()):
        findings = write_findings(run_dir)
    update_tensorboard(run_dir)  # the run's DeepEyesCallback(tensorboard=...); never raises
    with limited_threads(threads_now()):
        views = write_views(run_dir, cache=cache)
    return Updated(maps=maps, findings=findings, views=len(views))


def update_views(run_dir, *, cache: ThumbnailCache | None = None) -> int:
    """Only the views (the run-wide curves and histograms, and layer views whose maps exist).

    What the worker does after a snapshot while the maps wait for training to end.
    """
    return len(write_views(run_dir, cache=cache))
