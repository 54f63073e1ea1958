"""The report opens in a real browser with no server and no network (headless Chromium).

How the check works, and why it is robust:

* The report is written from the synthetic analyses of ``test_report.py`` into a temp folder.
  The product page has no JavaScript; the test writes a *copy* of it, ``probe.html``, beside
  ``index.html`` (so every relative image path resolves the same way) with one inline script
  at the top of ``<head>``. That script records every error event in the capture phase (a
  broken image fires one there; so does an uncaught exception), wraps ``console.error``, and at
  the window's ``load`` event (which waits for every image to load or fail) writes each image's
  ``naturalWidth`` and the error list into a ``data-check`` attribute of ``<body>``.
* Chromium runs headless with ``--dump-dom``, which prints the DOM after the load event, and
  ``--enable-logging=stderr --v=0``, which logs every console message as a ``CONSOLE`` line on
  stderr. The test parses the attribute and scans stderr: every image must have a
  ``naturalWidth > 0`` and no error or console message may appear.
* Network-free: a fresh ``--user-data-dir``, background networking, component updates and sync
  off; the page is opened as a ``file://`` URL.

Skipped with a reason when no ``chromium``/``chromium-browser`` is on PATH; CI installs the
Debian package ``chromium`` (``.ci/run``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest

from dropoutlab.report import Skipped, write_report
from test_report import make_analyses, make_meta

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PROBE = """<script>
window.__errors = [];
addEventListener("error", function (e) {
  __errors.push(String(e.message || (e.target && (e.target.src || e.target.href)) || e.type));
}, true);
var __consoleError = console.error;
console.error = function () { __errors.push([].join.call(arguments, " "));
  __consoleError.apply(console, arguments); };
addEventListener("load", function () {
  var images = [].map.call(document.images, function (img) {
    return {src: img.getAttribute("src"), complete: img.complete, width: img.naturalWidth};
  });
  document.body.setAttribute("data-check", JSON.stringify({images: images, errors: __errors}));
});
</script>"""


def open_in_chromium(page: Path, profile: Path) -> tuple[dict, str]:
    """Load ``page`` headless; return the probe's report and Chromium's stderr."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
        "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r'<body[^>]*\bdata-check="([^"]*)"', done.stdout)
    assert match, f"the probe did not run; Chromium printed:\n{done.stdout[:2000]}"
    return json.loads(unescape(match.group(1))), done.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium on PATH "
                    "(Debian: apt-get install chromium; .ci/run installs it)")
def test_report_renders_in_chromium(tmp_path: Path) -> None:
    """Every image of the report loads and no console error appears in headless Chromium."""
    skipped = [Skipped("cifar-convnets", "Conv nets on CIFAR-10", "Table 4", "no data")]
    index = write_report(make_analyses(), tmp_path / "report", make_meta(), skipped=skipped)
    html = index.read_text(encoding="utf-8")
    assert "<script" not in html  # the product page needs no JavaScript
    probe = index.with_name("probe.html")
    probe.write_text(html.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")

    check, stderr = open_in_chromium(probe, tmp_path / "profile")

    expected_images = html.count("<img ")
    assert expected_images == 2
    assert len(check["images"]) == expected_images
    broken = [img["src"] for img in check["images"] if not img["complete"] or img["width"] <= 0]
    assert broken == [], f"images that did not load: {broken}"
    assert check["errors"] == []
    console = [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert console == [], "console messages:\n" + "\n".join(console)


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium on PATH")
def test_probe_catches_a_broken_image(tmp_path: Path) -> None:
    """The check can fail: a missing image and a script error are both caught."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head>" + PROBE + "</head><body>"
                    '<img src="missing.png"><script>notDefined()</script></body></html>',
                    encoding="utf-8")
    check, stderr = open_in_chromium(page, tmp_path / "profile")
    assert [img["width"] for img in check["images"]] == [0]
    assert any("missing.png" in e for e in check["errors"])
    assert any("notDefined" in e for e in check["errors"])
    assert "Uncaught ReferenceError" in stderr
