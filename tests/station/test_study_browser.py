"""The validation study's page in a real browser (headless Chromium, Playwright): reached from the dashboard's
validation line, it passes axe while the study runs (visits waiting for a read) and once it is ready (the
command), in English and Spanish."""

from __future__ import annotations

import threading

import pytest
from station_helpers import station  # noqa: F401  (the fixture)
from station_helpers import wait_for
from test_programme_browser import _free_port
from test_station_browser import CHROMIUM, assert_accessible, sync_api
from test_station_study import ENDED, RUNNING, read, registered, study_clinic

uvicorn = pytest.importorskip("uvicorn", reason="the station needs the station extra (pip install 'drtrt[station]')")


def test_the_study_page_in_a_browser_is_accessible(station, tmp_path):
    client, worker, _ = station(study=registered(tmp_path))           # loopback, no login: one person, the lead
    visits = study_clinic(worker)
    now = [RUNNING]
    client.app.state.clock = lambda: now[0]
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(client.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=30, what="uvicorn")
        served = f"http://127.0.0.1:{port}"
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
            page = browser.new_context(locale="en-GB").new_page()
            page.goto(served + "/")
            page.click("#study-link")
            page.wait_for_url("**/study")
            assert page.locator("#study-waiting-visits li").count() == 3
            assert_accessible(page, "the study page while it runs")
            now[0] = ENDED
            for patient, grades in (("A", ("2", "0")), ("B", ("0", "0")), ("C", ("0", "0"))):
                read(client, visits[patient], *grades)
            page.reload()
            assert page.locator("#study-command").inner_text().startswith("drtrt validate run ")
            assert_accessible(page, "the ready study page")
            page.goto(served + "/lang/es?next=/study")
            assert "Estudio de validación" in page.locator("main").inner_text()
            assert_accessible(page, "the ready study page in Spanish")
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
