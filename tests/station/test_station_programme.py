"""The station's Programme page over the hand-built clinic (Starlette's test client, a real worker and
store, the test's clock): the numbers, the charts as pictures inside the page, the range, the login, Spanish.
The page in a browser (axe, no request leaving) is in test_station_browser.py."""

from __future__ import annotations

import pytest
from station_helpers import clinic_station, station  # noqa: F401  (the fixtures)

pytest.importorskip("starlette", reason="the station needs the station extra (pip install 'drtrt[station]')")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (test extra)")
pytest.importorskip("matplotlib", reason="the charts need matplotlib (station extra)")




def section(html: str, key: str) -> str:
    return html.split(f'id="{key}"', 1)[1].split("</section>", 1)[0]


def test_the_programme_page_shows_the_numbers_as_charts_and_tables(clinic_station):
    client, *_ = clinic_station
    page = client.get("/programme?from=2026-02-16&to=2026-03-08")
    assert page.status_code == 200
    html = page.text
    assert "Screening programme report, 2026-02-16 to 2026-03-08" in html and 'href="/programme"' in html
    assert html.count('<img class="chart" src="data:image/svg+xml;base64,') == 9 and "<script>" not in html
    summary = section(html, "summary")
    assert "<td>visits</td><td>5</td>" in summary and "<td>referral rate (%)</td><td>50.0</td>" in summary
    assert "<td>reader agreement</td><td>no reads</td>" in summary
    assert 'alt="Refusals by reason — photos refused: blurred 2"' in section(html, "refusals_by_reason")
    assert "<td>U1</td><td>refer urgently</td><td>2026-03-15</td><td>1</td>" in section(html, "overdue_referrals")


def test_the_default_range_is_the_last_13_weeks_and_a_bad_one_is_refused(clinic_station):
    client, *_ = clinic_station
    html = client.get("/programme").text                          # 2025-12-16 … 2026-03-16
    assert "2025-12-16 to 2026-03-16" in html and "<td>visits</td><td>5</td>" in section(html, "summary")
    for query, words in (("from=March", "a date is YYYY-MM-DD"),
                         ("from=2026-03-08&to=2026-02-16", "the last day is before the first")):
        bad = client.get(f"/programme?{query}")
        assert bad.status_code == 400 and words in bad.text and "data:image" not in bad.text


def test_the_programme_page_is_behind_the_login(station):
    client, worker, _ = station(pin="4821")
    response = client.get("/programme", follow_redirects=False)
    assert response.status_code in (302, 303) and response.headers["location"].startswith("/login")


def test_the_programme_page_in_spanish(clinic_station):
    client, *_ = clinic_station
    client.cookies.set("lang", "es")
    html = client.get("/programme?from=2026-02-16&to=2026-03-08").text
    assert "Informe del programa de cribado, 2026-02-16 a 2026-03-08" in html
    assert "Visitas por semana" in html and "<td>visitas</td><td>5</td>" in section(html, "summary")
    assert "remitir con urgencia" in section(html, "overdue_referrals") and "sin lecturas" in html


def test_without_matplotlib_the_page_shows_the_tables_and_says_why(clinic_station, monkeypatch):
    import importlib.util

    client, *_ = clinic_station
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    html = client.get("/programme?from=2026-02-16&to=2026-03-08").text
    assert "the charts need matplotlib" in html and "data:image" not in html
    assert "<td>visits</td><td>5</td>" in section(html, "summary")
