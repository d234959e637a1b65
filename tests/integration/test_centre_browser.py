"""The reading centre's pages in a real browser (headless Chromium, Playwright) against ``drtrt centre serve`` in a
subprocess, over a session pulled from a real Orthanc: a reader added by ``drtrt accounts add`` logs in, the queue
and the read page pass axe-core, the picture zooms, the read is saved; after the pages stop, ``centre push`` sends
that read as one VERIFIED SR; served with ``--dicomweb``, the reader's "Send final reads now" sends it while the
pages run."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("highdicom", reason="the centre needs the integration extra")
pytest.importorskip("starlette", reason="the centre's pages need the station extra")
from browser_checks import CHROMIUM, assert_accessible, needs_chromium, sync_api  # noqa: E402

pytestmark = needs_chromium
from centre_helpers import pulled_centre, studies  # noqa: E402
from orthanc_helpers import orthanc  # noqa: E402, F401  (the fixture)
from test_centre import srs  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from drtrt.cli import app  # noqa: E402


def serve(centre: Path, log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "drtrt.cli", "centre", "serve", str(centre), "--port", str(port),
                                "--pathway", "nhs", "--organisation", "Centro Sur", *extra], stdout=log.open("a"),
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, f"centre serve exited: {log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as answer:
                if answer.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"centre serve did not answer: {log.read_text()[-2000:]}")


def test_a_reader_reads_in_the_browser_and_push_sends_one_verified_report(tmp_path, orthanc):
    centre = pulled_centre(tmp_path, orthanc.dicomweb)
    added = subprocess.run([sys.executable, "-m", "drtrt.cli", "accounts", "add", "Eve Ruiz", "--role", "reader",
                            "--data-dir", str(centre)], input="7777\n", text=True, capture_output=True, timeout=120)
    assert added.returncode == 0, added.stdout + added.stderr
    study = studies(centre)["P-4", "20260303"]
    process, url = serve(centre, tmp_path / "centre.log")
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
            page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB").new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url + "/reads")
            page.wait_for_url("**/login")
            assert_accessible(page, "the centre's login")
            page.fill("input[name=name]", "Eve Ruiz")
            page.fill("input[name=pin]", "7777")
            page.click("button[type=submit]")
            page.wait_for_url("**/reads")
            assert page.locator("#read-queue tr[id^=queue-]").first.get_attribute("id") == f"queue-{study}"  # urgent
            assert_accessible(page, "the centre's queue")
            page.click(f'[id="queue-{study}"] a.read-link')
            page.wait_for_selector("#read-form")
            inner = page.locator(".read-current .zoom-inner").first
            page.wait_for_function("document.querySelector('.read-current img.base').naturalWidth > 0")
            before = inner.bounding_box()["width"]
            page.locator(".read-current button[data-zoom=in]").first.click()
            assert inner.bounding_box()["width"] > 1.4 * before                    # zoomed, scrolling in its frame
            assert_accessible(page, "the centre's read page")
            page.select_option("select[name=right_r]", "R3a")                      # agrees: refer urgently
            page.click("#read-submit")
            page.wait_for_url("**/reads")
            assert page.locator(f'[id="queue-{study}"]').count() == 0
            assert errors == []
            browser.close()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    before = len(orthanc.instances())
    pushed = CliRunner().invoke(app, ["centre", "push", str(centre), "--dicomweb", orthanc.dicomweb])
    assert pushed.exit_code == 0 and "1 verified report(s) sent" in pushed.output, pushed.output
    assert len(orthanc.instances()) == before + 1
    [sr] = [d for d in srs(orthanc) if "VerifyingObserverSequence" in d]
    assert (sr.StudyInstanceUID, sr.VerificationFlag) == (study, "VERIFIED")
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Eve Ruiz^"


def test_served_with_the_pacs_the_reader_sends_the_final_read_from_the_page(tmp_path, orthanc):
    centre = pulled_centre(tmp_path, orthanc.dicomweb)
    study = studies(centre)["P-4", "20260303"]
    process, url = serve(centre, tmp_path / "centre.log", "--dicomweb", orthanc.dicomweb, "--every", "3600")
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
            page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB").new_page()
            page.goto(url + "/login")
            page.fill("input[name=name]", "Cleo")
            page.fill("input[name=pin]", "5555")
            page.click("button[type=submit]")
            page.wait_for_url("**/reads")
            page.goto(f"{url}/reads/{study}")
            page.select_option("select[name=right_r]", "R3a")
            page.click("#read-submit")
            page.wait_for_url("**/reads")
            assert_accessible(page, "the centre's queue with its link to the PACS")
            page.click("#send-now")
            page.wait_for_url("**/reads")
            assert page.locator("#unsent-count").inner_text() == "No final read waits to be sent."
            assert page.locator("#link-problem").count() == 0
            assert page.locator("#pacs-reached").inner_text().startswith("The PACS was last reached at")
            browser.close()
        [sr] = [d for d in srs(orthanc) if "VerifyingObserverSequence" in d]     # while the pages still run
        assert (sr.StudyInstanceUID, str(sr.VerifyingObserverSequence[0].VerifyingObserverName)) == (study, "Cleo^")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)                                              # the link's thread stops with it
    said = (tmp_path / "centre.log").read_text()
    assert "reading centre stopped" in said and "Traceback" not in said, said
