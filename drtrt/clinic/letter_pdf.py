"""A letter's PDF: the same HTML, printed on A4 by headless Chromium driven by Playwright (``page.pdf``).

Why a browser rather than a Python PDF library: the letter is already HTML with print CSS, and the
station's operators print it from their browser; a browser engine prints exactly what they see, in every
script the catalogues hold, with the pictures, from one source. Playwright (extra ``pdf``) drives the
system's Chromium (``DRTRT_CHROMIUM``, else ``chromium`` / ``chromium-browser`` / ``google-chrome`` on
PATH): nothing is downloaded. The page is loaded from a string with every request blocked, so a letter
cannot make the browser fetch anything. Without Playwright or Chromium: one line saying so, and that the
HTML letter prints from any browser.
"""

from __future__ import annotations

import os
import shutil

from drtrt.errors import DataError

_BROWSERS = ("chromium", "chromium-browser", "google-chrome")
NO_RENDERER = ("no PDF renderer here: {why} — install drtrt[pdf] (Playwright) and Chromium (apt-get install "
               "chromium), or write the .html letter and print it from a browser")


def chromium_path() -> str | None:
    """The Chromium to print with (None: none found)."""
    chosen = os.environ.get("DRTRT_CHROMIUM")
    if chosen:
        return chosen if os.path.isfile(chosen) else None
    return next((found for name in _BROWSERS if (found := shutil.which(name))), None)


def html_to_pdf(page: str) -> bytes:
    """``page`` (self-contained HTML) as PDF bytes, A4 with the page's own print CSS and margins.
    DataError (one line) when no renderer is available or the browser fails."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        raise DataError(NO_RENDERER.format(why="Playwright for Python is not installed")) from None
    browser_path = chromium_path()
    if browser_path is None:
        raise DataError(NO_RENDERER.format(why="Chromium was not found"))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path, args=["--disable-gpu"])
            try:
                tab = browser.new_page()
                tab.route("**/*", lambda route: route.abort())        # nothing leaves the machine
                tab.set_content(page, wait_until="load")
                return tab.pdf(format="A4", print_background=True, prefer_css_page_size=True)
            finally:
                browser.close()
    except Error as exc:
        raise DataError(NO_RENDERER.format(why=f"the browser failed ({str(exc).splitlines()[0]})")) from None
