"""The project's own documentation site builds cleanly on a fresh clone (no runs recorded yet)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def build_docs(tmp_path, *, published: bool) -> str:
    """Builds the project's docs with no runs (and the committed published views, or none) with
    --strict; returns the MNIST case-study page."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    config["docs_dir"] = str(REPO / config["docs_dir"])
    config["site_dir"] = str(tmp_path / "site")
    empty = tmp_path / "runs"
    empty.mkdir()
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "deepeyes" in plugin:
            plugin["deepeyes"]["runs"] = [str(empty)]
            listed = (plugin["deepeyes"].get("published") or []) if published else []
            plugin["deepeyes"]["published"] = [str(REPO / p) for p in listed]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(tmp_path / "mkdocs.yml")],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    return (tmp_path / "site" / "case-studies" / "mnist-lenet" / "index.html").read_text()


def test_docs_build_strict_without_any_runs(tmp_path):
    case_study = build_docs(tmp_path, published=True)
    # Every chart of the case study is there, from the published views committed to the
    # repository (the runs are not: 30-80 MB each).
    assert case_study.count('class="deepeyes-figure"') == 10
    assert "case_studies/mnist_lenet/run.py (about 10 minutes" not in case_study
    assert "deepeyes-error" not in case_study
    published = tmp_path / "site" / "deepeyes" / "published"
    assert (published / "lenet-seed0" / "step-00002000" / "L2.vl.json").is_file()


def test_docs_without_published_views_say_how_to_make_the_runs(tmp_path):
    case_study = build_docs(tmp_path, published=False)
    assert case_study.count("case_studies/mnist_lenet/run.py (about 10 minutes") == 10


REPO_PATH = (
    r"\b(?:deepeyes_keras|viewer_site|tests|case_studies|bench)/[A-Za-z0-9_./-]+\.(?:py|md)\b"
)


def test_paths_the_code_and_docs_point_at_exist():
    # Docstrings and pages may cite only files of the repository (never an outside design note).
    import re

    sources = [*REPO.glob("deepeyes_keras/**/*.py"), *REPO.glob("viewer_site/**/*.md")]
    sources += [REPO / "README.md", *REPO.glob("case_studies/*/*.py"), *REPO.glob("bench/*.py")]
    missing = {}
    for source in sources:
        text = source.read_text(encoding="utf-8")
        for cited in set(re.findall(REPO_PATH, text)):
            if not (REPO / cited).exists():
                missing.setdefault(str(source.relative_to(REPO)), []).append(cited)
        if "DESIGN.md" in text:
            missing.setdefault(str(source.relative_to(REPO)), []).append("DESIGN.md")
    assert not missing, missing
