"""A spec as files: strict sorted-key JSON, and PNG or SVG drawn without a browser.

`spec_json` writes the deterministic JSON that the views stage (`deepeyes_keras/derive/views.py`)
stores in a run directory; `render` draws a spec with vl-convert (a Vega runtime, no browser) for
the wiki export (`deepeyes_keras/export.py`). The module is `rendering`, not `render`, so that
`deepeyes_keras.charts.render` stays the function.

Example:
    >>> spec_json({"b": float("nan"), "a": 1})
    '{"a": 1, "b": null}'
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from deepeyes_keras.run.layout import printable, strict_json

__all__ = ["render", "spec_json"]


def spec_json(spec: Mapping[str, Any], *, indent: int | None = None) -> str:
    """Strict, deterministic JSON of a spec: sorted keys, non-finite numbers written as null.

    Example:
        >>> spec_json({"b": float("nan"), "a": 1})
        '{"a": 1, "b": null}'
    """
    safe, _ = strict_json(spec)
    return json.dumps(safe, sort_keys=True, allow_nan=False, indent=indent)


# Characters XML 1.0 cannot hold: vl-convert draws through SVG and aborts the whole process on
# one (a Rust panic, not an exception), e.g. a metric name holding a terminal escape sequence.
_XML_INVALID = {
    code: printable(chr(code))
    for code in (
        *range(0x09),
        0x0B,
        0x0C,
        *range(0x0E, 0x20),
        *range(0xD800, 0xE000),
        0xFFFE,
        0xFFFF,
    )
}


def _xml_safe(value):
    """``value`` with every string's XML-invalid characters shown as pictures (``printable``).

    The views stage writes names through ``printable`` already; this covers specs from elsewhere
    (older runs, a user's spec)."""
    if isinstance(value, str):
        return value.translate(_XML_INVALID)
    if isinstance(value, dict):
        return {k: _xml_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_xml_safe(v) for v in value]
    return value


def _vl_version(spec: Mapping[str, Any]) -> str | None:
    """The vl-convert version string ("6.4") matching a spec's $schema, or None (its default)."""
    import vl_convert

    schema = str(spec.get("$schema", ""))
    marker = "/vega-lite/v"
    if marker not in schema:
        return None
    parts = schema.split(marker, 1)[1].split(".json", 1)[0].split(".")
    try:
        wanted = (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)
    except ValueError:
        return None
    known = []
    for v in vl_convert.get_vegalite_versions():
        major, minor = (int(p) for p in v.split(".")[:2])
        if major == wanted[0]:
            known.append(((major, minor), v))
    if not known:
        return None
    not_newer = [k for k in known if k[0] <= wanted]
    return max(not_newer or known)[1]


def render(spec: Mapping[str, Any], fmt: str = "png", *, scale: float = 1.0) -> bytes:
    """Draw a Vega-Lite spec without a browser (vl-convert), as PNG or SVG bytes.

    The Vega-Lite version is taken from the spec's ``$schema`` (Altair 6 writes v6.x): the
    newest version vl-convert bundles that is not newer than the schema's, within its major.

    Args:
        spec: a Vega-Lite spec dict.
        fmt: "png" or "svg".
        scale: PNG pixel scale (ignored for SVG).

    Example:
        >>> from deepeyes_keras.charts.overview import overview_spec
        >>> render(overview_spec({"step": [1], "loss": [1.0]}), "svg")[:4]
        b'<svg'
    """
    import vl_convert

    if fmt not in ("png", "svg"):
        raise ValueError(
            f"Invalid value for argument fmt. Received: fmt={fmt!r}. Expected 'png' or 'svg'."
        )
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(
            f"Invalid value for argument scale. Received: scale={scale!r}. Expected a number > 0."
        )
    clean = _xml_safe(json.loads(spec_json(spec)))
    version = _vl_version(clean)
    if fmt == "svg":
        svg = vl_convert.vegalite_to_svg(clean, vl_version=version)
        # Vega-Lite writes titles into its ARIA descriptions as expression strings, where a
        # backslash in a name ("\x1b") is read as an escape: keep the SVG valid XML.
        return svg.translate(_XML_INVALID).encode("utf-8")
    # A picture needs no ARIA descriptions (the source of the escapes above).
    clean["config"] = {**clean.get("config", {}), "aria": False}
    return vl_convert.vegalite_to_png(clean, vl_version=version, scale=float(scale))
