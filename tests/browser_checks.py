"""What every browser test needs: Debian's Chromium (Playwright's own download is unreachable here), Playwright and
axe-core, each skipping the test module with its reason when absent, and :func:`assert_accessible`."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="Debian's chromium is not installed (.ci/run installs it)")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (test extra)")
axe_sync = pytest.importorskip("axe_playwright_python.sync_playwright",
                               reason="axe-playwright-python is not installed (test extra)")


def assert_accessible(page, where: str) -> None:
    """axe-core finds no violation (any impact, its default rules) on ``page`` as it is now."""
    results = axe_sync.Axe().run(page)
    assert results.violations_count == 0, f"{where}: {results.generate_report()}"
