"""record/compiled.py: the measurement's first call is instantiated without Grappler, once."""

import pytest
import tensorflow as tf

from deepeyes_keras.record.compiled import UnoptimizedFirstCall, graph_optimizer_off

KEY = "disable_meta_optimizer"


def optimizer_off() -> bool:
    return bool(tf.config.optimizer.get_experimental_options().get(KEY, False))


def test_the_first_call_traces_with_the_optimizer_off_and_puts_it_back():
    seen = []

    @tf.function(autograph=False)
    def double():
        seen.append(optimizer_off())  # runs while tracing, inside the first call
        return tf.constant(3.0) * 2.0

    wrapped = UnoptimizedFirstCall(double)
    assert not optimizer_off()
    assert float(wrapped()) == 6.0 and seen == [True]
    assert not optimizer_off()
    assert float(wrapped()) == 6.0 and seen == [True]  # no second trace
    assert wrapped.experimental_get_tracing_count() == 1


def test_a_failing_first_call_restores_the_optimizer_and_is_tried_again():
    calls = []

    @tf.function(autograph=False)
    def fails():
        calls.append(optimizer_off())
        raise ValueError("bad graph")

    wrapped = UnoptimizedFirstCall(fails)
    for _ in range(2):
        with pytest.raises(ValueError, match="bad graph"):
            wrapped()
        assert not optimizer_off()
    assert calls == [True, True]


def test_a_user_setting_survives():
    tf.config.optimizer.set_experimental_options({KEY: True})
    try:
        with graph_optimizer_off():
            assert optimizer_off()
        assert optimizer_off()  # was on before: stays on
    finally:
        tf.config.optimizer.set_experimental_options({KEY: False})
    assert not optimizer_off()
