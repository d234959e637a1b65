"""What a reading centre needs from a station's screening report (Comprehensive SR, :mod:`.dicom_out`): the
patient and study, the verdict, each eye's results, the model and its validation statement, UNVERIFIED or
VERIFIED and by whom. Read from the content tree by concept names, as drtrt writes them."""

from __future__ import annotations

from pydicom import Dataset

from drtrt.integration import codes as C

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
            "date": str(sr.get("StudyDate", "")), "eyes": eyes}


def _name(item: Dataset) -> str:
    return item.ConceptNameCodeSequence[0].CodeMeaning


def _code(item: Dataset) -> str:
    return item.ConceptNameCodeSequence[0].CodeValue


def _meaning(item: Dataset | None) -> str | None:
    """A CODE item's answer (Yes / No); None: absent (nothing gradable)."""
    return item.ConceptCodeSequence[0].CodeMeaning if item is not None and "ConceptCodeSequence" in item else None


def _text(item: Dataset | None) -> str:
    return item.TextValue if item is not None and "TextValue" in item else ""
