"""The vega, vega-lite and vega-embed scripts the site serves itself: :func:`vega_bundle`.

They come from vl-convert's bundle, so a built site requests nothing from another origin and
works offline. The plugin (:mod:`deepeyes_keras.site.plugin`) writes the bundle as
``<section>/assets/vega.js``; ``deepeyes_keras/site/assets/viewer.js`` calls the
``window.vegaEmbed`` it defines.
"""

from __future__ import annotations

import functools

from mkdocs.exceptions import PluginError


@functools.lru_cache(maxsize=4)
def vega_bundle(vl_version: str | None = None) -> str:
    """vega + vega-lite + vega-embed as one classic script setting ``window.vegaEmbed``.

    Cached per process (it takes about 2 s): ``mkdocs serve`` rebuilds reuse it.

    Example:
        >>> "window.vegaEmbed=" in vega_bundle()  # doctest: +SKIP
        True
    """
    try:
        import vl_convert
    except ImportError as err:  # a declared dependency, but say what to do
        raise PluginError(
            "The deepeyes plugin needs vl-convert-python for the vega bundle: "
            "pip install vl-convert-python"
        ) from err
    bundle = vl_convert.javascript_bundle(vl_version=vl_version or vegalite_version())
    # The bundle is a classic script whose top-level names (n, t, ...) would become globals that
    # clash with other scripts; in a function scope only the window.* it sets leak.
    return f"(function () {{\n{bundle}\n}}).call(window);\n"


def vegalite_version() -> str:
    """The newest Vega-Lite 6 that vl-convert bundles (Altair 6 writes v6 specs)."""
    import vl_convert

    six = [v for v in vl_convert.get_vegalite_versions() if v.startswith("6.")]
    if not six:
        raise PluginError(
            "The installed vl-convert-python bundles no Vega-Lite 6 "
            f"({vl_convert.get_vegalite_versions()}); upgrade it."
        )
    return max(six, key=lambda v: tuple(int(p) for p in v.split(".")))
