"""The MNIST LeNet case study: its wrapper of the tool's proposal, its tables, and --quick."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepeyes_keras.redesign.proposal import proposal_from_findings, proposal_history, propose
from deepeyes_keras.run.reader import load_run

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "case_studies" / "mnist_lenet" / "run.py"
SENSITIVITY = SCRIPT.with_name("sensitivity.py")


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


MANIFEST = {
    "analysed_layers": [
        {"name": n, "n_filters": w}
        for n, w in (("conv1", 20), ("conv2", 50), ("fc1", 500), ("fc2", 10))
    ]
}


def _layer(n, *, suggested=None, stable=True, kind="conv", linear=None, gain=None):
    suggested = n if suggested is None else suggested
    return {
        "n_filters": n,
        "kind": kind,
        "T1": {"stable": stable, "stable_since_step": 40 if stable else None},
        "T2": {"dead": []},
        "T4": {
            "signal_rank": max(1, suggested // 2),
            "rank_method": "gavish-donoho",
            "noise_share": 0.04,
            "suggested_width": suggested,
            "oversized": suggested < n,
            "redundant_groups": [],
            "text": f"T4 says {suggested}",
        },
        "T5": {
            "accuracy": linear,
            "linear": linear,
            "knn": None if linear is None else linear - 0.01,
            "chance": 0.11,
            "instances": 300,
            "gain": gain,
            "removable": False,
            "after_saturation": False,
        },
    }


def _findings(layers, suggestions=()):
    widths = {
        name: f["T4"]["suggested_width"]
        for name, f in list(layers.items())[:-1]
        if f["T4"]["oversized"]
    }
    return {
        "step": 60,
        "layers": layers,
        "suggestions": list(suggestions),
        "suggested_widths": widths,
        "thresholds": {"probe_neighbors": 5},
    }


def test_redesign_is_the_tools_proposal_with_a_note_per_layer():
    cs = _load_script()
    findings = _findings({
        "conv1": _layer(20, suggested=13, linear=0.7),
        "conv2": _layer(50, suggested=20, stable=False, linear=0.8, gain=0.1),
        "fc1": _layer(500, suggested=87, kind="dense", linear=0.95, gain=0.15),
        "fc2": _layer(10, kind="dense", linear=0.97, gain=0.02),
    })  # fmt: skip
    redesign = cs.redesign_from_findings(findings, MANIFEST, run_name="r")
    proposal = proposal_from_findings("r", findings, MANIFEST)
    assert set(redesign) == {"widths", "remove", "notes"}
    assert redesign["widths"] == proposal.widths == {"conv1": 13, "fc1": 87}  # exact widths
    assert redesign["remove"] == []
    notes = dict(note.split(": ", 1) for note in redesign["notes"])
    assert list(notes) == ["conv1", "conv2", "fc1", "fc2"]
    assert notes["conv1"].startswith(
        "20 -> 13 (T4 says 13). Evidence: 20 filters; T4 signal rank 6"
    )
    assert "T5 linear probe 0.700, 5-NN 0.690, chance 0.110 on 300 instances" in notes["conv1"]
    assert notes["conv2"].startswith("kept (T4 says 20; not applied: the layer is not stable")
    assert "gain +0.150 over the layer before" in notes["fc1"]
    assert notes["fc2"].startswith("kept (the output layer is never changed)")


def test_redesign_records_t5_removals_and_capacity_requests():
    cs = _load_script()
    layers = {
        "conv1": _layer(20),
        "conv2": _layer(50),
        "fc1": _layer(500, suggested=100, kind="dense", linear=0.5),
        "fc2": _layer(10, kind="dense", linear=0.9),
    }
    more = {"task": "T5", "layer": "fc1", "add_capacity": True, "text": "needs capacity"}
    redesign = cs.redesign_from_findings(_findings(layers, [more]), MANIFEST)
    assert redesign["widths"] == {} and redesign["remove"] == []
    (fc1,) = [n for n in redesign["notes"] if n.startswith("fc1:")]
    assert fc1.startswith("fc1: kept (T4 says 100; not applied: T5 asks for more capacity there")
    assert "needs capacity" in fc1
    drop = {"task": "T5", "layer": "fc1", "remove": ["fc1"], "text": "fc1 adds nothing"}
    layers["fc1"]["T4"]["oversized"] = False
    redesign = cs.redesign_from_findings(_findings(layers, [drop]), MANIFEST)
    assert redesign["remove"] == ["fc1"] and redesign["widths"] == {}
    assert any(n.startswith("fc1: removed (fc1 adds nothing)") for n in redesign["notes"])


def test_legend_reads_every_threshold_it_describes():
    from dataclasses import asdict

    from deepeyes_keras.derive.findings import Thresholds
    from deepeyes_keras.derive.probes import NecessityThresholds
    from deepeyes_keras.derive.width import WidthThresholds

    cs = _load_script()
    t = Thresholds(
        probe_folds=4,
        probe_neighbors=7,
        probe_max_instances=321,
        width=WidthThresholds(width_factor=1.5, min_cut=0.2, noise_share=0.4),
        necessity=NecessityThresholds(min_gain=0.02, capacity_gap=0.06, capacity_accuracy=None),
    )
    legend = cs.findings_legend(asdict(t))
    expected = ["ceil(1.5 x r)", "at least 20% of it", "at most 40% of the variance", "4-fold",
                "7-NN", "at most 321 recent", "less than 0.02", "than 0.06 below"]  # fmt: skip
    assert [fragment for fragment in expected if fragment not in legend] == []
    assert "absolute" not in legend  # capacity_accuracy None: no absolute level
    default = cs.findings_legend(asdict(Thresholds()))
    assert "ceil(2 x r)" in default and "below 0.9 in absolute terms" in default


def test_table_has_parameter_ratio_and_difference_per_seed():
    cs = _load_script()

    def net(params, accuracy):
        return {"parameters": params, "test_accuracy": accuracy, "train_seconds": 10.0,
                "widths": {"conv1": 20, "fc2": 10}}  # fmt: skip

    per_seed = [
        {"networks": {"original": net(431_080, 0.98), "redesign": net(431_080, 0.98),
                      "paper": net(93_920, 0.97)}},
        {"networks": {"original": net(431_080, 0.99), "redesign": net(431_080, 0.99),
                      "paper": net(93_920, 0.99)}},
    ]  # fmt: skip
    rows = cs.summarize(per_seed)
    assert [r["role"] for r in rows] == ["original", "redesign", "paper"]
    assert rows[2]["delta_pp"] == [-1.0, 0.0]
    table = cs.markdown_table(rows).splitlines()
    assert table[2].startswith("| LeNet (paper's original) | conv1 20 | 431,080 | 1 | 98.50")
    assert "| 93,920 | 4.59× | 98.00 ± 1.41 | -0.50 ± 0.71 |" in table[4]
    assert "| 431,080 | 1.00× | 98.50 ± 0.71 | +0.00 ± 0.00 |" in table[3]


def test_progressive_table():
    cs = _load_script()
    rows = [
        {"layer": "conv1", "stable_since_step": 300, "width_then": 8, "width_final": 6,
         "removed_then": False, "removed_final": False, "same": False, "difference": -2},
        {"layer": "fc1", "stable_since_step": 400, "width_then": 500, "width_final": 500,
         "removed_then": True, "removed_final": False, "same": False, "difference": 0},
    ]  # fmt: skip
    lines = cs.progressive_table(rows).splitlines()
    assert lines[0] == "| layer | stable since step | width then | width at the end | same? |"
    assert lines[2:] == ["| conv1 | 300 | 8 | 6 | no |", "| fc1 | 400 | removed | 500 | no |"]
    assert "nothing to compare" in cs.progressive_table([])


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
    assert set(seed["networks"]) == {"original", "redesign", "paper"}  # the paper's: always
    original = seed["networks"]["original"]
    assert original["parameters"] == 431_080 and original["steps"] == report["config"]["steps"]
    assert original["test_accuracy"] > 0.3  # 60 iterations already learn something
    assert seed["networks"]["paper"]["parameters"] == 93_920
    assert original["run_dir"] == str((tmp_path / "lenet-seed0").resolve())  # outside the repo
    # The redesign trained is the tool's proposal of the original run's last findings.
    run = load_run(tmp_path / "lenet-seed0")
    proposal = propose(run)
    assert seed["redesign"]["widths"] == proposal.widths
    assert seed["redesign"]["remove"] == proposal.remove
    assert len(seed["redesign"]["notes"]) == len(run.layer_names)
    assert seed["progressive"] == proposal_history(run)
    assert seed["findings_thresholds"]["width"]["width_factor"] == 2.0
    for name, net in seed["networks"].items():
        assert net["run"] == {"original": "lenet-seed0", "redesign": "lenet-redesign-seed0",
                              "paper": "lenet-paper-seed0"}[name]  # fmt: skip
        run_dir = tmp_path / net["run"]
        assert (run_dir / "manifest.json").is_file() and (run_dir / "findings.json").is_file()
        assert (run_dir / "views" / "histograms.vl.json").is_file()
    text = (tmp_path / "results.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert "parameters, original / this" in rows[0]
    assert "LeNet (paper's original)" in rows[1] and "431,080" in rows[1]
    assert "redesign derived from the findings" in rows[2]
    assert rows[3].startswith("| paper's redesign") and "93,920 | 4.59×" in rows[3]
    assert "Progressive: the proposal read at the step each layer became stable" in text
    assert "suggested width is ceil(2 x r)" in text

    # The sensitivity sweep reads the same runs.
    spec = importlib.util.spec_from_file_location("mnist_lenet_sensitivity", SENSITIVITY)
    sensitivity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sensitivity)
    swept = sensitivity.main(["--runs", str(tmp_path), "--out", str(tmp_path)])
    grid = [line for line in swept.splitlines() if line.startswith("| ") and "min_cut" not in line]
    assert len([line for line in grid if line.split("|")[2].strip() in ("0.2", "0.25")]) == 6
    from deepeyes_keras.derive.width import WidthThresholds

    assert f"| 2 (default) | {WidthThresholds().min_cut:g} |" in swept
    assert (tmp_path / "sensitivity.md").read_text() == swept
