"""Depthwise and separable convolutions recorded with the paper's definitions, on ground truth.

A MobileNet-style block trained with a learning rate of 0 (so the weights built here are the ones
recorded): a depthwise channel built dead, one built always on and two built identical must be
reported as such, and every recorded activation must be the layer's own function of the recorded
neuronal receptive field (its input window).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from deepeyes_keras import DeepEyesCallback, load_run
from deepeyes_keras.derive.findings import write_findings

pytestmark = pytest.mark.slow


def block_model():
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            layers.Conv2D(6, 3, padding="same", activation="relu", name="stem"),
            layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw"),
            layers.SeparableConv2D(5, 3, padding="same", activation="relu", name="sep"),
            layers.GlobalAveragePooling2D(name="gap"),
            layers.Dense(3, name="out"),
        ]
    )
    stem_k, stem_b = model.get_layer("stem").get_weights()
    stem_k[..., 1] = stem_k[..., 0]  # stem channels 0 and 1 identical ...
    stem_b[1] = stem_b[0]
    model.get_layer("stem").set_weights([stem_k, stem_b])
    dw_k, dw_b = model.get_layer("dw").get_weights()  # (3, 3, 6, 1), (6,)
    dw_k[..., 1, 0] = dw_k[..., 0, 0]  # ... seen through the same kernel: a duplicate pair
    dw_b[1] = dw_b[0]
    dw_k[..., 2, 0], dw_b[2] = 0.0, -1.0  # channel 2: never fires (dead)
    dw_k[..., 3, 0], dw_b[3] = 0.0, 5.0  # channel 3: always 5 (always on)
    model.get_layer("dw").set_weights([dw_k, dw_b])
    model.compile(
        keras.optimizers.SGD(learning_rate=0.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    model = block_model()
    rng = np.random.default_rng(0)
    x = rng.random((64, 12, 12, 3)).astype("float32")
    y = rng.integers(0, 3, 64)
    log_dir = tmp_path_factory.mktemp("runs")
    cb = DeepEyesCallback(log_dir=str(log_dir), run_name="block", maps=False, verbose=0)
    model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=[cb])
    write_findings(cb.run_dir)
    return model, load_run(cb.run_dir)


def test_depthwise_and_separable_layers_are_recorded(recorded):
    _, run = recorded
    assert run.layer_names == ["stem", "dw", "sep", "out"]
    info = {i["name"]: i for i in run.manifest["analysed_layers"]}
    assert info["dw"]["n_filters"] == 6 and info["dw"]["descriptor_size"] == 3 * 3 * 6
    assert info["sep"]["n_filters"] == 5 and info["sep"]["descriptor_size"] == 3 * 3 * 6


def test_depthwise_activations_are_its_function_of_the_recorded_window(recorded):
    model, run = recorded
    samples = run.snapshots[-1].layers["dw"].samples
    kernel, bias = model.get_layer("dw").get_weights()
    windows = samples.descriptor.astype(np.float64).reshape(-1, 3, 3, 6)
    # Filter c sees input channel c only, through its own 3x3 kernel.
    expected = np.maximum(np.einsum("nijc,ijc->nc", windows, kernel[..., 0]) + bias, 0)
    np.testing.assert_allclose(samples.activation, expected, atol=2e-2)  # windows are float16


def test_separable_activations_are_depthwise_then_pointwise(recorded):
    model, run = recorded
    samples = run.snapshots[-1].layers["sep"].samples
    depthwise, pointwise, bias = model.get_layer("sep").get_weights()
    windows = samples.descriptor.astype(np.float64).reshape(-1, 3, 3, 6)
    per_channel = np.einsum("nijc,ijc->nc", windows, depthwise[..., 0])
    expected = np.maximum(per_channel @ pointwise[0, 0] + bias, 0)
    np.testing.assert_allclose(samples.activation, expected, atol=2e-2)


def test_ground_truth_dead_always_on_and_duplicate_depthwise_filters(recorded):
    _, run = recorded
    dw = run.snapshots[-1].findings["layers"]["dw"]
    assert 2 in dw["T2"]["dead"] and 3 not in dw["T2"]["dead"]
    assert 3 in dw["T2"]["always_on"]
    assert [0, 1] in dw["T4"]["redundant_groups"]
    layer = run.snapshots[-1].layers["dw"]
    assert layer.jaccard[0, 1] == pytest.approx(1.0, abs=1e-3)


def test_a_depthwise_width_is_never_proposed(recorded):
    from deepeyes_keras.redesign.proposal import proposal_from_findings

    _, run = recorded
    findings = dict(run.snapshots[-1].findings)
    findings["suggested_widths"] = {"dw": 2}
    for f in findings["layers"].values():
        f["T1"]["stable"] = True
    proposal = proposal_from_findings(run.name, findings, run.manifest)
    assert "dw" not in proposal.widths and "follows its input" in proposal.reasons["dw"]
