"""The user's hook file: the data, and optionally the model, compile and fit settings, of a run.

``deepeyes redesign RUN --verify --hook FILE`` retrains the recorded network and the proposal on
what a small Python file supplies. Its contract:

``build_data()`` (required)
    Returns ``((x_train, y_train), (x_test, y_test))``: NumPy arrays (anything with ``shape`` and
    a length), or a ``tf.data.Dataset`` of ``(x, y)`` batches as the training part (the test part
    stays arrays). It is called once per network, right after ``keras.utils.set_random_seed``,
    so a ``Dataset.shuffle`` without its own seed gives both networks the same order.
``build_model(seed)`` (optional)
    Returns the original network, compiled or not, with fresh weights. Without it, the network
    is rebuilt from the run's ``model.json`` (what the recorder wrote).
``compile_model(model)`` (optional)
    Compiles a model in place (or returns a compiled one); used for both networks. Without it,
    both are compiled with the original's compile settings.
``fit_kwargs()`` (optional)
    Returns the keyword arguments of ``model.fit`` (``epochs``, ``batch_size``,
    ``steps_per_epoch``, ``callbacks``, ...); default ``{"epochs": 1, "batch_size": 64}``
    (``{"epochs": 1}`` for a ``Dataset``, which is batched already).
``SEEDS`` (optional)
    The seeds to train with (default ``(0, 1, 2)``); ``--seeds`` overrides them.

Example hook file::

    import numpy as np

    SEEDS = (0, 1)

    def build_data():
        rng = np.random.default_rng(0)
        x = rng.random((256, 8, 8, 1)).astype("float32")
        y = rng.integers(0, 3, 256)
        return (x[:192], y[:192]), (x[192:], y[192:])

    def fit_kwargs():
        return {"epochs": 2, "batch_size": 32}

Example:
    >>> hook = load_hook("case_studies/mnist_lenet/redesign_hook.py")   # doctest: +SKIP
    >>> (x, y), (x_test, y_test) = hook.data()                          # doctest: +SKIP
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import inspect
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepeyes_keras.names import did_you_mean

DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_FIT_KWARGS = {"epochs": 1, "batch_size": 64}
FUNCTIONS = ("build_data", "build_model", "compile_model", "fit_kwargs")
NAMES = (*FUNCTIONS, "SEEDS")
RESERVED_FIT_KEYS = ("x", "y", "validation_split")  # the data comes from build_data()
CONTRACT = (
    "A hook file defines build_data() -> ((x_train, y_train), (x_test, y_test)) and optionally "
    "build_model(seed), compile_model(model), fit_kwargs() and SEEDS; see "
    "viewer_site/guide/redesign.md."
)


@dataclass(frozen=True)
class HookData:
    """What ``build_data()`` returned, checked: the training part and the test arrays."""

    train: Any  # (x, y) arrays, or a tf.data.Dataset of (x, y) batches
    x_test: Any
    y_test: Any

    @property
    def is_dataset(self) -> bool:
        return not isinstance(self.train, tuple)

    def describe(self) -> dict:
        """The data in words, for the record: ``{"train": ..., "test_rows": n}``."""
        if self.is_dataset:
            spec = self.train.element_spec
            shape = getattr(spec[0] if isinstance(spec, tuple) else spec, "shape", None)
            inputs = f" of inputs {tuple(shape)[1:]}" if shape is not None else ""
            train = f"a tf.data.Dataset of batches{inputs}"
        else:
            x = self.train[0]
            train = f"arrays: {len(x)} rows of shape {tuple(x.shape[1:])}"
        return {"train": train, "test_rows": len(self.x_test)}


@dataclass(frozen=True)
class Hook:
    """A loaded, checked hook file (see the module docstring for its contract)."""

    path: Path
    build_data: Callable[[], Any]
    build_model: Callable[[int], Any] | None = None
    compile_model: Callable[[Any], Any] | None = None
    fit_kwargs: Callable[[], dict] | None = None
    seeds: tuple[int, ...] = DEFAULT_SEEDS

    def data(self) -> HookData:
        """Calls ``build_data()`` and checks what it returns."""
        return check_data(self.build_data(), self.path)

    def fit_arguments(self, *, dataset: bool) -> dict:
        """The keyword arguments of ``fit``: ``fit_kwargs()``, or the default, checked."""
        if self.fit_kwargs is None:
            kwargs = dict(DEFAULT_FIT_KWARGS)
            if dataset:
                kwargs.pop("batch_size")
            return kwargs
        return check_fit_kwargs(self.fit_kwargs(), self.path, dataset=dataset)


def load_hook(path) -> Hook:
    """Imports a hook file from its path and checks it.

    Args:
        path: a Python file defining ``build_data()`` (and optionally ``build_model(seed)``,
            ``compile_model(model)``, ``fit_kwargs()``, ``SEEDS``).

    Raises:
        FileNotFoundError: there is no such file.
        ValueError: it cannot be imported, or ``build_data`` is missing, or a name of the
            contract has the wrong type or signature.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Hook file {str(path)!r} does not exist. Pass the path of a Python file that "
            f"defines build_data(). {CONTRACT}"
        )
    module = import_file(path)
    names = [n for n in vars(module) if not n.startswith("_")]
    if not callable(getattr(module, "build_data", None)):
        hint = did_you_mean("build_data", names)
        got = "" if not hasattr(module, "build_data") else " (it is not a function)"
        raise ValueError(
            f"Hook file {str(path)!r} defines no build_data() function{got}"
            + (f"; {hint}" if hint else "")
            + f". Add def build_data(): return (x_train, y_train), (x_test, y_test). {CONTRACT}"
        )
    warn_misspelled(names, path)
    functions = {n: check_function(module, n, path) for n in FUNCTIONS}
    return Hook(path=path.resolve(), seeds=check_seeds(module, path), **functions)


def warn_misspelled(names: list[str], path: Path) -> None:
    """Warns of names close to the contract's: a misspelled optional name would be ignored."""
    for name in names:
        if name in NAMES:
            continue
        if name.lower() in ("seed", "seeds"):
            hint = "did you mean 'SEEDS'?"
        elif name.startswith(("build_", "compile_", "fit_")):
            hint = did_you_mean(name, FUNCTIONS, n=1)
        else:
            hint = ""
        if hint:
            warnings.warn(
                f"Hook file {str(path)!r}: {name!r} is not part of the contract and is ignored; "
                f"{hint} {CONTRACT}",
                stacklevel=3,
            )


def import_file(path: Path):
    """The module of a Python file, imported under a name of its own (outside any package)."""
    name = f"deepeyes_hook_{abs(hash(str(path.resolve())))}"
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would: dataclasses and pickling look it up
    try:
        loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - any failure of the user's file is reported as one
        del sys.modules[name]
        raise ValueError(
            f"Hook file {str(path)!r} failed to import: {type(err).__name__}: {err}. "
            "Fix the file (run it with python to see the traceback)."
        ) from err
    return module


def check_function(module, name: str, path: Path) -> Callable | None:
    """``module.<name>`` when it is a function taking the contract's arguments; None if absent."""
    if not hasattr(module, name):
        return None
    function = getattr(module, name)
    arguments = {"build_model": ("seed",), "compile_model": ("model",)}.get(name, ())
    call = f"{name}({', '.join(arguments)})"
    if not callable(function):
        raise ValueError(
            f"Hook file {str(path)!r}: {name} must be a function {call}. "
            f"Received: {type(function).__name__}."
        )
    try:
        inspect.signature(function).bind(*arguments)
    except TypeError:
        raise ValueError(
            f"Hook file {str(path)!r}: {name} must take {len(arguments) or 'no'} argument(s), "
            f"as {call}. Received: {name}{inspect.signature(function)}."
        ) from None
    except ValueError:  # builtins without a signature: trust them
        pass
    return function


def check_seeds(module, path: Path) -> tuple[int, ...]:
    """``SEEDS`` as a tuple of ints (default (0, 1, 2))."""
    seeds = getattr(module, "SEEDS", DEFAULT_SEEDS)
    return check_seed_list(seeds, f"Hook file {str(path)!r}: SEEDS")


def check_seed_list(seeds, what: str) -> tuple[int, ...]:
    """A non-empty tuple of integers >= 0, or a ValueError naming ``what``."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = (seeds,)
    try:
        values = tuple(seeds)
    except TypeError:
        values = ()
    if not values or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in values):
        raise ValueError(
            f"{what} must be a non-empty list of integers >= 0, e.g. (0, 1, 2). "
            f"Received: {seeds!r}."
        )
    return values


def check_data(result, path: Path) -> HookData:
    """The checked result of ``build_data()``: ``((x, y), (x_test, y_test))`` or
    ``(dataset, (x_test, y_test))``."""
    expected = (
        "Expected ((x_train, y_train), (x_test, y_test)) with NumPy arrays, or "
        "(train_dataset, (x_test, y_test)) with a tf.data.Dataset of (x, y) batches."
    )
    where = f"Hook file {str(path)!r}: build_data() returned"
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise ValueError(f"{where} {describe(result)}. {expected}")
    train, test = result
    if isinstance(train, tuple | list):
        train = tuple(check_pair(train, where, "training part", expected))
    elif not (hasattr(train, "element_spec") and hasattr(train, "batch")):
        raise ValueError(f"{where} a training part that is {describe(train)}. {expected}")
    x_test, y_test = check_pair(test, where, "test part", expected)
    return HookData(train=train, x_test=x_test, y_test=y_test)


def check_pair(pair, where: str, part: str, expected: str) -> tuple:
    """``(x, y)``: two arrays of the same, non-zero length."""
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise ValueError(f"{where} a {part} that is {describe(pair)}. {expected}")
    x, y = pair
    for value in (x, y):
        if not hasattr(value, "shape") or not hasattr(value, "__len__"):
            raise ValueError(f"{where} a {part} holding {describe(value)}. {expected}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"{where} a {part} whose x and y have {len(x)} and {len(y)} rows; they must have "
            "the same, non-zero number of rows."
        )
    return x, y


def check_fit_kwargs(kwargs, path: Path, *, dataset: bool) -> dict:
    """The checked result of ``fit_kwargs()``: a dict of ``fit`` keyword arguments."""
    where = f"Hook file {str(path)!r}: fit_kwargs() returned"
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ValueError(
            f"{where} {describe(kwargs)}. Expected a dict of model.fit keyword arguments, "
            'e.g. {"epochs": 2, "batch_size": 64}.'
        )
    reserved = sorted(k for k in kwargs if k in RESERVED_FIT_KEYS)
    if reserved:
        raise ValueError(
            f"{where} {reserved}: the data comes from build_data(); remove them from fit_kwargs()."
        )
    if dataset and "batch_size" in kwargs:
        raise ValueError(
            f"{where} batch_size, but build_data() gives a tf.data.Dataset: batch the dataset "
            "instead and remove batch_size (use steps_per_epoch to bound an epoch)."
        )
    return dict(kwargs)


def fit_record(kwargs: dict) -> dict:
    """``fit`` keyword arguments as JSON: numbers and text kept, callbacks and objects named."""
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, bool | int | float | str) or value is None:
            out[key] = value
        elif key == "callbacks":
            out[key] = [type(c).__name__ for c in value]
        else:
            out[key] = repr(value)
    return out


def describe(value) -> str:
    """A short description of a received value for an error message."""
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    shape = getattr(value, "shape", None)
    return f"a {type(value).__name__}" + (f" of shape {tuple(shape)}" if shape is not None else "")
