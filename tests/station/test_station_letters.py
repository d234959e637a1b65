"""The referral letter at the station: linked from Open actions, printed in the operator's language under its own
Content-Security-Policy (which a real Chromium honours: the letter's style applies, its bar does not print), a PDF
download, and "letter sent" only when a named person says so."""

from __future__ import annotations

import pytest
from station_helpers import csrf_of
from station_helpers import clinic_station, station  # noqa: F401  (the fixtures)

from drtrt.clinic.failsafe import outcomes
from drtrt.clinic.letter_pdf import chromium_path

pytest.importorskip("starlette", reason="the station needs the station extra (pip install 'drtrt[station]')")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (test extra)")




def test_open_actions_link_each_referral_to_its_letter(clinic_station):
    client, _, visits = clinic_station
    page = client.get("/actions").text
    for patient in ("U1", "R1"):
        assert f'href="/visits/{visits[patient]}/letter"' in page
        assert f'href="/visits/{visits[patient]}/letter.pdf"' in page
    assert f'/visits/{visits["G1"]}/letter' not in page                 # ungradable: not a referral
    assert f'href="/visits/{visits["U1"]}/letter" id="letter-link"' in client.get(f"/visits/{visits['U1']}").text


def test_the_letter_prints_in_spanish_under_its_own_policy_and_records_nothing(clinic_station):
    client, worker, visits = clinic_station
    client.cookies.set("lang", "es")
    answer = client.get(f"/visits/{visits['U1']}/letter")
    assert answer.status_code == 200
    policy = answer.headers["content-security-policy"]
    assert "style-src 'sha256-" in policy and "unsafe-inline" not in policy and "script-src" not in policy
    assert answer.headers.get_list("content-security-policy") == [policy]          # the page's own, alone
    page = answer.text
    assert "Derivación URGENTE" in page and "Registrar: carta enviada" in page and 'lang="es"' in page
    assert outcomes(worker.store, visits["U1"]) == []


def test_letter_sent_is_recorded_only_by_a_named_person(clinic_station):
    client, worker, visits = clinic_station
    page = client.get(f"/visits/{visits['R1']}/letter").text
    url = f"/actions/{visits['R1']}/outcome"
    assert f'action="{url}"' in page and 'value="letter_sent"' in page
    client.post(url, data={"csrf": csrf_of(page), "outcome": "letter_sent", "person": "Ana Pérez"})
    assert [(o.outcome, o.person) for o in outcomes(worker.store, visits["R1"])] == [("letter_sent", "Ana Pérez")]


def test_no_letter_for_what_is_not_a_referral(clinic_station):
    client, _, visits = clinic_station
    refused = client.get(f"/visits/{visits['N1']}/letter")
    assert refused.status_code == 409 and "is not a referral" in refused.text
    assert client.get("/visits/9999/letter").status_code == 404


def test_the_pdf_download(clinic_station, monkeypatch, tmp_path):
    client, _, visits = clinic_station
    if chromium_path() is not None:
        pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (test extra)")
        answer = client.get(f"/visits/{visits['U1']}/letter.pdf")
        assert answer.status_code == 200 and answer.content.startswith(b"%PDF")
        assert answer.headers["content-type"] == "application/pdf"
        assert f'filename="referral-U1-visit-{visits["U1"]}.pdf"' in answer.headers["content-disposition"]
    monkeypatch.setenv("DRTRT_CHROMIUM", str(tmp_path / "none"))
    missing = client.get(f"/visits/{visits['U1']}/letter.pdf")
    assert missing.status_code == 503 and missing.text.startswith("no PDF renderer here") and "\n" not in missing.text


def test_chromium_applies_the_letter_style_under_its_policy_and_prints_no_bar(clinic_station):
    if chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (test extra)")
    client, _, visits = clinic_station
    answer = client.get(f"/visits/{visits['U1']}/letter")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path())
        try:
            tab = browser.new_page()
            tab.route("http://station.test/letter", lambda route: route.fulfill(
                status=200, body=answer.text, content_type="text/html; charset=utf-8",
                headers={"content-security-policy": answer.headers["content-security-policy"]}))
            tab.goto("http://station.test/letter")
            colour = tab.locator(".urgency").evaluate("e => getComputedStyle(e).borderTopColor")
            assert colour == "rgb(198, 40, 40)"                          # the inline style ran: its hash fits
            assert tab.locator(".toolbar").is_visible()
            tab.emulate_media(media="print")
            assert not tab.locator(".toolbar").is_visible()              # the bar is for the screen only
            axe = pytest.importorskip("axe_playwright_python.sync_playwright",
                                      reason="axe-playwright-python is not installed (test extra)")
            plain = browser.new_page()
            plain.set_content(answer.text)                               # axe's script needs no policy in its way
            found = axe.Axe().run(plain)
            assert found.violations_count == 0, found.generate_report()
        finally:
            browser.close()
