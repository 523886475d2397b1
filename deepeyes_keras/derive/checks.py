"""Argument checks shared by the embeddings (:mod:`deepeyes_keras.derive.embedding`).

Each raises ``TypeError`` or ``ValueError`` naming the argument, the value received and what is
expected, in the words of Keras' own messages. NumPy only.
"""

from __future__ import annotations

import numbers

import numpy as np


def as_float_matrix(value, name: str, *, allow_empty: bool = False, rows=None) -> np.ndarray:
    """Validate a numeric 2-D array; with ``rows``, a finite ``(rows, 2)`` layout."""
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)):
        raise TypeError(f"{name} must be a numeric array; received dtype {arr.dtype}.")
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (rows x columns); received shape {arr.shape}. "
            "Reshape a single row with x.reshape(1, -1)."
        )
    if arr.shape[0] == 0 and not allow_empty and rows is None:
        raise ValueError(f"{name} has no rows (shape {arr.shape}); pass at least one.")
    if rows is not None and (arr.shape != (rows, 2) or not np.isfinite(arr).all()):
        bad = "" if arr.shape != (rows, 2) else " with NaN/inf"
        raise ValueError(f"{name} must be a finite ({rows}, 2) layout; got shape {arr.shape}{bad}.")
    return arr.astype(np.float64, copy=False)


def check_int(value, name: str, *, minimum: int) -> None:
    """An integer (not a bool) of at least ``minimum``."""
    message = f"argument {name}. Received: {name}={value!r}. Expected an integer >= {minimum}."
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Invalid type for {message}")
    if value < minimum:
        raise ValueError(f"Invalid value for {message}")


def check_real(value, name: str, *, low: float, high: float | None = None, hint: str = "") -> None:
    """A finite real number in ``(low, high]`` (``(low, inf)`` without ``high``)."""
    upper = "" if high is None else f" and <= {high:g}"
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not np.isfinite(value)
        or value <= low
        or (high is not None and value > high)
    ):
        raise ValueError(
            f"Invalid value for argument {name}. Received: {name}={value!r}. "
            f"Expected a finite number > {low:g}{upper}{hint}."
        )


def unique_ids(ids, name: str) -> list:
    """The ids as a list, each at most once."""
    keys = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    if len(set(keys)) != len(keys):
        raise ValueError(f"{name} contains duplicate ids; give each point a unique id.")
    return keys
