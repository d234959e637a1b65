"""A station's screening report (Comprehensive SR, :mod:`.dicom_out`) at a reading centre: what a reader needs
from it (:func:`summarise`: the patient and study, the verdict, each eye's results, the model and its
validation statement, UNVERIFIED or VERIFIED and by whom; read from the content tree by concept names, as
drtrt writes them), and the report again as the centre's read verifies it (:func:`verified_report`)."""

from __future__ import annotations

import copy

import highdicom as hd
from pydicom import Dataset

from drtrt.integration import codes as C
from drtrt.integration.dicom_out import local
from drtrt.integration.centre_reads import verified_uid

_EYES = {C.EYE_SITE["right"][0]: "right", C.EYE_SITE["left"][0]: "left"}


def summarise(sr: Dataset) -> dict:
    """What a reader needs from a station's SR: who, which study, the verdict, per-eye results, the model."""
    top = {_name(item): item for item in sr.ContentSequence}
    eyes = {}
    for item in sr.ContentSequence:
        if item.ValueType != "CONTAINER" or _code(item) != "eye-result":
            continue
        found = {}
        for sub in item.ContentSequence:
            if sub.ValueType == "CODE" and sub.RelationshipType == "HAS CONCEPT MOD":
                found["eye"] = _EYES.get(sub.ConceptCodeSequence[0].CodeValue, "unspecified")
            elif sub.ValueType == "TEXT":
                found[_name(sub)] = sub.TextValue
            elif sub.ValueType == "CODE":
                found[_name(sub)] = sub.ConceptCodeSequence[0].CodeMeaning
        eyes[found.pop("eye", "unspecified")] = found
    observer = sr.get("VerifyingObserverSequence")
    return {"study": sr.StudyInstanceUID, "series": sr.SeriesInstanceUID, "sr": sr.SOPInstanceUID,
            "patient": str(sr.PatientID), "name": str(sr.get("PatientName", "")),
            "accession": str(sr.get("AccessionNumber", "")), "verification": sr.VerificationFlag,
            "verified_by": str(observer[0].VerifyingObserverName) if observer else None,
            "verdict": _text(top.get("Screening verdict")), "model": _text(top.get("Model name")),
            "model_sha256": _text(top.get("Model SHA-256")), "validation": _text(top.get(C.LOCAL["validation"])),
            "referable": _meaning(top.get(C.LOCAL["referable-dr"])), "read": _text(top.get(C.LOCAL["clinician-read"])),
            "date": str(sr.get("StudyDate", "")), "eyes": eyes,
            "clinic": str(sr.get("InstitutionName") or sr.get("StationName") or "")}


def _name(item: Dataset) -> str:
    return item.ConceptNameCodeSequence[0].CodeMeaning


def _code(item: Dataset) -> str:
    return item.ConceptNameCodeSequence[0].CodeValue


def _meaning(item: Dataset | None) -> str | None:
    """A CODE item's answer (Yes / No); None: absent (nothing gradable)."""
    return item.ConceptCodeSequence[0].CodeMeaning if item is not None and "ConceptCodeSequence" in item else None


def _text(item: Dataset | None) -> str:
    return item.TextValue if item is not None and "TextValue" in item else ""


def verified_report(station: Dataset, read: dict) -> Dataset:
    """The station's SR again, as a new instance of its series: VERIFIED, FINAL, the reader its Verifying
    Observer, the station's SR its predecessor, the read stated beside the model's findings."""
    ds = copy.deepcopy(station)
    uid = verified_uid({**read, "sr": station.SOPInstanceUID})
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.InstanceNumber = int(station.get("InstanceNumber") or 1) + 1
    date, time = read["recorded"][:10].replace("-", ""), read["recorded"][11:19].replace(":", "")
    ds.ContentDate, ds.ContentTime, ds.InstanceCreationDate, ds.InstanceCreationTime = date, time, date, time
    ds.CompletionFlag, ds.VerificationFlag, ds.PreliminaryFlag = "COMPLETE", "VERIFIED", "FINAL"
    observer = Dataset()
    observer.VerifyingObserverName = f"{read['reader']}^"
    observer.VerifyingOrganization = read["organisation"]
    observer.VerificationDateTime = date + time
    observer.VerifyingObserverIdentificationCodeSequence = []
    ds.VerifyingObserverSequence = [observer]
    ref, series, study = Dataset(), Dataset(), Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = station.SOPClassUID, station.SOPInstanceUID
    series.SeriesInstanceUID, series.ReferencedSOPSequence = station.SeriesInstanceUID, [ref]
    study.StudyInstanceUID, study.ReferencedSeriesSequence = station.StudyInstanceUID, [series]
    ds.PredecessorDocumentsSequence = [study]
    grades = ", ".join(f"{eye} {grade}" for eye, grade in read["grades"].items())
    stage = f", {read['stage']} read" if read.get("stage") else ""
    said = (f"{read['words']} ({grades}); read by {read['reader']} ({read['organisation']}{stage}) at "
            f"{read['recorded']}"
            + (f"; overrules the model: {read['reason']}" if read["overrules"] else ""))
    ds.ContentSequence.append(hd.sr.TextContentItem(local("clinician-read"), said, relationship_type="CONTAINS"))
    return ds
