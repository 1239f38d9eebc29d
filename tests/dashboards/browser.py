"""Headless Chromium for the report and dashboard tests (Debian's ``chromium`` package).

Like the PostgreSQL cases (``PROMPTSWEEP_TEST_PG_URL``, tests/conftest.py), the browser tests skip when
no Chromium is found here, and fail when ``PROMPTSWEEP_TEST_CHROMIUM`` names one that is missing:
``.ci/run`` installs Chromium and sets it, so CI always runs them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ENV = "PROMPTSWEEP_TEST_CHROMIUM"
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)

#: Appended to a page: once loaded (and plotly has drawn), writes what overflows the viewport into the DOM.
MEASURE_SCRIPT = """
<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var root = document.documentElement, width = root.clientWidth, wide = [];
    document.querySelectorAll("body *").forEach(function (el) {
      var right = el.getBoundingClientRect().right;
      if (right > width + 0.5 && !el.closest(".table-wrap, .plot")) {
        wide.push(el.tagName.toLowerCase() + " " + Math.round(right));
      }
    });
    var tables = Array.from(document.querySelectorAll("table")).map(function (t) {
      var box = t.getBoundingClientRect(), wrap = t.closest(".table-wrap") || t;
      return {right: Math.round(box.right), width: Math.round(box.width),
              scroll: wrap.scrollWidth, client: wrap.clientWidth};
    });
    var out = document.createElement("pre");
    out.id = "promptsweep-measure";
    out.textContent = JSON.stringify(
      {viewport: width, scrollWidth: root.scrollWidth, tables: tables, wide: wide.slice(0, 20)});
    document.body.appendChild(out);
  }, 300);
});
</script>
"""


def chromium_binary() -> str:
    """The Chromium to run: ``$PROMPTSWEEP_TEST_CHROMIUM`` (must exist), else one on ``PATH``; skips the
    test when there is none (install it: ``apt-get install -y chromium``)."""
    named = os.environ.get(CHROMIUM_ENV)
    if named:
        found = shutil.which(named)
        if not found:
            pytest.fail(
                f"{CHROMIUM_ENV}={named!r} is not an executable; install it: apt-get install -y chromium"
            )
        return found
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        f"no Chromium here: apt-get install -y chromium (.ci/run installs it and sets {CHROMIUM_ENV})"
    )


def dump_dom(url: str, *, width: int = 1280, height: int = 900, budget_ms: int = 10_000) -> str:
    """The DOM of ``url`` after its scripts ran (``--dump-dom``; ``budget_ms`` of virtual time, which
    runs ahead while the page is idle), in a window of ``width`` x ``height`` pixels."""
    return _run(url, f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}", "--dump-dom")


def screenshot(url: str, out: Path, *, width: int = 1280, height: int = 900, budget_ms: int = 10_000) -> Path:
    """A PNG of ``url`` as Chromium renders it (``--screenshot``)."""
    _run(url, f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}", f"--screenshot={out}")
    return out


def _run(url: str, *args: str) -> str:
    binary = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="promptsweep-chromium-") as profile:
        done = subprocess.run(
            [binary, *_FLAGS, f"--user-data-dir={profile}", *args, url],
            capture_output=True,
            text=True,
            timeout=180,
        )
    if done.returncode != 0:
        raise AssertionError(f"chromium exited with {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def measure(html_file: Path, *, width: int) -> dict[str, Any]:
    """Load a copy of ``html_file`` with :data:`MEASURE_SCRIPT` in a ``width``-pixel window; return what
    it measured: ``viewport`` (px), the page's ``scrollWidth``, each table's ``right`` edge, ``width``
    and its box's ``scroll`` / ``client`` widths, and the elements (outside tables' and plots' boxes)
    that reach past the viewport."""
    probe = html_file.with_name(f"{html_file.stem}-measured.html")
    probe.write_text(html_file.read_text(encoding="utf-8").replace("</body>", MEASURE_SCRIPT + "</body>"))
    dom = dump_dom(probe.as_uri(), width=width)
    found = re.search(r'<pre id="promptsweep-measure">(.*?)</pre>', dom, re.S)
    assert found, "the measuring script did not run"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
