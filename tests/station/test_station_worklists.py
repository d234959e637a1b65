"""The station's open actions and recall pages over a hand-built clinic (Starlette's test client, a real
worker and store, the test's clock): the order, overdue marks, an outcome by a named person, the CSV."""

from __future__ import annotations

import csv
import io

import pytest
from station_helpers import csrf_of
from station_helpers import clinic_station, station  # noqa: F401  (the fixtures)

from drtrt.clinic.failsafe import outcomes

pytest.importorskip("starlette", reason="the station needs the station extra (pip install 'drtrt[station]')")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (test extra)")




def rows_of(html: str) -> list[str]:
    return [part.split('"', 1)[0] for part in html.split('<tr id="visit-')[1:]]


def test_the_actions_page_lists_urgent_first_and_marks_overdue(clinic_station):
    client, worker, visits = clinic_station
    page = client.get("/actions").text
    assert rows_of(page) == [str(visits[p]) for p in ("U1", "R1", "G1", "O1")]
    urgent = page.split(f'<tr id="visit-{visits["U1"]}"', 1)[1].split("</tr>", 1)[0]
    assert "2026-03-15" in urgent and "OVERDUE" in urgent and "hospital eye service — urgent clinic" in urgent
    assert rows_of(client.get("/actions?overdue=1").text) == [str(visits["U1"]), str(visits["O1"])]
    day = client.get("/").text
    assert 'id="fig-actions"><a href="/actions">4</a>' in day and "2 overdue" in day   # across days, not today's


def test_an_outcome_needs_a_name_and_removes_the_item(clinic_station):
    client, worker, visits = clinic_station
    token = csrf_of(client.get("/actions").text)
    url = f"/actions/{visits['U1']}/outcome"
    refused = client.post(url, data={"csrf": token, "outcome": "attended", "person": " "}, follow_redirects=False)
    assert refused.status_code == 303 and "error=" in refused.headers["location"]
    assert "give the name of the person" in client.get(refused.headers["location"]).text
    client.post(url, data={"csrf": token, "outcome": "letter_sent", "person": "Ana Pérez"})
    assert "letter sent" in client.get("/actions").text and rows_of(client.get("/actions").text)[0] == str(visits["U1"])
    refused = client.post(url, data={"csrf": token, "outcome": "did_not_attend:discharge", "person": "Ana"},
                          follow_redirects=False)
    assert "reason" in client.get(refused.headers["location"]).text
    client.post(url, data={"csrf": token, "outcome": "attended", "person": "Dr Ruiz"})
    assert str(visits["U1"]) not in rows_of(client.get("/actions").text)
    assert [(o.outcome, o.person, o.recorded) for o in outcomes(worker.store, visits["U1"])] == [
        ("letter_sent", "Ana Pérez", "2026-03-16T09:00:00Z"), ("attended", "Dr Ruiz", "2026-03-16T09:00:00Z")]
    forged = client.post(url, data={"outcome": "attended", "person": "Eve"}, follow_redirects=False)
    assert forged.status_code == 403                                # CSRF: no token, no outcome


def test_the_recall_page_and_its_csv(clinic_station):
    client, worker, visits = clinic_station
    page = client.get("/recall?from=2026-01-01&to=2027-12-31").text
    assert page.index(">N2<") < page.index(">N1<") and "OVERDUE" in page
    assert "N1" not in client.get("/recall").text                  # default: the next 30 days
    download = client.get("/recall.csv?from=2026-01-01&to=2027-12-31")
    assert download.headers["content-type"].startswith("text/csv")
    assert 'filename="recall-2026-01-01-2027-12-31.csv"' in download.headers["content-disposition"]
    assert [r["patient"] for r in csv.DictReader(io.StringIO(download.text))] == ["N2", "N1"]
    overdue = client.get("/recall.csv?overdue=1").text
    assert [r["patient"] for r in csv.DictReader(io.StringIO(overdue))] == ["N2"]
    bad = client.get("/recall?from=March")
    assert bad.status_code == 400 and "a date is YYYY-MM-DD" in bad.text


def test_the_lists_in_spanish(clinic_station):
    client, *_ = clinic_station
    client.cookies.set("lang", "es")
    actions = client.get("/actions").text
    assert "Acciones pendientes" in actions and "servicio de oftalmología del hospital — consulta urgente" in actions
    assert "VENCIDO" in actions and "carta enviada" in actions
    assert "Descargar la lista de llamadas (CSV)" in client.get("/recall?from=2026-01-01&to=2027-12-31").text
