"""The programme's numbers against the hand-built clinic (tests/visit_fixture.py), counted by hand here.

The range 2026-02-16 … 2026-03-08 holds five visits: U1 (grade 4 right: refer urgently, 2026-03-01), R1
(grade 2 left: refer, 2026-02-20), N1 (grades 0/0: rescreen, 2026-03-01), G1 (both eyes ungradable,
2026-02-27) and O1 (one eye grade 0, still open, opened 23:59 on 2026-03-01). N2 (2025) is outside it.
"""

from __future__ import annotations

import datetime as dt
import math

import pytest
from visit_fixture import at, clinic, make_visit

from drtrt.clinic import audit
from drtrt.clinic.accounts import SHARED_PIN, Actor
from drtrt.clinic.failsafe import record_outcome
from drtrt.clinic.pathways import ICDR, Pathway, keep_pathway
from drtrt.clinic.reads import record_read
from drtrt.clinic.programme import programme
from drtrt.clinic.store import FileEntry, SessionStore
from drtrt.clinic.visits import VisitBook
from drtrt.errors import ConfigError

D = dt.date.fromisoformat
NOW = at("2026-03-16T09:00")                   # U1's two weeks are over (due 2026-03-15)


@pytest.fixture
def book(tmp_path):
    store = SessionStore(tmp_path / "session.db")
    yield VisitBook(store)
    store.close()


def photograph(book, visit: int, patient: str, eye: str, result, source: str) -> None:
    """One more photo of ``eye`` in ``visit`` (replacing the one in its slot): a grade, or a refusal code."""
    sha = f"{patient}-{visit}-{eye}-{source}".encode().hex().ljust(64, "0")[:64]
    path = f"/photos/{sha}.jpg"
    book.add_capture(visit, path, sha, source, slot=f"{eye}/any")
    graded = isinstance(result, int)
    record = {"status": "graded" if graded else "ungradable", "grade": result if graded else None,
              "referable": result >= 2 if graded else None, "lesions": {}, "code": None if graded else result,
              "reason": None if graded else "refused"}
    book.store.record_image(sha, record, FileEntry(path, sha, 1, 1, patient, eye, "screened", visit=visit), run_id=1)


def rows(prog, key):
    return [tuple(str(c) for c in row) for row in prog.table(key).rows]


def test_the_numbers_of_a_range_by_hand(book):
    visits = clinic(book)
    record_outcome(book, visits["R1"], "letter_sent", "Ana Pérez", now=at("2026-02-23T10:00"))
    record_outcome(book, visits["R1"], "attended", "Dr Ruiz", now=at("2026-03-10T10:00"))
    prog = programme([("clinic", book)], D("2026-02-16"), D("2026-03-08"), NOW)
    assert dict(rows(prog, "summary")) == {
        "visits": "5", "screened": "4",                              # O1 is open: a visit, not screened
        "patients": "5", "imageable patients": "4", "imageable patients (%)": "80.0",   # G1 is not imageable
        "photos refused": "2",                                       # G1's two photos
        "referred": "2", "referral rate (%)": "50.0",                # U1 and R1 of four screened
        "overdue referrals": "1", "reader agreement": "no reads"}    # U1; R1 attended
    # weeks from Monday 16 Feb: R1 | G1, U1, N1, O1 (Sunday 1 March) | none
    assert rows(prog, "visits_by_week") == [("2026-02-16", "1", "1", "1", "100.0"),
                                            ("2026-02-23", "4", "3", "1", "33.3"),
                                            ("2026-03-02", "0", "0", "0", "")]
    rate = prog.table("referral_rate_by_week").chart.series[0][1]
    assert rate[:2] == (100.0, 33.3) and math.isnan(rate[2])         # no visits: a gap, not a zero rate
    assert rows(prog, "referral_by_grade") == [("ICDR 0", "1", "0", "0.0"), ("ICDR 2", "1", "1", "100.0"),
                                               ("ICDR 4", "1", "1", "100.0"), ("no grade", "1", "0", "0.0")]
    assert rows(prog, "imageability") == [("G1", "1", "no"), ("N1", "1", "yes"), ("O1", "1", "yes"),
                                          ("R1", "1", "yes"), ("U1", "1", "yes")]
    assert rows(prog, "refusals_by_reason") == [("blurred", "2")]
    assert rows(prog, "refusals_by_camera") == [("upload at the station", "2")]
    assert rows(prog, "refusals_by_operator") == [("not recorded", "2")]
    # R1: 20 Feb → attended 10 Mar = 18 days of 91; U1: nothing closing yet
    assert rows(prog, "time_to_outcome") == [
        ("2", "R1", "refer", "2026-02-20", "attended", "18", "91", "within timescale"),
        ("1", "U1", "refer urgently", "2026-03-01", "", "", "14", "no outcome yet")]
    assert prog.table("time_to_outcome").chart.series[0][1] == (1.0, 0.0, 1.0)    # within, late, none yet
    assert rows(prog, "overdue_referrals") == [("1", "U1", "refer urgently", "2026-03-15", "1")]
    assert rows(prog, "reader_agreement") == [("reads", "no reads")]
    assert dict(rows(prog, "summary"))["reader agreement"] == "no reads"


def test_a_late_outcome_and_a_range_with_one_visit(book):
    visits = clinic(book)
    record_outcome(book, visits["U1"], "did_not_attend", "Ana", then="discharge", reason="moved away",
                   now=at("2026-03-20T10:00"))
    prog = programme([("clinic", book)], D("2026-03-01"), D("2026-03-01"), at("2026-03-21T09:00"))
    assert dict(rows(prog, "summary"))["visits"] == "3"               # U1, N1, O1 opened on 1 March
    assert rows(prog, "time_to_outcome") == [
        ("1", "U1", "refer urgently", "2026-03-01", "did not attend → discharge", "19", "14", "late")]
    assert rows(prog, "overdue_referrals") == []                      # discharged: nothing open
    assert rows(prog, "refusals_by_reason") == []


def test_several_sessions_add_up_and_name_their_visits(tmp_path):
    stores = [SessionStore(tmp_path / f"s{i}" / "session.db") for i in (1, 2)]
    try:
        first, second = VisitBook(stores[0]), VisitBook(stores[1])
        clinic(first)
        make_visit(second, "U1", "2026-03-02T09:00", {"right": 4, "left": "ungradable"})   # the same patient again
        make_visit(second, "P9", "2026-03-03T09:00", {"right": 1, "left": 0})
        prog = programme([("north", first), ("south", second)], D("2026-02-16"), D("2026-03-08"), NOW)
        summary = dict(rows(prog, "summary"))
        assert (summary["visits"], summary["patients"], summary["referred"], summary["photos refused"]) == \
            ("7", "6", "3", "3")
        assert [r[0] for r in rows(prog, "overdue_referrals")] == ["north/1"]   # south/1 is due 2026-03-16
        assert ("south/1", "U1") in [r[:2] for r in rows(prog, "time_to_outcome")]
        assert rows(prog, "visits_by_week")[2] == ("2026-03-02", "2", "2", "1", "50.0")
    finally:
        for store in stores:
            store.close()


def test_an_empty_range_and_a_backwards_one(book):
    clinic(book)
    prog = programme([("clinic", book)], D("2024-01-01"), D("2024-01-07"), NOW)
    assert dict(rows(prog, "summary"))["visits"] == "0" and dict(rows(prog, "summary"))["referral rate (%)"] == ""
    with pytest.raises(ConfigError, match="before --from"):
        programme([("clinic", book)], D("2026-03-08"), D("2026-02-16"), NOW)


def test_a_chart_is_the_same_svg_every_time_and_takes_any_label():
    pytest.importorskip("matplotlib", reason="the charts need matplotlib (report extra)")
    import xml.etree.ElementTree as ET

    from drtrt.clinic.programme import Chart
    from drtrt.clinic.programme_report import chart_svg, chart_words

    bars = Chart("bar", ("Dr $x$ <b>", "blurred"), (("photos refused", (2.0, 1.0)),))   # no mathtext, no markup
    svg = chart_svg(bars)
    assert svg == chart_svg(bars) and b"<script" not in svg and b'href="http' not in svg   # nothing to fetch
    ET.fromstring(svg)                                                 # well-formed
    line = Chart("line", ("2026-03-02", "2026-03-09"), (("referral rate (%)", (50.0, math.nan)),))
    ET.fromstring(chart_svg(line))
    assert chart_words(line) == "referral rate (%): 2026-03-02 50, 2026-03-09 –"


def test_retaken_photos_count_as_refusals_by_their_code_and_camera(book):
    clinic(book)
    visit = make_visit(book, "G2", "2026-03-02T09:00", {"right": "ungradable", "left": 0}, close=False)
    photograph(book, visit, "G2", "right", "too_dark", "camera:IMG_0001.JPG")       # refused again, from the camera
    photograph(book, visit, "G2", "right", 1, "camera:IMG_0002.JPG")                # then graded
    book.close_visit(visit)
    prog = programme([("clinic", book)], D("2026-02-16"), D("2026-03-08"), NOW)
    assert rows(prog, "refusals_by_reason") == [("blurred", "3"), ("too dark", "1")]   # G1's two, G2's first
    assert rows(prog, "refusals_by_camera") == [("upload at the station", "3"), ("camera folder", "1")]
    assert ("G2", "1", "yes") in rows(prog, "imageability")          # the retake made the eye gradable
    assert dict(rows(prog, "summary"))["photos refused"] == "4"


def test_every_refusal_code_has_words():
    from drtrt.clinic.programme import REASON_WORDS
    from drtrt.runtime.quality import CODES

    assert set(REASON_WORDS) == set(CODES)


def test_grades_in_the_sessions_pathway_words(book):
    from drtrt.clinic.pathways import keep_pathway, load_pathway

    keep_pathway(book.store, load_pathway("nhs"))
    clinic(book)
    prog = programme([("clinic", book)], D("2026-02-16"), D("2026-03-08"), NOW)
    # NHS codes: ICDR 0 → R0, 2 → R2, 4 → R3 (tests/clinic/test_pathways.py holds the mapping)
    assert [r[:3] for r in rows(prog, "referral_by_grade")] == [("R0", "1", "0"), ("R2", "1", "1"), ("R3", "1", "1"),
                                                                ("no grade", "1", "0")]


def test_reader_agreement_and_the_operator_from_the_reads_and_the_audit_trail(book):
    visits = clinic(book)
    keep_pathway(book.store, Pathway.from_dict({**ICDR.to_dict(), "reads": {"second_read": "never"}}))
    ruiz = Actor("Dr Ruiz", "reader")
    record_read(book, visits["N1"], {"right": "ICDR3", "left": "ICDR0"}, ruiz, reason="IRMA nasal")  # model: rescreen
    record_read(book, visits["U1"], {"right": "ICDR4", "left": "ICDR0"}, ruiz)                       # agrees
    audit.append(book.store, SHARED_PIN, "open_visit", visit=visits["G1"])
    audit.append(book.store, Actor("Ana", "screener"), "capture", visit=visits["G1"])
    prog = programme([("clinic", book)], D("2026-02-16"), D("2026-03-08"), NOW)
    assert rows(prog, "reader_agreement") == [("visits read", "2"), ("model and read agree (%)", "50.0"),
                                              ("read refers, the model did not", "1"),
                                              ("the model referred, the read did not", "0")]
    assert dict(rows(prog, "summary"))["reader agreement"] == "50.0 % (2)"
    assert rows(prog, "refusals_by_operator") == [("shared PIN", "2")]     # G1's first person, in words
