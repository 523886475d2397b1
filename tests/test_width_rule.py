"""The width-rule evidence script in its quick mode, end to end (the full run takes ~10 min)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "case_studies" / "width_rule" / "run.py"


@pytest.mark.slow
def test_quick_evidence_retrains_every_candidate(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--networks",
            "mlp-tabular",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())["mlp-tabular"]
    assert set(results["deltas"]) == {"k(0.99)", "r", "1.5 r", "rule: 2 r", "tool's proposal"}
    widths = results["widths"]
    for layer, w in widths.items():
        assert 1 <= w["rank"] <= w["n_filters"] and w["method"] in ("gavish-donoho", "variance")
        assert results["deltas"]["r"]["widths"][layer] == w["rank"]
    for d in results["deltas"].values():
        assert len(d["acc"]) == 2 and all(0 <= a <= 1 for a in d["acc"])
        assert 0 < d["parameters"] <= results["parameters"]
    proposal = results["proposal"]
    assert results["deltas"]["tool's proposal"]["remove"] == proposal["remove"]
    text = (tmp_path / "results.md").read_text()
    assert "| mlp-tabular, rule: 2 r |" in text and "Gavish-Donoho" in text
