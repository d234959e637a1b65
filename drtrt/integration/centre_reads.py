"""The reading centre's reads (issue 24 item 3): who reads a pulled visit, in which order, and which read is final.

A centre's session folder (:mod:`.centre`) keeps each visit as the station sent it; its reads are kept beside it,
``read.json`` a list, oldest first (a folder from before second reads holds one read there: it is that list's
primary read). Each read names the station's SR it read (``sr``), the reader (an account's name and role, or the
name given to ``drtrt centre read``), the centre, the grades, the verdict they ask for, whether that overrules
the model (and why), and its stage.

Where the reads stand is :func:`drtrt.clinic.reads.state_of` — the station's own state machine — under the
centre's pathway (:func:`centre_pathway`: the one ``centre serve --pathway`` keeps in the session's store): a
second reader, another person, when the pathway's ``reads.second_read`` asks for one, and an arbitrator, a third,
when two reads disagree. Only the final read is ever pushed (:func:`final_read`). A centre that keeps no pathway
reads every pulled visit once, as before second reads (:data:`CENTRE_DEFAULT`).

The queue (:func:`queue`): every visit the model refers urgently, refers, asks a person to read or could not
grade, or that the station closed with an eye missing, then the pathway's sample of its negatives
(:func:`drtrt.clinic.read_queue.sampled` of the study UID), oldest first within each; what the model said is
found from the SR's verdict words (:func:`model_verdict`).
"""

from __future__ import annotations

import json
from pathlib import Path

from drtrt.clinic import audit
from drtrt.clinic.accounts import Accounts, Actor, may
from drtrt.clinic.pathways import BUILT_IN, ICDR, NHS, Pathway, stored_pathway
from drtrt.clinic.read_queue import sampled
from drtrt.clinic.reads import (ICDR_GRADES, M_GRADES, MAX_REASON, OVERRULABLE, R_GRADES, ReadState, StoredRead,
                                read_verdict, state_of, words_of)
from drtrt.clinic.store import SessionStore, now
from drtrt.clinic.verdicts import HUMAN_READ, INCOMPLETE, REFER, REFER_URGENT, RESCREEN, UNGRADABLE
from drtrt.errors import ConfigError, DataError
from drtrt.fileio import atomic_write
from drtrt.integration.centre_conflicts import conflict_of
from drtrt.integration.uids import derive_uid, digest
from drtrt.messages import message

CENTRE_DEFAULT = Pathway.from_dict({**ICDR.to_dict(), "name": "centre (no pathway kept)",
                                    "reads": {"second_read": "never", "sample_rate": 1.0}}, "the centre's default")
"""A centre session that keeps no pathway: every pulled visit, one read each (as before second reads)."""
_FORMS = {"nhs": {f"{r}{m}" for r in R_GRADES for m in M_GRADES} | {"U"},
          "icdr": {f"ICDR{g}{d}" for g in ICDR_GRADES for d in ("", "+DME")} | {"U"}}
ORDER = (REFER_URGENT, REFER, HUMAN_READ, UNGRADABLE, INCOMPLETE, RESCREEN)
"""The queue's order (the station's, :data:`drtrt.clinic.read_queue.QUEUED`; a visit the station closed with an eye
missing is read here too, before the negatives: the centre may be the only person who sees it). Rescreen: sampled."""
PUSHED_KEYS = ("sr", "reader", "organisation", "grades", "verdict", "words", "overrules", "reason", "recorded")
"""A read as the VERIFIED SR and the corrected report state it (its digest names the SR: kept as before; a second
read or an arbitration also says its stage)."""


def centre_session(session: str | Path) -> Path:
    """``session`` if it is a centre's session folder (made by ``centre pull``), else one line."""
    if not (Path(session) / "visits").is_dir():
        raise DataError(f"{session} is not a centre session folder (no visits/): make it with drtrt centre pull")
    return Path(session)


def visit_dir(session: Path, study: str) -> Path:
    if not study or not all(c.isdigit() or c == "." for c in study):
        raise DataError(f"the PACS gave a study UID that is not a DICOM UID: {study!r}")
    return session / "visits" / study


def load(folder: Path) -> dict:
    """The pulled visit's summary (``visit.json``; {} when there is none)."""
    try:
        return json.loads((folder / "visit.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def load_reads(folder: Path) -> list[dict]:
    """Every centre read of the visit in ``folder``, oldest first (an older folder's one read: the primary)."""
    path = folder / "read.json"
    if not path.is_file():
        return []
    kept = json.loads(path.read_text(encoding="utf-8"))
    return [{"stage": "primary", "role": "reader", **read} for read in (kept if isinstance(kept, list) else [kept])]


def centre_pathway(store: SessionStore) -> Pathway:
    """The pathway the centre's session keeps (``centre serve --pathway``), else :data:`CENTRE_DEFAULT`."""
    meta = store.meta()
    return stored_pathway(meta) if meta.get("pathway") else CENTRE_DEFAULT


def model_verdict(visit: dict, pathway: Pathway = CENTRE_DEFAULT) -> str:
    """What the model asked for (a verdict id), from the SR's verdict words: the longest of the pathways' words
    the text starts with; words no pathway knows go by the SR's referable flag (no flag: a person reads it)."""
    text = visit.get("verdict") or ""
    found: list[tuple[str, str]] = []
    for known in (pathway, *BUILT_IN.values()):
        found += [(rule.words, rule.action) for rule in known.grades]
        found += [(known.outcome_words(key), key) for key in (UNGRADABLE, HUMAN_READ, INCOMPLETE)]
    matches = sorted(((len(words), action) for words, action in found if words and text.startswith(words)),
                     reverse=True)
    if matches:
        return matches[0][1]
    return {"Yes": REFER, "No": RESCREEN}.get(visit.get("referable"), HUMAN_READ)


def _stored(reads: list[dict]) -> list[StoredRead]:
    return [StoredRead(i, 0, "", r["stage"], r["reader"], r["role"], r["grades"], r["verdict"],
                       r.get("model_verdict"), bool(r["overrules"]), r["reason"], r["recorded"])
            for i, r in enumerate(reads)]


def current_reads(visit: dict, reads: list[dict]) -> list[dict]:
    """The reads of the report the visit holds now (those of a report the station replaced since do not count)."""
    return [r for r in reads if r["sr"] == visit.get("sr")]


def state(visit: dict, reads: list[dict], pathway: Pathway) -> ReadState:
    """Where the visit's reading stands (``next_stage`` None: final, or VERIFIED at the PACS)."""
    reading = state_of(_stored(current_reads(visit, reads)), pathway)
    if visit.get("verification") == "VERIFIED":
        return ReadState(reading.reads, reading.final, None)
    return reading


def queue(session: str | Path, pathway: Pathway | None = None, reader: str | None = None) -> list[dict]:
    """The pulled visits waiting for a read, in the module's order; each visit's summary with ``model_verdict``,
    ``sampled``, ``stage`` (primary | secondary | arbitration), ``readers`` and ``mine`` (``reader`` has read it:
    another person must take this stage)."""
    session = centre_session(session)
    if pathway is None:
        with SessionStore(session / "session.db") as store:
            pathway = centre_pathway(store)
    waiting = []
    for folder in sorted((session / "visits").glob("*")):
        visit = load(folder)
        if not visit or conflict_of(folder) is not None:      # two current reports: the page lists it apart
            continue
        verdict = model_verdict(visit, pathway)
        hit = verdict == RESCREEN and sampled(visit["study"], pathway.sample_rate)
        if verdict not in ORDER or (verdict == RESCREEN and not hit):
            continue
        reading = state(visit, load_reads(folder), pathway)
        if reading.next_stage is None:
            continue
        readers = [r.reader for r in reading.reads]
        mine = reader is not None and any(r.casefold() == reader.casefold() for r in readers)
        waiting.append({**visit, "model_verdict": verdict, "sampled": hit, "stage": reading.next_stage,
                        "readers": readers, "mine": mine})
    return sorted(waiting, key=lambda v: (ORDER.index(v["model_verdict"]), v.get("date", ""), v["study"]))


def record_read(session: str | Path, study: str, grades: dict[str, str], reader: str | Actor, organisation: str,
                reason: str | None = None) -> dict:
    """Keep a read of a pulled visit (eye → R0M0 … or ICDR2+DME …, U) at the stage it waits for. ``reader``: the
    logged-in account, or a name (``centre read``): where the centre keeps accounts, an enabled reader's or lead's."""
    session = centre_session(session)
    actor = reader if isinstance(reader, Actor) else _named(session, reader)
    with SessionStore(session / "session.db") as store:     # one reader at a time, and the trail
        return read_visit(store, session, study, grades, actor, organisation, reason)


def _named(session: Path, name: str) -> Actor:
    accounts = Accounts(session)
    if not accounts.exist():
        return Actor(" ".join(name.split()), "reader")
    actor = accounts.active(name)
    if actor is None or not may(actor.role, "read"):
        raise ConfigError(f"{name!r} is not an enabled reader's account of this centre: a centre's read names the "
                          "clinician who answers for it (drtrt accounts list --data-dir SESSION)")
    return actor


def read_visit(store: SessionStore, session: Path, study: str, grades: dict[str, str], actor: Actor,
               organisation: str, reason: str | None = None) -> dict:
    """:func:`record_read` in an open store (the centre's pages hold theirs); audited as read or override."""
    if not may(actor.role, "read"):
        raise ConfigError(message("only a reader or the programme lead may read a visit"))
    folder = visit_dir(session, study)
    visit = load(folder)
    if not visit:
        raise DataError(f"no pulled visit of study {study} in {session}: see drtrt centre list")
    if conflict_of(folder) is not None:
        raise ConfigError(message("study %(study)s has two final results at the PACS: a person resolves it there "
                                  "first", study=study))
    pathway = centre_pathway(store)
    reads = load_reads(folder)
    reading = state(visit, reads, pathway)
    if reading.next_stage is None:
        raise ConfigError(message("study %(study)s is already read (its result is final); a correction is read at the "
                                  "PACS", study=study))
    if any(r.reader.casefold() == actor.name.casefold() for r in reading.reads):
        raise ConfigError(message("the next read must be by another person than the earlier read(s)"))
    read = _graded(visit, grades, pathway, reason)
    read = {"sr": visit["sr"], "reader": actor.name, "role": actor.role, "organisation": organisation,
            "stage": reading.next_stage, **read}
    audit.append(store, actor, "override" if read["overrules"] else "read", patient=visit["patient"],
                 details={"study": study, "sr": visit["sr"], "stage": read["stage"], "grades": read["grades"],
                          "verdict": read["verdict"], "model_verdict": visit["verdict"], "reason": read["reason"],
                          "organisation": organisation})
    atomic_write(folder / "read.json", json.dumps([*reads, read], indent=1, ensure_ascii=False).encode())
    return read


def _graded(visit: dict, grades: dict[str, str], pathway: Pathway, reason: str | None) -> dict:
    """The read's grades, verdict and words, and whether it overrules the model (then with its reason)."""
    if sorted(grades) != ["left", "right"]:
        raise ConfigError(message("grade both eyes (U for an eye that cannot be graded)"))
    form = "icdr" if any(g.startswith("ICDR") for g in grades.values()) else "nhs"
    if not all(g in _FORMS[form] for g in grades.values()):
        raise ConfigError(f"grade each eye in one form: R0, R1, R2, R3, R3a or R3s with M0 or M1 (R2M0), or ICDR0 to "
                          f"ICDR4 with or without +DME, or U; found {grades['right']!r} and {grades['left']!r}")
    seen = {photo["eye"] for photo in visit.get("photos", [])}
    unseen = [eye for eye in ("right", "left") if seen & {"right", "left"} and eye not in seen and grades[eye] != "U"]
    if unseen:          # a grade for an eye nobody photographed would answer the visit's "incomplete"
        raise ConfigError(message("the %(eye)s eye was not photographed: grade it U", eye=unseen[0]))
    graded_by = pathway if pathway.read_form == form else ICDR if form == "icdr" else NHS
    verdict = read_verdict(grades, graded_by)
    model = model_verdict(visit, pathway)
    overrules = model in OVERRULABLE and verdict != model
    reason = " ".join((reason or "").split()) or None
    if overrules and (reason is None or len(reason) > MAX_REASON or not reason.isprintable()):
        raise ConfigError(message("this read overrules the model (%(model)s → %(verdict)s): give the reason (at "
                                  "most %(most)d characters)", model=visit["verdict"],
                                  verdict=words_of(verdict, graded_by), most=MAX_REASON))
    return {"grades": dict(sorted(grades.items())), "verdict": verdict, "words": words_of(verdict, graded_by),
            "model_verdict": model, "overrules": overrules, "reason": reason, "recorded": now()}


def final_read(visit: dict, reads: list[dict], pathway: Pathway) -> tuple[dict | None, str | None]:
    """The read to push (its :data:`PUSHED_KEYS`) and the stage still wanted (None: final)."""
    if not reads:
        return None, None
    latest = [r for r in reads if r["sr"] == reads[-1]["sr"]]
    reading = state_of(_stored(latest), pathway)
    if reading.final is None:
        return None, reading.next_stage
    chosen = latest[reading.final.id]
    stage = {"stage": chosen["stage"]} if chosen["stage"] != "primary" else {}      # a first read: as before
    return {**{key: chosen[key] for key in PUSHED_KEYS}, **stage}, None


def verified_uid(read: dict) -> str:
    """The SOP Instance UID of the VERIFIED SR that states ``read`` (its :data:`PUSHED_KEYS`): derived from the
    station's SR it read and the read itself, so a resend of the same read is the same instance."""
    return derive_uid("centre-read", read["sr"], digest(read))


def unsent(session: str | Path, pathway: Pathway, fhir: bool = False) -> list[str]:
    """The studies whose final read the PACS (with ``fhir``: or the FHIR server) has not confirmed yet: what the
    next push sends (a read of a report the station replaced since is not among them: it is never sent)."""
    waiting = []
    for folder in sorted((centre_session(session) / "visits").glob("*")):
        visit, reads = load(folder), load_reads(folder)
        if not visit or not reads or (reads[-1]["sr"] != visit["sr"] and visit["sr"] not in visit["pushed"]) \
                or conflict_of(folder) is not None:
            continue
        read, _ = final_read(visit, reads, pathway)
        if read is None:
            continue
        uid = verified_uid(read)
        if uid not in visit["pushed"] or (fhir and (folder / "fhir-report.json").is_file()
                                          and uid not in visit.get("fhir_pushed", [])):
            waiting.append(visit["study"])
    return waiting
