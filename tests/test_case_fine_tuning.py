"""The fine-tuning case study: its style task, its table, and --quick end to end."""

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
HERE = ROOT / "case_studies" / "fine_tuning"
SCRIPT = HERE / "run.py"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports no TensorFlow at module level
    return module


def _mnist() -> str | None:
    for candidate in (os.environ.get("DEEPEYES_MNIST"), ROOT.parent / "shared/data/mnist.npz"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


def test_styles_do_what_their_names_say():
    st = _load("fine_tuning_styles", HERE / "styles.py")
    img = np.zeros((28, 28))
    img[6:22, 13:15] = 1.0  # a vertical bar, 2 px wide
    rng = np.random.default_rng(0)
    out = {name: st.apply_style(img, i, rng) for i, name in enumerate(st.STYLES)}
    ink = {name: float((o > 0.5).sum()) for name, o in out.items()}
    assert ink["bold"] > ink["plain"] > ink["thin"] > 0  # dilation adds, erosion removes ink
    np.testing.assert_allclose(out["faint"], 0.25 * img)
    top, bottom = out["italic"][7].argmax(), out["italic"][20].argmax()
    assert top > 14 > bottom  # the top leans right, the bottom left
    noise = out["noisy"] - img
    # Background: N(0, 0.25) clipped at 0, whose mean is 0.25 / sqrt(2 pi) = 0.0997.
    assert abs(noise[img == 0].mean() - 0.25 / np.sqrt(2 * np.pi)) < 0.015
    assert (out["noisy"] >= 0).all() and (out["noisy"] <= 1).all()
    x, y = st.styled(np.repeat(img[None] * 255, 600, 0).astype(np.uint8), seed=3)
    assert x.shape == (600, 28, 28, 1) and set(y.tolist()) == set(range(len(st.STYLES)))
    counts = np.bincount(y)
    assert counts.min() > 60  # about uniform: 100 each
    np.testing.assert_array_equal(st.styled(np.zeros((5, 28, 28), np.uint8), seed=3)[1], y[:5])
    with pytest.raises(ValueError, match="shape"):
        st.styled(np.zeros((28, 28)), seed=0)


def test_table_rows_and_numbers():
    cs = _load("fine_tuning_case_study", SCRIPT)

    def net(acc, seconds, frozen, params):
        return {"test_accuracy": acc, "train_seconds": seconds, "frozen": frozen,
                "trainable_parameters": params}  # fmt: skip

    per_seed = [
        {"networks": {"tool": net(0.9, 10, ["b/conv1"], 100), "all": net(0.8, 20, [], 200),
                      "head": net(0.5, 5, ["b/conv1", "b/fc1"], 10)}},
        {"networks": {"tool": net(0.8, 14, ["b/conv1"], 100), "all": net(0.8, 22, [], 200),
                      "head": net(0.3, 7, ["b/conv1", "b/fc1"], 10)}},
    ]  # fmt: skip
    rows, text = cs.table(per_seed)
    assert [r["variant"] for r in rows] == ["tool", "all", "head"]
    lines = text.splitlines()
    assert lines[2] == "| the tool's plan | b/conv1 | 100 | 85.00 ± 7.07 | 12.00 ± 2.83 | 2 |"
    assert lines[3] == "| retrain all layers | none | 200 | 80.00 ± 0.00 | 21.00 ± 1.41 | 2 |"
    assert lines[4].startswith("| freeze all but the head | b/conv1, b/fc1 | 10 | 40.00 ± 14.14")


@pytest.mark.slow
def test_quick_mode_end_to_end(tmp_path):
    mnist = _mnist()
    if mnist is None:
        pytest.skip("no MNIST file (set DEEPEYES_MNIST); nothing may download at test time")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0", OMP_WAIT_POLICY="PASSIVE")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--mnist", mnist, "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "quick mode: outputs check out" in done.stdout

    from deepeyes_keras.derive.transfer import fine_tuning_plan
    from deepeyes_keras.run.reader import load_run

    report = json.loads((tmp_path / "results.json").read_text())
    assert report["config"]["quick"] and report["config"]["seeds"] == [0]
    (seed,) = report["per_seed"]
    assert set(seed["networks"]) == {"tool", "all", "head"}
    # The plan is the tool's, read from the watched run's stored findings.
    head_run = load_run(tmp_path / "ft-head-seed0")
    assert [n for n in head_run.layer_names] == [
        "backbone/conv1", "backbone/conv2", "backbone/fc1", "styles"
    ]  # fmt: skip
    findings = head_run.snapshots[-1].findings
    assert seed["plan"] == fine_tuning_plan(findings)
    assert seed["networks"]["tool"]["frozen"] == seed["plan"]["freeze"]
    assert seed["networks"]["all"]["frozen"] == []
    assert seed["networks"]["head"]["trainable_parameters"] == 64 * 6 + 6
    assert seed["networks"]["all"]["trainable_parameters"] == 16 * 26 + 32 * 401 + 64 * 513 + 390
    for name, entry in seed["networks"].items():
        assert entry["run"] == f"ft-{name}-seed0"
        run = load_run(tmp_path / entry["run"])
        assert run.snapshots and (run.path / "views" / "histograms.vl.json").is_file()
        assert 0.0 <= entry["test_accuracy"] <= 1.0
    # Findings (with the fine-tuning advice) for the run that drives the plan.
    assert "transfer" in findings["layers"]["backbone/conv1"]
    assert findings["layers"]["styles"]["transfer"]["verdict"] == "retrain (output layer)"
    assert (tmp_path / "ft-head-seed0" / "maps").is_dir()  # seed 0: the page's input maps
    assert report["pretrain"]["test_accuracy"] > 0.5  # the backbone learnt the digits
    text = (tmp_path / "results.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| fine-tuning | frozen layers |")
    assert rows[1].startswith("| the tool's plan |") and rows[2].startswith("| retrain all")
    assert rows[3].startswith("| freeze all but the head |")
    assert "| backbone/conv1 |" in text and "Plan: freeze" in text
