"""Clinicians' reads: a reader's grade is the visit's final result, overruling the model either way with a reason,
audited; a second reader and arbitration as the pathway says; the failsafe's "needs a human read" answered; the
study takes the station's reads as its reference standard."""

from __future__ import annotations

import pytest
from visit_fixture import at, make_visit

from drtrt.clinic import audit
from drtrt.clinic.accounts import Actor
from drtrt.clinic.failsafe import open_actions
from drtrt.clinic.pathways import NHS, Pathway, keep_pathway, load_pathway
from drtrt.clinic.reads import grade_string, reads_of, record_read, words_of
from drtrt.clinic.referrals import find_referral
from drtrt.clinic.store import SessionStore
from drtrt.clinic.visits import VisitBook
from drtrt.errors import ConfigError
from drtrt.verify.study.reads import reference, station_reads

ANA, BEN, CARL = Actor("Dr Ana", "reader"), Actor("Dr Ben", "reader"), Actor("Lead Carla", "lead")
SCREENER = Actor("Sam", "screener")


@pytest.fixture
def book(tmp_path):
    store = SessionStore(tmp_path / "session.db")
    yield VisitBook(store)
    store.close()


def with_reads(book, **settings):
    """The NHS pathway with ``reads`` settings, kept in the session."""
    pathway = Pathway.from_dict({**NHS.to_dict(), "reads": settings})
    keep_pathway(book.store, pathway)
    return pathway


def needs(book, visit):
    return [a.need for a in open_actions(book, at("2026-03-02T08:00")) if a.visit == visit]


def test_a_read_that_overrules_a_referral_needs_a_reason_becomes_final_and_is_audited(book):
    with_reads(book, second_read="never")
    visit = make_visit(book, "P1", "2026-03-01T10:00", {"right": 2, "left": 0})
    assert book.visit(visit).verdict == "refer" and needs(book, visit) == ["refer"]
    with pytest.raises(ConfigError, match="overrules the model .refer → rescreen.: give the reason"):
        record_read(book, visit, {"right": "R1M0", "left": "R0M0"}, ANA)
    assert reads_of(book.store, visit) == []                                  # nothing kept
    read = record_read(book, visit, {"right": "R1M0", "left": "R0M0"}, ANA, reason="  dust on the lens,  not a bleed ")
    assert (read.stage, read.verdict, read.model_verdict, read.overrules, read.reason) == (
        "primary", "rescreen", "refer", True, "dust on the lens, not a bleed")
    seen = book.visit(visit)
    assert (seen.verdict, seen.closed_verdict, seen.model_verdict) == ("rescreen", "rescreen", "refer")
    assert seen.closed_words.startswith("R0 no retinopathy") and seen.reading.final == read
    assert needs(book, visit) == []                                          # no referral left to track
    entry = audit.entries(book.store, visit)[-1]
    assert (entry.action, entry.person, entry.role, entry.details["verdict"], entry.details["model_verdict"]) == (
        "override", "Dr Ana", "reader", "rescreen", "refer")
    assert audit.verify_store(book.store).ok


def test_a_read_that_overrules_a_negative_refers_the_visit(book):
    with_reads(book, second_read="never")
    visit = make_visit(book, "P2", "2026-03-01T10:00", {"right": 0, "left": 0})
    assert needs(book, visit) == []
    with pytest.raises(ConfigError, match="rescreen → refer_urgent"):
        record_read(book, visit, {"right": "R3aM0", "left": "R0M0"}, ANA)
    record_read(book, visit, {"right": "R3aM0", "left": "R0M0"}, ANA, reason="new vessels at the disc")
    assert book.visit(visit).verdict == "refer_urgent" and needs(book, visit) == ["refer_urgent"]
    assert audit.entries(book.store, visit)[-1].action == "override"


def test_a_read_that_agrees_needs_no_reason_and_maculopathy_refers(book):
    with_reads(book)                                           # second_read: disagreement
    visit = make_visit(book, "P3", "2026-03-01T10:00", {"right": 2, "left": 1})
    read = record_read(book, visit, {"right": "R1M1", "left": "R1M0"}, ANA)    # M1 refers: agrees with "refer"
    assert (read.verdict, read.overrules, book.visit(visit).reading.final) == ("refer", False, read)
    assert audit.entries(book.store, visit)[-1].action == "read"
    with pytest.raises(ConfigError, match="complete"):
        record_read(book, visit, {"right": "R1M1", "left": "R1M0"}, BEN)


def test_a_read_answers_the_failsafes_human_read(book):
    with_reads(book)
    visit = make_visit(book, "P4", "2026-03-01T10:00", {"right": "ungradable", "left": 0})
    book.store.execute("UPDATE visits SET verdict=? WHERE id=?",
                       ('{"verdict": "human_read", "words": "needs a human read"}', visit))
    assert needs(book, visit) == ["human_read"]
    record_read(book, visit, {"right": "R0M0", "left": "R0M0"}, ANA)             # no reason: nothing overruled
    assert needs(book, visit) == [] and book.visit(visit).verdict == "rescreen"


def test_disagreeing_reads_are_arbitrated_and_a_pending_read_never_calms_the_visit(book):
    with_reads(book)
    visit = make_visit(book, "P5", "2026-03-01T10:00", {"right": 2, "left": 0})
    record_read(book, visit, {"right": "R1M0", "left": "R0M0"}, ANA, reason="a bleed, not R2")
    seen = book.visit(visit)
    assert seen.reading.pending and seen.reading.next_stage == "secondary" and seen.verdict == "refer"
    with pytest.raises(ConfigError, match="another person"):
        record_read(book, visit, {"right": "R1M0", "left": "R0M0"}, ANA, reason="again")
    record_read(book, visit, {"right": "R2M0", "left": "R0M0"}, BEN)                  # agrees with the model
    seen = book.visit(visit)
    assert seen.reading.next_stage == "arbitration" and seen.verdict == "refer" and needs(book, visit) == ["refer"]
    final = record_read(book, visit, {"right": "R1M0", "left": "R0M0"}, CARL, reason="reviewed both: R1")
    assert final.stage == "arbitration" and book.visit(visit).verdict == "rescreen" and needs(book, visit) == []
    assert [r.stage for r in reads_of(book.store, visit)] == ["primary", "secondary", "arbitration"]
    for change in ("UPDATE reads SET verdict='refer'", "DELETE FROM reads"):         # append-only
        with pytest.raises(Exception, match="append-only"):
            book.store.execute(change)


def test_second_read_always_and_two_agreeing_reads_are_final(book):
    with_reads(book, second_read="always")
    visit = make_visit(book, "P6", "2026-03-01T10:00", {"right": 0, "left": 0})
    record_read(book, visit, {"right": "R0M0", "left": "R0M0"}, ANA)
    assert book.visit(visit).reading.next_stage == "secondary"
    second = record_read(book, visit, {"right": "R1M0", "left": "R0M0"}, BEN)
    assert book.visit(visit).reading.final == second


@pytest.mark.parametrize("grades, role, message", [
    ({"right": "R0M0"}, ANA, "grade both eyes"),
    ({"right": "ICDR2", "left": "R0M0"}, ANA, "not in this pathway's form"),
    ({"right": "R0M0", "left": "R0M0"}, SCREENER, "only a reader or the programme lead"),
])
def test_a_read_is_refused_with_one_line(book, grades, role, message):
    with_reads(book)
    visit = make_visit(book, "P7", "2026-03-01T10:00", {"right": 0, "left": 0})
    with pytest.raises(ConfigError, match=message):
        record_read(book, visit, grades, role)


def test_an_eye_nobody_photographed_can_only_be_graded_u(book):
    with_reads(book, second_read="never")
    visit = make_visit(book, "P9", "2026-03-01T10:00", {"right": 0})                 # the left eye not taken
    assert book.visit(visit).model_verdict == "incomplete"
    with pytest.raises(ConfigError, match="the left eye was not photographed: grade it U"):
        record_read(book, visit, {"right": "R0M0", "left": "R0M0"}, ANA)
    read = record_read(book, visit, {"right": "R0M0", "left": "U"}, ANA)
    assert read.verdict == "ungradable" and needs(book, visit) == ["ungradable"]     # still needs a person


def test_the_grade_form_gives_the_studys_grade_strings():
    assert grade_string("nhs", {"r": "R3a", "m": "M1"}) == "R3aM1"
    assert grade_string("nhs", {"u": "1", "r": "R0"}) == "U"
    assert grade_string("icdr", {"icdr": "2", "dme": "on"}) == "ICDR2+DME"
    for form, fields in (("nhs", {"r": "R9", "m": "M0"}), ("icdr", {"icdr": "5"})):
        with pytest.raises(ConfigError, match="grade each eye"):
            grade_string(form, fields)


def test_an_icdr_pathway_reads_icdr_with_dme(book):
    keep_pathway(book.store, load_pathway("icdr"))
    visit = make_visit(book, "P8", "2026-03-01T10:00", {"right": 0, "left": 0})
    read = record_read(book, visit, {"right": "ICDR1+DME", "left": "ICDR0"}, ANA, reason="exudate on the fovea")
    assert read.verdict == "refer" and book.visit(visit).verdict == "refer"


def test_old_pathway_files_get_the_read_defaults_and_bad_settings_are_refused():
    old = {k: v for k, v in NHS.to_dict().items() if k != "reads"}
    pathway = Pathway.from_dict(old)
    assert (pathway.second_read, pathway.sample_rate, pathway.read_form) == ("disagreement", 0.1, "nhs")
    assert load_pathway("icdr").read_form == "icdr"
    for bad, message in (({"second_read": "sometimes"}, "second_read"), ({"sample_rate": 2}, "sample_rate")):
        with pytest.raises(ConfigError, match=message):
            Pathway.from_dict({**old, "reads": bad})


def test_the_study_takes_the_stations_reads_as_its_reference(book):
    with_reads(book)
    refer = make_visit(book, "S1", "2026-03-01T10:00", {"right": 2, "left": 0})
    clear = make_visit(book, "S2", "2026-03-02T10:00", {"right": 0, "left": 0})
    record_read(book, refer, {"right": "R2M0", "left": "R0M0"}, ANA)
    record_read(book, clear, {"right": "R1M0", "left": "R0M0"}, ANA)
    study = station_reads(book.store)
    assert [(r.patient, r.date, r.reader, r.role, r.eye, r.grade, r.referable) for r in study][:2] == [
        ("S1", "2026-03-01", "Dr Ana", "primary", "left", "R0M0", False),
        ("S1", "2026-03-01", "Dr Ana", "primary", "right", "R2M0", True)]
    found = reference(study)
    assert {k: v.referable for k, v in found.items()} == {("S1", "2026-03-01"): True, ("S2", "2026-03-02"): False}


def command_visit(book, patient: str, day: str, received: str) -> int:
    """A command's visit (``receive``/``watch``: kind 'session') of photos taken on ``day``, opened on ``received``
    (UTC stamp), both eyes graded 0."""
    from drtrt.clinic.store import FileEntry

    visit = book.visit_for(patient, day=day)
    for n, eye in enumerate(("right", "left")):
        sha = f"{visit:032x}{n:032x}"
        record = {"status": "graded", "grade": 0, "referable": False, "lesions": {}, "reason": None}
        book.store.record_image(sha, record, FileEntry(f"/in/{patient}-{eye}.jpg", sha, 1, 1, patient, eye,
                                                       "screened", visit=visit), run_id=1)
    book.store.execute("UPDATE visits SET opened=? WHERE id=?", (received, visit))
    return visit


def test_a_visit_is_dated_by_its_photos_day_for_the_cohort_and_for_its_reads(book, tmp_path):
    """One date rule (visit_days): a command's visit by its photos' day, a station visit by its UTC opening day;
    the study's cohort and the station's reads date every visit the same, so each read meets its visit."""
    from drtrt.clinic.visits import visit_days
    from drtrt.verify.study.cohort import cohort_of

    with_reads(book, second_read="never")
    book.store.set_meta("validated_sha256", "a" * 64)
    late = command_visit(book, "C1", "2027-02-10", "2027-02-12T08:00:00Z")       # received two days after
    early = command_visit(book, "C2", "2027-02-10", "2027-02-09T23:59:00Z")      # opened the evening before (UTC)
    station = make_visit(book, "S1", "2027-02-11T23:30", {"right": 0, "left": 0})
    assert visit_days(book.store) == {late: "2027-02-10", early: "2027-02-10", station: "2027-02-11"}
    for visit in (late, early, station):
        record_read(book, visit, {"right": "R0M0", "left": "R0M0"}, ANA)
    dated = {(r.patient, r.date) for r in station_reads(book.store, final_only=True)}
    cohort = cohort_of([(tmp_path, book.store)], "2027-02-10", "2027-02-11")
    assert dated == {(p, r.date) for p, r in cohort.results.items()} == {
        ("C1", "2027-02-10"), ("C2", "2027-02-10"), ("S1", "2027-02-11")}
    assert set(reference(station_reads(book.store))) == dated                 # every study visit has its reference


def test_during_a_study_every_visit_of_its_period_is_queued_by_the_cohorts_date(book):
    """Both days of the period included, a command's visit by its photos' day (not the day it was received);
    before and after the period, a negative is queued only when sampled (rate 0 here)."""
    from drtrt.clinic.read_queue import read_queue

    pathway = with_reads(book, second_read="never", sample_rate=0.0)
    first = make_visit(book, "F1", "2027-01-04T00:10", {"right": 0, "left": 0})
    last = make_visit(book, "L1", "2027-06-30T23:50", {"right": 0, "left": 0})
    before = make_visit(book, "B1", "2027-01-03T23:50", {"right": 0, "left": 0})
    after = make_visit(book, "A1", "2027-07-01T00:10", {"right": 0, "left": 0})
    taken = command_visit(book, "C1", "2027-06-30", "2027-07-02T08:00:00Z")     # received after the period
    missed = command_visit(book, "C2", "2027-07-01", "2027-06-30T08:00:00Z")    # taken after it
    referred = make_visit(book, "R1", "2027-07-05T10:00", {"right": 2, "left": 0})
    queue = read_queue(book, pathway, ("2027-01-04", "2027-06-30"))
    assert [(q.visit, q.study, q.sampled) for q in queue] == [
        (referred, False, False), (first, True, False), (last, True, False), (taken, True, False)]
    assert not {before, after, missed} & {q.visit for q in queue}
    assert [q.visit for q in read_queue(book, pathway)] == [referred]                  # no study: the sample
    record_read(book, taken, {"right": "R0M0", "left": "R0M0"}, ANA)
    assert taken not in {q.visit for q in read_queue(book, pathway, ("2027-01-04", "2027-06-30"))}


def test_the_referral_follows_the_reads_both_ways(book):
    """The letter and the FHIR ServiceRequest (both from clinic.referrals) go where the clinicians' reads say."""
    with_reads(book, second_read="never")
    negative = make_visit(book, "P4", "2026-03-01T10:00", {"right": 0, "left": 0})
    referred = make_visit(book, "P5", "2026-03-01T10:00", {"right": 2, "left": 0})
    with pytest.raises(ConfigError, match="is not a referral"):
        find_referral(book.store, "P4")
    record_read(book, negative, {"right": "R3aM0", "left": "R0M0"}, ANA, reason="new vessels at the disc")
    found = find_referral(book.store, "P4")
    assert found.urgent and found.urgency == "refer_urgent" and found.days == NHS.due_in("refer_urgent")
    assert [(r.name, r.words) for r in found.readers] == [("Dr Ana", words_of("refer_urgent", NHS))]
    assert find_referral(book.store, "P5").urgency == "refer"
    record_read(book, referred, {"right": "R1M0", "left": "R0M0"}, ANA, reason="dust on the lens, not a bleed")
    with pytest.raises(ConfigError, match="is not a referral"):
        find_referral(book.store, "P5")                       # a named clinician ended it: no letter, request revoked


def test_a_visit_still_open_at_the_camera_is_not_read(book):
    """A read given while photos may still come would stand over what the next photo shows."""
    with_reads(book, second_read="never")
    visit = make_visit(book, "P6", "2026-03-01T10:00", {"right": 0, "left": 0}, close=False)
    with pytest.raises(ConfigError, match="still open at the camera"):
        record_read(book, visit, {"right": "R0M0", "left": "R0M0"}, ANA)
    assert reads_of(book.store, visit) == []
    assert not [e for e in audit.entries(book.store, visit) if e.action in ("read", "override")]
