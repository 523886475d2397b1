"""The redesign proposal: the tool's policy on hand-made findings, and its history over a run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from deepeyes_keras.redesign.proposal import (
    Proposal,
    proposal_from_findings,
    proposal_history,
    propose,
)

WIDTHS = {"conv1": 20, "conv2": 50, "fc1": 500, "fc2": 10}  # fc2: the output layer
MANIFEST = {"analysed_layers": [{"name": n, "n_filters": w} for n, w in WIDTHS.items()]}


def _layer(name, *, suggested=None, stable=True, since=None, kind=None):
    n = WIDTHS[name]
    suggested = n if suggested is None else suggested
    return {
        "layer": name,
        "kind": kind or ("dense" if name.startswith("fc") else "conv"),
        "n_filters": n,
        "T1": {"stable": stable, "stable_since_step": since if stable else None},
        "T4": {
            "suggested_width": suggested,
            "oversized": suggested < n,
            "text": f"{name}: T4 evidence, suggested width {suggested}",
        },
    }


def _findings(step=100, suggestions=(), **overrides):
    """Findings as ``run_findings`` builds them: every layer, T4 widths of hidden layers only."""
    layers = {name: _layer(name, **overrides.get(name, {})) for name in WIDTHS}
    removed = {n for s in suggestions for n in s.get("remove", [])}
    widths = {
        n: f["T4"]["suggested_width"]
        for n, f in layers.items()
        if f["T4"]["oversized"] and n != "fc2" and n not in removed
    }
    return {
        "step": step,
        "layers": layers,
        "suggestions": list(suggestions),
        "suggested_widths": widths,
    }


def test_stable_oversized_layer_gets_exactly_its_suggested_width():
    findings = _findings(conv1={"suggested": 13}, fc1={"suggested": 87})
    p = proposal_from_findings("lenet", findings, MANIFEST)
    assert isinstance(p, Proposal)
    assert p.widths == {"conv1": 13, "fc1": 87}  # exact: no rounding
    assert p.remove == [] and p.changes
    assert p.reasons == {
        "conv1": "conv1: T4 evidence, suggested width 13",
        "fc1": "fc1: T4 evidence, suggested width 87",
    }
    assert (p.run, p.step, p.original_widths) == ("lenet", 100, WIDTHS)
    assert Proposal.from_dict(p.to_dict()) == p


def test_unstable_layer_is_not_resized_and_says_why():
    findings = _findings(conv1={"suggested": 8, "stable": False}, fc1={"suggested": 100})
    p = proposal_from_findings("lenet", findings, MANIFEST)
    assert p.widths == {"fc1": 100}
    assert p.reasons["conv1"].startswith("conv1: T4 evidence, suggested width 8")
    assert "not applied: the layer is not stable yet (T1)" in p.reasons["conv1"]


def test_t5_removal_is_proposed_with_its_reason():
    drop = {"task": "T5", "layer": "fc1", "text": "fc1 adds +0.001", "remove": ["fc1"]}
    findings = _findings(suggestions=[drop], fc1={"suggested": 40}, conv2={"suggested": 20})
    # A findings dict that also lists the removed layer's width: removal wins.
    findings["suggested_widths"]["fc1"] = 40
    p = proposal_from_findings("lenet", findings, MANIFEST)
    assert p.remove == ["fc1"]
    assert p.widths == {"conv2": 20}
    assert p.reasons["fc1"] == "fc1 adds +0.001"


def test_layer_asking_for_capacity_is_not_shrunk():
    more = {"task": "T5", "layer": "fc1", "add_capacity": True, "text": "not yet separable"}
    findings = _findings(suggestions=[more], fc1={"suggested": 60}, conv1={"suggested": 10})
    p = proposal_from_findings("lenet", findings, MANIFEST)
    assert p.widths == {"conv1": 10}
    assert "not applied: T5 asks for more capacity there" in p.reasons["fc1"]
    assert p.remove == []


def test_output_layer_is_never_changed():
    # The output layer's own T4 may call it oversized; the findings leave it out of the widths.
    findings = _findings(fc2={"suggested": 4})
    assert findings["layers"]["fc2"]["T4"]["oversized"]
    p = proposal_from_findings("lenet", findings, MANIFEST)
    assert p.widths == {} and p.remove == [] and not p.changes
    assert "fc2" not in p.reasons


def test_output_layer_is_never_changed_even_when_listed():
    findings = _findings(fc2={"suggested": 4})
    findings["suggested_widths"]["fc2"] = 4
    findings["suggestions"] = [{"task": "T5", "layer": "fc2", "remove": ["fc2"], "text": "x"}]
    p = proposal_from_findings("lenet", findings, MANIFEST)
    assert p.widths == {} and p.remove == []


def test_width_equal_to_the_current_one_is_no_change():
    findings = _findings()
    findings["suggested_widths"] = {"conv2": 50, "fc1": 500}
    p = proposal_from_findings("lenet", findings, MANIFEST)
    assert p.widths == {} and p.reasons == {} and not p.changes


# ------------------------------------------------------------------------- over a run


def _run(snapshots):
    """A run as ``propose``/``proposal_history`` read it: name, path, manifest, snapshots."""
    snaps = [SimpleNamespace(step=step, findings=f) for step, f in snapshots]
    return SimpleNamespace(
        name="lenet", path=Path("runs/lenet"), manifest=MANIFEST, snapshots=snaps
    )


def _history_run():
    # conv1 stable since 20 (suggesting 8 then, 6 at the end); fc1 stable since 30, never
    # oversized; conv2 never stable; fc2 (output) stable since 10. Step 25 has no findings.
    common = {"conv2": {"stable": False, "suggested": 20}, "fc2": {"since": 10}}
    return _run(
        [
            (10, _findings(10, conv1={"stable": False}, fc1={"stable": False}, **common)),
            (
                20,
                _findings(20, conv1={"suggested": 8, "since": 20}, fc1={"stable": False}, **common),
            ),
            (25, None),
            (30, _findings(30, conv1={"suggested": 7, "since": 20}, fc1={"since": 30}, **common)),
            (40, _findings(40, conv1={"suggested": 6, "since": 20}, fc1={"since": 30}, **common)),
        ]
    )


def test_proposal_history_compares_the_step_each_layer_became_stable_with_the_end():
    rows = {r["layer"]: r for r in proposal_history(_history_run())}
    assert set(rows) == {"conv1", "fc1", "fc2"}  # conv2 is not stable at the end
    assert rows["conv1"] == {
        "layer": "conv1",
        "stable_since_step": 20,
        "width_then": 8,
        "width_final": 6,
        "removed_then": False,
        "removed_final": False,
        "same": False,
        "difference": -2,
    }
    assert (rows["fc1"]["width_then"], rows["fc1"]["width_final"]) == (500, 500)
    assert rows["fc1"]["same"] and rows["fc1"]["difference"] == 0
    assert rows["fc2"]["stable_since_step"] == 10 and rows["fc2"]["width_final"] == 10


def test_proposal_history_skips_a_layer_whose_stable_step_has_no_findings():
    run = _history_run()
    run.snapshots[-1].findings["layers"]["fc1"]["T1"]["stable_since_step"] = 25
    rows = proposal_history(run)
    assert "fc1" not in {r["layer"] for r in rows}


def test_proposal_history_reports_a_removal_then_that_is_gone_at_the_end():
    drop = {"task": "T5", "layer": "fc1", "text": "fc1 adds +0.001", "remove": ["fc1"]}
    run = _run(
        [
            (10, _findings(10, suggestions=[drop], fc1={"since": 10})),
            (20, _findings(20, fc1={"since": 10})),
        ]
    )
    (row,) = [r for r in proposal_history(run) if r["layer"] == "fc1"]
    assert row["removed_then"] and not row["removed_final"] and not row["same"]


def test_propose_reads_the_last_findings_at_or_before_a_step():
    run = _history_run()
    assert propose(run).widths == {"conv1": 6}
    assert propose(run, step=29).step == 20 and propose(run, step=29).widths == {"conv1": 8}
    with pytest.raises(ValueError, match="has no findings at or before step 5"):
        propose(run, step=5)
