"""Shared fixtures: tiny real DeepEyes runs (recorded once per session) and fixture mkdocs sites."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Two small CNNs trained for 12 steps with DeepEyes watching (snapshots at steps 6 and 12), then
# their maps and views (as `deepeyes maps RUN` makes them). Run in a subprocess: TensorFlow stays
# out of the test process, so the site tests show that building a site needs none of it.
RECORD_RUNS = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    from deepeyes_keras import DeepEyesCallback
    from deepeyes_keras.derive.maps import compute_missing_maps
    from deepeyes_keras.derive.views import write_views

    log_dir = sys.argv[1]
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 64)
    for run_name, filters, units in (("tiny-a", 4, 8), ("tiny-b", 6, 5)):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(filters, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(units, activation="relu", name="fc1"),
            keras.layers.Dense(3, name="out"),
        ], name=f"cnn_{filters}_{units}")
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        # maps=False, then the maps computed here: the background worker runs at low priority,
        # which a busy CI machine can starve for minutes.
        cb = DeepEyesCallback(log_dir=log_dir, run_name=run_name, snapshot_every=6,
                              reservoir_size=256, maps=False, verbose=0)
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[cb])
        compute_missing_maps(cb.run_dir, max_points=256)
        write_views(cb.run_dir)
    """
)

RUN_NAMES = ("tiny-a", "tiny-b")
STEPS = (6, 12)


@pytest.fixture(scope="session")
def recorded_runs(tmp_path_factory) -> Path:
    """A directory holding two finished runs, tiny-a and tiny-b, with maps and views."""
    root = tmp_path_factory.mktemp("deepeyes_runs")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")
    done = subprocess.run(
        [sys.executable, "-c", RECORD_RUNS, str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"recording the fixture runs failed:\n{done.stderr[-4000:]}")
    for name in RUN_NAMES:
        for step in STEPS:
            for key in ("L0", "L1", "L2"):
                view = root / name / "views" / f"step-{step:08d}" / f"{key}.vl.json.gz"
                assert view.is_file(), f"fixture run lacks {view}"
    return root


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for a module's browser tests (tests/_browser.py: why per module)."""
    from _browser import launched_browser

    with launched_browser() as instance:
        yield instance


@pytest.fixture
def runs_copy(recorded_runs, tmp_path) -> Path:
    """A private copy of the recorded runs, for tests that damage or rename them."""
    target = tmp_path / "runs"
    shutil.copytree(recorded_runs, target)
    return target


def _write_site(
    root: Path, runs: Path, *, pages: dict[str, str] | None = None, options: str = ""
) -> Path:
    """Writes <root>/mkdocs.yml and <root>/docs for a site showing `runs`; returns mkdocs.yml."""
    docs = root / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for name, text in {"index.md": "# Fixture site\n", **(pages or {})}.items():
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text(text)
    plugin = f"  - deepeyes:\n      runs: {runs}\n" + textwrap.indent(options, " " * 6)
    config = root / "mkdocs.yml"
    config.write_text(
        "site_name: fixture\ndocs_dir: docs\nsite_dir: site\n"
        "theme:\n  name: mkdocs\n  highlightjs: false\n"
        f"plugins:\n  - search\n{plugin}"
    )
    return config


def _build_site(config_file: Path, *, strict: bool = False) -> Path:
    """Builds the site of `config_file` in this process (mkdocs' API); returns the site dir."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    config = load_config(config_file=str(config_file), strict=strict)
    build(config)
    return Path(config.site_dir)


class WarningRecorder(logging.Handler):
    """Collects the warnings mkdocs logs (what makes ``mkdocs build --strict`` fail)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def mkdocs_warnings():
    recorder = WarningRecorder()
    logger = logging.getLogger("mkdocs")
    logger.addHandler(recorder)
    yield recorder.messages
    logger.removeHandler(recorder)


@pytest.fixture
def write_site():
    """write_site(root, runs, pages={name: markdown}, options=yaml) -> mkdocs.yml path."""
    return _write_site


@pytest.fixture
def build_site():
    """build_site(mkdocs_yml, strict=False) -> site dir (built in this process)."""
    return _build_site
