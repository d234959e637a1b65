"""The station in a real browser (headless Chromium driven by Playwright) against the real server
(`drtrt station` in a subprocess): a full visit as a health worker goes through it, two screens at
once, the language switch, the print view, and a power cut mid-visit. Every page the tests see is
checked with axe-core (:func:`assert_accessible`: call it on any page a test adds).

Screenshots of each screen are written to the test's folder; with ``DRTRT_UPDATE_SCREENSHOTS=1``
they replace ``docs/station/*.png`` (the README shows them).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from station_helpers import wait_for

pytest.importorskip("starlette", reason="the station needs the station extra (pip install 'drtrt[station]')")

from browser_checks import CHROMIUM, assert_accessible, needs_chromium, sync_api  # noqa: E402, F401 (for the others)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "station"
pytestmark = needs_chromium


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`drtrt station` as a clinic starts it, on a free localhost port."""

    def __init__(self, model: Path, data: Path, camera: Path, log: Path, pin: str | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.model, self.data, self.camera, self.log, self.pin, self.extra = model, data, camera, log, pin, extra
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "drtrt.cli", "station", "--model", str(self.model), "--data-dir",
                   str(self.data), "--camera-dir", str(self.camera), "--port", str(self.port), "--poll", "0.1",
                   "--settle", "0.3", *(["--pin", self.pin] if self.pin else []), *self.extra]
        self.process = subprocess.Popen(command, stdout=self.log.open("a"), stderr=subprocess.STDOUT)
        wait_for(self._up, timeout=90, what=f"the station on {self.url} (log: {self.log})")

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the station exited: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def power_cut(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def screenshot(page, name: str) -> None:
    """With ``DRTRT_UPDATE_SCREENSHOTS=1``, the page as it is now becomes ``docs/station/<name>``."""
    if os.environ.get("DRTRT_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS / name), full_page=True)


def new_visit(page, url: str, patient: str, name: str | None = None) -> str:
    """Registers ``patient`` on the new-patient form (with ``name``) and opens the visit: its URL."""
    page.goto(url + "/patients/new")
    page.fill("input[name=patient]", patient)
    if name:
        page.fill("input[name=name]", name)
    page.click("#register button[type=submit]")
    page.wait_for_url("**/visits/*")
    return page.url


@pytest.fixture
def server(tmp_path, tiny_onnx):
    camera = tmp_path / "camera"
    camera.mkdir()
    running = Server(tiny_onnx, tmp_path / "station", camera, tmp_path / "station.log")
    running.start()
    yield running
    running.stop()


def test_a_day_at_the_station_in_a_browser(server, fundus_photos, tmp_path):
    shots = tmp_path / "screens"
    shots.mkdir()
    outside = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
        context.on("request", lambda request: outside.append(request.url)
                   if not request.url.startswith((server.url, "data:")) else None)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(server.url + "/")
        assert page.locator("#model-banner").is_visible()                 # not a validated model: said first
        page.screenshot(path=str(shots / "dashboard-empty.png"))
        assert_accessible(page, "the empty dashboard")

        # register the patient and start the visit
        page.click("#nav-new")
        page.fill("input[name=patient]", "P-0042")
        page.fill("input[name=name]", "Ana Pérez")
        page.fill("input[name=birth_date]", "1961-03-04")
        page.screenshot(path=str(shots / "new-patient.png"))
        assert_accessible(page, "the new patient form")
        page.click("#register button[type=submit]")
        page.wait_for_url("**/visits/*")
        visit_url = page.url
        assert page.locator("#slot-right-any").get_attribute("data-state") == "missing"
        assert "not photographed — take it" in page.locator("#slot-left-any").inner_text()

        # the camera writes a blurred photo: the page says so by itself, within seconds
        shutil.copy(fundus_photos["blurred"], server.camera / "IMG_0001.JPG")
        page.wait_for_selector("#slot-right-any[data-state=retake]", timeout=60_000)
        right = page.locator("#slot-right-any").inner_text()
        assert "Blurred" in right and "refocus, hold still and retake" in right
        page.screenshot(path=str(shots / "visit-blurred.png"), full_page=True)
        assert_accessible(page, "a visit with a refused photo")

        # the retake replaces it in the checklist, visibly
        shutil.copy(fundus_photos["good0"], server.camera / "IMG_0002.JPG")
        page.wait_for_selector("#slot-right-any[data-state=graded]", timeout=60_000)
        assert "earlier photo replaced by a retake" in page.locator("#slot-right-any").inner_text()
        layers = page.locator("#slot-right-any img.layer")
        assert layers.count() == 4
        page.locator("#slot-right-any input[data-toggle=EX]").uncheck()     # lesion types toggled one by one
        assert "off" in page.locator('#slot-right-any img.layer[data-code="EX"]').get_attribute("class")
        assert "off" not in page.locator('#slot-right-any img.layer[data-code="HE"]').get_attribute("class")

        # a second screen (the clinic's tablet) sees the same visit, live
        tablet = context.new_page()
        tablet.goto(visit_url)
        shutil.copy(fundus_photos["left"], server.camera / "IMG_0003.JPG")
        for screen in (page, tablet):
            screen.wait_for_selector("#slot-left-any[data-state=graded]", timeout=60_000)
            screen.wait_for_selector("#verdict[data-complete=yes]", timeout=30_000)
        assert page.locator("#verdict").inner_text() == tablet.locator("#verdict").inner_text()
        assert "eye mismatch" not in page.locator("#visit-panel").inner_text()
        page.screenshot(path=str(shots / "visit-complete.png"), full_page=True)
        assert_accessible(page, "a visit with every photo")
        tablet.close()

        # finish: the verdict and the printable report
        page.click("#close button[type=submit]")
        page.wait_for_url("**/report")
        verdict = page.locator("#report-verdict").inner_text()
        assert any(v in verdict for v in ("refer", "no referable DR", "no DR detected", "needs a human read"))
        page.emulate_media(media="print")
        assert not page.locator("button[data-print]").is_visible()
        page.screenshot(path=str(shots / "report-print.png"), full_page=True)
        assert_accessible(page, "the printed report")
        pdf = page.pdf(format="A4")
        assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
        page.emulate_media(media="screen")

        # the operator switches language at any time
        page.goto(visit_url)
        page.click("#lang-es")
        page.wait_for_load_state()
        assert "Paciente P-0042" in page.locator("h1").inner_text()
        assert "NO APTO PARA USO CLÍNICO" in page.locator("#model-banner").inner_text()
        page.screenshot(path=str(shots / "visit-spanish.png"), full_page=True)
        assert_accessible(page, "a visit in Spanish")
        page.click("#lang-en")

        # a second patient, and a power cut in the middle of the visit
        second = new_visit(page, server.url, "P-0043")
        shutil.copy(fundus_photos["good2"], server.camera / "IMG_0004.JPG")
        page.wait_for_selector("#slot-right-any[data-state=graded]", timeout=60_000)
        assert page.locator("#slot-right-any input[data-toggle=EX]").is_checked()     # a new patient: every layer
        assert "off" not in page.locator('#slot-right-any img.layer[data-code="EX"]').get_attribute("class")
        before = page.locator("#visit-panel").inner_text()
        assert errors == []                  # no script error, no missing file, until the power goes
        server.power_cut()
        server.start()
        page.goto(second)
        assert page.locator("#visit-panel").inner_text() == before          # exactly what was saved
        page.goto(server.url + "/")
        assert "P-0042" in page.locator("#visits").inner_text() and "P-0043" in page.locator("#visits").inner_text()
        assert page.locator("#fig-done").inner_text() == "1"
        assert page.locator("#fig-ungradable").inner_text() == "25%"     # 1 of the day's 4 photos was refused
        page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
        assert_accessible(page, "the day's dashboard")

        # the open actions: P-0043's visit, left open by the power cut, is still listed; a named person's
        # outcome takes it off
        page.click("#nav-actions")
        row = page.locator(f"#visit-{second.rsplit('/', 1)[1]}")
        assert "P-0043" in row.inner_text() and "visit not closed" in row.inner_text()
        page.screenshot(path=str(shots / "actions.png"), full_page=True)
        assert_accessible(page, "the open actions")
        row.locator("select[name=outcome]").select_option("did_not_attend:discharge")
        row.locator("input[name=reason]").fill("left before the second eye")
        row.locator("input[name=person]").fill("Ana Ruiz")
        row.locator("button[type=submit]").click()
        page.wait_for_load_state()
        assert page.locator(f"#visit-{second.rsplit('/', 1)[1]}").count() == 0
        page.click("#lang-es")
        page.wait_for_load_state()
        assert "Acciones pendientes" in page.locator("h1").inner_text()
        assert_accessible(page, "the open actions in Spanish")
        page.click("#lang-en")

        # call and recall: a range, its phone list as CSV
        page.click("#nav-recall")
        assert_accessible(page, "the recall page")
        page.goto(server.url + "/recall?from=2000-01-01&to=2100-12-31")
        assert_accessible(page, "the recall page over a century")
        if page.locator("#recall-csv").count():            # P-0042 is called back only if their verdict was a rescreen
            with page.expect_download() as download:
                page.click("#recall-csv")
            assert Path(download.value.path()).read_text().startswith("patient,name,birth_date")
        browser.close()
    assert outside == []                          # every script, style and picture came from the station
    if os.environ.get("DRTRT_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        for shot in shots.glob("*.png"):
            shutil.copy(shot, DOCS / shot.name)



def test_the_login_and_refusal_pages_are_accessible(tiny_onnx, tmp_path):
    """The pages a visit does not pass through: the PIN form, a wrong PIN, the error pages (in Spanish too)."""
    camera = tmp_path / "camera"
    camera.mkdir()
    guarded = Server(tiny_onnx, tmp_path / "station", camera, tmp_path / "station.log", pin="4821")
    guarded.start()
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
            page = browser.new_context(locale="en-GB").new_page()
            page.goto(guarded.url + "/")
            assert page.url.endswith("/login")
            assert_accessible(page, "the PIN form")
            page.fill("input[name=pin]", "0000")
            page.click("button[type=submit]")
            assert "Wrong PIN" in page.locator("main").inner_text()
            assert_accessible(page, "a wrong PIN")
            page.fill("input[name=pin]", "4821")
            page.click("button[type=submit]")
            page.wait_for_url(guarded.url + "/")
            for language in ("en", "es"):
                page.goto(f"{guarded.url}/lang/{language}?next=/")
                for path, status in (("/nowhere", 404), ("/visits/999", 404), (f"/image/{'0' * 64}/view.jpg", 404)):
                    response = page.goto(guarded.url + path)
                    assert response.status == status, path
                    assert_accessible(page, f"the {status} page of {path} ({language})")
            page.evaluate("document.querySelector('main').insertAdjacentHTML('beforeend', "
                          "'<img src=\"/static/favicon.svg\">')")
            with pytest.raises(AssertionError, match="image-alt"):     # the check runs, under the page's CSP
                assert_accessible(page, "a picture without words")
            browser.close()
    finally:
        guarded.stop()


def test_retakes_waiting_photos_and_a_known_patient_in_a_browser(server, fundus_photos):
    """A graded, referable photo retaken (the reason asked, the referral standing), a camera photo
    from before the start asked about and discarded, a known ID opened rather than renamed — each
    screen checked by axe-core."""
    import sqlite3

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB").new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        visit_url = new_visit(page, server.url, "P-0100", "Rosa Díaz")
        shutil.copy(fundus_photos["good0"], server.camera / "IMG_0100.JPG")
        page.wait_for_selector("#slot-right-any[data-state=graded]", timeout=60_000)
        sha = page.locator("#slot-right-any .picture").get_attribute("data-sha")

        # the station stops; its photo is made referable in the store (the demo model grades 0), and the
        # camera folder holds a photo nobody has said is whose
        server.stop()
        with sqlite3.connect(server.data / "session.db") as db:
            db.execute("UPDATE images SET record=json_set(record, '$.grade', 2, '$.referable', json('true')) "
                       "WHERE sha256=?", (sha,))
        shutil.copy(fundus_photos["good2"], server.camera / "OLD.JPG")
        server.start()
        page.goto(visit_url)
        assert "Referable DR" in page.locator("#slot-right-any").inner_text()
        page.wait_for_selector("#waiting", timeout=30_000)
        assert "OLD.JPG" in page.locator("#waiting").inner_text()
        assert page.locator("#slot-left-any").get_attribute("data-state") == "missing"     # asked, not attached
        assert page.locator("#reason-right-any").get_attribute("required") is not None    # a retake says why
        assert_accessible(page, "a visit with a graded photo and a waiting camera photo")
        screenshot(page, "visit-waiting-photos.png")

        page.select_option("#reason-right-any", "reflection")
        page.click("#retake-right-any button[type=submit]")
        page.wait_for_selector("#slot-right-any.target")
        shutil.copy(fundus_photos["good1"], server.camera / "IMG_0101.JPG")
        page.wait_for_selector("#slot-right-any .retaken-list li[data-stands=yes]", timeout=60_000)
        right = page.locator("#slot-right-any").inner_text()
        assert "grade 2" in right and "reflection" in right and "This result stands" in right
        assert "refer" in page.locator("#verdict").inner_text()
        assert page.locator("#slot-left-any").get_attribute("data-state") == "missing"
        assert_accessible(page, "a visit whose referable photo was retaken")
        screenshot(page, "visit-retake-stands.png")

        page.goto(server.url + "/")
        assert "OLD.JPG" in page.locator("#waiting").inner_text()
        assert_accessible(page, "the day with a waiting camera photo")
        page.click("#waiting form button[type=submit]")                       # discarded: kept, never taken
        page.wait_for_load_state()
        assert page.locator("#waiting").count() == 0 and (server.camera / "OLD.JPG").is_file()

        page.goto(server.url + "/patients/new")
        page.fill("input[name=patient]", "P-0100")
        page.fill("input[name=name]", "Rosa Díez")
        page.click("#register button[type=submit]")
        page.wait_for_selector("#patient-exists")
        assert "already registered as Rosa Díaz" in page.locator("#patient-exists").inner_text()
        assert_accessible(page, "a known patient ID")
        screenshot(page, "patient-exists.png")
        page.click("#open-existing button[type=submit]")
        page.wait_for_url("**/visits/*")
        assert "Rosa Díaz" in page.locator("h1").inner_text()
        assert errors == []
        browser.close()


def test_a_returning_patient_gets_this_visits_result_not_last_years(server, fundus_photos):
    """Issue 22, defect 2: P-0300 was referred at the last visit; at this one the right eye is ungradable.
    The page, the closed verdict and the session folder's report of this visit say so — last visit's
    referral is neither reused nor carried over — and last visit's report still refers."""
    import sqlite3

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB").new_page()
        page.on("dialog", lambda dialog: dialog.accept())          # "finish the visit anyway?"
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        first = new_visit(page, server.url, "P-0300")
        shutil.copy(fundus_photos["good0"], server.camera / "IMG_0300.JPG")
        page.wait_for_selector("#slot-right-any[data-state=graded]", timeout=60_000)
        sha = page.locator("#slot-right-any .picture").get_attribute("data-sha")
        server.stop()                                  # made referable in the store: the demo model grades 0
        with sqlite3.connect(server.data / "session.db") as db:
            db.execute("UPDATE images SET record=json_set(record, '$.grade', 2, '$.referable', json('true')) "
                       "WHERE sha256=?", (sha,))
        server.start()
        page.goto(first)
        page.click("#close button[type=submit]")
        page.wait_for_url("**/report")
        assert page.locator("#report-verdict").inner_text().startswith("refer")

        second = new_visit(page, server.url, "P-0300")
        assert second != first
        assert "refer" not in page.locator("#verdict").inner_text()           # nothing carried over
        shutil.copy(fundus_photos["blurred"], server.camera / "IMG_0301.JPG")
        page.wait_for_selector("#slot-right-any[data-state=retake]", timeout=60_000)
        page.click("#retake-left-any button[type=submit]")            # the left eye next
        page.wait_for_selector("#slot-left-any.target")
        shutil.copy(fundus_photos["left"], server.camera / "IMG_0302.JPG")
        page.wait_for_selector("#slot-left-any[data-state=graded]", timeout=60_000)
        assert_accessible(page, "a returning patient's new visit")
        screenshot(page, "visit-returning.png")
        page.click("#close button[type=submit]")
        page.wait_for_url("**/report")
        verdict = page.locator("#report-verdict").inner_text()
        assert verdict.startswith("ungradable") and "refer urgently" not in verdict
        assert "provisional" in page.locator("#report-provisional").inner_text()
        assert errors == []
        browser.close()
    reports = server.data / "reports"
    last, this = (reports / f"patient-P-0300-visit-{url.rsplit('/', 1)[1]}.html" for url in (first, second))
    assert '<div class="verdict refer">refer</div>' in last.read_text()
    assert '<div class="verdict retake">ungradable — retake or refer' in this.read_text()


def test_people_log_in_by_name_and_the_lead_reads_the_audit_trail(tiny_onnx, tmp_path):
    """Accounts made with `drtrt accounts add` (the PIN on stdin): the name-and-PIN form, the lead's audit page
    of a visit (in Spanish too), and a screener refused it — each page passes axe."""
    camera, data = tmp_path / "camera", tmp_path / "station"
    camera.mkdir()
    for name, role, secret in (("Ana", "screener", "4821"), ("Ben Ortiz", "lead", "a long password")):
        subprocess.run([sys.executable, "-m", "drtrt.cli", "accounts", "add", name, "--role", role, "--data-dir",
                        str(data)], input=secret + "\n", text=True, check=True, capture_output=True, timeout=120)
    station = Server(tiny_onnx, data, camera, tmp_path / "station.log")
    station.start()
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM))

            def log_in(name: str, secret: str):
                page = browser.new_context(locale="en-GB").new_page()
                page.goto(station.url + "/")
                assert page.url.endswith("/login")
                page.fill("input[name=name]", name)
                page.fill("input[name=pin]", secret)
                page.click("button[type=submit]")
                return page

            lead = log_in("Ben Ortiz", "wrong password")
            assert "Wrong name or PIN" in lead.locator("main").inner_text()
            assert_accessible(lead, "the name-and-PIN form after a wrong PIN")
            lead.fill("input[name=name]", "Ben Ortiz")
            lead.fill("input[name=pin]", "a long password")
            lead.click("button[type=submit]")
            lead.wait_for_url(station.url + "/")
            assert "Ben Ortiz · programme lead" in lead.locator("#who").inner_text()
            visit_url = new_visit(lead, station.url, "P-AUD", "Ana Pérez")
            lead.click("#audit-link")
            lead.wait_for_url("**/audit")
            assert "The chain is intact" in lead.locator("#chain-state").inner_text()
            rows = lead.locator("#audit-entries tbody tr")
            assert rows.count() == 1 and "Ben Ortiz" in rows.first.inner_text()     # opened the visit
            assert_accessible(lead, "the audit trail of a visit")
            screenshot(lead, "audit.png")
            lead.goto(f"{station.url}/lang/es?next={lead.url.split(station.url)[1]}")
            assert "La cadena está intacta" in lead.locator("#chain-state").inner_text()
            assert_accessible(lead, "the audit trail in Spanish")

            screener = log_in("ana", "4821")
            screener.wait_for_url(station.url + "/")
            screener.goto(visit_url)
            assert screener.locator("#audit-link").count() == 0
            response = screener.goto(visit_url + "/audit")
            assert response.status == 403 and "your role may not open this page" in screener.content()
            assert_accessible(screener, "the audit page refused to a screener")
            browser.close()
    finally:
        station.stop()


def test_a_clinician_reads_a_sampled_negative_with_zoom_and_layers(tiny_onnx, tmp_path, fundus_photos):
    """Issue 24 item 3: a reader's queue (every negative sampled here) and read page — full-resolution photos that
    zoom, the grade form — each passing axe; the read is saved, the queue empties, a screener is refused."""
    import json

    from drtrt.clinic.pathways import NHS

    camera, data = tmp_path / "camera", tmp_path / "station"
    camera.mkdir()
    for name, role, secret in (("Ana", "screener", "4821"), ("Cleo Ruiz", "reader", "5555")):
        subprocess.run([sys.executable, "-m", "drtrt.cli", "accounts", "add", name, "--role", role, "--data-dir",
                        str(data)], input=secret + "\n", text=True, check=True, capture_output=True, timeout=120)
    pathway = tmp_path / "pathway.yaml"
    pathway.write_text(json.dumps({**NHS.to_dict(), "reads": {"second_read": "never", "sample_rate": 1.0}}))
    station = Server(tiny_onnx, data, camera, tmp_path / "station.log", extra=("--pathway", str(pathway), "--organisation", "Clínica Norte"))
    station.start()
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM))

            def log_in(name: str, secret: str):
                page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB").new_page()
                page.goto(station.url + "/login")
                page.fill("input[name=name]", name)
                page.fill("input[name=pin]", secret)
                page.click("button[type=submit]")
                page.wait_for_url(station.url + "/")
                return page

            screener = log_in("Ana", "4821")
            new_visit(screener, station.url, "P-READ")
            shutil.copy(fundus_photos["good0"], camera / "IMG_0500.JPG")
            screener.wait_for_selector("#slot-right-any[data-state=graded]", timeout=60_000)
            shutil.copy(fundus_photos["left"], camera / "IMG_0501.JPG")
            screener.wait_for_selector("#slot-left-any[data-state=graded]", timeout=60_000)
            screener.click("#close button[type=submit]")
            screener.wait_for_url("**/report")
            assert screener.locator("#nav-reads").count() == 0
            assert screener.goto(station.url + "/reads").status == 403

            reader = log_in("Cleo Ruiz", "5555")
            errors = []
            reader.on("pageerror", lambda exc: errors.append(str(exc)))
            reader.click("#nav-reads")
            reader.wait_for_url("**/reads")
            assert "quality sample of negatives" in reader.locator("#read-queue").inner_text()
            assert_accessible(reader, "the readers' queue")
            reader.locator("#read-queue a").first.click()
            reader.wait_for_selector("#read-form")
            inner = reader.locator("#read-right-any .zoom-inner")
            assert "/full.jpg" in reader.locator("#read-right-any img.base").get_attribute("src")
            before = inner.bounding_box()["width"]
            reader.click("#read-right-any button[data-zoom=in]")
            assert inner.bounding_box()["width"] > 1.4 * before                      # zoomed, scrolling in its frame
            assert_accessible(reader, "the read page")
            screenshot(reader, "read.png")
            reader.select_option("select[name=right_r]", "R1")
            reader.click("#read-submit")
            reader.wait_for_url("**/reads")
            assert reader.locator("#no-reads").count() == 1
            assert errors == []
            browser.close()
    finally:
        station.stop()
