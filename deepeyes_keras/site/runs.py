"""The runs a site shows: finding run directories and loading them as :class:`SiteRun` records.

Runs are read with :func:`deepeyes_keras.run.reader.load_run` (NumPy only, so building a site
never imports TensorFlow), and every path inside a run directory comes from
:class:`deepeyes_keras.run.layout.RunLayout`. A :class:`SiteRun` holds what the pages need: the
manifest, the readable snapshot steps, the analysed layers, and the site path of each chart spec
the run directory holds, with the file to copy there (the pages fetch specs by URL, so a page
loads only the snapshot it shows). Layer views are copied in the form the run holds them
(``.vl.json.gz``, or the ``.vl.json`` of older runs), with the thumbnails file each layer's views
share, at the same relative place: the page script finds it from the spec's own URL.

Problems with one run never stop the build: an unreadable manifest skips the run, an unreadable
snapshot skips the snapshot, each with a warning naming the file (``mkdocs build --strict``
fails on them).

Example:
    >>> dirs, source = find_run_dirs(Path("."), runs=["deepeyes_runs"], run_list=[])
    >>> runs = load_site_runs(dirs, section="deepeyes")  # doctest: +SKIP
    >>> runs[0].uri("index.md")  # doctest: +SKIP
    'deepeyes/lenet/index.md'
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from mkdocs.plugins import get_plugin_logger

from deepeyes_keras.run.layout import MANIFEST, RunLayout, damage_advice, is_run_dir
from deepeyes_keras.run.reader import Run, load_run
from deepeyes_keras.run.view_files import view_is_whole

log = get_plugin_logger("deepeyes")

RESERVED_SLUGS = {"assets", "compare", "index"}
"""Names the plugin's own pages take under the section: a run called so gets another slug."""
LAYER_KEY = re.compile(r"^L\d+$")
RESERVED_LAYER_SLUGS = {"index", "views"}
"""Names a run's own files take under its directory: a layer called so gets another slug.
Names like ``L0`` are reserved too (case-insensitively): they are the old layer URLs, which
redirect to the layer pages (:func:`deepeyes_keras.site.generated.redirects`)."""
RUN_VIEWS = ("overview", "histograms")
"""The chart specs of a whole run (one file each, updated at every snapshot)."""


@dataclass
class SiteLayer:
    """One analysed layer of a run, as the site shows it."""

    key: str
    name: str
    kind: str
    n_filters: int
    info: dict
    views: dict[int, str] = field(default_factory=dict)  # step -> site path of its spec
    slug: str = ""  # URL name of its page, from its name (:func:`assign_layer_slugs`)

    @property
    def page(self) -> str:
        """The page's path in the run's directory of the site: ``conv1.md``."""
        return f"{self.slug or self.key}.md"

    @property
    def old_page(self) -> str:
        """Where the page was before layer pages were named after layers: ``L0.md``."""
        return f"{self.key}.md"


@dataclass
class SiteRun:
    """One run directory, loaded without TensorFlow, with the site paths of its pages and specs."""

    name: str
    slug: str
    path: Path
    section: str
    manifest: dict
    steps: list[int]
    skipped: list[str]
    layers: list[SiteLayer]
    overview: str | None = None
    histograms: str | None = None
    findings: dict | None = None
    step_findings: dict[int, dict | None] = field(default_factory=dict)  # None: not computed
    proposal: dict | None = None  # redesign/proposal.json (`deepeyes redesign RUN`)
    verification: dict | None = None  # redesign/verification.json (`... --verify`)
    specs: dict[str, Path] = field(default_factory=dict)  # site path -> spec/thumbnails to copy
    published: bool = False  # only frozen chart specs (deepeyes publish), no pages

    @property
    def status(self) -> str:
        return str(self.manifest.get("status") or "unknown")

    @property
    def last_step(self) -> int | None:
        return self.steps[-1] if self.steps else None

    @property
    def model(self) -> dict:
        return self.manifest.get("model") or {}

    def uri(self, name: str) -> str:
        return f"{self.section}/{self.slug}/{name}"


# ----------------------------------------------------------------------------- finding runs


def resolve(root: Path, path: str) -> Path:
    """``path`` (``~`` expanded) relative to ``root``, the directory of mkdocs.yml."""
    return (root / Path(path).expanduser()).resolve()


def find_run_dirs(root: Path, *, runs: list[str], run_list: list[str]) -> tuple[list[Path], str]:
    """The run directories to show, and how to name where they come from in the home page.

    ``run_list`` (when given) names run directories; otherwise each entry of ``runs`` is a run
    directory or a directory of runs (a missing one adds no run: training creates it later).
    """
    if run_list:
        return listed_run_dirs(root, run_list), ", ".join(run_list)
    roots = [resolve(root, item) for item in runs]
    return runs_under(roots), ", ".join(map(str, roots))


def listed_run_dirs(root: Path, run_list: list[str]) -> list[Path]:
    """The entries of ``run_list`` that are run directories; a warning for each other one."""
    dirs = []
    for item in run_list:
        path = resolve(root, item)
        if is_run_dir(path):
            dirs.append(path)
        else:
            log.warning(
                f"run_list entry {item!r} ({path}) is not a DeepEyes run "
                f"directory: it has no {MANIFEST}."
            )
    return dirs


def runs_under(roots: list[Path]) -> list[Path]:
    """Each root that is a run, and the runs directly inside the others (by name, no repeats)."""
    dirs: list[Path] = []
    for root in roots:
        if is_run_dir(root):
            dirs.append(root)
        elif not root.is_dir():
            log.info(f"No runs directory at {root} yet: it adds no run to the site.")
        else:
            dirs += sorted(
                d
                for d in root.iterdir()
                if d.is_dir() and not d.name.startswith(".") and is_run_dir(d)
            )
    return list(dict.fromkeys(dirs))


# ----------------------------------------------------------------------------- loading runs


SLUG_MAX = 120  # characters of a page's slug at most (longer names are cut; uniqueness kept)


def slug_for(name: str, taken: set[str]) -> str:
    """A URL-safe, unique (case-insensitively, within ``taken``) name for a run's pages.

    Example:
        >>> taken = set()
        >>> slug_for("<i>run</i>", taken), slug_for("index", taken), slug_for("i-run-i", taken)
        ('i-run-i', 'index-run', 'i-run-i-2')
    """
    return unique_slug(name, taken, fallback="run", reserved=lambda s: s in RESERVED_SLUGS)


def layer_slug(name: str, taken: set[str]) -> str:
    """A URL-safe, unique (case-insensitively, within ``taken``) name for a layer's page.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` (the ``/`` of a nested
    model's layer, spaces, markup) become ``-``; names the run's own files or the old
    ``L<i>`` URLs take get ``-layer`` appended.

    Example:
        >>> taken = set()
        >>> layer_slug("encoder/conv 1", taken), layer_slug("L1", taken), layer_slug("views", taken)
        ('encoder-conv-1', 'L1-layer', 'views-layer')
        >>> layer_slug("Encoder-Conv-1", taken), layer_slug("<>", taken)
        ('Encoder-Conv-1-2', 'layer')
    """

    def reserved(slug: str) -> bool:
        return slug in RESERVED_LAYER_SLUGS or LAYER_KEY.match(slug.upper()) is not None

    return unique_slug(name, taken, fallback="layer", reserved=reserved)


def unique_slug(name: str, taken: set[str], *, fallback: str, reserved) -> str:
    """``name`` made URL-safe, ``-<fallback>`` appended if ``reserved(lowercase slug)``, then
    ``-2``, ``-3``... until no slug in ``taken`` matches it case-insensitively (it is added)."""
    base_slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    # A file name must stay under the file system's 255 bytes, suffixes and .html included.
    base_slug = base_slug[:SLUG_MAX].rstrip("-.") or fallback
    if reserved(base_slug.lower()):
        base_slug += f"-{fallback}"
    slug, n = base_slug, 1
    while slug.lower() in taken:
        n += 1
        slug = f"{base_slug}-{n}"
    taken.add(slug.lower())
    return slug


def assign_layer_slugs(layers: list[SiteLayer]) -> None:
    """Gives each layer of one run its page's slug, in the manifest's order (stable URLs)."""
    taken: set[str] = set()
    for layer in layers:
        layer.slug = layer_slug(layer.name, taken)


def read_run(path: Path) -> Run | None:
    """:func:`load_run`, its warnings logged as build warnings; None when the run is unreadable."""
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
    return run


def layer_of(info: dict, *, where: str) -> SiteLayer | None:
    """A SiteLayer (no views yet) of a manifest's layer entry; None, and a warning starting with
    ``where``, if its key is invalid (keys reach paths: never trust them blindly)."""
    key = str(info.get("key", ""))
    if not LAYER_KEY.match(key):
        log.warning(
            f"{where}: layer {info.get('name')!r} has an invalid key {key!r}; it is left out."
        )
        return None
    return SiteLayer(
        key=key,
        name=str(info.get("name", key)),
        kind=str(info.get("kind", "")),
        n_filters=int(info.get("n_filters") or 0),
        info=info,
    )


def site_layer(site: SiteRun, layout: RunLayout, info: dict) -> SiteLayer | None:
    """An analysed layer of the manifest with its layer views and their thumbnails file; None
    (and a warning) if its key is invalid."""
    layer = layer_of(info, where=f"Run {site.path}")
    if layer is None:
        return None
    key = layer.key
    shared = False  # whether a view names the layer's thumbnails file
    for step in site.steps:
        spec = layout.view_file(key, step)
        if usable_spec(spec):
            layer.views[step] = site_spec(site, layout, spec)
            shared |= spec == layout.view(key, step)
    thumbnails = layout.thumbnails(key)
    if shared and not thumbnails.is_file():
        log.warning(
            f"{thumbnails} is missing: the views of layer {layer.name!r} show no thumbnails. "
            "Run `deepeyes maps RUN` to write it again."
        )
    elif shared and usable_spec(thumbnails):
        site_spec(site, layout, thumbnails)
    return layer


def usable_spec(spec: Path) -> bool:
    """True for a chart spec (or thumbnails file) that exists and is whole; a warning naming a
    damaged one.

    A plain file is checked by a few bytes (specs reach several MB; the browser parses them), a
    gzipped one by decompressing it, so a zeroed, truncated or overwritten file is left out of
    the site instead of failing in the page.
    """
    if not spec.is_file():
        return False
    if view_is_whole(spec):
        return True
    log.warning(
        f"{spec} is damaged (not a whole JSON object, {spec.stat().st_size} bytes): the site "
        f"leaves it out. {damage_advice(spec)}"
    )
    return False


def site_spec(site: SiteRun, layout: RunLayout, spec: Path) -> str:
    """The site path of a chart spec of the run (at the same place as in the run directory)."""
    uri = site.uri(layout.relative(spec))
    site.specs[uri] = spec
    return uri


def load_site_run(path: Path, *, section: str, taken: set[str]) -> SiteRun | None:
    """The run directory at ``path`` as the site shows it, or None if it cannot be read."""
    run = read_run(path)
    if run is None:
        return None
    site = SiteRun(
        name=str(run.name),
        slug=slug_for(path.name, taken),
        path=path,
        section=section,
        manifest=run.manifest,
        steps=[snap.step for snap in run.snapshots],
        skipped=list(run.skipped),
        layers=[],
    )
    layout = run.layout
    for name in RUN_VIEWS:
        spec = layout.view(name)
        if site.steps and usable_spec(spec):
            setattr(site, name, site_spec(site, layout, spec))
    for info in run.manifest.get("analysed_layers") or []:
        layer = site_layer(site, layout, info)
        if layer is not None:
            site.layers.append(layer)
    assign_layer_slugs(site.layers)
    # written by the findings stage (deepeyes_keras.derive.findings), read through the reader
    site.step_findings = {snap.step: snap.findings for snap in run.snapshots}
    site.findings = site.step_findings[site.steps[-1]] if site.steps else None
    # written by `deepeyes redesign` (deepeyes_keras.redesign), read through the reader
    site.proposal, site.verification = run.proposal, run.verification
    return site


def load_site_runs(paths: list[Path], *, section: str) -> list[SiteRun]:
    """The readable runs among ``paths``, newest first (by creation time, then name)."""
    taken: set[str] = set()
    runs = [r for r in (load_site_run(p, section=section, taken=taken) for p in paths) if r]
    runs.sort(key=lambda r: (str(r.manifest.get("created") or ""), r.name), reverse=True)
    return runs
