"""What the browser tests share: finding Chromium, serving a built site, launching Playwright,
and pages that record what they log and request.

Chromium is Debian's ``chromium`` package driven by Playwright (``/work/shared/DESIGN.md``:
Playwright's own browser cannot be downloaded here). If it is missing, :func:`chromium_or_reason`
tries ``apt-get install chromium`` (as root) and says why it could not, for the tests to skip on.

Playwright's sync API runs one instance per thread at a time (a second ``sync_playwright()``
while one is open raises "using Playwright Sync API inside the asyncio loop"), so the
``browser`` fixture of ``tests/conftest.py`` launches one per test module.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SETTLED = (
    "() => window.deepeyes && window.deepeyes.started && [...document.querySelectorAll("
    "'.deepeyes-chart')].every(e => ['ready', 'error'].includes(e.dataset.state)) && "
    "![...document.querySelectorAll('.deepeyes-findings-box')]"
    ".some(b => b.hasAttribute('aria-busy'))"
)
"""True once every chart of the page is drawn (or failed) and no findings are loading."""


def find_chromium() -> str | None:
    for candidate in (shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@functools.cache
def chromium_or_reason() -> tuple[str | None, str]:
    """(path of Chromium, "") or (None, why there is none)."""
    found = find_chromium()
    if found:
        return found, ""
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return None, "chromium is not installed and apt-get (as root) is not available"
    try:
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "chromium"],
        ):
            subprocess.run(command, check=True, capture_output=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as err:
        return None, f"chromium is not installed and `apt-get install chromium` failed: {err}"
    found = find_chromium()
    return found, "" if found else "apt-get installed no chromium executable"


@contextlib.contextmanager
def launched_browser():
    """A headless Chromium (Playwright ``Browser``); skips the test when there is none."""
    from playwright.sync_api import sync_playwright

    path, reason = chromium_or_reason()
    if path is None:
        pytest.skip(reason)
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        try:
            yield instance
        finally:
            instance.close()


class Server:
    """A static HTTP server of ``directory`` on a free local port, in a thread. Its URL is known
    before the site is built (material's instant navigation needs ``site_url`` to match it)."""

    def __init__(self, directory: Path):
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        handler = functools.partial(Quiet, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Watched:
    """A page of the served site with what it logged and requested. Every request to another
    host is recorded in ``foreign`` and refused."""

    def __init__(self, page, origin: str):
        self.page, self.origin = page, origin
        self.errors: list[str] = []
        self.console: list[str] = []
        self.requests: list[str] = []
        self.foreign: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))
        page.route("**/*", self._route)

    def _console(self, message) -> None:
        self.console.append(message.text)
        if message.type == "error":
            self.errors.append(message.text)

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith((self.origin, "data:", "blob:")):
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort()

    def open(self, path: str) -> None:
        self.page.goto(self.origin + path)
        self.settle()

    def settle(self) -> None:
        self.page.wait_for_function(SETTLED, timeout=60_000)

    def charts(self) -> list[dict]:
        return self.page.eval_on_selector_all(
            ".deepeyes-chart",
            "els => els.map(e => ({id: e.id, state: e.dataset.state, loaded: e.dataset.loaded,"
            " layout: e.dataset.layout || null, drawn: !!e.querySelector('canvas, svg')}))",
        )

    def specs(self) -> list[str]:
        """The site paths of the chart specs the page requested, in order."""
        return [urlsplit(u).path for u in self.requests if ".vl.json" in u]

    def warnings(self) -> list[str]:
        """What Vega warned about or failed at, and the page's errors."""
        return [m for m in self.console if m.startswith("WARN") or "ERROR" in m] + self.errors
