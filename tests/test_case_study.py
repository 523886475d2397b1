"""The MNIST LeNet case study: its redesign policy, and its quick mode end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "case_studies" / "mnist_lenet" / "run.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("mnist_lenet_case_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports no TensorFlow at module level
    return module


def _mnist() -> str | None:
    for candidate in (os.environ.get("DEEPEYES_MNIST"), ROOT.parent / "shared/data/mnist.npz"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


def _layer(n, *, dead=(), groups=(), suggested=None, stable=True, kind="conv", sep=None):
    out = {
        "n_filters": n,
        "kind": kind,
        "T1": {"stable": stable},
        "T2": {"dead": list(dead)},
        "T4": {"redundant_groups": [list(g) for g in groups], "suggested_width": suggested or n},
    }
    if kind == "dense":
        out["T5"] = {"accuracy": sep}
    return out


def _findings(layers, suggestions=()):
    widths = {
        name: f["T4"]["suggested_width"]
        for name, f in list(layers.items())[:-1]
        if f["T4"]["suggested_width"] < f["n_filters"]
    }
    return {"layers": layers, "suggestions": list(suggestions), "suggested_widths": widths}


def test_redesign_rounds_suggested_widths_up_and_keeps_unflagged_layers():
    cs = _load_script()
    findings = _findings({
        "conv1": _layer(20, dead=range(6), groups=[(7, 8, 9)], suggested=12),
        "conv2": _layer(50),
        "fc1": _layer(500, dead=range(380), suggested=93, kind="dense", sep=0.98),
        "fc2": _layer(10, kind="dense"),
    })  # fmt: skip
    redesign = cs.derive_redesign(findings)
    # 12 rounds up to 20 = the current width: conv1 is kept; 93 rounds up to 100.
    assert redesign["widths"] == {"fc1": 100}
    assert redesign["remove"] == []
    assert any("conv2" in note and "not oversized" in note for note in redesign["notes"])
    assert cs.round_width(9, 20) == 10 and cs.round_width(0, 20) == 10 and cs.round_width(3, 4) == 4


def test_redesign_waits_for_stability_and_respects_t5():
    cs = _load_script()
    layers = {
        "conv1": _layer(20, dead=range(12), suggested=8, stable=False),
        "fc1": _layer(500, dead=range(400), suggested=100, kind="dense", sep=0.5),
        "fc2": _layer(10, kind="dense"),
    }
    more = {"task": "T5", "layer": "fc1", "add_capacity": True, "text": "not separable"}
    redesign = cs.derive_redesign(_findings(layers, [more]))
    assert redesign["widths"] == {}  # conv1 not stable; fc1 needs capacity, not fewer units
    assert any("not stable" in note for note in redesign["notes"])
    assert any("more capacity" in note for note in redesign["notes"])
    layers["conv1"]["T1"]["stable"] = True
    drop = {"task": "T5", "layer": "fc1", "remove": ["fc1b"], "text": "separable early"}
    redesign = cs.derive_redesign(_findings(layers, [drop]))
    assert redesign["widths"] == {"conv1": 10, "fc1": 100}
    assert redesign["remove"] == ["fc1b"]


@pytest.mark.slow
def test_quick_mode_end_to_end(tmp_path):
    mnist = _mnist()
    if mnist is None:
        pytest.skip("no MNIST file (set DEEPEYES_MNIST); nothing may download at test time")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--mnist", mnist, "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "quick mode: outputs check out" in done.stdout
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["config"]["quick"] and report["config"]["seeds"] == [0]
    (seed,) = report["per_seed"]
    assert set(seed["networks"]) >= {"original", "redesign"}
    original = seed["networks"]["original"]
    assert original["parameters"] == 431_080 and original["steps"] == report["config"]["steps"]
    assert original["test_accuracy"] > 0.3  # 60 iterations already learn something
    if not seed["redesign_matches_paper"]:
        assert seed["networks"]["paper"]["parameters"] == 93_920
    for name in ("lenet-seed0", "lenet-redesign-seed0"):
        run = tmp_path / name
        assert (run / "manifest.json").is_file() and (run / "findings.json").is_file()
        assert (run / "views" / "histograms.vl.json").is_file()
    table = (tmp_path / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) >= 3  # header + original + redesign
    assert "LeNet (paper's original)" in rows[1] and "431,080" in rows[1]
    assert "redesign derived from the findings" in rows[2]
