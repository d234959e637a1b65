"""The programme's numbers in a real browser (headless Chromium, Playwright): the report file that
``drtrt programme-report`` writes opens from disk with every chart drawn and prints to PDF, and the
station's Programme page passes axe — and in both, no request leaves the machine (every request the
page makes is intercepted and must be file:, data: or the station's own localhost address)."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from station_helpers import station  # noqa: F401  (the fixture)
from station_helpers import wait_for
from test_station_browser import CHROMIUM, DOCS, assert_accessible, sync_api
from visit_fixture import at, clinic

from drtrt.clinic.programme import programme
from drtrt.clinic.programme_report import write_report

pytest.importorskip("matplotlib", reason="the charts need matplotlib (station extra)")
uvicorn = pytest.importorskip("uvicorn", reason="the station needs the station extra (pip install 'drtrt[station]')")
D = __import__("datetime").date.fromisoformat


def watched(page, allowed: tuple[str, ...]) -> list[str]:
    """Every URL ``page`` requests from now on; one outside ``allowed`` (prefixes) is aborted, and listed."""
    seen: list[str] = []

    def check(route):
        seen.append(route.request.url)
        if route.request.url.startswith(allowed):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", check)
    return seen


def charts_drawn(page) -> list[int]:
    """The drawn width of each chart picture (0: not drawn)."""
    return page.eval_on_selector_all("img.chart", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")


def test_the_report_file_opens_offline_draws_its_charts_and_prints(tmp_path):
    from drtrt.clinic.store import SessionStore
    from drtrt.clinic.visits import VisitBook

    with SessionStore(tmp_path / "session" / "session.db") as store:
        book = VisitBook(store)
        clinic(book)
        prog = programme([("session", book)], D("2026-02-16"), D("2026-03-08"), at("2026-03-16T09:00"))
    report = write_report(prog, tmp_path / "report")[0]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_context().new_page()
        requests = watched(page, ("file://", "data:"))
        page.goto(report.as_uri())
        widths = charts_drawn(page)
        assert len(widths) == 9 and all(w > 300 for w in widths), widths
        assert all(url.startswith(("file://", "data:")) for url in requests), requests
        assert page.locator("#summary td").nth(1).inner_text() == "5"
        assert_accessible(page, "the report file")
        pdf = page.pdf(format="A4")
        assert pdf.startswith(b"%PDF") and len(pdf) > 20_000
        with page.expect_event("requestfailed") as failed:        # the watch sees, and stops, a request out
            page.evaluate("document.body.insertAdjacentHTML('beforeend', "
                          "'<img src=\"https://cdn.example.org/c.png\">')")
        assert failed.value.url == requests[-1] == "https://cdn.example.org/c.png"
        browser.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(station):
    """The station's app over the hand-built clinic, served by uvicorn on localhost in a thread."""
    client, worker, _ = station()
    clinic(worker.book)
    client.app.state.clock = lambda: at("2026-03-16T09:00")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(client.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30, what="uvicorn")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def test_the_programme_page_in_a_browser_is_accessible_and_stays_on_the_machine(served, tmp_path):
    shots = tmp_path
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_context(locale="en-GB").new_page()
        requests = watched(page, (served + "/", "data:"))
        page.goto(served + "/")
        page.click("#nav-programme")
        page.wait_for_url("**/programme")
        page.fill("#programme-range input[name=from]", "2026-02-16")
        page.fill("#programme-range input[name=to]", "2026-03-08")
        page.click("#programme-range button[type=submit]")
        page.wait_for_url("**/programme?from=2026-02-16&to=2026-03-08")
        widths = charts_drawn(page)
        assert len(widths) == 9 and all(w > 300 for w in widths), widths
        assert "Referral rate by week" in page.locator("main").inner_text()
        assert_accessible(page, "the Programme page")
        if os.environ.get("DRTRT_UPDATE_SCREENSHOTS") == "1":        # the top of the page, for docs/station.md
            page.set_viewport_size({"width": 1000, "height": 1500})
            page.screenshot(path=str(DOCS / "programme.png"))
        page.goto(served + "/lang/es?next=/programme")
        assert "Visitas por semana" in page.locator("main").inner_text()
        assert_accessible(page, "the Programme page in Spanish")
        assert requests and all(url.startswith((served + "/", "data:")) for url in requests), requests
        page.screenshot(path=str(shots / "programme.png"), full_page=True)
        browser.close()
