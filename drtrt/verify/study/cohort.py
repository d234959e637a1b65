"""The model's side of a study: each patient's first visit in the study period, from one or more sessions.

A visit's result is its verdict (:mod:`drtrt.clinic.verdicts`, the same function every report uses),
per patient: **positive** when the model sends the patient to a person — refer urgently, refer, or a
human read (its grade and lesion map disagree); **negative** when it says rescreen; **not imageable**
when it could not say — ungradable, or an eye never graded (incomplete). A visit's date is its
day (the day its photos were taken, else the day it was opened: :func:`~drtrt.clinic.visits.visit_days`,
the rule the station's reads and its readers' queue use too). Every session must have screened with the
same model file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from drtrt.clinic.pathways import stored_pathway
from drtrt.clinic.store import SessionStore
from drtrt.clinic.verdicts import HUMAN_READ, REFER, REFER_URGENT, RESCREEN, patient_verdicts
from drtrt.clinic.visits import visit_days
from drtrt.errors import ConfigError, DataError

POSITIVE = (REFER_URGENT, REFER, HUMAN_READ)


@dataclass(frozen=True)
class ModelResult:
    """One patient's study visit as the model judged it. outcome: positive | negative | not_imageable."""

    patient: str
    date: str
    verdict: str
    outcome: str
    session: str
    visit: int | None


def outcome_of(verdict: str) -> str:
    return "positive" if verdict in POSITIVE else "negative" if verdict == RESCREEN else "not_imageable"


@dataclass(frozen=True)
class Cohort:
    """The study's patients as the model saw them; model_sha256: the model file every session screened with
    (a TensorRT engine's: the ONNX it was built from); model_name: its file name."""

    results: dict[str, ModelResult]
    model_sha256: str
    model_name: str


def _validated_sha256(meta: dict[str, str], where: Path) -> str:
    sha = meta.get("validated_sha256") or ""
    if not sha and meta.get("model_name", "").endswith(".onnx"):      # before drtrt kept it: the ONNX's own
        sha = meta.get("model_sha256", "")
    if not sha:
        raise DataError(f"{where} does not say which model file it screened with (a session from before issue 24 "
                        "with a TensorRT engine): screen its photos again")
    return sha


def read_cohort(sessions: list[Path], start: str, end: str) -> Cohort:
    """Every patient with a visit from ``start`` to ``end`` (ISO dates, both included) in ``sessions``
    (session folders), with the result of their first such visit."""
    if not sessions:
        raise ConfigError("name at least one session folder (--sessions)")
    for folder in sessions:
        if not (folder / "session.db").is_file():
            raise ConfigError(f"{folder} is not a session folder (no session.db)")

    def opened():
        for folder in sessions:                  # one at a time: the same folder twice is read twice, not locked
            with SessionStore(folder / "session.db") as store:
                yield folder, store

    stores = opened()
    try:
        return cohort_of(stores, start, end)
    finally:
        stores.close()


def cohort_of(stores: Iterable[tuple[Path, SessionStore]], start: str, end: str) -> Cohort:
    """:func:`read_cohort` over open stores ((session folder, its store)): a running station counts its own
    session through the store it holds (a session folder is locked to one opening)."""
    found: dict[str, ModelResult] = {}
    models: dict[str, str] = {}
    for folder, store in stores:
        meta = store.meta()
        models.setdefault(_validated_sha256(meta, folder), meta.get("model_name", "?"))
        dates = visit_days(store)
        verdicts = patient_verdicts(store.rows(), stored_pathway(meta), provisional=True)
        for v in verdicts:
            date = dates.get(v.visit, "")
            if not start <= date <= end:
                continue
            result = ModelResult(v.patient, date, v.verdict, outcome_of(v.verdict), folder.name, v.visit)
            kept = found.get(v.patient)
            if kept is None or (date, folder.name, v.visit or 0) < (kept.date, kept.session, kept.visit or 0):
                found[v.patient] = result
    if len(models) > 1:
        raise DataError("the sessions screened with different model files ("
                        f"{', '.join(f'{n} {s[:12]}' for s, n in models.items())}): a study validates one")
    (sha, name), = models.items()
    return Cohort(dict(sorted(found.items())), sha, name)
