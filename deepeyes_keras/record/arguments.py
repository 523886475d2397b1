"""Checks of DeepEyesCallback's arguments, done in its constructor before anything runs.

Each check returns the value to keep or raises ValueError saying what was received and what is
expected, in the words of Keras' own callbacks (``deepeyes_keras/record/callback.py`` calls them
in the order of its arguments).

Example:
    >>> check_positive_int("sample_every", 10)
    10
    >>> check_bool("maps", "yes")
    Traceback (most recent call last):
    ...
    ValueError: Invalid value for argument maps. Received: maps='yes'. Expected True or False.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# A file name is at most 255 bytes on common filesystems; "-resumed-NN" may still be appended.
MAX_NAME_BYTES = 240


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int, if it is an integer of at least ``minimum`` (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(
            f"Invalid value for argument {name}. Received: {name}={value!r}. "
            f"Expected an integer >= {minimum}."
        )
    return int(value)


def check_bool(name: str, value, *, allow_none: bool = False) -> bool | None:
    """``value``, if it is True or False (or None, with ``allow_none``)."""
    if isinstance(value, bool) or (allow_none and value is None):
        return value
    expected = "True, False or None" if allow_none else "True or False"
    raise ValueError(
        f"Invalid value for argument {name}. Received: {name}={value!r}. Expected {expected}."
    )


def check_log_dir(log_dir) -> Path:
    """``log_dir`` as a Path, if it is a non-empty path."""
    if not isinstance(log_dir, str | Path) or not str(log_dir):
        raise ValueError(
            f"Invalid value for argument log_dir. Received: log_dir={log_dir!r}. "
            "Expected a directory path."
        )
    return Path(log_dir)


def check_tensorboard(tensorboard) -> Path | None:
    """``tensorboard`` as an absolute Path, if it is None or a non-empty directory path."""
    if tensorboard is None:
        return None
    if not isinstance(tensorboard, str | Path) or not str(tensorboard).strip():
        raise ValueError(
            f"Invalid value for argument tensorboard. Received: tensorboard={tensorboard!r}. "
            "Expected None or the TensorBoard log directory (a str or Path), e.g. "
            "tensorboard='logs' as in keras.callbacks.TensorBoard(log_dir='logs')."
        )
    return Path(tensorboard).absolute()


def check_run_name(run_name) -> str | None:
    """``run_name``, if it is None or a usable directory name: non-empty, no path separators, not
    ``.`` or ``..``, no NUL byte, at most ``MAX_NAME_BYTES`` bytes in UTF-8."""
    if run_name is not None and (
        not isinstance(run_name, str) or not run_name.strip() or "/" in run_name or "\\" in run_name
    ):
        raise ValueError(
            f"Invalid value for argument run_name. Received: run_name={run_name!r}."
            " Expected a non-empty name without path separators."
        )
    if run_name is not None and (
        run_name in (".", "..") or "\x00" in run_name or len(run_name.encode()) > MAX_NAME_BYTES
    ):
        raise ValueError(
            f"Invalid value for argument run_name. Received: run_name={run_name!r}. Expected a "
            f"directory name: not '.' or '..', no NUL byte, at most {MAX_NAME_BYTES} bytes."
        )
    return run_name


def check_layers(layers) -> list[str] | None:
    """``layers`` as a list, if it is None or a non-empty list of layer names."""
    if layers is None:
        return None
    if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
        raise ValueError(
            f"Invalid value for argument layers. Received: layers={layers!r}. "
            "Expected a list of layer names, e.g. layers=['conv1', 'fc1']."
        )
    layers = list(layers)
    if not layers:
        raise ValueError(
            "Invalid value for argument layers. Received: layers=[]. "
            "Expected at least one layer name, or None for the default."
        )
    return layers


def check_probe_data(probe_data):
    """``probe_data``, if it is None or ``(x, y)`` of equal, non-zero length."""
    if probe_data is None:
        return None
    if not isinstance(probe_data, tuple | list) or len(probe_data) != 2:
        raise ValueError(
            "Invalid value for argument probe_data. Expected a tuple (x, y) of "
            f"arrays. Received: {type(probe_data).__name__}."
        )
    if len(probe_data[0]) != len(probe_data[1]) or len(probe_data[0]) == 0:
        raise ValueError(
            "Invalid value for argument probe_data: x and y must be non-empty "
            f"and of equal length; got {len(probe_data[0])} and {len(probe_data[1])}."
        )
    return probe_data


def check_snapshot_every(snapshot_every) -> int | str:
    """``snapshot_every``, if it is ``"auto"`` or a positive integer (kept as given)."""
    if snapshot_every != "auto":
        check_positive_int("snapshot_every", snapshot_every)
    return snapshot_every
