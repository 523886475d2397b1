"""The wheel works on its own: built from the source, installed in a clean venv, used from there.

The wheel is built with this venv's setuptools (``--no-build-isolation``, so nothing is
downloaded) from a copy of the files a build reads, then installed with ``--no-deps`` into a new
virtual environment. Its dependencies come from this venv through a ``.pth`` path line: that only
extends ``sys.path``, so the ``.pth`` files of this venv (the editable install's finder among them)
are not run and the wheel's copy of deepeyes_keras is the one imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "deepeyes_keras" / "site" / "assets"
RUNS = ("tiny-a", "tiny-b")
LAYER_KEYS = ("L0", "L1", "L2")

pytestmark = pytest.mark.slow
# This venv's pip, never asking an index: the build and the install must need no network.
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]

CHECK_IMPORTS = textwrap.dedent(
    """
    import inspect, json, sys
    from importlib.metadata import entry_points

    import deepeyes_keras
    from deepeyes_keras import DeepEyesCallback, load_run

    plugin = entry_points(group="mkdocs.plugins")["deepeyes"].load()
    run = load_run(sys.argv[1])
    print(json.dumps({
        "package": deepeyes_keras.__file__,
        "callback": inspect.getfile(DeepEyesCallback),
        "plugin": inspect.getfile(plugin),
        "steps": [s.step for s in run.snapshots],
        "editable_finder": any("__editable__" in name for name in sys.modules),
    }))
    """
)


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def _source_copy(target: Path) -> Path:
    """The files a build of the checkout reads, copied: the build's own build/ and *.egg-info
    then land in the copy, never in the checkout (where a stale build/lib would leak into it)."""
    target.mkdir()
    licenses = [p.name for p in REPO.glob("LICEN[CS]E*")]
    for name in ("pyproject.toml", "README.md", "MANIFEST.in", *licenses):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, target / name)
    shutil.copytree(
        REPO / "deepeyes_keras",
        target / "deepeyes_keras",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return target


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    source = _source_copy(root / "src")
    dist = root / "dist"
    build = ["wheel", "--no-index", "--no-deps", "--no-build-isolation", "-w", str(dist)]
    _run([*PIP, *build, str(source)])
    (built,) = dist.glob("deepeyes_keras-*.whl")
    return built


@pytest.fixture(scope="module")
def clean_venv(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("clean") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    # Install before the .pth exists: pip then sees an empty environment, not this venv's
    # editable deepeyes-keras (which it would otherwise take as installed, or uninstall).
    _run([*PIP, "--python", str(python), "install", "--no-index", "--no-deps", str(wheel)])
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    ).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (Path(purelib) / "deepeyes_dev_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    return venv


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return dict(env, TF_CPP_MIN_LOG_LEVEL="3", PYTHONNOUSERSITE="1")


def test_wheel_holds_every_site_asset_and_the_entry_points(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        declared = archive.read(entry_points).decode()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = archive.read(metadata).decode()
    assets = [p for p in ASSETS.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert assets, "no site assets found"
    missing = [p.relative_to(REPO).as_posix() for p in assets]
    missing = [name for name in missing if name not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert not [n for n in names if n.startswith(("tests/", "bench/", "case_studies/"))]
    assert "[console_scripts]\ndeepeyes = deepeyes_keras.cli:main" in declared
    assert "[mkdocs.plugins]\ndeepeyes = deepeyes_keras.site.plugin:DeepEyesPlugin" in declared
    assert "License-Expression: Apache-2.0" in meta


def test_clean_venv_imports_the_wheel_and_runs_the_command(clean_venv, recorded_runs, tmp_path):
    python = clean_venv / "bin" / "python"
    done = _run(
        [str(python), "-c", CHECK_IMPORTS, str(recorded_runs / "tiny-a")],
        cwd=tmp_path,
        env=_env(),
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    venv = clean_venv.resolve()
    for key in ("package", "callback", "plugin"):
        path = Path(found[key]).resolve()
        assert venv in path.parents, f"{key} imported from {path}, not from the clean venv"
        assert REPO not in path.parents
    assert not found["editable_finder"]
    assert found["steps"] == [6, 12]

    usage = _run([str(clean_venv / "bin" / "deepeyes"), "--help"], cwd=tmp_path, env=_env())
    assert usage.stdout.startswith("usage: deepeyes")


def test_clean_venv_builds_a_site_with_the_plugin(clean_venv, recorded_runs, tmp_path, write_site):
    write_site(tmp_path, recorded_runs)
    _run(
        [str(clean_venv / "bin" / "python"), "-m", "mkdocs", "build", "--strict"],
        cwd=tmp_path,
        env=_env(),
    )
    section = tmp_path / "site" / "deepeyes"
    pages = {"index.html", "compare/index.html"}
    for run in RUNS:
        pages |= {f"{run}/index.html", *(f"{run}/{key}/index.html" for key in LAYER_KEYS)}
    assert not [p for p in sorted(pages) if not (section / p).is_file()]
    for name in ("viewer.js", "viewer.css"):  # the plugin copies these from site/assets
        assert (section / "assets" / name).read_bytes() == (ASSETS / name).read_bytes()
    assert "window.vegaEmbed=" in (section / "assets" / "vega.js").read_text()
    assert (section / "tiny-a" / "views" / "overview.vl.json").is_file()
