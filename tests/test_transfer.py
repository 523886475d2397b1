"""Fine-tuning findings (deepeyes_keras.derive.transfer) on ground truth.

Filters built to respond to known classes must be reported as such; a class no filter responds to
must be reported as weakly covered; the keep/retrain verdict and the plan follow their rules.
Numbers are checked against loops written independently of the module's vectorised code.
"""

from __future__ import annotations

import numpy as np
import pytest

from deepeyes_keras.derive.transfer import (
    HEAD,
    KEEP,
    RETRAIN,
    TransferThresholds,
    class_means,
    class_response,
    fine_tuning_plan,
    layer_verdict,
    patterned,
    undetected_patterns,
)


def _designed(n_per_class=50, seed=0):
    """4 classes, 6 filters with known behaviour.

    filter 0: fires on class 0 only; filter 1: on every class alike (unselective); filter 2: on
    classes 0 and 1; filter 3: on class 1, weakly (3%) on class 2; filter 4: dead (never fires);
    filter 5: class 0 strongly, class 1 at 30% of it (below the half-of-best cut).
    Class 3 only moves filter 1, which fires everywhere: no other filter responds to it.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), n_per_class)
    rng.shuffle(labels)
    n = len(labels)
    a = np.zeros((n, 6))
    noise = rng.uniform(0.9, 1.1, n)
    a[:, 0] = np.where(labels == 0, noise, 0.0)
    a[:, 1] = noise
    a[:, 2] = np.where(labels <= 1, noise, 0.0)
    a[:, 3] = np.where(labels == 1, noise, np.where(labels == 2, 0.03 * noise, 0.0))
    a[:, 5] = np.where(labels == 0, noise, np.where(labels == 1, 0.3 * noise, 0.0))
    a -= 0.5 * (a == 0) * rng.uniform(0, 1, a.shape)  # negative values are clamped to 0
    mu = np.maximum(a, 0).max(axis=0)
    return a, labels, mu


def _reference_means(a, labels, mu, d):
    out = np.full((a.shape[1], d), np.nan)
    for i in range(a.shape[1]):
        for c in range(d):
            vals = [max(v, 0.0) for v, lab in zip(a[:, i], labels, strict=True) if lab == c]
            if vals and mu[i] > 0:
                out[i, c] = sum(vals) / len(vals) / mu[i]
            elif vals:
                out[i, c] = 0.0
    return out


def test_class_means_match_a_loop():
    a, labels, mu = _designed()
    got = class_means(a, labels, mu, 5)  # class 4 has no instance
    want = _reference_means(a, labels, mu, 5)
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
    assert np.isnan(got[:, 4]).all()


def test_designed_filters_are_reported_as_built():
    a, labels, mu = _designed()
    r = class_response(a, labels, mu, dead=[4], n_classes=4)
    assert r["live_filters"] == 5
    # Responding filters per class: class 0: 0, 1, 2, 5; class 1: 1, 2, 3; class 2: 1; class 3: 1.
    assert r["filters_per_class"] == [4, 3, 1, 1]
    # One class only: 3's 3% and 5's 30% of their best class fall short.
    assert r["selective"] == {"0": 0, "3": 1, "5": 0}
    assert r["unselective"] == [1]  # fires on every class
    # A class is weakly covered at <= 10% of 5 live filters = 0.5: none qualifies by share, ...
    assert r["weak_classes"] == []
    r = class_response(a, labels, mu, dead=[4], n_classes=4,
                       t=TransferThresholds(weak_class_share=0.2))  # fmt: skip
    assert r["weak_classes"] == [2, 3]  # ... at 20% (1 of 5) classes 2 and 3 are.
    assert r["instances_per_class"] == [50, 50, 50, 50]
    np.testing.assert_allclose(
        np.array(r["relative_mean"], float), _reference_means(a, labels, mu, 4), atol=1e-4
    )


def test_a_class_no_filter_responds_to_is_weak_even_without_the_share():
    a, labels, mu = _designed()
    a[:, 1] = np.where(labels == 3, 0.0, a[:, 1])  # now nothing fires on class 3
    r = class_response(a, labels, np.maximum(a, 0).max(0), dead=[4], n_classes=4,
                       t=TransferThresholds(weak_class_share=0.0))  # fmt: skip
    assert r["filters_per_class"][3] == 0 and r["weak_classes"] == [3]
    assert r["unselective"] == []  # filter 1 no longer fires on every class
    # A class without instances is neither counted nor weak.
    r = class_response(a[labels < 3], labels[labels < 3], mu, dead=[4], n_classes=4)
    assert r["filters_per_class"][3] is None and 3 not in r["weak_classes"]
    assert r["instances_per_class"][3] == 0 and r["relative_mean"][0][3] is None


def test_min_response_silences_a_filter_that_is_barely_active_everywhere():
    labels = np.array([0, 0, 1, 1])
    a = np.array([[0.02, 1.0], [0.02, 0.0], [0.01, 0.0], [0.01, 0.0]])
    mu = np.array([1.0, 1.0])  # filter 0 reached 1 elsewhere: here it is all but silent
    r = class_response(a, labels, mu, dead=[], n_classes=2)
    assert r["filters_per_class"] == [1, 0]  # filter 1 on class 0 (mean 0.5); filter 0 on none
    assert r["selective"] == {"1": 0} and r["weak_classes"] == [1]


def test_patterned_and_undetected_patterns_against_a_loop():
    rng = np.random.default_rng(3)
    n = 120
    labels = rng.integers(0, 3, n)
    patch = rng.uniform(0, 1, (n, 4, 4))
    blank = rng.uniform(0, 1, n) < 0.3
    patch[blank] = 0.2  # uniform: no pattern
    a = rng.uniform(-1, 1, (n, 5)) * rng.uniform(0, 1, (n, 1)) ** 3
    mu = np.maximum(a, 0).max(axis=0)
    has = patterned(patch)
    np.testing.assert_array_equal(has, ~blank)
    got = undetected_patterns(a, labels, mu, has, n_classes=4, level=0.2)

    def share(rows):
        rows = [i for i in rows if has[i]]
        if not rows:
            return None
        missed = [all(not (a[i, k] >= 0.2 * mu[k] and a[i, k] > 0) for k in range(5)) for i in rows]
        return round(sum(missed) / len(rows), 4)

    assert got["share"] == share(range(n))
    assert got["per_class"] == [share(np.flatnonzero(labels == c)) for c in range(4)]
    assert got["per_class"][3] is None and got["patterned"] == int((~blank).sum())
    assert 0 < got["share"] < 1  # the data has both kinds


def test_verdict_rules_and_the_plan():
    t = TransferThresholds()
    assert layer_verdict(20, [], 0.1, output=False)["verdict"] == KEEP
    v = layer_verdict(20, list(range(6)), 0.1, output=False)  # 70% live
    assert v["verdict"] == RETRAIN and "70% of its filters are live" in v["reasons"][0]
    v = layer_verdict(20, [], 0.4, output=False)
    assert v["verdict"] == RETRAIN and "40% of the patterned instances" in v["reasons"][0]
    assert layer_verdict(20, list(range(19)), 0.9, output=True)["verdict"] == HEAD
    assert layer_verdict(4, [0], None, output=False, t=t)["verdict"] == KEEP  # exactly 75%
    verdicts = (("b/conv1", KEEP), ("b/conv2", RETRAIN), ("b/fc1", KEEP), ("head", HEAD))
    layers = {n: {"transfer": {"verdict": v}} for n, v in verdicts}
    plan = fine_tuning_plan({"layers": layers})
    assert plan == {"freeze": ["b/conv1"], "retrain": ["b/conv2", "b/fc1", "head"],
                    "first_retrained": "b/conv2"}  # fmt: skip
    assert fine_tuning_plan({"layers": {"x": {"T1": {}}}})["freeze"] == []


def test_thresholds_are_checked():
    with pytest.raises(ValueError, match=r"min_live_share=1.5.*in \[0, 1\]"):
        TransferThresholds(min_live_share=1.5)


@pytest.mark.slow
def test_recorded_run_reports_designed_units(tmp_path):
    """End to end: a real Keras model whose hidden units are built to respond to known classes,
    recorded by DeepEyes, read back by the findings."""
    keras = pytest.importorskip("keras")

    from deepeyes_keras import DeepEyesCallback
    from deepeyes_keras.derive.findings import run_findings
    from deepeyes_keras.run.reader import load_run

    rng = np.random.default_rng(0)
    y = rng.choice(4, 512, p=[0.3, 0.3, 0.275, 0.125])  # class 3: one eighth
    x = np.eye(4, dtype="float32")[y] * rng.uniform(0.8, 1.2, (512, 1)).astype("float32")
    # Units: 0 <- class 0 only; 1 <- classes 0, 1, 2 alike; 2 <- class 1 only. Class 3: none.
    kernel = np.array([[1, 1, 0], [0, 1, 1], [0, 1, 0], [0, 0, 0]], "float32")
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(3, activation="relu", name="units"),
        keras.layers.Dense(4, name="out"),
    ])  # fmt: skip
    model.get_layer("units").set_weights([kernel, np.zeros(3, "float32")])
    model.get_layer("units").trainable = False
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(True))
    cb = DeepEyesCallback(log_dir=tmp_path, run_name="designed", maps=False, verbose=0,
                          sample_every=1, reservoir_size=400)  # fmt: skip
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[cb])
    findings = run_findings(load_run(tmp_path / "designed"))
    units = findings["layers"]["units"]["transfer"]
    assert units["classes"]["filters_per_class"] == [2, 2, 1, 0]
    assert units["classes"]["selective"] == {"0": 0, "2": 1}
    assert units["classes"]["weak_classes"] == [3] and units["classes"]["unselective"] == []
    assert units["undetected_patterns"]["per_class"][3] == 1.0  # class 3: nothing fires
    assert units["undetected_patterns"]["per_class"][:3] == [0.0, 0.0, 0.0]
    share = units["undetected_patterns"]["share"]  # class 3's share of the instances
    assert 0.05 < share < 0.25 and units["verdict"] == KEEP  # all units live, few undetected
    assert findings["layers"]["out"]["transfer"]["verdict"] == HEAD
    assert findings["thresholds"]["transfer"] == {
        k: getattr(TransferThresholds(), k) for k in TransferThresholds.__dataclass_fields__
    }


def test_layer_page_and_run_page_show_the_transfer_findings():
    from deepeyes_keras.site.findings_html import findings_html

    def layer(verdict, reasons=(), per_class=(3, 0), weak=(1,)):
        return {
            "n_filters": 4,
            "transfer": {
                "verdict": verdict,
                "reasons": list(reasons),
                "live_share": 0.75,
                "classes": {
                    "live_filters": 3,
                    "filters_per_class": list(per_class),
                    "weak_classes": list(weak),
                    "unselective": [2],
                },  # fmt: skip
                "undetected_patterns": {"share": 0.125, "per_class": [0.0, 0.5]},
            },
        }

    findings = {"step": 5, "layers": {
        "b/conv1": layer("keep"),
        "b/fc1": layer("retrain", ["only 50% of its filters are live"]),
        "head": layer("retrain (output layer)", per_class=(1, None), weak=()),
    }}  # fmt: skip
    page = findings_html(findings)
    assert "Plan: freeze b/conv1; retrain b/fc1, head." in page
    assert "<td>retrain: only 50% of its filters are live</td>" in page
    assert "<td>0: 3, 1: 0</td>" in page and "<td>0: 1, 1: -</td>" in page
    assert "<td>12.5%</td>" in page and "<td>3 of 4</td>" in page and "<td>1 (2)</td>" in page
    one = findings_html(findings, only_layer="b/fc1")
    assert "retrain: only 50%" in one and "b/conv1" not in one and "Plan:" not in one
    assert "Fine-tuning" not in findings_html({"step": 1, "layers": {"x": {"n_filters": 2}}})
