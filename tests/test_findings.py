"""Findings T1-T5 on constructed records with known answers."""

import numpy as np
import pytest

from deepeyes_keras.derive import findings as fd

T = fd.Thresholds()


def test_t1_stable_when_histograms_stop_changing_beyond_chance():
    rng = np.random.default_rng(0)
    settled = np.linspace(1, 5, 30)
    settled /= settled.sum()
    hists = [rng.multinomial(2000, np.roll(settled, 10 * i)).astype(float) for i in range(3)]
    hists += [rng.multinomial(2000, settled).astype(float) for _ in range(5)]
    steps = [10, 20, 40, 80, 100, 200, 300, 400]
    out = fd.stability(hists, steps, T)
    assert out["stable"] is True
    # The last shift is between steps 40 and 80; three calm transitions later (80->100,
    # 100->200, 200->300) the layer is stable, from step 300 on.
    assert out["stable_since_step"] == 300
    assert (
        out["excess_change"][3] > 2 * T.stable_excess
        and max(out["excess_change"][4:]) <= T.stable_excess
    )


def test_t1_noise_alone_is_not_change_but_a_shift_is():
    rng = np.random.default_rng(1)
    p = np.full(30, 1 / 30)
    a, b = rng.multinomial(300, p), rng.multinomial(300, p)
    change, noise = fd.histogram_change(a, b)
    assert change > 0 and change - noise < 0.01  # small samples differ by chance
    shifted = np.zeros(30)
    shifted[:5] = 60
    change, noise = fd.histogram_change(a, shifted)
    assert change - noise > 0.3
    # Mass hopping to the neighbouring bin (a population on a bin edge) is hardly change.
    edge = np.zeros(30)
    edge[[10, 11]] = [150, 150]
    hopped = np.zeros(30)
    hopped[[10, 11]] = [90, 210]
    change, noise = fd.histogram_change(edge, hopped)
    assert change - noise < T.stable_excess


def test_t2_reports_exactly_the_dead_and_always_on_filters():
    rng = np.random.default_rng(2)
    mu = rng.uniform(1, 3, 20)
    freq = rng.uniform(0.05, 0.5, 20)
    dead = [1, 4, 9, 15, 19]
    mu[dead] = 0.0
    freq[dead] = 0.0
    freq[7] = 0.97
    out = fd.degenerate_filters(mu, freq, T)
    assert out["dead"] == dead
    assert out["always_on"] == [7]


def test_t3_share_of_instances_no_filter_detects():
    mu = np.array([2.0, 4.0, 1.0])
    acts = np.array(
        [
            [0.0, 0.0, 0.0],  # nothing
            [0.1, 0.3, 0.05],  # all below 10% of max
            [1.0, 0.0, 0.0],  # filter 0 responds
            [0.0, 0.0, 0.5],  # filter 2 responds
        ]
    )
    assert fd.undetected_share(acts, mu, T) == pytest.approx(0.5)


def test_t4_identical_filters_form_one_redundant_group_and_width_shrinks():
    phi = np.eye(6) * 0.5 + 0.1
    np.fill_diagonal(phi, 1.0)
    phi[2, 4] = phi[4, 2] = 1.0  # identical pair
    phi[0, 5] = phi[5, 0] = 0.9  # near-duplicates, but filter 5 is dead
    groups = fd.redundant_groups(phi, dead=[5], t=T)
    assert groups == [[2, 4]]


class Names:
    """Stands in for a run: depth_suggestions only reads the layer order."""

    def __init__(self, names):
        self.layer_names = names


def t5_layers(spec):
    return {name: {"kind": kind, "T5": {"accuracy": acc}} for name, kind, acc in spec}


def test_t5_a_dense_layer_that_adds_nothing_after_a_dense_layer_is_proposed_for_removal():
    spec = [("conv1", "conv2d", 0.3), ("fc1", "dense", 0.95), ("fc2", "dense", 0.952)]
    layers = t5_layers(spec + [("out", "dense", 0.97)])
    depth, suggestions = fd.depth_suggestions(Names(list(layers)), layers, T)
    assert [s.get("remove") for s in suggestions] == [["fc2"]]
    assert layers["fc2"]["T5"]["removable"] and layers["fc2"]["T5"]["gain"] == pytest.approx(0.002)
    assert not layers["fc1"]["T5"]["removable"] and depth["needs_capacity"] is False


def test_t5_flags_a_conv_layer_without_proposing_to_remove_it():
    spec = [("conv1", "conv2d", 0.6), ("conv2", "conv2d", 0.601), ("fc1", "dense", 0.95)]
    layers = t5_layers(spec + [("out", "dense", 0.97)])
    _, suggestions = fd.depth_suggestions(Names(list(layers)), layers, T)
    assert [s["layer"] for s in suggestions] == ["conv2"]
    assert "remove" not in suggestions[0] and "not proposed" in suggestions[0]["text"]


def test_t5_a_last_hidden_layer_far_below_the_output_asks_for_capacity():
    layers = t5_layers([("fc1", "dense", 0.6), ("fc2", "dense", 0.75), ("out", "dense", 0.95)])
    depth, suggestions = fd.depth_suggestions(Names(list(layers)), layers, T)
    assert depth["needs_capacity"] is True
    assert any(s.get("add_capacity") and s["layer"] == "fc2" for s in suggestions)


def test_t4_width_finding_carries_the_rule_and_its_evidence():
    rng = np.random.default_rng(3)
    acts = rng.normal(size=(1500, 6)) @ rng.normal(size=(6, 80)) + 0.01 * rng.normal(
        size=(1500, 80)
    )
    t4 = fd.width_finding(acts, dead=[], groups=[], t=T)
    assert t4["signal_rank"] == 6 and t4["suggested_width"] == 12 and t4["oversized"]
    assert len(t4["cumulative_variance"]) == 80 and t4["cumulative_variance"][-1] == 1.0
    assert "verify by retraining" in t4["text"]


def test_t5_a_dense_layer_after_the_conv_stack_that_adds_nothing_to_its_input_is_proposed():
    # The paper's AMIDA shape: fc1 follows a Flatten of conv4; its input already separates.
    spec = [("conv3", "conv2d", 0.66), ("conv4", "conv2d", 0.72), ("fc1", "dense", 0.962)]
    layers = t5_layers(spec + [("fc2", "dense", 0.963)])
    layers["fc1"]["T5"]["input_accuracy"] = 0.958
    depth, suggestions = fd.depth_suggestions(Names(list(layers)), layers, T)
    assert [s.get("remove") for s in suggestions] == [["fc1"]]
    assert "over its input (0.958 on fc1 (input))" in suggestions[0]["text"]
    assert layers["fc1"]["T5"]["input_gain"] == pytest.approx(0.004)
    assert layers["fc1"]["T5"]["gain"] == pytest.approx(0.242)  # over conv4, as before
    assert depth["saturated_at"] == "fc1 (input)"


def test_t5_a_dense_layer_that_adds_separability_to_its_input_is_kept():
    spec = [("conv4", "conv2d", 0.72), ("fc1", "dense", 0.96), ("fc2", "dense", 0.965)]
    layers = t5_layers(spec)
    layers["fc1"]["T5"]["input_accuracy"] = 0.90  # LeNet-like: fc1 adds 0.06 to its input
    _, suggestions = fd.depth_suggestions(Names(list(layers)), layers, T)
    assert suggestions == []
    assert not layers["fc1"]["T5"]["removable"] and not layers["fc1"]["T5"]["after_saturation"]
