"""What the case-study scripts share: repository-relative paths, mean +- sd, writing results.

Each script (``case_studies/<study>/run.py``) puts this folder on ``sys.path`` and imports from
here, so the studies stay runnable as plain scripts (``python case_studies/<study>/run.py``).
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rel(path) -> str:
    """``path`` relative to the repository when it lies inside it (results.json stays portable)."""
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_sd needs at least one value; no seed produced a result.")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_sd_text(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """``"m ± s"`` of ``values * scale`` (just ``"m"`` for a single value)."""
    mean, sd = mean_sd([v * scale for v in values])
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def write_results(
    report: dict,
    results_dir: Path,
    name: str,
    markdown: Callable[[dict], str],
    *,
    sort_keys: bool = False,
) -> Path:
    """Writes ``<name>.json`` and ``<name>.md`` into ``results_dir``; returns the markdown path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=1, sort_keys=sort_keys)
    (results_dir / f"{name}.json").write_text(text + "\n")
    page = results_dir / f"{name}.md"
    page.write_text(markdown(report) + "\n")
    return page


def print_summary(report: dict, where: str) -> None:
    """The results table and the total time, as each study ends."""
    print("\n" + report["table"])
    print(f"\nTotal {report['total_seconds'] / 60:.1f} min. Results: {where}")


def fresh_run_dir(out: Path, run_name: str) -> Path:
    """``out / run_name``, emptied for a new recording; a folder that is no run is never removed."""
    run_dir = out / run_name
    if run_dir.exists():
        if not (run_dir / "manifest.json").is_file() and any(run_dir.iterdir()):
            raise FileExistsError(
                f"{run_dir} exists and is not a DeepEyes run; not replacing it. Move it away or "
                "pass another --out."
            )
        shutil.rmtree(run_dir)
    return run_dir
