"""Wrapping a model's train step for the recorder, and keeping the compiled functions across fits.

The callback replaces ``model.train_step`` with a wrapper that runs the original step, then lets
the recorder copy a few images of the batch (``Recorder.capture``). Keras compiles the wrapper
into ``model.train_function`` at the first step of ``fit``. After ``fit`` the model gets its own
train step and its own compiled function back.

A second ``fit`` with the same callback on the same model must not pay for compiling again
(issue 15: no fixed price per fit). So the hook keeps both compiled functions, the wrapped one
and the model's own, and puts each back when it is wanted, as long as the model was not compiled
again in between: ``model.compile`` resets ``train_function`` and replaces the model's
``_compile_config`` object, and a kept function is reused only while that object is the one it
was compiled under.
"""

from __future__ import annotations

from collections.abc import Callable


def _compile_key(model) -> object:
    # A new object at every model.compile (Keras 3 trainer); None before the first compile.
    return getattr(model, "_compile_config", None)


class StepHook:
    """Installs ``capture(data)`` after the model's train step, reusing compiled functions.

    Args:
        owner: the object the wrapper is tagged with (the callback), so that installing twice is
            a no-op and another callback's wrapper is recognised.
        capture: called inside the traced train step with the batch (``data``).
    """

    def __init__(self, owner, capture: Callable):
        self._owner = owner
        self._capture = capture
        self._kept: dict[str, object] = {}  # "wrapped" / "own" -> compiled train function
        self._key = None

    def _reusable(self, model, name: str):
        fn = self._kept.get(name)
        return fn if fn is not None and self._key is _compile_key(model) else None

    def install(self, model) -> None:
        if getattr(model.train_step, "_deepeyes_callback", None) is self._owner:
            return
        if self._key is not _compile_key(model):  # compiled again: kept functions are stale
            self._kept.clear()
        self._key = _compile_key(model)
        if model.train_function is not None:
            self._kept["own"] = model.train_function
        original = getattr(model.train_step, "_deepeyes_original", model.train_step)
        capture = self._capture

        def train_step(data):
            logs = original(data)
            capture(data)
            return logs

        train_step._deepeyes_original = original
        train_step._deepeyes_callback = self._owner
        model.train_step = train_step
        # None makes fit() compile the wrapped step; a kept one is reused as it is.
        model.train_function = self._reusable(model, "wrapped")

    def uninstall(self, model) -> None:
        if model is None or "train_step" not in vars(model):
            return
        if self._key is _compile_key(model) and model.train_function is not None:
            self._kept["wrapped"] = model.train_function
        del model.train_step
        model.train_function = self._reusable(model, "own")
