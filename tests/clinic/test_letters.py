"""The referral letter: what it says in English and Spanish, when there is none, and how a real browser prints it
(one A4 page; a PDF that carries the patient's ID as text)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from visit_fixture import at, clinic, make_visit

from drtrt.clinic.failsafe import record_outcome
from drtrt.clinic.letter_pdf import chromium_path, html_to_pdf
from drtrt.clinic.letters import letter_html
from drtrt.clinic.referrals import find_referral
from drtrt.clinic.store import SessionStore
from drtrt.clinic.visits import VisitBook
from drtrt.errors import ConfigError, DataError

SHA = "ab" * 32
pytest.importorskip("babel", reason="the station extra (Babel) translates the letter")
from drtrt.station.i18n import translator  # noqa: E402


@pytest.fixture
def book(tmp_path):
    store = SessionStore(tmp_path / "session.db")
    store.set_meta("model_name", "tiny-dr")
    store.set_meta("model_sha256", SHA)
    picture = np.zeros((300, 300, 3), np.uint8)
    cv2.circle(picture, (150, 150), 120, (40, 80, 200), -1)
    (tmp_path / "overlays").mkdir()
    cv2.imwrite(str(tmp_path / "overlays" / "u2.png"), picture)
    book = VisitBook(store)
    clinic(book)
    make_visit(book, "U2", "2026-03-01T12:00", {"right": 3, "left": 0}, name="Ana Ávila",
               extra={"overlay": "overlays/u2.png",
                      "lesions": {"HE": {"count": 7, "area_px": 900, "area_fov_pct": 0.4}},
                      "macula": {"m": "M0"}})
    yield book
    store.close()


def letter(book, patient, lang="en", visit=None):
    store = book.store
    return letter_html(find_referral(store, patient, visit), store.meta(), Path(store.path).parent, store.task(),
                       translator(lang), lang)


def test_the_letter_says_where_by_when_what_was_found_and_by_which_model(book):
    page = letter(book, "U2")
    assert page.startswith("<!DOCTYPE html>") and '<html lang="en">' in page and "@page { size: A4" in page
    for said in ("URGENT referral", "to be seen by 2026-03-15 (within 14 days of the screening)",
                 "hospital eye service — urgent clinic", "U2 · Ana Ávila", "Right eye (OD)", "refer urgently",
                 "Retinopathy (R): severe NPDR", "Lesions: haemorrhages (HE): 7", "Left eye (OS)",
                 "NOT FOR CLINICAL USE — model tiny-dr is not a validated clinical model",
                 f"Model: tiny-dr, sha256 {SHA}", "Human reads: none recorded",
                 "provisional — awaiting a clinician&#x27;s read"):
        assert said in page, said
    assert page.count("data:image/jpeg;base64,") == 2                   # both eyes' pictures, embedded
    assert not re.search(r'(src|href)="(?!data:)', page) and "<script" not in page
    routine = letter(book, "R1")
    assert "Routine referral" in routine and "2026-05-22" in routine and "within 91 days" in routine


def test_the_letter_in_spanish(book):
    page = letter(book, "U2", "es")
    assert '<html lang="es">' in page
    for said in ("Derivación URGENTE", "debe ser atendido antes del 2026-03-15", "Derivar a",
                 "servicio de oftalmología del hospital — consulta urgente", "Ojo derecho (OD)",
                 "remitir con urgencia",
                 "Hallazgos", "NO APTO PARA USO CLÍNICO", "Lecturas humanas: ninguna registrada",
                 "Comprobación de exactitud frente a su referencia: no registrado"):
        assert said in page, said
    for english in ("Findings", "URGENT referral", "Refer to", "Human reads", "Right eye"):
        assert english not in page, english


def test_a_failed_accuracy_check_is_on_the_letter(book):
    book.store.set_meta("model_gate", {"status": "failed"})
    page = letter(book, "U1")
    assert "THIS MODEL FAILED ITS ACCURACY CHECK — model tiny-dr was not shown to agree" in page
    assert "Accuracy check against its reference: failed" in page


@pytest.mark.parametrize("patient, visit, said", [
    ("N1", None, "is not a referral (its verdict: no DR detected by the model)"),
    ("ZZ", None, "no patient 'ZZ' in this session"),
    ("R1", 99, "patient 'R1' has no visit 99"),
])
def test_no_letter_but_for_a_referral(book, patient, visit, said):
    with pytest.raises(ConfigError, match=re.escape(said)):
        find_referral(book.store, patient, visit)


def test_no_letter_while_the_station_has_the_visit_open(book):
    make_visit(book, "O3", "2026-03-01T09:00", {"right": 4}, close=False)
    with pytest.raises(ConfigError, match="open at the station"):
        find_referral(book.store, "O3")


def test_did_not_attend_then_rebook_moves_the_due_date(book):
    visit = find_referral(book.store, "U1").visit
    record_outcome(book, visit, "did_not_attend", "Nurse Ana", then="rebook", now=at("2026-03-20T09:00"))
    assert find_referral(book.store, "U1").due.isoformat() == "2026-04-03"


def test_writing_a_letter_records_no_outcome(book):
    letter(book, "U1")
    assert book.store.execute("SELECT COUNT(*) FROM action_outcomes")[0][0] == 0


# -- a real browser ---------------------------------------------------------------------------------
def _browser():
    if chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the letter's printing is not checked")
    return pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (test extra)")


def test_the_print_view_is_one_a4_page_in_chromium(book, tmp_path):
    sync_api = _browser()
    path = tmp_path / "letter.html"
    path.write_text(letter(book, "U2", "es"), encoding="utf-8")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path())
        try:
            tab = browser.new_page()
            outside = []
            tab.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
            tab.goto(path.as_uri())
            tab.emulate_media(media="print")
            assert tab.locator("h1").inner_text() == "Derivación: cribado de retinopatía diabética"
            assert tab.locator("img").count() == 2 and all(
                tab.locator("img").nth(i).evaluate("i => i.naturalWidth > 0") for i in range(2))
            pdf = tab.pdf(prefer_css_page_size=True, print_background=True)
        finally:
            browser.close()
    assert outside == []
    boxes = {tuple(round(float(v)) for v in m) for m in
             re.findall(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", pdf)}
    assert boxes == {(595, 842)}, boxes                                  # A4 in points
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1              # one letter, one sheet


def test_the_pdf_carries_the_patient_id_as_text(book):
    _browser()
    pypdf = pytest.importorskip("pypdf", reason="pypdf (test extra) reads the PDF's text")
    data = html_to_pdf(letter(book, "U2"))
    assert data.startswith(b"%PDF")
    import io
    reader = pypdf.PdfReader(io.BytesIO(data))
    text = " ".join(p.extract_text() for p in reader.pages)
    assert len(reader.pages) == 1 and "U2" in text and "URGENT referral" in text and "2026-03-15" in text


def test_no_pdf_renderer_is_one_line(monkeypatch):
    monkeypatch.setenv("DRTRT_CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(DataError) as caught:
        html_to_pdf("<p>x</p>")
    assert "no PDF renderer here" in str(caught.value) and "\n" not in str(caught.value)
