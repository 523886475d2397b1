"""Close-match hints for names a user typed (layers, runs): one rule for every error message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_matches(name: str, known: Iterable[str], *, n: int = 3) -> list[str]:
    """The known names closest to ``name`` (at most ``n``; none when nothing is close)."""
    return difflib.get_close_matches(str(name), [str(k) for k in known], n=n)


def did_you_mean(name: str, known: Iterable[str], *, n: int = 3) -> str:
    """``"did you mean 'a', 'b'?"`` for the close matches of ``name``, or ``""`` when none.

    Example:
        >>> did_you_mean("conv_1", ["conv1", "conv2", "fc1"])
        "did you mean 'conv1', 'conv2'?"
    """
    close = close_matches(name, known, n=n)
    return f"did you mean {', '.join(map(repr, close))}?" if close else ""
