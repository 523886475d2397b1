"""The layer-removal case study: its patch generator (ground truth) and --quick end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "case_studies" / "layer_removal"
SCRIPT = FOLDER / "run.py"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


patches = _load("layer_removal_patches", FOLDER / "patches.py")


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve by counting pairs (ties count a half)."""
    pos, neg = score[y == 1], score[y == 0]
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def _centre_spot_score(x: np.ndarray) -> np.ndarray:
    """A hand-made detector: the strongest small-scale spot (image minus a 5x5 box mean) in
    the central 10 x 10 pixels, where the generator puts the target."""
    img = x[..., 0].astype(np.float64)
    padded = np.pad(img, ((0, 0), (2, 2), (2, 2)), mode="edge")
    box = sum(padded[:, i : i + 32, j : j + 32] for i in range(5) for j in range(5)) / 25
    spot = img - box
    return spot[:, 11:21, 11:21].max(axis=(1, 2))


def test_patches_are_seeded_balanced_and_in_range():
    x, y = patches.make_patches(200, seed=5)
    assert x.shape == (200, 32, 32, 1) and x.dtype == np.float32
    assert y.tolist() == [0, 1] * 100
    assert 0.0 <= x.min() and x.max() <= 1.0
    again, _ = patches.make_patches(200, seed=5)
    other, _ = patches.make_patches(200, seed=6)
    np.testing.assert_array_equal(x, again)
    assert np.abs(x - other).mean() > 0.01


def test_the_target_lies_where_the_generator_says_and_only_in_positives():
    x, y, centres = patches.make_patches(400, seed=1, return_centres=True)
    assert np.isnan(centres[y == 0]).all() and np.isfinite(centres[y == 1]).all()
    assert np.abs(centres[y == 1] - 15.5).max() <= 3.0  # jitter
    # The brightest small-scale spot of a positive sits on its target (within 2 px).
    img = x[y == 1, ..., 0].astype(np.float64)
    padded = np.pad(img, ((0, 0), (2, 2), (2, 2)), mode="edge")
    spot = img - sum(padded[:, i : i + 32, j : j + 32] for i in range(5) for j in range(5)) / 25
    found = np.stack(np.unravel_index(spot.reshape(len(img), -1).argmax(1), (32, 32)), 1)
    near = np.abs(found - centres[y == 1]).max(axis=1) <= 2
    assert near.mean() > 0.9
    # The mean difference between the classes is concentrated at the centre.
    diff = x[y == 1, ..., 0].mean(0) - x[y == 0, ..., 0].mean(0)
    assert diff[12:20, 12:20].mean() > 4 * np.abs(diff[:6]).mean()


def test_a_hand_made_detector_separates_the_classes_and_the_hard_variant_is_harder():
    x, y = patches.make_patches(600, seed=2)
    hard_x, hard_y = patches.make_patches(600, seed=2, **patches.HARD)
    easy, hard = _auc(_centre_spot_score(x), y), _auc(_centre_spot_score(hard_x), hard_y)
    assert easy > 0.95
    assert 0.6 < hard < easy


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n=0"),
        ({"n": 2.5}, "n=2.5"),
        ({"n": 4, "noise": -1.0}, "noise"),
        ({"n": 4, "target_peak": (0.9, 0.1)}, "target_peak"),
    ],
)
def test_bad_generator_settings_say_what_is_expected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        patches.make_patches(**kwargs)


def test_tables_from_recorded_results():
    cs = _load("layer_removal_case_study", SCRIPT)

    def net(params, accuracy, layers):
        return {"parameters": params, "test_accuracy": accuracy, "train_seconds": 4.0,
                "layers": layers}  # fmt: skip

    per_seed = [
        {"seed": 0, "networks": {"original": net(59_710, 0.99, "a"),
                                 "removed": net(9_234, 0.98, "b")}},
        {"seed": 1, "networks": {"original": net(59_710, 0.97, "a"),
                                 "removed": net(9_234, 0.97, "b")}},
    ]  # fmt: skip
    rows = cs.summarize(per_seed)
    assert [r["role"] for r in rows] == ["original", "removed"]
    np.testing.assert_allclose(rows[1]["delta_pp"], [-1.0, 0.0], atol=1e-9)
    table = cs.markdown_table(rows).splitlines()
    assert table[2].startswith(f"| {cs.ROLES['original']} | a | 59,710 | 98.00 ± 1.41 | — |")
    assert "| b | 9,234 | 97.50 ± 0.71 | -0.50 ± 0.71 | 4 ± 0 | 2 |" in table[3]


@pytest.mark.slow
def test_quick_mode_end_to_end(tmp_path):
    from deepeyes_keras.redesign.build import buildable
    from deepeyes_keras.redesign.proposal import propose
    from deepeyes_keras.run.reader import load_run

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "quick mode: outputs check out" in done.stdout
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["config"]["quick"] and report["config"]["seeds"] == [0]
    (seed,) = report["per_seed"]
    original = seed["networks"]["original"]
    assert original["parameters"] == 59_710  # 4 conv 8-16-16-32, dense 100, dense 2 on 32x32
    assert original["run"] == "amida-seed0"
    # The removal trained is the tool's own: the proposal of the run's last findings.
    run = load_run(tmp_path / "amida-seed0")
    cs = _load("layer_removal_case_study_q", SCRIPT)
    proposal = buildable(cs.build_model(0), propose(run))
    assert seed["removal"]["remove"] == proposal.remove
    t5 = run.snapshots[-1].findings["layers"]
    assert seed["t5"]["layers"]["fc1"]["input_accuracy"] == t5["fc1"]["T5"]["input_accuracy"]
    assert t5["fc1"]["T5"]["input_accuracy"] is not None  # hidden dense: its input is probed
    assert t5["fc2"]["T5"].get("input_accuracy") is None  # the output layer's is not
    assert proposal.remove in ([], ["fc1"])  # the only hidden dense layer
    conv = (9 * 1 + 1) * 8 + (9 * 8 + 1) * 16 + (9 * 16 + 1) * 16 + (9 * 16 + 1) * 32
    assert original["parameters"] == conv + (4 * 4 * 32 + 1) * 100 + (100 + 1) * 2
    if proposal.remove:
        removed = seed["networks"]["removed"]
        assert removed["run"] == "amida-removed-seed0"
        assert removed["parameters"] == conv + (4 * 4 * 32 + 1) * 2  # flatten -> fc2 directly
    text = (tmp_path / "results.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert "test accuracy, % (mean ± sd)" in rows[0]
    assert rows[1].startswith(f"| {cs.ROLES['original']} |") and "59,710" in rows[1]
    assert "| fc1 | 100 |" in text  # the T5 evidence table
