"""Referral pathways: what a grade means for the patient, in the programme's own words.

A pathway maps each DR grade the model gives (ICDR 0–4) to an action — ``rescreen`` (with a
recall interval), ``refer`` or ``refer_urgent`` — and the words reports, the station, DICOM and
FHIR outputs use; and it words the outcomes that do not come from a grade (ungradable, a human
read, an eye not photographed, a visit incomplete). Two are built in:

- ``icdr`` (default): grade 0–1 → no referable DR, rescreen in 12 months; 2 → refer; 3–4 → refer
  urgently; ungradable → retake, then refer.
- ``nhs``: the English NHS Diabetic Eye Screening Programme's R0/R1/R2/R3 grades, mapped from
  ICDR conservatively — ICDR moderate NPDR spans R1 and R2, so it is R2 (referred); severe NPDR
  is R2 (pre-proliferative) and PDR R3 (urgent); M1 (maculopathy) is referred routinely.

Maculopathy is graded apart from retinopathy (R and M, as the NHS reports them): M1 — hard exudate
within a disc diameter of the fovea (:mod:`drtrt.runtime.macula`) — refers the eye whatever its
grade (the pathway's ``maculopathy.action``); M0 says nothing more; where the fovea cannot be
found, "M not assessed" is said, never M0. After ``escalation.after`` failed tries of an eye the
station's advice becomes ``escalation.words`` (dim the room, dilate, or refer as ungradable).

Each visit that still needs something (:data:`NEEDS`: refer urgently, refer, a human read, ungradable,
incomplete, a visit not closed) is due within the pathway's ``timescales`` (days, or "N weeks") at its
``destinations`` (who acts on it); a file without them gets :data:`DUE_DAYS` and :data:`DESTINATIONS`
(urgent 2 weeks and routine 13 weeks, as the NHS programme's failsafe). :mod:`.failsafe` lists them.

Clinicians' reads (:mod:`.reads`) follow the pathway's ``reads`` settings: ``second_read`` —
``disagreement`` (default: a second reader when the first read overrules the model), ``always`` or
``never`` (a one-person clinic) — with arbitration when two reads disagree; ``sample_rate`` (default
0.1), the share of negative visits put in the readers' queue as a quality sample; ``grading`` —
``nhs`` (R0–R3a/R3s, M0/M1, U) or ``icdr`` (ICDR 0–4 with DME, U), by default ``nhs`` when the
pathway's grades carry R codes. A file without ``reads`` gets the defaults.

A pathway file (YAML, the same shape as :meth:`Pathway.to_dict`) gives a programme its own. The
session keeps the pathway it was screened under (store meta ``pathway``), so its reports keep the
same words whoever writes them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from drtrt.errors import ConfigError

ACTIONS = ("rescreen", "refer", "refer_urgent")
OUTCOME_KEYS = ("ungradable", "human_read", "not_photographed", "incomplete")
M_KEYS = ("M1", "M0", "not_assessed")          # maculopathy: found, not found, the fovea could not be located
ESCALATE_AFTER = 2                             # failed tries of an eye before the advice changes
# What a visit may still need, most urgent first (:mod:`.failsafe`), with the defaults a pathway file
# without ``timescales`` / ``destinations`` gets: days from the visit to the action, and who acts.
NEEDS = ("refer_urgent", "refer", "human_read", "ungradable", "incomplete", "not_closed")
DUE_DAYS = {"refer_urgent": 14, "refer": 91, "human_read": 14, "ungradable": 28, "incomplete": 28, "not_closed": 1}
DESTINATIONS = {"refer_urgent": "hospital eye service — urgent clinic", "refer": "hospital eye service",
                "human_read": "a grader of the programme", "ungradable": "slit-lamp clinic or hospital eye service",
                "incomplete": "this screening clinic — photograph the missing eye",
                "not_closed": "this screening clinic — finish the visit"}
SECOND_READ = ("disagreement", "always", "never")
GRADING = ("nhs", "icdr")
SAMPLE_RATE = 0.1                              # negatives sampled into the readers' queue
_TIMESCALE = re.compile(r"(\d+)\s*(days?|weeks?)")
_M_WORDS = {"M1": "maculopathy: exudate within 1 disc diameter of the fovea — refer",
            "M0": "no maculopathy seen by the model", "not_assessed": "maculopathy not assessed — the fovea was not found"}
_ESCALATION = ("still ungradable after %(tries)d tries: dim the room and wait for the pupil to widen, dilate if your "
               "protocol allows, or refer as ungradable")


@dataclass(frozen=True)
class GradeRule:
    grade: int
    action: str                       # rescreen | refer | refer_urgent
    words: str
    recall_months: int | None = None  # rescreen only
    code: str | None = None           # the programme's short grade (NHS: R0-R3), shown beside M


@dataclass(frozen=True)
class Pathway:
    name: str
    grades: tuple[GradeRule, ...]
    words: tuple[tuple[str, str], ...]     # OUTCOME_KEYS → words
    maculopathy: tuple[tuple[str, str], ...] = tuple(_M_WORDS.items())   # M_KEYS → words
    m1_action: str = "refer"               # what M1 alone asks for (refer | refer_urgent)
    escalate_after: int = ESCALATE_AFTER   # failed tries of an eye before the advice becomes :attr:`escalation`
    escalation: str = _ESCALATION          # %(tries)d: the number of tries
    due_days: tuple[tuple[str, int], ...] = tuple(DUE_DAYS.items())          # NEEDS → days to act
    destinations: tuple[tuple[str, str], ...] = tuple(DESTINATIONS.items())  # NEEDS → who acts
    second_read: str = "disagreement"      # SECOND_READ: when a second clinician reads a visit
    sample_rate: float = SAMPLE_RATE       # share of negatives sampled into the readers' queue
    grading: str | None = None             # GRADING; None: nhs when the grades carry R codes, else icdr

    @property
    def read_form(self) -> str:
        """How a clinician grades under this pathway: nhs (R/M/U) or icdr (0-4, DME, U)."""
        return self.grading or ("nhs" if any((r.code or "").startswith("R") for r in self.grades) else "icdr")

    def due_in(self, need: str) -> int:
        """Days from the visit within which ``need`` (one of :data:`NEEDS`) is to be acted on."""
        return dict(self.due_days)[need]

    def destination(self, need: str) -> str:
        return dict(self.destinations)[need]

    def m_words(self, key: str | None) -> str:
        """The words for maculopathy ``key`` (M1 | M0; None: not assessed)."""
        return dict(self.maculopathy)[key or "not_assessed"]

    def rule(self, grade: int) -> GradeRule:
        for rule in self.grades:
            if rule.grade == grade:
                return rule
        raise ConfigError(f"pathway {self.name} says nothing about grade {grade}")

    def outcome_words(self, key: str) -> str:
        return dict(self.words)[key]

    def all_words(self) -> list[str]:
        """Every phrase this pathway can show (for translation catalogs)."""
        return ([rule.words for rule in self.grades] + [words for _, words in self.words]
                + [words for _, words in self.maculopathy] + [self.escalation]
                + [words for _, words in self.destinations])

    def to_dict(self) -> dict:
        return {"name": self.name,
                "grades": [{k: v for k, v in vars(rule).items() if v is not None} for rule in self.grades],
                "outcomes": dict(self.words),
                "maculopathy": {"action": self.m1_action, **dict(self.maculopathy)},
                "escalation": {"after": self.escalate_after, "words": self.escalation},
                "timescales": {k: _timescale(d) for k, d in self.due_days},
                "destinations": dict(self.destinations),
                "reads": {"second_read": self.second_read, "sample_rate": self.sample_rate,
                          **({"grading": self.grading} if self.grading else {})}}

    @classmethod
    def from_dict(cls, data: dict, source: str = "pathway") -> Pathway:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a pathway is a mapping with name, grades and outcomes")
        try:
            name = str(data["name"])
            rules = []
            for item in data["grades"]:
                action = str(item["action"])
                if action not in ACTIONS:
                    raise ConfigError(f"{source}: action {action!r} is not one of {', '.join(ACTIONS)}")
                recall = item.get("recall_months")
                if action == "rescreen" and not (isinstance(recall, int) and 1 <= recall <= 120):
                    raise ConfigError(f"{source}: grade {item['grade']} rescreens: give recall_months (1-120)")
                rules.append(GradeRule(int(item["grade"]), action, str(item["words"]).strip(),
                                       None if recall is None else int(recall),
                                       None if item.get("code") is None else str(item["code"]).strip()))
            outcomes = data["outcomes"]
            words = tuple((key, str(outcomes[key]).strip()) for key in OUTCOME_KEYS)
            macula = {**_M_WORDS, "action": "refer", **(data.get("maculopathy") or {})}   # older files: defaults
            m_words = tuple((key, str(macula[key]).strip()) for key in M_KEYS)
            m1_action = str(macula["action"])
            escalation = {"after": ESCALATE_AFTER, "words": _ESCALATION, **(data.get("escalation") or {})}
            escalate_after, escalation_words = int(escalation["after"]), str(escalation["words"]).strip()
            due = {**DUE_DAYS, **(data.get("timescales") or {})}                   # older files: defaults
            due_days = tuple((key, _days(due[key], f"{source}: timescale of {key}")) for key in NEEDS)
            places = {**DESTINATIONS, **(data.get("destinations") or {})}
            destinations = tuple((key, str(places[key]).strip()) for key in NEEDS)
            reads = {"second_read": "disagreement", "sample_rate": SAMPLE_RATE, "grading": None,
                     **(data.get("reads") or {})}                                  # older files: defaults
            second_read, sample_rate, grading = str(reads["second_read"]), float(reads["sample_rate"]), reads["grading"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: not a pathway ({type(exc).__name__}: {exc}); see drtrt/clinic/pathways.py "
                              "for the shape") from None
        grades = sorted(rule.grade for rule in rules)
        if grades != list(range(len(grades))) or not grades:
            raise ConfigError(f"{source}: grades must be listed once each from 0 up, found {grades}")
        if any(not rule.words for rule in rules) or any(not w for _, w in words + m_words + destinations):
            raise ConfigError(f"{source}: every grade, outcome, maculopathy grade and destination needs its words")
        if m1_action not in ("refer", "refer_urgent"):
            raise ConfigError(f"{source}: maculopathy's action must be refer or refer_urgent, found {m1_action!r}")
        if not 1 <= escalate_after <= 10:
            raise ConfigError(f"{source}: escalation after must be 1-10 tries, found {escalate_after}")
        if second_read not in SECOND_READ:
            raise ConfigError(f"{source}: reads second_read must be one of {', '.join(SECOND_READ)}, found {second_read!r}")
        if not 0 <= sample_rate <= 1:
            raise ConfigError(f"{source}: reads sample_rate must be 0-1, found {sample_rate}")
        if grading is not None and grading not in GRADING:
            raise ConfigError(f"{source}: reads grading must be one of {', '.join(GRADING)}, found {grading!r}")
        return cls(name, tuple(sorted(rules, key=lambda r: r.grade)), words, m_words, m1_action, escalate_after,
                   escalation_words, due_days, destinations, second_read, sample_rate, grading)


def _timescale(days: int) -> str:
    """Days as a pathway file writes them: "2 weeks", "10 days", "1 day"."""
    return f"{days // 7} weeks" if days % 7 == 0 else f"{days} day{'s' * (days != 1)}"


def _days(value, what: str) -> int:
    """A timescale as days: a number of days, or "N days" / "N weeks" (1 day to 2 years)."""
    found = _TIMESCALE.fullmatch(str(value).strip().lower())
    days = int(value) if isinstance(value, int) and not isinstance(value, bool) else \
        int(found[1]) * (7 if found[2].startswith("week") else 1) if found else None
    if days is None or not 1 <= days <= 730:
        raise ConfigError(f"{what} must be days (1-730) or \"N weeks\", found {value!r}")
    return days


_COMMON = {"human_read": "needs a human read — the grade and the lesion map disagree",
           "not_photographed": "not photographed — take it",
           "incomplete": "incomplete — photograph the missing eye"}
ICDR = Pathway.from_dict({
    "name": "icdr",
    "grades": [{"grade": g, "action": "rescreen", "recall_months": 12,
                "words": "no referable DR — rescreen in 12 months"} for g in (0, 1)] + [
               {"grade": 2, "action": "refer", "words": "refer"},
               {"grade": 3, "action": "refer_urgent", "words": "refer urgently"},
               {"grade": 4, "action": "refer_urgent", "words": "refer urgently"}],
    "outcomes": {"ungradable": "ungradable — retake or refer", **_COMMON}}, "built-in icdr")
NHS = Pathway.from_dict({
    "name": "nhs",
    "grades": [{"grade": 0, "code": "R0", "action": "rescreen", "recall_months": 12,
                "words": "R0 no retinopathy — rescreen in 12 months"},
               {"grade": 1, "code": "R1", "action": "rescreen", "recall_months": 12,
                "words": "R1 background retinopathy — rescreen in 12 months"},
               {"grade": 2, "code": "R2", "action": "refer", "words": "R2 pre-proliferative retinopathy — refer (routine)"},
               {"grade": 3, "code": "R2", "action": "refer", "words": "R2 pre-proliferative retinopathy — refer (routine)"},
               {"grade": 4, "code": "R3", "action": "refer_urgent", "words": "R3 proliferative retinopathy — refer urgently"}],
    "outcomes": {"ungradable": "U ungradable — retake, then refer", **_COMMON},
    "maculopathy": {"action": "refer", "M1": "M1 maculopathy — refer (routine)", "M0": "M0 no maculopathy",
                    "not_assessed": "M not assessed — the fovea was not found"}}, "built-in nhs")
BUILT_IN = {"icdr": ICDR, "nhs": NHS}


def load_pathway(spec: str | Path | None) -> Pathway:
    """``icdr`` / ``nhs`` / a YAML file; None → icdr."""
    if spec is None:
        return ICDR
    if str(spec).lower() in BUILT_IN:
        return BUILT_IN[str(spec).lower()]
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"pathway {spec!r} is neither {' nor '.join(BUILT_IN)} nor a readable file "
                          f"({exc.strerror or exc})") from None
    try:
        import yaml
    except ImportError:   # the file is JSON-compatible YAML more often than not
        yaml = None
    try:
        data = yaml.safe_load(text) if yaml is not None else json.loads(text)
    except Exception as exc:  # noqa: BLE001 - yaml's and json's errors alike
        raise ConfigError(f"pathway file {path} cannot be read: {str(exc).splitlines()[0]}") from None
    return Pathway.from_dict(data, str(path))


def stored_pathway(meta: dict[str, str]) -> Pathway:
    """The pathway a session keeps in its store meta (icdr for sessions without one)."""
    stored = meta.get("pathway")
    return Pathway.from_dict(json.loads(stored), "the session's pathway") if stored else ICDR


def keep_pathway(store, pathway: Pathway) -> None:
    """Record ``pathway`` in the session store (``store``: a SessionStore), replacing the one kept."""
    store.set_meta("pathway", pathway.to_dict())
