"""A reading centre (issue 24 item 3): clinicians read what the stations already sent to the PACS, and their
reads go back to the same PACS.

``pull`` asks the PACS over DICOMweb (QIDO-RS ``/studies``, ``/studies/{study}/instances``; WADO-RS for
each instance) for the drtrt screening reports (Comprehensive SR, Manufacturer ``drtrt``) and the drtrt
pictures (Secondary Capture) of every study, and keeps them as the station sent them, one folder per
visit (= study): ``SESSION/visits/<StudyInstanceUID>/`` with ``sr-<UID>.dcm``, ``sc-<UID>.dcm`` (and its
pixels as ``sc-<UID>.png``, to look at) and
``visit.json`` (patient, study, the current SR, its verdict and per-eye results, the model's name and
SHA-256, UNVERIFIED or VERIFIED). Files are named by SOP Instance UID: pulling again fetches and adds
nothing already kept. The current SR is the one no other SR of the study names as its predecessor. A study
with two or more current SRs (two final documents: :mod:`.centre_conflicts`) is left as it was, kept as a conflict
(``conflict.json``, :attr:`PullReport.conflicts`), never read here nor pushed; the pull goes on with the other
studies. ``visit.json``'s "pushed" marks are changed only under the visit's lock (:mod:`.centre_marks`): a pull
beside a push never drops one.

``record_read`` keeps a reader's grades of a visit (``read.json``, :mod:`.centre_reads`); ``push`` writes, for each
read visit,
the station's SR again as a new instance of the same series: VERIFIED and FINAL, the reader its Verifying
Observer, the station's SR its predecessor, the read stated beside the model's findings; it is sent by
STOW-RS (the sync's :class:`~.senders.DicomWebSender`, confirmed per instance) and marked pushed in
``visit.json`` only once the PACS confirmed it, so a second push sends nothing.

With a FHIR server, ``pull`` also keeps each visit's DiagnosticReport as the station sent it
(``fhir-report.json``, found by its study identifier) and ``push`` PUTs it corrected by the read under the
same id (:mod:`.centre_fhir`), marked in ``visit.json`` once the server confirmed the transaction.

The reads themselves — who reads, second reads and arbitration as the centre's pathway says, the queue — are
:mod:`.centre_reads`; only a visit's final read is pushed (one waiting for a second read or arbitration is not).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import cv2
from pydicom import Dataset, dcmread
from pydicom.uid import ComprehensiveSRStorage, SecondaryCaptureImageStorage

from drtrt.clinic import audit
from drtrt.clinic.accounts import NO_LOGIN, Actor
from drtrt.clinic.store import SessionStore
from drtrt.clinic.verdicts import REFER, REFER_URGENT
from drtrt.errors import DataError
from drtrt.fileio import atomic_write, keep_json
from drtrt.integration.centre_conflicts import conflict_of, keep_conflict
from drtrt.integration.centre_fhir import corrected_bundle, find_report
from drtrt.integration.centre_marks import mark, summarised
from drtrt.integration.centre_reads import (centre_pathway, centre_session, final_read, load, load_reads, model_verdict,
                                            visit_dir)
from drtrt.integration.centre_reads import queue, record_read, unsent  # noqa: F401  (the centre's API)
from drtrt.integration.centre_sr import summarise, verified_report
from drtrt.integration.fhir import bundle_bytes
from drtrt.integration.pacs import Pacs, Server, value
from drtrt.integration.senders import DicomWebSender, FhirSender

KINDS = {ComprehensiveSRStorage: "sr", SecondaryCaptureImageStorage: "sc"}
_LATERALITY = {"R": "right", "L": "left"}


@dataclass
class PullReport:
    studies: int = 0                                   # studies the PACS holds
    visits: int = 0                                    # of them with a drtrt report
    reports: int = 0                                   # of those with a DiagnosticReport at the FHIR server
    added: list[str] = field(default_factory=list)     # files kept by this pull
    conflicts: list[dict] = field(default_factory=list)  # studies with 2+ current reports: not imported (conflict.json)


def pull(url: str, session: str | Path, timeout: float = 30.0, fhir: str | None = None,
         since: str | None = None) -> PullReport:
    """Keep every drtrt report and picture the PACS holds that this session does not (module docstring);
    ``fhir``: also each visit's DiagnosticReport from that FHIR server (``fhir-report.json``); ``since``:
    only studies of that date (YYYYMMDD) or later. Another maker's SR or SC is fetched once, its UID kept in
    ``SESSION/foreign.txt`` so that it is not fetched again."""
    pacs, session, report = Pacs(url, timeout), Path(session), PullReport()
    server = Server(fhir, "--fhir", "FHIR server", timeout) if fhir else None
    studies = pacs.qido("/studies" + (f"?StudyDate={since}-" if since else ""))
    (session / "visits").mkdir(parents=True, exist_ok=True)
    foreign_file = session / "foreign.txt"
    foreign = set(foreign_file.read_text(encoding="ascii").split()) if foreign_file.is_file() else set()
    for study_item in studies:
        report.studies += 1
        study = value(study_item, "0020000D")
        folder, known = visit_dir(session, study), len(foreign)
        listed = _pull_study(pacs, session, study, folder, foreign, report)
        if len(foreign) != known:
            atomic_write(foreign_file, "".join(f"{uid}\n" for uid in sorted(foreign)))
        if folder.is_dir() and any(folder.glob("sr-*.dcm")):
            report.visits += 1
            conflict = _write_summary(folder, listed)
            if conflict is not None:
                report.conflicts.append(conflict)       # left as it was; the other studies go on
                continue
            found = find_report(server, study) if server is not None else None
            if found is not None:
                report.reports += 1
                keep_json(folder / "fhir-report.json", found)
    report.conflicts.sort(key=lambda c: (not c["referable"], c["date"], c["study"]))
    return report


def _pull_study(pacs: Pacs, session: Path, study: str, folder: Path, foreign: set[str],
                report: PullReport) -> set[str]:
    """Keep the study's drtrt objects not kept yet; the SOP Instance UIDs of every SR and SC the PACS lists."""
    listed = set()
    for item in pacs.qido(f"/studies/{quote(study)}/instances"):
        if value(item, "00080016") not in KINDS:
            continue
        kind, sop = KINDS[value(item, "00080016")], value(item, "00080018")
        listed.add(sop)
        path = folder / f"{kind}-{sop}.dcm"
        if path.is_file() or sop in foreign or not sop.replace(".", "").isdigit():
            continue
        data = pacs.instance(study, value(item, "0020000E"), sop)
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        if ds.get("Manufacturer") != "drtrt" or ds.SOPInstanceUID != sop:
            foreign.add(sop)                                  # not a drtrt station's object
            continue
        if kind == "sc":                                      # the picture to look at, beside its DICOM file
            report.added.append(_picture(dcmread(io.BytesIO(data)), folder / f"sc-{sop}.png", session))
        atomic_write(path, data)
        report.added.append(str(path.relative_to(session)))
    return listed


def _picture(ds: Dataset, path: Path, session: Path) -> str:
    """The Secondary Capture's pixels as a PNG (lossless: the lesion outlines as drawn)."""
    pixels = ds.pixel_array
    if ds.get("PhotometricInterpretation") == "RGB" and pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, png = cv2.imencode(".png", pixels)
    if not ok:
        raise DataError(f"cannot make a PNG of {ds.SOPInstanceUID}")
    atomic_write(path, png.tobytes())
    return str(path.relative_to(session))


def _write_summary(folder: Path, listed: set[str]) -> dict | None:
    """Keep the visit's summary of its one current report (the marks ``visit.json`` holds kept, under its lock:
    :mod:`.centre_marks`). Reports the PACS no longer lists do not count (one deleted there resolves a conflict),
    unless it lists none of them. Two or more current reports: the visit is left as it was, its conflict kept
    (:mod:`.centre_conflicts`) and returned."""
    srs = {p: dcmread(p) for p in sorted(folder.glob("sr-*.dcm"))}
    srs = {p: ds for p, ds in srs.items() if ds.SOPInstanceUID in listed} or srs
    replaced = {ref.ReferencedSOPInstanceUID for ds in srs.values()
                for study in ds.get("PredecessorDocumentsSequence", [])
                for series in study.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
    current = [ds for ds in srs.values() if ds.SOPInstanceUID not in replaced]
    if len(current) != 1:                               # two final documents (or a loop): a person decides
        conflict = _conflict(current or list(srs.values()))
        keep_conflict(folder, conflict)
        return conflict
    summary = summarise(current[0])
    summary["photos"] = [{"dicom": p.name, "png": p.with_suffix(".png").name,
                          "eye": _LATERALITY.get(dcmread(p, stop_before_pixels=True).get("Laterality"), "unspecified")}
                         for p in sorted(folder.glob("sc-*.dcm"))]
    summarised(folder, summary)
    keep_conflict(folder, None)
    return None


def _conflict(current: list[Dataset]) -> dict:
    """What the queue page says of a study with these current reports (each referable when its verdict, or the
    read it states, refers, or its referable flag says Yes)."""
    reports = []
    for ds in sorted(current, key=lambda d: d.SOPInstanceUID):
        said = summarise(ds)
        referable = said["referable"] == "Yes" or any(
            model_verdict({"verdict": text, "referable": "No"}) in (REFER, REFER_URGENT)
            for text in (said["verdict"], said["read"]) if text)
        reports.append({"sr": said["sr"], "verification": said["verification"], "verified_by": said["verified_by"],
                        "verdict": said["verdict"], "read": said["read"], "referable": referable})
    first = summarise(current[0])
    return {"study": first["study"], "patient": first["patient"], "name": first["name"], "date": first["date"],
            "clinic": first["clinic"], "reports": reports, "referable": any(r["referable"] for r in reports)}


@dataclass
class PushReport:
    sent: list[str] = field(default_factory=list)        # SR SOP Instance UIDs sent
    reports: list[str] = field(default_factory=list)     # DiagnosticReports corrected at the FHIR server
    no_report: list[str] = field(default_factory=list)   # read studies with no DiagnosticReport pulled (--fhir)
    stale: list[str] = field(default_factory=list)       # read studies whose station report changed since the read
    final: list[str] = field(default_factory=list)       # of them, those read and VERIFIED at the station since
    waiting: list[str] = field(default_factory=list)     # read studies waiting for a second read or arbitration
    conflicts: list[str] = field(default_factory=list)   # read studies with two current reports: never sent


def push(url: str, session: str | Path, timeout: float = 30.0, fhir: str | None = None,
         store: SessionStore | None = None, actor: Actor = NO_LOGIN) -> PushReport:
    """Send each read visit's VERIFIED SR the PACS has not confirmed yet, and with ``fhir`` its corrected
    DiagnosticReport (a visit whose report was pulled); a failure raises, with nothing marked that was not sent.
    ``store``: the centre's session store already open (the pages hold it), else it is opened (and locked) here;
    ``actor``: who sends, in the audit trail (the person who pressed the pages' button; no login otherwise)."""
    if store is None:
        with SessionStore(centre_session(session) / "session.db") as opened:
            return push(url, session, timeout, fhir, opened, actor)
    sender, out = DicomWebSender(url, timeout), PushReport()
    reporter = FhirSender(fhir, timeout) if fhir else None
    pathway = centre_pathway(store)
    for folder in sorted((centre_session(session) / "visits").glob("*")):
        _push_visit(store, folder, sender, reporter, out, pathway, actor)
    return out


def _push_visit(store: SessionStore, folder: Path, sender: DicomWebSender, reporter: FhirSender | None,
                out: PushReport, pathway, actor: Actor = NO_LOGIN) -> None:
    """One visit's VERIFIED SR and corrected DiagnosticReport from its final read, each sent unless confirmed
    before; audited. A visit whose reading is not final yet sends nothing."""
    visit, reads = load(folder), load_reads(folder)
    if not visit or not reads:
        return
    if conflict_of(folder) is not None:
        out.conflicts.append(visit["study"])         # two final documents at the PACS: a person decides there
        return
    if reads[-1]["sr"] != visit["sr"] and visit["sr"] not in visit["pushed"]:
        (out.final if visit["verification"] == "VERIFIED" else out.stale).append(visit["study"])
        return                                      # the station replaced the report that was read: never sent
    read, _ = final_read(visit, reads, pathway)
    if read is None:
        out.waiting.append(visit["study"])          # a second read or arbitration first: nothing is VERIFIED yet
        return
    report = verified_report(dcmread(folder / f"sr-{read['sr']}.dcm"), read)
    uid = report.SOPInstanceUID
    if uid not in visit["pushed"]:
        path = folder / f"sr-{uid}.dcm"
        if not path.is_file():
            buffer = io.BytesIO()
            report.save_as(buffer, enforce_file_format=True)
            atomic_write(path, buffer.getvalue())
        sender.send(path, uid)                  # Unreachable / Rejected: not marked, the next push tries again
        visit = mark(folder, "pushed", uid)     # read-modify-write under the visit's lock: a pull beside keeps it
        out.sent.append(uid)
        audit.append(store, actor, "send", patient=visit["patient"],
                     details={"study": visit["study"], "sr": uid, "to": sender.destination})
    if reporter is None or uid in visit.get("fhir_pushed", []):
        return
    if not (folder / "fhir-report.json").is_file():
        out.no_report.append(visit["study"])
        return
    station = json.loads((folder / "fhir-report.json").read_text(encoding="utf-8"))
    bundle = corrected_bundle(station, read, visit, uid)
    path = folder / f"fhir-{bundle['id']}.json"
    atomic_write(path, bundle_bytes(bundle))
    reporter.send(path, bundle["id"])
    mark(folder, "fhir_pushed", uid)
    out.reports.append(station["id"])
    audit.append(store, actor, "send", patient=visit["patient"],
                 details={"study": visit["study"], "report": station["id"], "to": reporter.destination})
