"""Headless Debian Chromium: the rendered DOM and a screenshot of a page, after its scripts ran."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

# No background traffic: this machine's network is closed, and Chromium would keep trying.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1440,1000",
    "--virtual-time-budget=20000",
]


def chromium() -> str:
    """The browser, or a skip outside CI; in CI (.ci/run installs it) a missing browser fails."""
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs Debian's chromium package")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip


def _visible_text(page: str) -> str:
    body = page[page.find("<body") :]
    return " ".join(re.sub(r"<[^>]+>", " ", body).split())


def _look(url: str, showing: tuple[str, ...], read: Callable[[str], str], looks: int = 4) -> str:
    """`read` of the page's DOM once its scripts have run, and once it shows every string in `showing`.

    The UI is a single-page app that fetches its data after loading: on a busy machine one look
    can catch it before it mounted (seen in CI: an empty body). It looks again, at most `looks`
    times, and returns the last look either way, so the caller's assertion shows what was there.
    """
    seen = ""
    for _ in range(looks):
        seen = read(_run("--dump-dom", url).stdout)
        if all(text in seen for text in showing):
            break
    return seen


def dom(url: str, showing: tuple[str, ...] = ()) -> str:
    """The page's DOM once its scripts have run (and it shows `showing`)."""
    return _look(url, showing, lambda page: page)


def rendered_text(url: str, showing: tuple[str, ...] = ()) -> str:
    """The page's visible text once its scripts have run (tags stripped, spaces folded)."""
    return _look(url, showing, _visible_text)


def screenshot(url: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(f"--screenshot={path}", url)
    return path
