"""The derived stages of a run, in order: maps, then views, then findings.

:func:`update_run` is the one pipeline: the background worker
(:mod:`deepeyes_keras.derive.worker`) runs it after each snapshot (or once fit returns), and
``deepeyes maps RUN`` runs it on a finished or interrupted run. Each step is idempotent and writes
only its own files, so running it again only fills in what is missing.

Example:
    >>> from deepeyes_keras.derive.pipeline import update_run
    >>> update_run("deepeyes_runs/lenet-demo")                  # doctest: +SKIP
    Updated(maps=63, views=65, findings=21)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from deepeyes_keras.derive.findings import write_findings
from deepeyes_keras.derive.maps import compute_missing_maps
from deepeyes_keras.derive.views import ThumbnailCache, write_views

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Updated:
    """What one pass of the pipeline wrote: maps, view files and snapshots' findings."""

    maps: int
    views: int
    findings: int


def update_run(
    run_dir,
    *,
    max_points: int = 2000,
    seed: int = 0,
    progress: Progress | None = None,
    cache: ThumbnailCache | None = None,
) -> Updated:
    """Computes the maps, views and findings a run still lacks.

    Args:
        run_dir: the run directory.
        max_points: bound on the points of each input map.
        seed: seed of the embeddings.
        progress: optional ``callable(done, total, message)``, called after each map.
        cache: thumbnail cache to reuse across calls (the worker keeps one).
    """
    maps = compute_missing_maps(run_dir, max_points=max_points, seed=seed, progress=progress)
    views = write_views(run_dir, cache=cache)
    findings = write_findings(run_dir)
    return Updated(maps=maps, views=len(views), findings=findings)


def update_views(run_dir, *, cache: ThumbnailCache | None = None) -> int:
    """Only the views (the run-wide curves and histograms, and layer views whose maps exist).

    What the worker does after a snapshot while the maps wait for training to end.
    """
    return len(write_views(run_dir, cache=cache))
