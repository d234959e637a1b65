"""``drtrt actions``, ``recall``, ``export-visits`` and ``letter`` over a hand-built session: what they print and write,
and their one-line errors."""

from __future__ import annotations

import csv
import io

import pytest
from test_cli import assert_one_line_error
from test_cli_contract import invoke
from typer.testing import CliRunner
from visit_fixture import clinic

from drtrt.cli import app
from drtrt.clinic.store import SessionStore
from drtrt.clinic.visits import VisitBook

runner = CliRunner()


@pytest.fixture
def session(tmp_path):
    folder = tmp_path / "session"
    with SessionStore(folder / "session.db") as store:
        clinic(VisitBook(store))
    return folder


def test_actions_lists_urgent_first_as_csv_and_as_a_table(session):
    result = runner.invoke(app, ["actions", str(session), "--csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["patient"], r["need"]) for r in rows] == [("U1", "refer_urgent"), ("R1", "refer"),
                                                         ("G1", "ungradable"), ("O1", "not_closed")]
    assert all(r["overdue"] == "1" for r in rows)                  # the fixture is months old: all overdue now
    table = runner.invoke(app, ["actions", str(session), "--overdue"], terminal_width=160)
    assert table.exit_code == 0 and "U1" in table.stdout and "OVERDUE" in table.stdout


def test_recall_writes_the_phone_list(session):
    result = runner.invoke(app, ["recall", str(session), "--from", "2026-01-01", "--to", "2027-12-31", "--csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["patient"], r["due"]) for r in rows] == [("N2", "2026-03-10"), ("N1", "2027-03-01")]
    assert rows[0]["name"] == "'=cmd|' /C calc'!A0"                # a formula stays text


def test_export_visits_writes_the_range(session, tmp_path):
    out = tmp_path / "visits.csv"
    result = runner.invoke(app, ["export-visits", str(session), "--from", "2026-02-01", "--to", "2026-03-31",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "5 visit(s)" in result.stdout
    assert [r["patient"] for r in csv.DictReader(out.open())] == ["R1", "G1", "U1", "N1", "O1"]


def test_programme_report_writes_the_html_and_the_csvs(session, tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(app, ["programme-report", str(session), "--from", "2026-02-16", "--to", "2026-03-08",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "5 visit(s) from 2026-02-16 to 2026-03-08" in result.stdout
    html = (out / "programme.html").read_text()
    assert html.count('<img class="chart" src="data:image/svg+xml;base64,') == 9 and "<script" not in html
    summary = {r["measure"]: r["value"] for r in csv.DictReader((out / "summary.csv").open())}
    assert (summary["visits"], summary["referred"], summary["reader agreement"]) == ("5", "2", "no reads")
    assert [r["patient"] for r in csv.DictReader((out / "imageability.csv").open())] == ["G1", "N1", "O1", "R1", "U1"]


@pytest.mark.parametrize("args, code, fragment", [
    (["recall", "{s}", "--from", "March"], 2, "--from must be a date (YYYY-MM-DD), found 'March'"),
    (["recall", "{s}", "--from", "2026-03-01", "--to", "2026-02-01"], 2, "--to 2026-02-01 is before --from"),
    (["export-visits", "{s}", "--from", "2026-01-01", "--to", "2026-13-01", "--out", "{s}/v.csv"], 2,
     "--to must be a date"),
    (["export-visits", "{s}", "--from", "2026-01-01", "--to", "2026-01-02", "--out", "{s}/session.db/v.csv"], 1,
     "cannot write"),
    (["letter", "{s}", "--patient", "N1", "--out", "{s}/l.html"], 2, "is not a referral"),
    (["letter", "{s}", "--patient", "ZZ", "--out", "{s}/l.html"], 2, "no patient 'ZZ' in this session"),
    (["letter", "{s}", "--patient", "U1", "--visit", "9", "--out", "{s}/l.html"], 2, "has no visit 9"),
    (["letter", "{s}", "--patient", "U1", "--lang", "fr", "--out", "{s}/l.html"], 2, "--lang must be one of en, es"),
    (["letter", "{s}", "--patient", "U1", "--out", "{s}/l.docx"], 2, "--out must end in .html or .pdf"),
    (["letter", "{s}", "--patient", "U1", "--out", "{s}/session.db/l.html"], 1, "cannot write"),
    (["programme-report", "{s}", "--from", "2026-01-01", "--to", "2026-1-5", "--out", "{s}/r"], 2, "--to must be a date"),
    (["programme-report", "{s}", "--from", "2026-03-01", "--to", "2026-02-01", "--out", "{s}/r"], 2,
     "--to 2026-02-01 is before --from"),
    (["programme-report", "{s}", "--from", "2026-01-01", "--to", "2026-01-02", "--out", "{s}/session.db/r"], 1,
     "cannot write the report"),
    (["programme-report", "{s}", "{s}/nowhere", "--from", "2026-01-01", "--to", "2026-01-02", "--out", "{s}/r"], 1,
     "not a session folder"),
])
def test_bad_input_is_one_line(session, args, code, fragment):
    assert_one_line_error(invoke(*[a.replace("{s}", str(session)) for a in args]), fragment, code)


def test_a_session_in_use_is_one_line(session):
    with SessionStore(session / "session.db"):
        assert_one_line_error(invoke("actions", session), "in use by another drtrt process", 2)


def test_letter_writes_the_referral_in_spanish_and_records_nothing(session, tmp_path):
    out = tmp_path / "carta.html"
    result = runner.invoke(app, ["letter", str(session), "--patient", "U1", "--lang", "es", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "urgent referral of U1" in result.stdout and "due 2026-03-15" in result.stdout
    page = out.read_text()
    assert "Derivación URGENTE" in page and "Uma Urgent" in page
    with SessionStore(session / "session.db") as store:
        assert store.execute("SELECT COUNT(*) FROM action_outcomes")[0][0] == 0


def test_letter_without_a_pdf_renderer_is_one_line(session, tmp_path, monkeypatch):
    monkeypatch.setenv("DRTRT_CHROMIUM", str(tmp_path / "no-chromium"))
    assert_one_line_error(invoke("letter", session, "--patient", "U1", "--out", tmp_path / "l.pdf"),
                          "no PDF renderer here", 1)
    assert not (tmp_path / "l.pdf").exists()


def test_programme_report_without_matplotlib_is_one_line_naming_the_extra(session, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)          # as if not installed
    out = tmp_path / "report"
    assert_one_line_error(invoke("programme-report", session, "--from", "2026-02-16", "--to", "2026-03-08",
                                 "--out", out), "[report]'", 1)
    assert not out.exists()                                        # nothing half-written
