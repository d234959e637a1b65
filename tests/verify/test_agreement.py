"""After go-live: weekly agreement between the model and the clinicians' reads — Cohen's kappa and sensitivity on
the sample, against hand-computed values — and an alert when sensitivity drops below the validation record's bound."""

from __future__ import annotations

import pytest
from study_helpers import programme_keys, signed_record
from visit_fixture import make_visit, next_visit_sampled

from drtrt.clinic.accounts import Actor
from drtrt.clinic.pathways import NHS, Pathway, keep_pathway
from drtrt.clinic.reads import record_read
from drtrt.clinic.store import SessionStore
from drtrt.clinic.visits import VisitBook, visit_days
from drtrt.task import TaskSpec
from drtrt.verify.study.agreement import MIN_REFERABLE, weekly_agreement

pytest.importorskip("sklearn", reason="the weekly agreement needs scikit-learn (study extra)")
ANA = Actor("Dr Ana", "reader")
REFERABLE, CLEAR = {"right": "R2M0", "left": "R0M0"}, {"right": "R0M0", "left": "R0M0"}


def validated(store):
    """The session's model with a signed validation record: sensitivity lower bound 0.84."""
    record = signed_record(store.meta()["model_sha256"], programme_keys()[0])
    store.set_meta("validation", record.to_json())
    store.set_meta("validation_key", record.signature.public_key)


def read(book, patient, model_grade, read_grades, drawn: bool | None = None):
    """A visit the model graded ``model_grade`` on the right eye, read as ``read_grades``; ``drawn``: its id made one
    the 10 % sample of negatives draws (True) or does not (False), as the queue would have it."""
    if drawn is not None:
        next_visit_sampled(book, 0.1, drawn)
    visit = make_visit(book, patient, "2026-03-02T10:00", {"right": model_grade, "left": 0})
    record_read(book, visit, read_grades, ANA, reason="the reader's own grade")
    return visit


def week_of(book, pairs):
    """Read visits as (model, people) pairs; each negative the sample drew, as the queue reads them."""
    for n, (model, people) in enumerate(pairs):
        read(book, f"P{n}", 2 if model else 0, REFERABLE if people else CLEAR, drawn=None if model else True)
    [week] = weekly_agreement(book.store)
    return week


@pytest.fixture
def book(tmp_path):
    with SessionStore(tmp_path / "session.db") as store:
        store.bind_model("b" * 64, "model.onnx", TaskSpec())
        keep_pathway(store, Pathway.from_dict({**NHS.to_dict(), "reads": {"second_read": "never",
                                                                         "sample_rate": 0.1}}))
        yield VisitBook(store)


def test_kappa_and_sensitivity_on_the_sample_match_hand_computed_values(book):
    # model referred 4 (3 confirmed, 1 not); of 2 sampled negatives, 1 the reader found referable
    week = week_of(book, [(1, 1), (1, 1), (1, 1), (1, 0), (0, 0), (0, 1)])
    po, pe = 4 / 6, (4 / 6) * (4 / 6) + (2 / 6) * (2 / 6)
    assert week.n == 6 and week.referable == 4
    assert week.kappa == pytest.approx((po - pe) / (1 - pe)) and week.kappa == pytest.approx(0.25)
    assert week.sensitivity == pytest.approx(3 / (3 + 1 / 0.1))      # each sampled negative stands for 10
    assert week.lower_bound is None and not week.alert              # no validation record: nothing to compare


def test_a_week_below_the_records_lower_bound_alerts_and_too_few_reads_do_not(book):
    validated(book.store)
    week = week_of(book, [(1, 1)] * 3 + [(1, 0), (0, 0), (0, 1)])
    assert week.referable < MIN_REFERABLE and not week.judged and not week.alert
    read(book, "P-more", 2, REFERABLE)                                # a fifth referable read
    [week] = weekly_agreement(book.store)
    assert week.referable == MIN_REFERABLE and week.lower_bound == 0.84
    assert week.sensitivity == pytest.approx(4 / 14) and week.kappa == pytest.approx(0.3) and week.alert


def test_a_model_the_readers_confirm_does_not_alert(book):
    validated(book.store)
    week = week_of(book, [(1, 1)] * 5 + [(0, 0)] * 3)
    assert week.sensitivity == 1.0 and week.kappa == pytest.approx(1.0) and week.judged and not week.alert


def test_a_negative_read_for_another_reason_than_the_sample_counts_once(book):
    """Horvitz-Thompson: a missed referral stands for 1 / (the chance its visit was read) — 10 for a negative the
    sample drew, 1 for one read although the sample did not draw it, and 1 for every negative of a validation
    study's period (all read), drawn or not."""
    week = week_of(book, [(1, 1)] * 3)
    read(book, "P-not-drawn", 0, REFERABLE, drawn=False)
    [week] = weekly_agreement(book.store)
    assert week.referable == 4 and week.sensitivity == pytest.approx(3 / (3 + 1))
    drawn = read(book, "P-drawn", 0, REFERABLE, drawn=True)
    [week] = weekly_agreement(book.store)
    assert week.sensitivity == pytest.approx(3 / (3 + 1 + 10))
    day = visit_days(book.store)[drawn]
    [week] = weekly_agreement(book.store, census=(day, day))          # the study read every visit of that day
    assert week.sensitivity == pytest.approx(3 / (3 + 1 + 1))
    [week] = weekly_agreement(book.store, census=("2020-01-01", "2020-12-31"))    # a study long before
    assert week.sensitivity == pytest.approx(3 / (3 + 1 + 10))
