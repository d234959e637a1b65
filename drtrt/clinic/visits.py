"""Visits: a patient at the camera, the photos the protocol asks for, and the visit's verdict.

Kept in the session store beside the screening results (one store for ``drtrt screen``,
``drtrt watch`` and the station), in the tables :mod:`.schema` declares: ``patients`` (ID, optional name and date of
birth), ``visits`` (patient, protocol, opened/closed, the verdict it closed with, the slot the
next photo fills) and ``captures`` (which photo fills which slot; a retake points the old capture
at the new one, so nothing is replaced silently; a graded photo is retaken only for a reason, kept
on the new capture; a photo moved to the other eye or another patient's visit keeps where it came
from). Each change is one durable transaction.

A protocol is the fields per eye: one (any field) or two (disc- and macula-centred, as EyeArt
requires). A slot is ``eye/field``. A slot's state: ``missing`` (not photographed — take it),
``screening`` (photo in, result not yet), ``graded``, ``retake`` (refused: ungradable or
unreadable — take it again); warnings (the other eye, the other field, heads disagreeing) ride
along. The visit's verdict is :func:`drtrt.clinic.verdicts.visit_verdict` over its eyes, each eye judged
on the photos that currently fill its slots and the retaken ones whose result stands. After the
pathway's ``escalate_after`` refused photos of an eye, its refused slot carries the pathway's
escalation words instead of the same quality advice again.

A patient ID already registered is never renamed by registering it again: a different name or date
of birth is refused (:class:`PatientConflict`) unless the change is confirmed.

A change made by a person (``by``: an :class:`~drtrt.clinic.accounts.Actor`) writes its audit entry
(:mod:`.audit`) in the change's own transaction: the record and the trail cannot diverge.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

from drtrt.clinic import audit, reads
from drtrt.clinic.accounts import NO_LOGIN, Actor
from drtrt.clinic.pathways import stored_pathway
from drtrt.clinic.patients import EYES, MAX_PATIENT_ID, Patient, validate_birth_date, validate_name, validate_patient_id
from drtrt.clinic.slots import (FIELDS, REFUSED, RETAKE_REASONS, PatientConflict, Protocol, Slot,  # noqa: F401 (API)
                                Visit, retake_reason)
from drtrt.clinic.store import FileEntry, SessionRow, SessionStore, now
from drtrt.clinic.verdicts import (LABELS, NOT_PHOTOGRAPHED, REFER, REFER_URGENT, SCREENING, EyeVerdict, eye_verdict,
                                   provisional, visit_verdict)
from drtrt.errors import ConfigError
from drtrt.messages import message


def visit_days(store: SessionStore) -> dict[int, str]:
    """Each visit's day (visit id → ``YYYY-MM-DD``) as a validation study counts it: the day its photos were
    taken (a command's visit, ``day``), else the UTC day it was opened (a station visit). The one date rule of
    the study's cohort, its reads from the station and the readers' queue during the study."""
    return {r["id"]: str(r["day"]) for r in store.execute(
        "SELECT id, COALESCE(day, substr(opened, 1, 10)) AS day FROM visits")}


class VisitBook:
    """The visits kept in ``store`` (a :class:`SessionStore`, shared with the screening session)."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    # -- patients and visits --------------------------------------------------------------------
    def register(self, patient_id: str, name: str | None = None, birth_date: str | None = None,
                 change: bool = False, by: Actor | None = None) -> Patient:
        """Add a patient. An ID already registered keeps its name and date of birth: a value given where
        none is kept is added, a different one raises :class:`PatientConflict` unless ``change`` (the
        operator confirmed the change)."""
        try:
            pid = validate_patient_id(patient_id)
        except ConfigError:
            raise ConfigError(f"a patient ID has at most {MAX_PATIENT_ID} printable characters") from None
        if pid is None:
            raise ConfigError("a patient ID is needed")
        name, birth_date = validate_name(name), validate_birth_date(birth_date)
        with self.store.transaction():
            known = self.patient(pid)
            if known is not None and not change and any(
                    given is not None and kept is not None and given != kept
                    for given, kept in ((name, known.name), (birth_date, known.birth_date))):
                raise PatientConflict(known)
            self.store.execute("INSERT INTO patients VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                               "name=COALESCE(excluded.name, name), "
                               "birth_date=COALESCE(excluded.birth_date, birth_date)",
                               (pid, name, birth_date, now()))
            if by is not None:
                audit.append(self.store, by, "register", patient=pid, details={"changed": bool(change and known)})
        return self.patient(pid)

    def patient(self, patient_id: str) -> Patient | None:
        rows = self.store.execute("SELECT * FROM patients WHERE id=?", (patient_id,))
        return Patient(rows[0]["id"], rows[0]["name"], rows[0]["birth_date"], rows[0]["registered"]) if rows else None

    def find_patients(self, text: str, limit: int = 20) -> list[Patient]:
        like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self.store.execute("SELECT * FROM patients WHERE id LIKE ? ESCAPE '\\' OR name LIKE ? ESCAPE '\\' "
                                  "ORDER BY registered DESC LIMIT ?", (like, like, limit))
        return [Patient(r["id"], r["name"], r["birth_date"], r["registered"]) for r in rows]

    def open_visit(self, patient_id: str, protocol: Protocol, by: Actor | None = None) -> int:
        """A new visit for a registered patient, or the patient's visit still open (one at a time)."""
        if self.patient(patient_id) is None:
            raise ConfigError(f"patient {patient_id!r} is not registered")
        with self.store.transaction():
            open_ = self.store.execute("SELECT id FROM visits WHERE patient=? AND closed IS NULL AND kind='station'",
                                       (patient_id,))
            if open_:
                visit_id = int(open_[0]["id"])
            else:
                self.store.execute("INSERT INTO visits(patient, protocol, opened) VALUES (?, ?, ?)",
                                   (patient_id, protocol.to_json(), now()))
                visit_id = int(self.store.execute("SELECT last_insert_rowid() AS id")[0]["id"])
            if by is not None:
                audit.append(self.store, by, "open_visit", visit=visit_id, patient=patient_id,
                             details={"fields": protocol.fields, "already_open": bool(open_)})
            return visit_id

    def open_visit_of(self, patient_id: str) -> int:
        """The patient's visit open at the station (a photo is moved only into an open visit)."""
        found = self.store.execute("SELECT id FROM visits WHERE patient=? AND closed IS NULL AND kind='station'",
                                   (patient_id.strip(),))
        if not found:
            raise ConfigError("this patient ID has no open visit: start their visit first")
        return int(found[0]["id"])

    def visit_for(self, patient_id: str, study_uid: str | None = None, day: str | None = None,
                  path: str | None = None) -> int:
        """The visit a command's photo of ``patient_id`` joins (a visit of kind ``session``, opened on
        first use): the one of the camera's DICOM study ``study_uid``, else the patient's visit of
        ``day`` (default: today, local time) without a study. A returning patient's photos of another
        day are another visit: a result is never judged over photos of different visits. A visit a clinician
        has read is never joined (:mod:`.reads`): the photo opens the patient's next visit of that study or day,
        audited as ``after_read`` naming the read visit, and read in its own right
        (:func:`drtrt.clinic.reads.after_read`). ``path``: a file already in the patient's read visit stays there
        (screened again, it is not a new photo; new bytes under its name: :meth:`after_read_entry`)."""
        day = day or time.strftime("%Y-%m-%d")
        with self.store.transaction():
            kept = self.store.file(path) if path else None
            if kept is not None and kept.patient == patient_id and kept.visit and self.has_reads(kept.visit):
                return int(kept.visit)
            found = self.store.execute("SELECT id FROM visits WHERE kind='session' AND patient=? AND "
                                       + ("study_uid=?" if study_uid else "day=? AND study_uid IS NULL")
                                       + " ORDER BY id DESC LIMIT 1", (patient_id, study_uid or day))
            if found and not self.has_reads(found[0]["id"]):
                return int(found[0]["id"])
            self.store.execute("INSERT OR IGNORE INTO patients VALUES (?, NULL, NULL, ?)", (patient_id, now()))
            self.store.execute("INSERT INTO visits(patient, protocol, opened, kind, study_uid, day) "
                               "VALUES (?, ?, ?, 'session', ?, ?)",
                               (patient_id, Protocol().to_json(), now(), study_uid or None, day))
            new = int(self.store.execute("SELECT last_insert_rowid() AS id")[0]["id"])
            if found:           # the read visit stays exactly what was read; this photo is read on its own
                audit.append(self.store, NO_LOGIN, "after_read", visit=new, patient=patient_id,
                             details={"read_visit": int(found[0]["id"]), "study_uid": study_uid or None, "day": day})
            return new

    def has_reads(self, visit_id: int) -> bool:
        """Whether a clinician has read visit ``visit_id`` (:mod:`.reads`)."""
        return bool(self.store.execute("SELECT 1 FROM reads WHERE visit=? LIMIT 1", (int(visit_id),)))

    def after_read_entry(self, entry: FileEntry) -> FileEntry:
        """``entry``, a new photo's result about to be kept (in the caller's transaction): when a clinician read its
        command's visit while it was screened, it goes to the patient's next visit, as if it came after the read."""
        if entry.visit is None or not self.has_reads(entry.visit):
            return entry
        (row,) = self.store.execute("SELECT * FROM visits WHERE id=?", (int(entry.visit),))
        if row["kind"] != "session":         # a station visit is read only once closed: no photo joins it then
            return entry
        return replace(entry, visit=self.visit_for(row["patient"], row["study_uid"], row["day"]))

    def close_visit(self, visit_id: int, by: Actor | None = None) -> Visit:
        """Close the visit with its verdict; by a person, audited as ``close``, or ``finish_anyway`` when
        photos are still missing or refused (the slots named)."""
        visit = self.visit(visit_id)
        if visit.closed is None:
            with self.store.transaction():
                if by is not None:
                    open_slots = [s.name for s in visit.slots if s.state != "graded"]
                    audit.append(self.store, by, "finish_anyway" if open_slots else "close", visit=visit_id,
                                 patient=visit.patient.id, details={"verdict": visit.verdict, "not_graded": open_slots})
                # the model's verdict is what a visit closes with; a clinician's read is taken over it when shown
                self.store.execute("UPDATE visits SET closed=?, verdict=? WHERE id=?",
                                   (now(), json.dumps({"verdict": visit.model_verdict, "words": visit.model_words}),
                                    visit_id))
                self._keep_reason(visit_id, None)        # a retake chosen, never taken: nothing waits for it
        return self.visit(visit_id)

    def set_target(self, visit_id: int, slot: str | None, reason: str | None = None, by: Actor | None = None) -> None:
        """The slot the next photo fills (None: the first that needs one). Retaking a graded photo needs
        ``reason`` (:func:`retake_reason`), kept for the next capture in that slot."""
        visit = self.visit(visit_id)
        if slot is not None and slot not in visit.protocol.slots:
            raise ConfigError(f"no slot {slot!r} in this visit")
        if visit.closed is not None:
            raise ConfigError("this visit is closed")
        if reason is None and any(s.name == slot and s.state == "graded" for s in visit.slots):
            raise ConfigError("say why this photo is retaken")
        with self.store.transaction():
            self.store.execute("UPDATE visits SET target=? WHERE id=?", (slot, visit_id))
            self._keep_reason(visit_id, (slot, reason) if slot and reason else None)
            if by is not None:
                audit.append(self.store, by, "retake_chosen" if reason else "to_camera", visit=visit_id,
                             patient=visit.patient.id, details={"slot": slot, "reason": reason})

    def _keep_reason(self, visit_id: int, pending: tuple[str, str] | None) -> None:
        """The retake reason waiting for the next capture of the visit's slot (meta ``station_retake_reasons``)."""
        kept = self._reasons()
        kept.pop(str(visit_id), None)
        if pending is not None:
            kept[str(visit_id)] = list(pending)
        self.store.set_meta("station_retake_reasons", kept)     # joins the caller's transaction

    def _reasons(self) -> dict:
        return self.store.get_meta("station_retake_reasons") or {}

    # -- photos ---------------------------------------------------------------------------------
    def add_capture(self, visit_id: int, path: str, sha256: str, source: str, slot: str | None = None,
                    reason: str | None = None, by: Actor | None = None) -> str:
        """Put a photo into ``slot`` (default: the visit's target); a photo already filling the slot is
        marked replaced by this one, for ``reason`` (default: the one given when the retake was chosen,
        :meth:`set_target`). Returns the slot. The target moves to the next slot needing a photo."""
        visit = self.visit(visit_id)
        if visit.closed is not None:
            raise ConfigError("this visit is closed: open a new visit for more photos")
        slot = slot or visit.target
        if slot is None:
            raise ConfigError("every photo of this visit is taken: choose the photo to retake first")
        if slot not in visit.protocol.slots:
            raise ConfigError(f"no slot {slot!r} in this visit")
        if any(s.row is not None and s.row.sha256 == sha256 for s in visit.slots):
            raise ConfigError("this photo is already in the visit")
        elsewhere = self.store.execute("SELECT v.patient FROM captures c JOIN visits v ON v.id = c.visit "
                                       "WHERE c.sha256=? AND c.visit<>?", (sha256, visit_id))
        if elsewhere:
            raise ConfigError("this photo was already taken in another visit — check the patient")
        pending = self._reasons().get(str(visit_id))
        if reason is None and pending and pending[0] == slot:
            reason = pending[1]
        with self.store.transaction():
            self.store.execute("INSERT INTO captures(visit, slot, path, sha256, source, taken, reason) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?)",
                               (visit_id, slot, path, sha256, source, now(), reason))
            new = int(self.store.execute("SELECT last_insert_rowid() AS id")[0]["id"])
            self.store.execute("UPDATE captures SET replaced_by=? "
                               "WHERE visit=? AND slot=? AND id<>? AND replaced_by IS NULL",
                               (new, visit_id, slot, new))
            self.store.execute("UPDATE visits SET target=NULL WHERE id=?", (visit_id,))
            if pending:
                self._keep_reason(visit_id, None)
            if by is not None:
                replaced = [s.sha256 for s in visit.slots if s.name == slot and s.sha256]
                audit.append(self.store, by, "capture", visit=visit_id, patient=visit.patient.id, image=sha256,
                             details={"slot": slot, "source": source, "retake_of": replaced[0] if replaced else None,
                                      "reason": reason})
        return slot

    def move_capture(self, capture_id: int, visit_id: int, slot: str, by: Actor | None = None) -> None:
        """Move the photo of capture ``capture_id`` (one filling a slot, screened) into ``slot`` of open visit
        ``visit_id`` — the other eye, or another patient's visit. Its file's patient, eye and visit follow,
        so its result counts there and no longer where it was; a photo filling ``slot`` is replaced by it
        as by a retake. ``moved_from`` keeps where it was. One transaction."""
        rows = self.store.execute("SELECT c.*, v.closed AS closed FROM captures c JOIN visits v ON v.id = c.visit "
                                  "WHERE c.id=?", (int(capture_id),))
        if not rows or rows[0]["replaced_by"] is not None:
            raise ConfigError("only a photo filling a slot can be moved")
        capture, target = rows[0], self.visit(visit_id)
        if capture["closed"] is not None or target.closed is not None:
            raise ConfigError("this visit is closed")
        if slot not in target.protocol.slots:
            raise ConfigError(f"no slot {slot!r} in this visit")
        if (capture["visit"], capture["slot"]) == (target.id, slot):
            raise ConfigError("the photo is already there")
        if self.store.file(capture["path"]) is None:
            raise ConfigError("wait for this photo's result before moving it")
        with self.store.transaction():
            self.store.execute("UPDATE captures SET replaced_by=? WHERE visit=? AND slot=? AND replaced_by IS NULL",
                               (capture["id"], target.id, slot))
            self.store.execute("UPDATE captures SET visit=?, slot=?, moved_from=?, replaced_by=NULL WHERE id=?",
                               (target.id, slot, f"visit {capture['visit']} {capture['slot']}", capture["id"]))
            self.store.execute("UPDATE files SET patient=?, eye=?, visit=? WHERE path=?",
                               (target.patient.id, slot.split("/")[0], target.id, capture["path"]))
            self.store.execute("UPDATE visits SET target=NULL WHERE id IN (?, ?)", (capture["visit"], target.id))
            if by is not None:
                audit.append(self.store, by, "move", visit=target.id, patient=target.patient.id, image=capture["sha256"],
                             details={"from_visit": capture["visit"], "from": capture["slot"], "to": slot})

    def unscreened(self) -> list[tuple[str, str, str, int]]:
        """(path, patient, eye, visit) of current captures the store holds no result for (a restart's to-do)."""
        rows = self.store.execute("SELECT c.path, v.patient, c.slot, c.visit FROM captures c "
                                  "JOIN visits v ON v.id = c.visit LEFT JOIN files f ON f.path = c.path "
                                  "WHERE c.replaced_by IS NULL AND f.path IS NULL")
        return [(r["path"], r["patient"], r["slot"].split("/")[0], int(r["visit"])) for r in rows]

    def camera_file_taken(self, name: str, size: int, mtime_ns: int) -> bool:
        return bool(self.store.execute("SELECT 1 FROM camera_files WHERE name=? AND size=? AND mtime_ns=?",
                                       (name, size, mtime_ns)))

    def mark_camera_file(self, name: str, size: int, mtime_ns: int, sha256: str) -> None:
        with self.store.transaction():
            self.store.execute("INSERT OR IGNORE INTO camera_files VALUES (?, ?, ?, ?, ?)",
                               (name, size, mtime_ns, sha256, now()))

    # -- reading --------------------------------------------------------------------------------
    def visit(self, visit_id: int) -> Visit:
        rows = self.store.execute("SELECT * FROM visits WHERE id=?", (int(visit_id),))
        if not rows:
            raise ConfigError(f"no visit {visit_id}")
        v = rows[0]
        protocol = Protocol.from_json(v["protocol"])
        captures = self.store.execute("SELECT * FROM captures WHERE visit=? ORDER BY id DESC", (v["id"],))
        if v["kind"] == "session":      # a command's photos (no capture rows): each one shown, each one counts
            captures = [{"id": None, "slot": f"{f['eye']}/any", "path": f["path"], "sha256": f["sha256"],
                         "taken": f["seen_at"], "replaced_by": None, "reason": None, "moved_from": None}
                        for f in self.store.execute("SELECT * FROM files WHERE visit=? AND eye IN ('right', 'left') "
                                                    "AND status <> 'duplicate' ORDER BY seq DESC", (v["id"],))]
        results = {r.path: r for r in self.store.rows([c["path"] for c in captures])}
        named = [(c["slot"], [c]) for c in captures] if v["kind"] == "session" else []
        named += [(name, [c for c in captures if c["slot"] == name]) for name in protocol.slots
                  if not any(n == name for n, _ in named)]
        slots = [self._slot(name, mine, results, captures)
                 for name, mine in sorted(named, key=lambda item: protocol.slots.index(item[0]))]
        meta = self.store.meta()
        pathway, unvalidated = stored_pathway(meta), provisional(meta)
        eyes = {}
        for eye in EYES:
            # the photos filling the eye's slots, and every retaken one (whose result may stand: eye_verdict)
            current = [s.row for s in slots if s.eye == eye and s.row is not None]
            earlier = [r for c in captures if c["replaced_by"] is not None and c["slot"].split("/")[0] == eye
                       and (r := results.get(c["path"])) is not None and r.replaced]
            screening = any(s.eye == eye and s.state == "screening" for s in slots)
            judged = eye_verdict(eye, current + earlier, pathway, unvalidated)
            if screening and judged.verdict not in (REFER, REFER_URGENT):   # nothing calmer while a photo is in
                judged = EyeVerdict(eye, SCREENING, judged.grade, judged.images, provisional=unvalidated)
            eyes[eye] = judged
            tries = sum(1 for c in captures if c["slot"].split("/")[0] == eye
                        and getattr(results.get(c["path"]), "status", None) in REFUSED)
            for slot in (s for s in slots if s.eye == eye):
                slot.tries = tries
                if slot.state == "retake" and tries >= pathway.escalate_after:
                    slot.escalation = pathway.escalation
                for entry in slot.replaced:      # what each retaken photo said, and whether it still counts
                    row = entry.pop("row")
                    entry["stands"] = row is not None and any(r.path == row.path for r in judged.images)
                    alone = eye_verdict(eye, [replace(row, replaced=False)], pathway, unvalidated) if row else None
                    entry["verdict"], entry["words"] = (alone.verdict, alone.words) if alone else (None, None)
        verdict, words = visit_verdict(eyes, any(s.state == "screening" for s in slots), pathway)
        target = v["target"] or next((s.name for s in slots if s.state in ("missing", "retake")), None)
        closed = json.loads(v["verdict"]) if v["verdict"] else {"verdict": None, "words": None}
        found = Visit(v["id"], self.patient(v["patient"]), protocol, v["opened"], v["closed"], slots, eyes, verdict,
                      closed["verdict"], None if v["closed"] else target, words, closed["words"], unvalidated)
        return self._with_reads(found, pathway)

    def _with_reads(self, visit: Visit, pathway) -> Visit:
        """The visit with its clinicians' reads taken over the model's result (:mod:`.reads`): a final read
        is the visit's verdict, a pending one shows the most urgent; the model's is kept beside."""
        model, model_words = (visit.closed_verdict, visit.closed_words) if visit.closed else (visit.verdict, visit.words)
        visit.model_verdict, visit.model_words = model, model_words
        kept = reads.reads_of(self.store, visit.id)
        if not kept or model is None:
            return visit
        visit.reading = reads.state_of(kept, pathway)
        shown = visit.reading.shown_verdict(model)
        words = model_words if shown == model and visit.reading.final is None else reads.words_of(shown, pathway)
        if visit.closed:
            visit.closed_verdict, visit.closed_words = shown, words
        visit.verdict, visit.words = shown, words
        if visit.reading.final is not None:    # a clinician's result: no longer the unvalidated model's alone
            visit.provisional = False
        return visit

    @staticmethod
    def _slot(name: str, captures: list, results: dict[str, SessionRow], every: list) -> Slot:
        current = [c for c in captures if c["replaced_by"] is None]
        reasons = {c["id"]: c["reason"] for c in every}
        # each retaken photo: when, its result, and why it was retaken (the reason kept on its retake)
        replaced = [{"capture": c["id"], "taken": c["taken"], "sha256": c["sha256"], "row": results.get(c["path"]),
                     "status": getattr(results.get(c["path"]), "status", None),
                     "grade": (getattr(results.get(c["path"]), "record", None) or {}).get("grade"),
                     "reason": reasons.get(c["replaced_by"])}
                    for c in captures if c["replaced_by"] is not None]
        if not current:
            return Slot(name, "missing", replaced=replaced, warnings=[LABELS[NOT_PHOTOGRAPHED]])
        capture = current[0]
        row = results.get(capture["path"])
        state = "screening" if row is None else "graded" if row.status == "graded" else \
            "retake" if row.status in REFUSED else "screening"
        warnings = list(row.warnings) if row is not None else []
        field_name = name.split("/")[1]
        centred = ((row.record.get("disc") or {}).get("centred") if row is not None else None)
        if field_name in ("disc", "macula") and state == "graded" and centred in ("disc", "macula") \
                and centred != field_name:
            warnings.append(message("this photo looks %(centred)s-centred, the slot asks for a %(field)s-centred "
                                    "photo — check the fixation and retake if needed", centred=centred, field=field_name))
        return Slot(name, state, row, capture["sha256"], capture["id"], capture["taken"], replaced, warnings,
                    capture["reason"], capture["moved_from"])

    def visits(self, since: str | None = None, limit: int = 200) -> list[Visit]:
        """Visits opened at or after ``since`` (a UTC stamp as :func:`now` writes; None: all), newest first."""
        rows = self.store.execute("SELECT id FROM visits WHERE opened >= ? AND kind='station' ORDER BY id DESC LIMIT ?",
                                  (since or "", limit))
        return [self.visit(r["id"]) for r in rows]
