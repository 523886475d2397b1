"""The recorder's compiled measurement, instantiated without TensorFlow's graph optimiser.

A ``tf.function`` pays twice at its first call: tracing builds its graph (Python, about 1,460 ops
for LeNet's four layers) and instantiating it runs Grappler, TensorFlow's graph optimiser, over
that graph before the first run. For the measurement Grappler's rewrites buy nothing measurable
(the same time per call within noise, 9-11 ms on LeNet here) but cost 0.5-0.8 s of the first
call on a 2-core machine (issue 15: no fixed price per fit). So the first call runs with the
optimiser off for that call only: the instantiated graph is kept, and the setting is put back
as it was (``tf.config.optimizer``), whatever the call raises.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

_KEY = "disable_meta_optimizer"


@contextlib.contextmanager
def graph_optimizer_off():
    """Turns Grappler off for the functions instantiated inside the block, then restores it."""
    before = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({_KEY: True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({_KEY: bool(before.get(_KEY, False))})


class UnoptimizedFirstCall:
    """Wraps a ``tf.function`` without arguments; its first call instantiates it unoptimised.

    Args:
        function: the ``tf.function``.
    """

    def __init__(self, function):
        self.function = function
        self._instantiated = False

    def __call__(self):
        if self._instantiated:
            return self.function()
        with graph_optimizer_off():
            result = self.function()
        self._instantiated = True
        return result

    def experimental_get_tracing_count(self) -> int:
        return self.function.experimental_get_tracing_count()
