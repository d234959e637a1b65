"""A reading centre (issue 24 item 3): clinicians read what the stations already sent to the PACS, and their
reads go back to the same PACS.

``pull`` asks the PACS over DICOMweb (QIDO-RS ``/studies``, ``/studies/{study}/instances``; WADO-RS for
each instance) for the drtrt screening reports (Comprehensive SR, Manufacturer ``drtrt``) and the drtrt
pictures (Secondary Capture) of every study, and keeps them as the station sent them, one folder per
visit (= study): ``SESSION/visits/<StudyInstanceUID>/`` with ``sr-<UID>.dcm``, ``sc-<UID>.dcm`` (and its
pixels as ``sc-<UID>.png``, to look at) and
``visit.json`` (patient, study, the current SR, its verdict and per-eye results, the model's name and
SHA-256, UNVERIFIED or VERIFIED). Files are named by SOP Instance UID: pulling again fetches and adds
nothing already kept. The current SR is the one no other SR of the study names as its predecessor.

``record_read`` keeps a reader's grades of a visit (``read.json``); ``push`` writes, for each read visit,
the station's SR again as a new instance of the same series: VERIFIED and FINAL, the reader its Verifying
Observer, the station's SR its predecessor, the read stated beside the model's findings; it is sent by
STOW-RS (the sync's :class:`~.senders.DicomWebSender`, confirmed per instance) and marked pushed in
``visit.json`` only once the PACS confirmed it, so a second push sends nothing.

With a FHIR server, ``pull`` also keeps each visit's DiagnosticReport as the station sent it
(``fhir-report.json``, found by its study identifier) and ``push`` PUTs it corrected by the read under the
same id (:mod:`.centre_fhir`), marked in ``visit.json`` once the server confirmed the transaction.

Not done here: the reads' audit trail, second reads and arbitration at the centre.
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
from drtrt.clinic.pathways import ICDR, NHS
from drtrt.clinic.reads import ICDR_GRADES, M_GRADES, MAX_REASON, R_GRADES, read_verdict, words_of
from drtrt.clinic.store import SessionStore, now
from drtrt.errors import ConfigError, DataError
from drtrt.fileio import atomic_write
from drtrt.integration.centre_fhir import corrected_bundle, find_report
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


def centre_session(session: str | Path) -> Path:
    """``session`` if it is a centre's session folder (made by :func:`pull`), else one line."""
    if not (Path(session) / "visits").is_dir():
        raise DataError(f"{session} is not a centre session folder (no visits/): make it with drtrt centre pull")
    return Path(session)


def visit_dir(session: Path, study: str) -> Path:
    if not study or not all(c.isdigit() or c == "." for c in study):
        raise DataError(f"the PACS gave a study UID that is not a DICOM UID: {study!r}")
    return session / "visits" / study


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
        _pull_study(pacs, session, study, folder, foreign, report)
        if len(foreign) != known:
            atomic_write(foreign_file, "".join(f"{uid}\n" for uid in sorted(foreign)))
        if folder.is_dir() and any(folder.glob("sr-*.dcm")):
            report.visits += 1
            _write_summary(folder)
            found = find_report(server, study) if server is not None else None
            if found is not None:
                report.reports += 1
                _keep_json(folder / "fhir-report.json", found)
    return report


def _pull_study(pacs: Pacs, session: Path, study: str, folder: Path, foreign: set[str], report: PullReport) -> None:
    for item in pacs.qido(f"/studies/{quote(study)}/instances"):
        if value(item, "00080016") not in KINDS:
            continue
        kind, sop = KINDS[value(item, "00080016")], value(item, "00080018")
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


def _keep_json(path: Path, doc: dict) -> None:
    data = json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=True).encode()
    if not path.is_file() or path.read_bytes() != data:
        atomic_write(path, data)


def _write_summary(folder: Path) -> None:
    srs = {p: dcmread(p) for p in sorted(folder.glob("sr-*.dcm"))}
    replaced = {ref.ReferencedSOPInstanceUID for ds in srs.values()
                for study in ds.get("PredecessorDocumentsSequence", [])
                for series in study.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
    current = [ds for ds in srs.values() if ds.SOPInstanceUID not in replaced]
    if len(current) != 1:
        raise DataError(f"{folder}: {len(current)} current drtrt reports in one study; read it at the PACS")
    summary = summarise(current[0])
    old = load(folder)
    summary["pushed"], summary["fhir_pushed"] = old.get("pushed", []), old.get("fhir_pushed", [])
    summary["photos"] = [{"dicom": p.name, "png": p.with_suffix(".png").name,
                          "eye": _LATERALITY.get(dcmread(p, stop_before_pixels=True).get("Laterality"), "unspecified")}
                         for p in sorted(folder.glob("sc-*.dcm"))]
    if summary != old:
        _keep_json(folder / "visit.json", summary)


def load(folder: Path) -> dict:
    try:
        return json.loads((folder / "visit.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def load_read(folder: Path) -> dict | None:
    """The centre's read of the visit in ``folder`` (None: not read)."""
    path = folder / "read.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def queue(session: str | Path) -> list[dict]:
    """The pulled visits no one has read (not VERIFIED, no centre read of their current report): those the model
    found referable first, then those it could not grade, then the rest; oldest first within each."""
    rank = {"Yes": 0, None: 1, "No": 2}
    waiting = []
    for folder in sorted((centre_session(session) / "visits").glob("*")):
        visit, read = load(folder), load_read(folder)
        if visit and visit["verification"] != "VERIFIED" and (read is None or read["sr"] != visit["sr"]):
            waiting.append(visit)                   # never read, or the report read was replaced since
    return sorted(waiting, key=lambda v: (rank.get(v.get("referable"), 1), v.get("date", ""), v["study"]))


def record_read(session: str | Path, study: str, grades: dict[str, str], reader: str, organisation: str,
                reason: str | None = None) -> dict:
    """Keep ``reader``'s grades (eye → R0M0 … or ICDR2+DME …, U) of a pulled visit; one read per visit."""
    with SessionStore(centre_session(session) / "session.db") as store:    # one reader at a time, and the trail
        return _record_read(store, visit_dir(Path(session), study), grades, reader, organisation, reason)


_FORMS = {"nhs": {f"{r}{m}" for r in R_GRADES for m in M_GRADES} | {"U"},
          "icdr": {f"ICDR{g}{d}" for g in ICDR_GRADES for d in ("", "+DME")} | {"U"}}


def _record_read(store: SessionStore, folder: Path, grades: dict[str, str], reader: str, organisation: str,
                 reason: str | None) -> dict:
    study, visit = folder.name, load(folder)
    if not visit:
        raise DataError(f"no pulled visit of study {study} in {folder.parent.parent}: see drtrt centre list")
    earlier = load_read(folder)
    if visit["verification"] == "VERIFIED" or (earlier is not None and earlier["sr"] == visit["sr"]):
        raise ConfigError(f"study {study} is already read (its result is final); a correction is read at the PACS")
    if sorted(grades) != ["left", "right"]:
        raise ConfigError("grade both eyes (U for an eye that cannot be graded)")
    form = "icdr" if any(g.startswith("ICDR") for g in grades.values()) else "nhs"
    if not all(g in _FORMS[form] for g in grades.values()):
        raise ConfigError(f"grade each eye in one form: R0, R1, R2, R3, R3a or R3s with M0 or M1 (R2M0), or ICDR0 to "
                          f"ICDR4 with or without +DME, or U; found {grades['right']!r} and {grades['left']!r}")
    pathway = ICDR if form == "icdr" else NHS
    verdict = read_verdict(grades, pathway)
    words = words_of(verdict, pathway)
    overrules = not visit["verdict"].startswith(words)
    reason = " ".join((reason or "").split()) or None
    if overrules and (reason is None or len(reason) > MAX_REASON or not reason.isprintable()):
        raise ConfigError(f"this read overrules the model ({visit['verdict']} → {words}): give the reason "
                          f"(at most {MAX_REASON} characters)")
    read = {"sr": visit["sr"], "reader": reader, "organisation": organisation, "grades": dict(sorted(grades.items())),
            "verdict": verdict, "words": words, "overrules": overrules, "reason": reason, "recorded": now()}
    audit.append(store, Actor(reader, "reader"), "override" if overrules else "read", patient=visit["patient"],
                 details={"study": study, "sr": visit["sr"], "grades": read["grades"], "verdict": verdict,
                          "model_verdict": visit["verdict"], "reason": reason, "organisation": organisation})
    atomic_write(folder / "read.json", json.dumps(read, indent=1, ensure_ascii=False).encode())
    return read


@dataclass
class PushReport:
    sent: list[str] = field(default_factory=list)        # SR SOP Instance UIDs sent
    reports: list[str] = field(default_factory=list)     # DiagnosticReports corrected at the FHIR server
    no_report: list[str] = field(default_factory=list)   # read studies with no DiagnosticReport pulled (--fhir)
    stale: list[str] = field(default_factory=list)       # read studies whose station report changed since the read
    final: list[str] = field(default_factory=list)       # of them, those read and VERIFIED at the station since


def push(url: str, session: str | Path, timeout: float = 30.0, fhir: str | None = None) -> PushReport:
    """Send each read visit's VERIFIED SR the PACS has not confirmed yet, and with ``fhir`` its corrected
    DiagnosticReport (a visit whose report was pulled); a failure raises, with nothing marked that was not sent."""
    sender, out = DicomWebSender(url, timeout), PushReport()
    reporter = FhirSender(fhir, timeout) if fhir else None
    with SessionStore(centre_session(session) / "session.db") as store:
        for folder in sorted((Path(session) / "visits").glob("*")):
            _push_visit(store, folder, sender, reporter, out)
    return out


def _push_visit(store: SessionStore, folder: Path, sender: DicomWebSender, reporter: FhirSender | None,
                out: PushReport) -> None:
    """One visit's VERIFIED SR and corrected DiagnosticReport, each sent unless confirmed before; audited."""
    visit = load(folder)
    if not visit or not (folder / "read.json").is_file():
        return
    read = json.loads((folder / "read.json").read_text(encoding="utf-8"))
    if read["sr"] != visit["sr"] and visit["sr"] not in visit["pushed"]:
        (out.final if visit["verification"] == "VERIFIED" else out.stale).append(visit["study"])
        return                                      # the station replaced the report that was read: never sent
    report = verified_report(dcmread(folder / f"sr-{read['sr']}.dcm"), read)
    uid = report.SOPInstanceUID
    if uid not in visit["pushed"]:
        path = folder / f"sr-{uid}.dcm"
        if not path.is_file():
            buffer = io.BytesIO()
            report.save_as(buffer, enforce_file_format=True)
            atomic_write(path, buffer.getvalue())
        sender.send(path, uid)                  # Unreachable / Rejected: not marked, the next push tries again
        visit["pushed"].append(uid)
        _keep_json(folder / "visit.json", visit)
        out.sent.append(uid)
        audit.append(store, NO_LOGIN, "send", patient=visit["patient"],
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
    visit.setdefault("fhir_pushed", []).append(uid)
    _keep_json(folder / "visit.json", visit)
    out.reports.append(station["id"])
    audit.append(store, NO_LOGIN, "send", patient=visit["patient"],
                 details={"study": visit["study"], "report": station["id"], "to": reporter.destination})
