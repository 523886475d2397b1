"""The ``deepeyes`` mkdocs plugin: DeepEyes runs as linked, interactive, offline pages.

In ``mkdocs.yml`` (the options are :class:`deepeyes_keras.site.config.DeepEyesConfig`)::

    plugins:
      - search
      - deepeyes:
          runs: deepeyes_runs        # directory (or list) of runs, relative to mkdocs.yml

Generated pages (``<section>`` = ``deepeyes``; :mod:`deepeyes_keras.site.generated`):
``deepeyes/`` lists the runs, ``deepeyes/<run>/`` is a run's overview,
``deepeyes/<run>/<layer>/`` the linked views of one layer (named after it) with a snapshot
selector, and ``deepeyes/compare/`` puts two runs side by side. The old layer URLs
``deepeyes/<run>/L<i>/`` are small pages that redirect to the new ones. Beside each snapshot's
views, ``views/step-N/L<i>.findings.html`` holds that layer's findings at that snapshot, which
its page fetches when the snapshot is chosen (:mod:`deepeyes_keras.site.findings_html`).
Authors embed a chart in their own pages with a fenced ``deepeyes`` block
(:mod:`deepeyes_keras.site.blocks`, ``viewer_site/guide/embedding.md``).

The chart specs the run directory holds are copied into the site and fetched by URL, so a page
loads only the snapshot it shows (:mod:`deepeyes_keras.site.runs`): layer views as they are
(gzipped; the page script decompresses them) with the thumbnails file their layer's views share
(the page script joins it in before drawing); vega, vega-lite and
vega-embed come from the site itself (:mod:`deepeyes_keras.site.bundle`), so nothing is
requested from another origin. With the ``offline`` option (default on) the plugin also keeps
the theme from loading anything from elsewhere: the mkdocs and readthedocs themes'
highlight.js, mkdocs-material's Google Fonts (``theme.font``) and the iframe-worker shim that
material's ``offline`` plugin adds from unpkg.com. Runs are read with
:func:`deepeyes_keras.load_run`, so building a site never imports TensorFlow. Under
``mkdocs serve`` the runs directory is watched: snapshots written during training trigger a
rebuild. Unreadable snapshots are skipped with a warning naming the file (``--strict`` fails).

This module holds the mkdocs hooks only; it is the entry point
``deepeyes_keras.site.plugin:DeepEyesPlugin`` (see ``pyproject.toml``).
"""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path

from mkdocs.plugins import BasePlugin, event_priority, get_plugin_logger
from mkdocs.structure.files import File, Files, InclusionLevel
from mkdocs.structure.nav import Navigation
from mkdocs.utils import get_relative_url

from deepeyes_keras.site import blocks, generated
from deepeyes_keras.site.bundle import vega_bundle
from deepeyes_keras.site.config import DeepEyesConfig, section_prefix
from deepeyes_keras.site.findings_html import findings_files
from deepeyes_keras.site.nav import with_runs_section
from deepeyes_keras.site.published import load_published_runs
from deepeyes_keras.site.runs import SiteRun, find_run_dirs, load_site_runs, resolve

log = get_plugin_logger("deepeyes")

ASSETS = Path(__file__).parent / "assets"


class DeepEyesPlugin(BasePlugin[DeepEyesConfig]):
    """Generates the DeepEyes pages of an mkdocs site from run directories."""

    def __init__(self):
        self.runs: list[SiteRun] = []
        self.published: list[SiteRun] = []
        self.section = "deepeyes"
        self._generated: dict[str, generated.GeneratedPage] = {}
        self._embeds: dict[str, blocks.Placeholders] = {}
        self._source = ""
        self._site_links: list[tuple[str, str]] = []

    def on_config(self, config):
        if not self.config.enabled:
            return config
        self.section = section = section_prefix(self.config.section)
        if self.config.offline and config.theme.name in ("mkdocs", "readthedocs"):
            if config.theme.get("highlightjs"):
                log.info(
                    "offline: switching off the theme's highlight.js (loaded from a CDN); "
                    "set the deepeyes option offline: false to keep it."
                )
                config.theme["highlightjs"] = False
        if self.config.offline and config.theme.name == "material":
            if config.theme.get("font") is not False:
                log.info(
                    "offline: setting the material theme's font: false (it loads Google Fonts "
                    "from another host); set the deepeyes option offline: false to keep them."
                )
                config.theme["font"] = False
        for item in (f"{section}/assets/vega.js", f"{section}/assets/viewer.js"):
            if item not in [str(s) for s in config.extra_javascript]:
                config.extra_javascript.append(item)
        if f"{section}/assets/viewer.css" not in config.extra_css:
            config.extra_css.append(f"{section}/assets/viewer.css")
        return config

    def on_files(self, files: Files, *, config) -> Files:
        if not self.config.enabled:
            return files
        dirs, self._source = find_run_dirs(
            _config_root(config), runs=self.config.runs, run_list=self.config.run_list
        )
        self.runs = load_site_runs(dirs, section=self.section)
        root = _config_root(config)
        self.published = load_published_runs(
            [resolve(root, p) for p in self.config.published], section=self.section
        )
        self._generated = generated.generated_pages(self.runs, self.section)
        for uri, page in self._generated.items():
            if files.get_file_from_path(uri) is not None:
                log.info(f"{uri} exists in docs_dir: it replaces the generated page.")
                continue
            front = f"---\ntitle: {front_matter_string(page.title)}\n---\n"
            files.append(
                File.generated(config, uri, content=front, inclusion=InclusionLevel.NOT_IN_NAV)
            )
        self._add_redirects(files, config)
        section = self.section
        assets = [
            (f"{section}/assets/viewer.js", ASSETS / "viewer.js"),
            (f"{section}/assets/viewer.css", ASSETS / "viewer.css"),
            *((uri, path) for run in self.runs + self.published for uri, path in run.specs.items()),
        ]
        for uri, path in assets:
            _replace(files, File.generated(config, uri, abs_src_path=str(path)))
        _replace(files, File.generated(config, f"{section}/assets/vega.js", content=vega_bundle()))
        for uri, html in (item for run in self.runs for item in findings_files(run).items()):
            _replace(files, File.generated(config, uri, content=html))  # fetched by viewer.js
        return files

    @event_priority(-100)  # after the other plugins' on_config: material's offline plugin
    def on_pre_build(self, *, config) -> None:
        if not (self.config.enabled and self.config.offline):
            return
        polyfills = config.extra.get("polyfills")
        if isinstance(polyfills, list) and any(is_remote(str(u)) for u in polyfills):
            # Material's offline plugin adds the iframe-worker shim from unpkg.com, which only
            # search from file:// needs; the charts need a server anyway (they are fetched).
            log.info(
                "offline: leaving out the theme's polyfills from other hosts "
                f"({', '.join(str(u) for u in polyfills if is_remote(str(u)))}); "
                "set the deepeyes option offline: false to keep them."
            )
            config.extra["polyfills"] = [u for u in polyfills if not is_remote(str(u))]

    def on_nav(self, nav: Navigation, *, config, files: Files) -> Navigation:
        if not self.config.enabled:
            return nav
        self._site_links = site_links(nav, self.section)
        if not self.config.nav:
            return nav
        if any(p.file.src_uri.startswith(f"{self.section}/") for p in nav.pages):
            return nav  # the author placed the DeepEyes pages in the nav already
        return with_runs_section(
            nav, files=files, runs=self.runs, section=self.section, title=self.config.nav_title
        )

    def on_page_markdown(self, markdown: str, *, page, config, files: Files) -> str:
        if not self.config.enabled or self._is_generated(page):
            return markdown
        link, where = _linker(page, files), f"Doc file '{page.file.src_uri}': deepeyes block"
        embeds = self._embeds[page.file.src_uri] = blocks.Placeholders()

        def replace(body: str) -> str:
            n = len(embeds.blocks)
            # A run directory wins over a published copy of the same run (listed first).
            runs = self.runs + self.published
            return embeds.add(blocks.embed(body, runs=runs, link=link, n=n, where=where))

        return blocks.replace_blocks(markdown, replace)

    def on_page_content(self, html: str, *, page, config, files: Files) -> str:
        if not self.config.enabled:
            return html
        if self._is_generated(page):
            return generated.render(
                self._generated[page.file.src_uri],
                self.runs,
                link=_linker(page, files),
                section=self.section,
                source=self._source,
                site_links=self._site_links,
            )
        embeds = self._embeds.get(page.file.src_uri)
        return embeds.fill(html) if embeds else html

    def on_serve(self, server, *, config, builder):
        if not self.config.enabled:
            return server
        root = _config_root(config)
        if self.config.run_list:
            paths = [resolve(root, p) for p in self.config.run_list]
        else:
            paths = [resolve(root, p) for p in self.config.runs]
            # Watching needs the directory; training creates runs inside it later.
            paths[0].mkdir(parents=True, exist_ok=True)
        for path in paths:
            if path.is_dir():
                server.watch(str(path))
        return server

    def _add_redirects(self, files: Files, config) -> None:
        """A small page at each old layer URL (``<run>/L<i>/``) sending on to the layer's page."""
        for old, new in generated.redirects(self.runs).items():
            target = files.get_file_from_path(new)
            path = generated.redirect_file(old, use_directory_urls=config.use_directory_urls)
            if target is None or files.get_file_from_path(path) is not None:
                continue  # the layer page is missing, or the author has a file there
            url = get_relative_url(target.url, path)
            files.append(File.generated(config, path, content=generated.redirect_html(url)))

    def _is_generated(self, page) -> bool:
        return page.file.src_uri in self._generated and bool(page.file.generated_by)


# Characters YAML may not hold, even in a double-quoted string (json.dumps writes the C0 controls
# as \u escapes already).
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ufffe\uffff]")


def front_matter_string(title: str) -> str:
    """A page title as a YAML double-quoted string, HTML-escaped (themes do not autoescape).

    Not ASCII-escaped: PyYAML cannot join the surrogate pair ``json.dumps`` writes for an emoji,
    the metadata then fails to parse and the page is titled "Index".

    Example:
        >>> front_matter_string("<b>é 😀</b>")
        '"&lt;b&gt;é 😀&lt;/b&gt;"'
    """
    text = json.dumps(escape(title), ensure_ascii=False)
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def is_remote(url: str) -> bool:
    """True for a URL that names a host (``https://...``, ``//...``), not a site path.

    Example:
        >>> is_remote("https://unpkg.com/iframe-worker/shim"), is_remote("assets/shim.js")
        (True, False)
    """
    return url.startswith("//") or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url) is not None


def site_links(nav: Navigation, section: str) -> list[tuple[str, str]]:
    """The site's top-level navigation entries other than the DeepEyes pages: (title, site
    path of the entry's first page), for the runs home page to lead to (guide, case studies)."""
    out = []
    for item in nav.items:
        page = first_page(item)
        if page is None or page.file.src_uri.startswith(f"{section}/"):
            continue
        fallback = "Home" if page.file.src_uri == "index.md" else Path(page.file.src_uri).stem
        title = item.title or page.title or fallback
        out.append((str(title), page.file.src_uri))
    return out


def first_page(item):
    """The first page of a navigation item (itself, or the first page inside a section)."""
    if item.is_page:
        return item
    for child in getattr(item, "children", None) or []:
        found = first_page(child)
        if found is not None:
            return found
    return None


def _config_root(config) -> Path:
    """The directory of mkdocs.yml, which the options' paths are relative to."""
    return Path(config.config_file_path).parent if config.config_file_path else Path.cwd()


def _linker(page, files: Files):
    """Turns the site path of a file into a URL relative to ``page``."""

    def link(uri: str) -> str:
        file = files.get_file_from_path(uri)
        return get_relative_url(file.url if file is not None else uri, page.url)

    return link


def _replace(files: Files, file: File) -> None:
    """Adds ``file``, in place of a file of the same path if there is one."""
    old = files.get_file_from_path(file.src_uri)
    if old is not None:
        files.remove(old)
    files.append(file)
