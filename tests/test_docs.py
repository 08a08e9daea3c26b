"""The documentation site builds strictly, as in CI, and works offline.

``mkdocs build --strict`` fails on any warning: a broken link or anchor, a page
missing from the nav, a docstring mkdocstrings cannot read. The built site
must load nothing from the network (the life-cycle diagram's mermaid.js is
vendored), and its API reference must list the public methods.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

REMOTE_ASSET = re.compile(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"(?:https?:)?//[^\"]*\"")
"""A page element that the browser would fetch from another host (links to read, <a>, are fine)."""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built by ``mkdocs build --strict`` into a temporary folder (once for the module)."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    problems = [line for line in result.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert result.returncode == 0, "\n".join(problems) or result.stderr
    return out


def test_strict_build_has_every_nav_page(site: Path) -> None:
    for page in ["index.html", "lifecycle/index.html", "web/index.html", "deployment/index.html"]:
        assert (site / page).is_file(), page


def test_site_loads_nothing_from_the_network(site: Path) -> None:
    offenders = {
        str(page.relative_to(site)): found
        for page in site.rglob("*.html")
        if (found := REMOTE_ASSET.findall(page.read_text(encoding="utf-8")))
    }
    assert not offenders


def test_lifecycle_diagram_renders_offline(site: Path) -> None:
    page = (site / "lifecycle" / "index.html").read_text(encoding="utf-8")
    # superfences' custom fence leaves the diagram source in a <pre class="mermaid">...
    assert '<pre class="mermaid">' in page
    assert "stateDiagram-v2" in page
    # ...and the page loads the vendored mermaid.js, which defines `mermaid` before
    # material's bundle would fetch it from a CDN.
    script = re.search(r'<script src="([^"]*mermaid\.min\.js)"', page)
    assert script, "the vendored mermaid.min.js is not loaded"
    assert (site / "lifecycle" / script.group(1)).resolve().is_file()


def test_api_reference_lists_the_public_methods(site: Path) -> None:
    controller = (site / "api" / "controller" / "index.html").read_text(encoding="utf-8")
    # Methods come from the controller's components (mixins): inherited members are shown.
    for method in ["push_tasks", "fetch_task", "wait_for_new_tasks", "start_local_workers", "read_log"]:
        assert f'id="rushpy.Controller.{method}"' in controller, method
    worker = (site / "api" / "worker" / "index.html").read_text(encoding="utf-8")
    assert 'id="rushpy.Worker.pop_task"' in worker
    errors = (site / "api" / "errors" / "index.html").read_text(encoding="utf-8")
    assert "RushError" in errors
