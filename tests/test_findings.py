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


def test_t5_separable_descriptors_score_near_one_random_ones_near_chance():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 400)
    centres = rng.normal(size=(4, 10)) * 10
    separable = centres[labels] + rng.normal(size=(400, 10))
    out = fd.separability(separable, labels, T)
    assert out["accuracy"] > 0.97
    random = rng.normal(size=(400, 10))
    out = fd.separability(random, labels, T)
    assert abs(out["accuracy"] - 0.25) < 0.1 and out["chance"] < 0.35
    assert fd.separability(random[:3], np.array([0, 0, 0]), T)["accuracy"] is None
