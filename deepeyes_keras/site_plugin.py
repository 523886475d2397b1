"""The ``deepeyes`` mkdocs plugin: DeepEyes runs as linked, interactive, offline pages.

In ``mkdocs.yml``::

    plugins:
      - search
      - deepeyes:
          runs: deepeyes_runs        # directory (or list) of runs, relative to mkdocs.yml
          # run_list: [path/to/run_a, path/to/run_b]   # or these runs only
          # section: deepeyes        # URL prefix of the generated pages

Generated pages (``<section>`` = ``deepeyes``): ``deepeyes/`` lists the runs, ``deepeyes/<run>/``
is a run's overview, ``deepeyes/<run>/L<i>/`` the linked views of its layer i with a snapshot
selector, and ``deepeyes/compare/`` puts two runs side by side. Authors embed a chart in their
own pages with a fenced block (see ``viewer_site/guide/embedding.md``)::

    ```deepeyes
    run: lenet
    view: layer          # overview, histograms or layer
    layer: conv1
    step: 300            # optional: default the last snapshot, else the nearest one
    ```

The chart specs the run directory holds (``<run>/views/``) are copied into the site and fetched by
URL, so a page loads only the snapshot it shows; vega, vega-lite and vega-embed come from the
site itself (vl-convert's bundle), so nothing is requested from another origin. The plugin reads
runs with :func:`deepeyes_keras.load_run`, so building a site never imports TensorFlow. Under
``mkdocs serve`` the runs directory is watched: snapshots written during training trigger a
rebuild. Unreadable snapshots are skipped with a warning naming the file (``--strict`` fails).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import secrets
import warnings
from html import escape
from pathlib import Path

from mkdocs.config import base
from mkdocs.config import config_options as c
from mkdocs.exceptions import PluginError
from mkdocs.plugins import BasePlugin, get_plugin_logger
from mkdocs.structure.files import File, Files, InclusionLevel
from mkdocs.structure.nav import Navigation, Section
from mkdocs.utils import get_relative_url

from deepeyes_keras import site_pages as pages
from deepeyes_keras.reader import load_run

log = get_plugin_logger("deepeyes")

ASSETS = Path(__file__).parent / "site_assets"
VIEWS = ("overview", "histograms", "layer")
BLOCK_KEYS = ("run", "view", "layer", "step", "caption", "if-missing")
RESERVED_SLUGS = {"assets", "compare", "index"}
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*?)[ \t]*$")
_SECTION = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
_LAYER_KEY = re.compile(r"^L\d+$")


class _Paths(c.BaseConfigOption[list[str]]):
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
    runs = _Paths(default=["deepeyes_runs"])
    """Directory (or list of directories) holding run directories, or run directories
    themselves; relative to mkdocs.yml."""
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
    themes load from a CDN."""


@functools.lru_cache(maxsize=4)
def vega_bundle(vl_version: str | None = None) -> str:
    """vega + vega-lite + vega-embed as one classic script setting ``window.vegaEmbed``.

    Cached per process (it takes about 2 s): ``mkdocs serve`` rebuilds reuse it.
    """
    try:
        import vl_convert
    except ImportError as err:  # a declared dependency, but say what to do
        raise PluginError(
            "The deepeyes plugin needs vl-convert-python for the vega bundle: "
            "pip install vl-convert-python"
        ) from err
    bundle = vl_convert.javascript_bundle(vl_version=vl_version or _vegalite_version())
    # The bundle is a classic script whose top-level names (n, t, ...) would become globals that
    # clash with other scripts; in a function scope only the window.* it sets leak.
    return f"(function () {{\n{bundle}\n}}).call(window);\n"


def _vegalite_version() -> str:
    """The newest Vega-Lite 6 that vl-convert bundles (Altair 6 writes v6 specs)."""
    import vl_convert

    six = [v for v in vl_convert.get_vegalite_versions() if v.startswith("6.")]
    if not six:
        raise PluginError(
            "The installed vl-convert-python bundles no Vega-Lite 6 "
            f"({vl_convert.get_vegalite_versions()}); upgrade it."
        )
    return max(six, key=lambda v: tuple(int(p) for p in v.split(".")))


def _slug(name: str, taken: set[str]) -> str:
    base_slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"
    if base_slug.lower() in RESERVED_SLUGS:
        base_slug += "-run"
    slug, n = base_slug, 1
    while slug.lower() in taken:
        n += 1
        slug = f"{base_slug}-{n}"
    taken.add(slug.lower())
    return slug


class DeepEyesPlugin(BasePlugin[DeepEyesConfig]):
    """Generates the DeepEyes pages of an mkdocs site from run directories."""

    def __init__(self):
        self.runs: list[pages.SiteRun] = []
        self._generated: dict[str, tuple] = {}
        self._embeds: dict[str, dict[str, str]] = {}
        self._source = ""
        self._static: list[tuple[str, Path]] = []
        self.section = "deepeyes"

    # ------------------------------------------------------------------------- configuration

    def _resolve(self, config, path: str) -> Path:
        root = Path(config.config_file_path).parent if config.config_file_path else Path.cwd()
        return (root / Path(path).expanduser()).resolve()

    def on_config(self, config):
        if not self.config.enabled:
            return config
        section = self.config.section.strip("/")
        if not _SECTION.match(section):
            raise PluginError(
                f"Invalid value for the deepeyes option section. Received: "
                f"{self.config.section!r}. Expected a URL path such as "
                "'deepeyes' or 'analysis/runs' (letters, digits, - and _)."
            )
        self.section = section
        if self.config.offline and config.theme.name in ("mkdocs", "readthedocs"):
            if config.theme.get("highlightjs"):
                log.info(
                    "offline: switching off the theme's highlight.js (loaded from a CDN); "
                    "set the deepeyes option offline: false to keep it."
                )
                config.theme["highlightjs"] = False
        for item in (f"{section}/assets/vega.js", f"{section}/assets/viewer.js"):
            if item not in [str(s) for s in config.extra_javascript]:
                config.extra_javascript.append(item)
        if f"{section}/assets/viewer.css" not in config.extra_css:
            config.extra_css.append(f"{section}/assets/viewer.css")
        return config

    def _run_dirs(self, config) -> list[Path]:
        if self.config.run_list:
            dirs = []
            for item in self.config.run_list:
                path = self._resolve(config, item)
                if (path / "manifest.json").is_file():
                    dirs.append(path)
                else:
                    log.warning(
                        f"run_list entry {item!r} ({path}) is not a DeepEyes run "
                        "directory: it has no manifest.json."
                    )
            self._source = ", ".join(self.config.run_list)
            return dirs
        roots = [self._resolve(config, item) for item in self.config.runs]
        self._source = ", ".join(map(str, roots))
        dirs: list[Path] = []
        for root in roots:
            if (root / "manifest.json").is_file():
                dirs.append(root)
            elif not root.is_dir():
                log.info(f"No runs directory at {root} yet: it adds no run to the site.")
            else:
                dirs += sorted(
                    d
                    for d in root.iterdir()
                    if d.is_dir() and not d.name.startswith(".") and (d / "manifest.json").is_file()
                )
        return list(dict.fromkeys(dirs))

    # ------------------------------------------------------------------------- runs

    def _load(self, path: Path, taken: set[str]) -> pages.SiteRun | None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                run = load_run(path)
            except (OSError, ValueError, KeyError, TypeError) as err:
                log.warning(f"Skipping run {path}: {err}")
                return None
        messages = [str(w.message) for w in caught]
        for message in messages:
            log.warning(message.removeprefix("DeepEyes: "))
        for file in run.skipped:  # named even if load_run's warning text changes
            if not any(file in m for m in messages):
                log.warning(f"skipping unreadable snapshot {file}")
        slug = _slug(path.name, taken)
        steps = [snap.step for snap in run.snapshots]
        section, views = self.section, path / "views"
        site = pages.SiteRun(
            name=str(run.name),
            slug=slug,
            path=path,
            section=section,
            manifest=run.manifest,
            steps=steps,
            skipped=list(run.skipped),
            layers=[],
        )
        for name in ("overview", "histograms"):
            spec = views / f"{name}.vl.json"
            if steps and spec.is_file():
                uri = site.uri(f"views/{name}.vl.json")
                self._static.append((uri, spec))
                setattr(site, name, uri)
        for info in run.manifest.get("analysed_layers") or []:
            key = str(info.get("key", ""))
            if not _LAYER_KEY.match(key):  # keys reach paths: never trust them blindly
                log.warning(
                    f"Run {path}: layer {info.get('name')!r} has an invalid key {key!r}; "
                    "it is left out."
                )
                continue
            layer = pages.SiteLayer(
                key=key,
                name=str(info.get("name", key)),
                kind=str(info.get("kind", "")),
                n_filters=int(info.get("n_filters") or 0),
                info=info,
            )
            for step in steps:
                spec = views / f"step-{step:08d}" / f"{key}.vl.json"
                if spec.is_file():
                    uri = site.uri(f"views/step-{step:08d}/{key}.vl.json")
                    self._static.append((uri, spec))
                    layer.views[step] = uri
            site.layers.append(layer)
        # the findings stage writes them into each snapshot record (deepeyes_keras.findings)
        site.findings = run.snapshots[-1].record.get("findings") if run.snapshots else None
        return site

    def on_files(self, files: Files, *, config) -> Files:
        if not self.config.enabled:
            return files
        self._static = []
        taken: set[str] = set()
        runs = [r for r in (self._load(p, taken) for p in self._run_dirs(config)) if r]
        runs.sort(key=lambda r: (str(r.manifest.get("created") or ""), r.name), reverse=True)
        self.runs = runs
        section = self.section
        self._generated = {
            f"{section}/index.md": ("home", "DeepEyes runs"),
            f"{section}/compare.md": ("compare", "Compare runs"),
        }
        for run in runs:
            self._generated[run.uri("index.md")] = ("run", run.name, run)
            for layer in run.layers:
                self._generated[run.uri(layer.page)] = ("layer", layer.name, run, layer)
        for uri, entry in self._generated.items():
            if files.get_file_from_path(uri) is not None:
                log.info(f"{uri} exists in docs_dir: it replaces the generated page.")
                continue
            # Titles go into templates unescaped (mkdocs themes do not autoescape): escape here.
            front = f"---\ntitle: {json.dumps(escape(entry[1]))}\n---\n"
            files.append(
                File.generated(config, uri, content=front, inclusion=InclusionLevel.NOT_IN_NAV)
            )
        assets = [
            (f"{section}/assets/viewer.js", ASSETS / "viewer.js"),
            (f"{section}/assets/viewer.css", ASSETS / "viewer.css"),
            *self._static,
        ]
        for uri, path in assets:
            self._replace(files, File.generated(config, uri, abs_src_path=str(path)))
        self._replace(
            files, File.generated(config, f"{section}/assets/vega.js", content=vega_bundle())
        )
        return files

    @staticmethod
    def _replace(files: Files, file: File) -> None:
        old = files.get_file_from_path(file.src_uri)
        if old is not None:
            files.remove(old)
        files.append(file)

    # ------------------------------------------------------------------------- navigation

    def on_nav(self, nav: Navigation, *, config, files: Files) -> Navigation:
        if not (self.config.enabled and self.config.nav):
            return nav
        if any(p.file.src_uri.startswith(f"{self.section}/") for p in nav.pages):
            return nav  # the author placed the DeepEyes pages in the nav already

        def page(uri):
            file = files.get_file_from_path(uri)
            return file.page if file is not None else None

        children = [page(f"{self.section}/index.md"), page(f"{self.section}/compare.md")]
        for run in self.runs:
            run_pages = [page(run.uri("index.md"))] + [page(run.uri(la.page)) for la in run.layers]
            children.append(Section(escape(run.name), [p for p in run_pages if p]))
        items = [*nav.items, Section(escape(self.config.nav_title), [p for p in children if p])]
        return _relinked(items)

    # ------------------------------------------------------------------------- pages

    def _linker(self, page, files: Files):
        def link(uri: str) -> str:
            file = files.get_file_from_path(uri)
            return get_relative_url(file.url if file is not None else uri, page.url)

        return link

    def _is_generated(self, page) -> bool:
        return page.file.src_uri in self._generated and bool(page.file.generated_by)

    def on_page_markdown(self, markdown: str, *, page, config, files: Files) -> str:
        if not self.config.enabled or self._is_generated(page):
            return markdown
        embeds: dict[str, str] = {}
        out = _replace_blocks(markdown, lambda body: self._embed(body, page, files, embeds))
        self._embeds[page.file.src_uri] = embeds
        return out

    def on_page_content(self, html: str, *, page, config, files: Files) -> str:
        if not self.config.enabled:
            return html
        if self._is_generated(page):
            entry = self._generated[page.file.src_uri]
            link, kind = self._linker(page, files), entry[0]
            if kind == "home":
                return pages.home_page(
                    self.runs, link=link, section=self.section, source=self._source
                )
            if kind == "compare":
                return pages.compare_page(self.runs, link=link, section=self.section)
            if kind == "run":
                return pages.run_page(entry[2], link=link)
            return pages.layer_page(entry[2], entry[3], link=link)
        for token, block in self._embeds.get(page.file.src_uri, {}).items():
            html = re.sub(rf"<p>\s*{token}\s*</p>", lambda _m, b=block: b, html)
            html = html.replace(token, block)
        return html

    # ------------------------------------------------------------------------- wiki blocks

    def _embed(self, body: str, page, files: Files, embeds: dict[str, str]) -> str:
        token = f"DEEPEYESEMBED{len(embeds)}X{secrets.token_hex(6)}"
        where = f"Doc file '{page.file.src_uri}': deepeyes block"
        try:
            opts = _parse_block(body)
            block = self._embed_html(opts, page, files, len(embeds))
        except _MissingRun as err:
            # The author expected this (e.g. a case study's runs are made by a script): a quiet
            # note instead of an error, and no warning, so `mkdocs build --strict` passes.
            log.info(f"{where}: {err}; showing its if-missing text")
            block = pages.notice(opts["if-missing"])
        except ValueError as err:
            log.warning(f"{where}: {err}")
            block = pages.notice(f"DeepEyes chart unavailable: {err}", kind="error")
        embeds[token] = block
        return token

    def _embed_html(self, opts: dict, page, files: Files, n: int) -> str:
        link = self._linker(page, files)
        if "run" not in opts:
            raise ValueError("no run given (add a line 'run: <run name>').")
        try:
            run = self._find_run(opts["run"])
        except ValueError as err:
            if "if-missing" in opts:
                raise _MissingRun(str(err)) from None
            raise
        view = opts.get("view", "layer" if "layer" in opts else "overview")
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}. Expected one of {', '.join(VIEWS)}.")
        step = None
        if "step" in opts:
            try:
                step = int(opts["step"])
            except ValueError:
                raise ValueError(f"invalid step {opts['step']!r}: expected an integer.") from None
        chart_id = f"deepeyes-embed-{n + 1}"
        if view == "layer":
            if "layer" not in opts:
                raise ValueError(f"view: layer needs a layer (one of {_names(run.layers)}).")
            layer = self._find_layer(run, opts["layer"])
            if not layer.views:
                raise ValueError(
                    f"layer {layer.name!r} of run {run.name!r} has no linked views "
                    "yet (its maps are being computed, or run `deepeyes maps RUN`)."
                )
            shown = _nearest(sorted(layer.views), step)
            caption = f"{run.name} › {layer.name}, step {shown}" + _asked(step, shown)
            return pages.embed_block(
                chart_id=chart_id,
                spec_url=link(layer.views[shown]),
                caption=opts.get("caption", caption),
                page_url=f"{link(run.uri(layer.page))}?step={shown}",
            )
        spec = run.overview if view == "overview" else run.histograms
        if spec is None:
            raise ValueError(f"run {run.name!r} has no {view} view yet.")
        shown = None
        if view == "histograms":
            shown = _nearest(run.steps, step)
            caption = f"{run.name}: perplexity histograms, step {shown}" + _asked(step, shown)
        else:
            caption = f"{run.name}: training curves"
        return pages.embed_block(
            chart_id=chart_id,
            spec_url=link(spec),
            snapshot=shown,
            caption=opts.get("caption", caption),
            page_url=link(run.uri("index.md")),
        )

    def _find_run(self, name: str) -> pages.SiteRun:
        for run in self.runs:
            if name in (run.name, run.slug, run.path.name):
                return run
        known = [r.name for r in self.runs]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown run {name!r}.{hint} Known runs: {known or 'none'}.")

    @staticmethod
    def _find_layer(run: pages.SiteRun, name: str) -> pages.SiteLayer:
        for layer in run.layers:
            if name in (layer.name, layer.key):
                return layer
        close = difflib.get_close_matches(name, [la.name for la in run.layers], n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown layer {name!r} in run {run.name!r}.{hint} "
            f"Analysed layers: {_names(run.layers)}."
        )

    # ------------------------------------------------------------------------- live

    def on_serve(self, server, *, config, builder):
        if not self.config.enabled:
            return server
        if self.config.run_list:
            paths = [self._resolve(config, p) for p in self.config.run_list]
        else:
            paths = [self._resolve(config, p) for p in self.config.runs]
            # Watching needs the directory; training creates runs inside it later.
            paths[0].mkdir(parents=True, exist_ok=True)
        for path in paths:
            if path.is_dir():
                server.watch(str(path))
        return server


# ----------------------------------------------------------------------------- helpers


def _names(layers) -> str:
    return ", ".join(repr(la.name) for la in layers) or "none"


def _nearest(steps: list[int], step: int | None) -> int:
    if not steps:
        raise ValueError("the run has no readable snapshot yet.")
    if step is None:
        return steps[-1]
    return min(steps, key=lambda s: (abs(s - step), s))


def _asked(step: int | None, shown: int) -> str:
    return "" if step is None or step == shown else f" (nearest snapshot to step {step})"


class _MissingRun(ValueError):
    """A block's run is absent and the block says what to show instead (``if-missing``)."""


def _parse_block(body: str) -> dict[str, str]:
    """``key: value`` lines; blank lines and ``# comments`` (also after a value) are ignored."""
    opts: dict[str, str] = {}
    for raw in body.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        key, value = key.strip().lower(), value.strip().strip("\"'")
        if not sep or not value:
            raise ValueError(f"cannot read line {raw.strip()!r}: expected 'key: value'.")
        if key not in BLOCK_KEYS:
            raise ValueError(f"unknown key {key!r}. Expected: {', '.join(BLOCK_KEYS)}.")
        opts[key] = value
    return opts


def _replace_blocks(markdown: str, replace) -> str:
    """Calls ``replace(body)`` for each ```` ```deepeyes ```` fenced block outside other code blocks
    and puts what it returns, as its own paragraph, in place of the block."""
    lines = markdown.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        fence, indent = match["fence"], match["indent"]
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = i + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        info = match["info"].split()
        if info and info[0].lower() == "deepeyes":
            body = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : end])
            out.extend(["", indent + replace(body), ""])
        else:  # another code block: left alone, deepeyes blocks inside it included
            out.extend(lines[i : end + 1])
        i = end + 1
    return "\n".join(out)


def _relinked(items: list) -> Navigation:
    """A Navigation over `items` with parent, previous and next links set again."""
    flat = []

    def walk(children, parent):
        for item in children:
            item.parent = parent
            if item.is_section:
                walk(item.children, item)
            elif item.is_page:
                flat.append(item)

    walk(items, None)
    for before, item, after in zip([None, *flat[:-1]], flat, [*flat[1:], None], strict=True):
        item.previous_page, item.next_page = before, after
    return Navigation(items, flat)
