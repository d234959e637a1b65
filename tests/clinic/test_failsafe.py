"""The failsafe list: every visit that still needs something, across days, until a named person records its
outcome — derived from the store, so midnight and a restart change nothing; the clock is the test's."""

from __future__ import annotations

import pytest
from visit_fixture import at, clinic, make_visit

from drtrt.clinic.failsafe import open_actions, outcomes, record_outcome
from drtrt.clinic.store import SessionStore
from drtrt.clinic.visits import VisitBook
from drtrt.errors import ConfigError


@pytest.fixture
def book(tmp_path):
    store = SessionStore(tmp_path / "session.db")
    yield VisitBook(store)
    store.close()


def listed(book, now, **kw):
    return [(a.patient, a.need, a.due.isoformat(), a.overdue) for a in open_actions(book, at(now), **kw)]


def test_urgent_first_each_with_its_due_date_and_overdue_after_its_timescale(book):
    clinic(book)
    assert listed(book, "2026-03-02T08:00") == [
        ("U1", "refer_urgent", "2026-03-15", False),          # 2 weeks
        ("R1", "refer", "2026-05-22", False),                 # 13 weeks
        ("G1", "ungradable", "2026-03-27", False),            # 4 weeks
        ("O1", "not_closed", "2026-03-02", False)]            # open: due the next day; N1, N2 need nothing
    assert [(p, overdue) for p, _, _, overdue in listed(book, "2026-03-16T00:00")][:1] == [("U1", True)]
    assert [p for p, *_ in listed(book, "2026-03-16T00:00", overdue_only=True)] == ["U1", "O1"]
    urgent = open_actions(book, at("2026-03-02T08:00"))[0]
    assert (urgent.words, urgent.destination, urgent.name) == (
        "refer urgently", "hospital eye service — urgent clinic", "Uma Urgent")


def test_an_open_visit_whose_photos_refer_urgently_ranks_as_urgent(book):
    clinic(book)
    make_visit(book, "O2", "2026-03-01T09:00", {"right": 3}, close=False)
    first = open_actions(book, at("2026-03-02T08:00"))[0]
    assert (first.patient, first.need, first.verdict, first.due.isoformat()) == ("O2", "not_closed", "refer_urgent",
                                                                                  "2026-03-02")


def test_the_list_survives_midnight_and_a_restart(tmp_path):
    with SessionStore(tmp_path / "session.db") as store:
        clinic(VisitBook(store))
        before = listed(VisitBook(store), "2026-03-01T23:59:59")
        assert listed(VisitBook(store), "2026-03-02T00:00:01") == before        # midnight: nothing leaves
    with SessionStore(tmp_path / "session.db") as store:                        # a restart: the same list
        after = listed(VisitBook(store), "2026-03-02T00:00:01")
        assert after == before and [p for p, *_ in after] == ["U1", "R1", "G1", "O1"]
        assert ("O1", "not_closed", "2026-03-02", True) in listed(VisitBook(store), "2026-03-03T00:00")


def test_an_item_leaves_only_with_an_outcome_by_a_named_person(book):
    visits = clinic(book)
    now = at("2026-03-03T10:00")
    record_outcome(book, visits["U1"], "letter_sent", "Ana Pérez", now=now)   # a step: it stays, with the step
    (urgent, *_) = open_actions(book, now)
    assert urgent.patient == "U1" and urgent.last.words == "letter sent" and urgent.last.person == "Ana Pérez"
    kept = record_outcome(book, visits["U1"], "attended", "  Dr  Ruiz ", now=at("2026-03-10T09:30"))
    assert (kept.person, kept.need, kept.recorded) == ("Dr Ruiz", "refer_urgent", "2026-03-10T09:30:00Z")
    assert "U1" not in [a.patient for a in open_actions(book, now)]
    assert [(o.outcome, o.person) for o in outcomes(book.store, visits["U1"])] == [("letter_sent", "Ana Pérez"),
                                                                                   ("attended", "Dr Ruiz")]


def test_did_not_attend_needs_then_what_and_a_discharge_its_reason(book):
    visits = clinic(book)
    now = at("2026-06-01T10:00")
    with pytest.raises(ConfigError, match="rebook or discharge"):
        record_outcome(book, visits["R1"], "did_not_attend", "Ana", now=now)
    record_outcome(book, visits["R1"], "did_not_attend", "Ana", then="rebook", now=now)
    r1 = next(a for a in open_actions(book, now) if a.patient == "R1")
    assert (r1.due.isoformat(), r1.overdue, r1.last.words) == ("2026-08-31", False, "did not attend → rebook")
    with pytest.raises(ConfigError, match="reason"):
        record_outcome(book, visits["R1"], "did_not_attend", "Ana", then="discharge", now=now)
    record_outcome(book, visits["R1"], "did_not_attend", "Ana", then="discharge", reason="moved away", now=now)
    assert "R1" not in [a.patient for a in open_actions(book, now)]


@pytest.mark.parametrize("visit, outcome, person, message", [
    ("U1", "attended", "", "name of the person"),
    ("U1", "cured", "Ana", "one of letter_sent"),
    ("N1", "attended", "Ana", "needs nothing"),                  # rescreen: nothing to record
])
def test_an_outcome_is_refused_with_one_line(book, visit, outcome, person, message):
    visits = clinic(book)
    with pytest.raises(ConfigError, match=message):
        record_outcome(book, visits[visit], outcome, person, now=at("2026-03-03T10:00"))
    assert outcomes(book.store) == []


def test_an_outcome_answers_its_own_need_only(book):
    visits = clinic(book)
    record_outcome(book, visits["O1"], "attended", "Ana", now=at("2026-03-02T10:00"))     # against "not closed"
    assert "O1" not in [a.patient for a in open_actions(book, at("2026-03-02T10:00"))]
    book.close_visit(visits["O1"])                                # closes incomplete: a new need, listed again
    o1 = next(a for a in open_actions(book, at("2026-03-02T10:00")) if a.patient == "O1")
    assert (o1.need, o1.steps) == ("incomplete", ())


def test_a_visit_closed_while_a_photo_was_screened_needs_a_human_read(book):
    visit = make_visit(book, "S1", "2026-03-01T10:00", {}, close=False)
    book.add_capture(visit, "/photos/s1.jpg", "5" * 64, "upload", slot="right/any")     # no result yet
    book.close_visit(visit)
    (action,) = open_actions(book, at("2026-03-02T10:00"))
    assert (action.need, action.verdict, action.words, action.due.isoformat()) == (
        "human_read", "human_read", "closed before every result was in — a person must read its photos", "2026-03-15")
