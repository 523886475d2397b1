"""The design findings on real training: a layer built too wide and a hidden layer too many.

Small networks on scikit-learn's digits (they ship with scikit-learn), trained for real with
DeepEyes watching; the findings stage must flag the layer that is far wider than its data needs
(T4) and the hidden layer that adds no separability (T5), and the tool's proposal must act on
both. Whether the proposals keep accuracy is measured by retraining in
case_studies/width_rule/ and by ``deepeyes redesign --verify`` (tests/test_redesign.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype("float32")
    return x, d.target.astype("int64")


def train_watched(tmp_path, name, hidden, *, steps=600, seed=0):
    import keras
    import tensorflow as tf

    from deepeyes_keras import DeepEyesCallback
    from deepeyes_keras.derive.findings import write_findings

    keras.utils.set_random_seed(seed)
    x, y = digits()
    layers = [keras.Input((64,))]
    layers += [
        keras.layers.Dense(units, activation="relu", name=f"h{i + 1}")
        for i, units in enumerate(hidden)
    ]
    layers.append(keras.layers.Dense(10, name="out"))
    model = keras.Sequential(layers, name=name)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).repeat().batch(32)
    cb = DeepEyesCallback(log_dir=str(tmp_path), run_name=name, maps=False, verbose=0, seed=seed)
    epochs = 3
    per_epoch = math.ceil(steps / epochs)
    fit = dict(steps_per_epoch=per_epoch, epochs=epochs, verbose=0, shuffle=False)
    model.fit(ds, callbacks=[cb], **fit)
    assert write_findings(cb.run_dir) > 0
    return cb.run_dir


def test_a_512_unit_layer_on_64_pixels_is_flagged_oversized_and_cut(tmp_path):
    from deepeyes_keras import load_run
    from deepeyes_keras.redesign.proposal import propose

    run = load_run(train_watched(tmp_path, "too_wide", [512]))
    t4 = run.snapshots[-1].findings["layers"]["h1"]["T4"]
    assert t4["oversized"] and t4["suggested_width"] <= 512 * 0.75
    # The rank is what a 64-dimensional input can feed, far below the layer's 512 units.
    assert t4["signal_rank"] <= 256 and t4["rank_method"] == "gavish-donoho"
    proposal = propose(run)
    assert (
        proposal.widths.get("h1") == t4["suggested_width"] or "not stable" in proposal.reasons["h1"]
    )


def test_a_hidden_layer_that_adds_no_separability_is_proposed_for_removal(tmp_path):
    from deepeyes_keras import load_run
    from deepeyes_keras.redesign.proposal import propose

    run = load_run(train_watched(tmp_path, "too_deep", [64, 64, 64]))
    findings = run.snapshots[-1].findings
    t5 = {name: f["T5"] for name, f in findings["layers"].items()}
    accuracy = [t5[n]["linear"] for n in ("h1", "h2", "h3", "out")]
    assert all(a is not None and a > 0.8 for a in accuracy), accuracy
    flagged = [n for n in ("h2", "h3") if t5[n]["removable"] or t5[n]["after_saturation"]]
    assert flagged, t5
    proposal = propose(run)
    assert set(proposal.remove) & set(flagged)
    assert "out" not in proposal.remove
    # Every removal rests on its own evidence: the layer adds less than min_gain to what it
    # receives (a dense layer's own input, probed on the same instances), or comes after
    # separability saturated. h1 may qualify too: digits' raw pixels are nearly linearly
    # separable already, and h1 is judged against them.
    for name in proposal.remove:
        gain = t5[name].get("input_gain", t5[name]["gain"])
        assert t5[name]["after_saturation"] or (gain is not None and gain < 0.01), t5[name]
    assert np.isfinite([t5[n]["gain"] for n in ("h2", "h3", "out")]).all()
