"""Options of the ``deepeyes`` mkdocs plugin: :class:`DeepEyesConfig` and its option types.

In ``mkdocs.yml``::

    plugins:
      - search
      - deepeyes:
          runs: deepeyes_runs        # directory (or list) of runs, relative to mkdocs.yml
          # run_list: [path/to/run_a, path/to/run_b]   # or these runs only
          # section: deepeyes        # URL prefix of the generated pages

The plugin itself is :class:`deepeyes_keras.site.plugin.DeepEyesPlugin`.
"""

from __future__ import annotations

import re

from mkdocs.config import base
from mkdocs.config import config_options as c
from mkdocs.exceptions import PluginError

SECTION_PATTERN = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")


class Paths(c.BaseConfigOption[list[str]]):
    """One path or a list of paths (``runs: deepeyes_runs`` or ``runs: [a, b]``)."""

    def __init__(self, default: list[str]):
        super().__init__()
        self.default = default

    def run_validation(self, value) -> list[str]:
        items = [value] if isinstance(value, str) else value
        if (
            not isinstance(items, list)
            or not items
            or not all(isinstance(v, str) and v for v in items)
        ):
            raise c.ValidationError(
                f"Expected a directory or a list of directories, received {value!r}."
            )
        return list(items)


class DeepEyesConfig(base.Config):
    """Options of the ``deepeyes`` plugin."""

    enabled = c.Type(bool, default=True)
    """Generate the DeepEyes pages (switch off to build the rest of the site alone)."""
    runs = Paths(default=["deepeyes_runs"])
    """Directory (or list of directories) holding run directories, or run directories
    themselves; relative to mkdocs.yml."""
    published = c.ListOfItems(c.Type(str), default=[])
    """Directories of published views (``deepeyes publish``), relative to mkdocs.yml: a
    ``deepeyes`` block whose run is absent shows the published chart."""
    run_list = c.ListOfItems(c.Type(str), default=[])
    """Specific run directories to show instead of every run under ``runs``."""
    section = c.Type(str, default="deepeyes")
    """URL prefix of the generated pages."""
    nav = c.Type(bool, default=True)
    """Add the generated pages to the navigation (unless the nav already lists the home page)."""
    nav_title = c.Type(str, default="DeepEyes")
    """Title of that navigation section."""
    offline = c.Type(bool, default=True)
    """Keep the site self-contained: switch off the highlight.js the mkdocs and readthedocs
    themes load from a CDN, mkdocs-material's Google Fonts (``theme.font: false``) and the
    polyfills from other hosts that material's ``offline`` plugin adds."""


def section_prefix(value: str) -> str:
    """The ``section`` option as a URL prefix without slashes at either end.

    It becomes part of every generated path, so anything but plain path segments is refused.

    Example:
        >>> section_prefix("/analysis/runs/")
        'analysis/runs'
    """
    section = value.strip("/")
    if not SECTION_PATTERN.match(section):
        raise PluginError(
            f"Invalid value for the deepeyes option section. Received: "
            f"{value!r}. Expected a URL path such as "
            "'deepeyes' or 'analysis/runs' (letters, digits, - and _)."
        )
    return section
