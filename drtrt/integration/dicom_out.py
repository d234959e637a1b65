"""A patient's results as DICOM: the pictures as Secondary Capture images, the findings as a Comprehensive SR.

Both join the patient's study (:mod:`.results`: the camera's when the photos came as DICOM) and are
built with highdicom. Every UID is derived (:mod:`.uids`) and every date is the session's (the
patient's last screened image, UTC), so building the same results again gives the same bytes.

Secondary Capture (one series per eye, Laterality R / L): the overlay PNG of each graded photo (lesions
drawn on the photo, with the legend) and the reduced photo of each ungradable one, RGB, uncompressed
(lossy compression would smear the lesion outlines); Source Image Sequence names the camera's image
when there is one.

Comprehensive SR (its own series), content tree (codes: :mod:`.codes`)::

    CONTAINER  LN 18748-4 Diagnostic Imaging Report
      HAS OBS CONTEXT  Observer Type = Device; Device Observer UID, Name, Manufacturer (drtrt),
                       Model Name (model file), Serial Number (model SHA-256)
      CONTAINS TEXT    Model name / Model SHA-256 / Software version (drtrt X.Y.Z)
      CONTAINS TEXT    Clinical validation: "NOT FOR CLINICAL USE — … not a validated clinical model …"
                       unless the session keeps a validation record for its model (study, population, date)
      CONTAINS TEXT    Screening verdict (the patient's)
      CONTAINS CODE    Referable diabetic retinopathy = SCT Yes | No (absent: nothing gradable)
      CONTAINS CONTAINER  Eye result (one per eye)
        HAS CONCEPT MOD  CODE Finding Site = SCT 18944008 Right eye structure | 8966001 Left eye structure
        CONTAINS TEXT    Screening verdict (the eye's)
        CONTAINS CODE    LN 71491-5 | 71490-7 severity level = LN LA18643-9 … LA18648-8 (worst gradable grade)
        CONTAINS CODE    Referable diabetic retinopathy = Yes | No
        CONTAINS NUM     Images of this eye, Gradable images of this eye ({images})
        CONTAINS CONTAINER  Image result (one per photo)
          CONTAINS TEXT   Source file; Image status (graded | ungradable | error); Reason not graded
          CONTAINS CODE   Diabetic retinopathy grade; Referable diabetic retinopathy
          CONTAINS NUM    count-XX (lesions, {lesions}) and area-XX (% of the field of view) per lesion class
          CONTAINS TEXT   Warning (each)
          CONTAINS IMAGE  Lesion overlay (the SC instance); Source image (the camera's instance, DICOM input)

The document is COMPLETE and UNVERIFIED, and PRELIMINARY unless the model is validated. Once a clinician's
read is the visit's final result (:mod:`drtrt.clinic.reads`) it is FINAL and VERIFIED, the reader its
Verifying Observer (organisation: the session's ``organisation``), the read stated beside the model's
findings. When the results of a patient change (another photo screened, an eye corrected, a read), a
new SR with a new UID is written in the same series whose Predecessor Documents Sequence names the one
before it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import highdicom as hd
import numpy as np
from pydicom import Dataset, dcmread
from pydicom.uid import ComprehensiveSRStorage, SecondaryCaptureImageStorage

from drtrt.clinic.verdicts import LABELS
from drtrt.errors import DataError
from drtrt.integration import codes as C
from drtrt.integration.results import ImageResult, PatientResult, verdict_text
from drtrt.integration.uids import derive_uid, digest

CHARSET = "ISO_IR 192"                          # UTF-8: patient IDs and names may be any script
SR_SERIES_NUMBER = 900
SC_SERIES_NUMBER = {"right": 901, "left": 902, "unspecified": 903}
_LATERALITY = {"right": "R", "left": "L"}
_CODING_SCHEMES = [hd.coding_schemes.CodingSchemeIdentificationItem(
    C.LOCAL_SCHEME, name="drtrt screening codes", uid=C.LOCAL_SCHEME_UID, responsible_organization="drtrt")]


@dataclass
class DicomObject:
    kind: str                                   # sc | sr
    uid: str                                    # SOP Instance UID
    dataset: Dataset
    content_key: str                            # digest of what the object says (the UID is derived from it)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.dataset.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()


def local(code: str, meaning: str | None = None) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code, C.LOCAL_SCHEME, meaning or C.LOCAL[code])


def _sct(pair: tuple[str, str]) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(pair[0], "SCT", pair[1])


def _ln(pair: tuple[str, str]) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(pair[0], "LN", pair[1])


def grade_concept(grade: int, p: PatientResult) -> hd.sr.CodedConcept:
    """A grade as LOINC's answer (the five ICDR grades) or drtrt's own code (another grade vocabulary)."""
    if C.is_icdr(p.model.task):
        return _ln(C.GRADE_LOINC[grade])
    return local(C.grade_code(grade), p.model.task.grade_names[grade][:64])


def _yes_no(value: bool) -> hd.sr.CodedConcept:
    return _sct(C.YES if value else C.NO)


def _dates(p: PatientResult) -> dict:
    date, time = p.last_seen[:10].replace("-", ""), p.last_seen[11:19].replace(":", "")
    return {"content_date": date, "content_time": time, "series_date": date, "series_time": time}


def _common(p: PatientResult) -> dict:
    s = p.study
    return dict(study_instance_uid=s.uid, manufacturer="drtrt", patient_id=s.patient_id,
                patient_name=s.patient_name or None, patient_birth_date=s.patient_birth_date or None,
                patient_sex=s.patient_sex or None, accession_number=s.accession_number or None,
                study_id=s.study_id or None, study_date=s.study_date or None, study_time=s.study_time or None,
                referring_physician_name=s.referring_physician_name or None)


def _equipment(p: PatientResult) -> dict:
    return dict(manufacturer_model_name=p.model.name[:64], software_versions=f"drtrt {p.model.software}",
                device_serial_number=p.model.sha256[:64], specific_character_set=CHARSET)


def _fix_times(ds: Dataset, p: PatientResult) -> None:
    """highdicom stamps creation with the clock; the session's time makes a rebuild byte-identical."""
    dates = _dates(p)
    ds.InstanceCreationDate, ds.InstanceCreationTime = dates["content_date"], dates["content_time"]
    if "DateOfSecondaryCapture" in ds:
        ds.DateOfSecondaryCapture, ds.TimeOfSecondaryCapture = dates["content_date"], dates["content_time"]
    ds.TimezoneOffsetFromUTC = "+0000"
    for item in ds.get("ContributingEquipmentSequence", []):
        item.ContributionDateTime = dates["content_date"] + dates["content_time"]


def _read_rgb(path: Path) -> np.ndarray:
    picture = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if picture is None:
        raise DataError(f"cannot read {path}: the session's picture is damaged; screen the image again")
    return np.ascontiguousarray(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB))


def sc_uid(p: PatientResult, image: ImageResult) -> str:
    return derive_uid(p.session, "sc", *p.key, p.study.uid, image.row.sha256, image.picture_sha256, image.eye)


def picture_series(p: PatientResult, eye: str) -> str:
    return derive_uid(p.session, "series", "sc", *p.key, p.study.uid, eye)


def build_picture(p: PatientResult, image: ImageResult, number: int) -> DicomObject:
    """The Secondary Capture image of one photo's picture (overlay or reduced photo); ``number``: its
    Instance Number in the eye's series."""
    uid = sc_uid(p, image)
    ds = hd.sc.SCImage(
        pixel_array=_read_rgb(image.picture), photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", patient_orientation=("L", "F"),   # a fundus photo faces the viewer
        laterality=_LATERALITY.get(image.eye), series_instance_uid=picture_series(p, image.eye),
        series_number=SC_SERIES_NUMBER[image.eye], sop_instance_uid=uid, instance_number=number,
        series_description=f"drtrt screening pictures, {image.eye} eye", **_common(p), **_equipment(p), **_dates(p))
    ds.ConversionType = "WSD"                # made on a workstation from the camera's photo
    ds.BurnedInAnnotation = "NO"             # the legend names lesion colours, nobody
    if image.is_overlay:
        ds.DerivationDescription = (f"lesion overlay from {image.name} by model {p.model.name} "
                                    f"(sha256 {p.model.sha256[:12]}), drtrt {p.model.software}")[:1024]
    else:
        ds.DerivationDescription = f"{image.name} as screened, reduced ({image.row.status}: " \
                                   f"{image.row.reason or ''})"[:1024]
    if image.source.get("sop_uid") and image.source.get("sop_class_uid"):
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = image.source["sop_class_uid"], image.source["sop_uid"]
        ds.SourceImageSequence = [ref]
    _fix_times(ds, p)
    return DicomObject("sc", uid, ds, digest([uid]))


def pictured(p: PatientResult) -> list[tuple[ImageResult, int]]:
    """The photos that have a picture to send, each with its Instance Number in its eye's series."""
    out = []
    for eye in p.eyes:
        out += [(image, n) for n, image in enumerate((i for i in p.eyes[eye] if i.picture is not None), start=1)]
    return out


def build_pictures(p: PatientResult) -> list[DicomObject]:
    """One Secondary Capture image per photo that has a picture."""
    return [build_picture(p, image, number) for image, number in pictured(p)]


def _num(name: hd.sr.CodedConcept, value: float, unit: tuple[str, str]) -> hd.sr.NumContentItem:
    return hd.sr.NumContentItem(name, value, hd.sr.CodedConcept(unit[0], "UCUM", unit[1]), relationship_type="CONTAINS")


def _text(code: str, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(local(code), value, relationship_type="CONTAINS")


def _image_items(p: PatientResult, image: ImageResult, pictures: dict[str, str]) -> hd.sr.ContainerContentItem:
    row, record = image.row, image.record
    box = hd.sr.ContainerContentItem(local("image-result"), relationship_type="CONTAINS")
    items = [_text("source-file", image.name), _text("image-status", row.status)]
    if row.status != "graded":
        items.append(_text("not-graded", row.reason or row.status))
    if row.status == "graded" and record.get("grade") is not None:
        items.append(hd.sr.CodeContentItem(local("dr-grade"), grade_concept(record["grade"], p),
                                           relationship_type="CONTAINS"))
        items.append(hd.sr.CodeContentItem(local("referable-dr"), _yes_no(bool(record.get("referable"))),
                                           relationship_type="CONTAINS"))
    if row.status == "graded":
        for code, finding in (record.get("lesions") or {}).items():
            name = p.model.task.long_name(code) if code in p.model.task.lesion_codes else code
            items.append(_num(local(C.lesion_count_code(code), f"{name} count"[:64]), int(finding["count"]),
                              ("{lesions}", "lesions")))
            items.append(_num(local(C.lesion_area_code(code), f"{name} area, % of field of view"[:64]),
                              round(float(finding["area_fov_pct"]), 4), ("%", "Percent")))
    items += [_text("warning", w) for w in row.warnings]
    if image.picture is not None:
        items.append(hd.sr.ImageContentItem(local("lesion-overlay" if image.is_overlay else "source-image",
                                                  None if image.is_overlay else "Photo as screened, reduced"),
                                            SecondaryCaptureImageStorage, pictures[image.row.path],
                                            relationship_type="CONTAINS"))
    if image.source.get("sop_uid") and image.source.get("sop_class_uid"):
        items.append(hd.sr.ImageContentItem(local("source-image"), image.source["sop_class_uid"],
                                            image.source["sop_uid"], relationship_type="CONTAINS"))
    box.ContentSequence = hd.sr.ContentSequence(items)
    return box


def _eye_items(p: PatientResult, eye: str, pictures: dict[str, str]) -> hd.sr.ContainerContentItem:
    verdict = p.verdict.eyes[eye]
    images = p.eyes.get(eye, [])
    box = hd.sr.ContainerContentItem(local("eye-result"), relationship_type="CONTAINS")
    items: list = []
    if eye in C.EYE_SITE:
        items.append(hd.sr.CodeContentItem(_sct(C.FINDING_SITE), _sct(C.EYE_SITE[eye]),
                                           relationship_type="HAS CONCEPT MOD"))
    items.append(_text("verdict", verdict.words))
    if verdict.gradable:                       # R and M apart, as programmes grade them
        if verdict.r:
            items.append(_text("retinopathy", verdict.r))
        items.append(_text("maculopathy", f"{verdict.m or 'not assessed'}: {verdict.m_words}"))
    if verdict.grade is not None:
        name = _ln(C.EYE_SEVERITY[eye]) if eye in C.EYE_SEVERITY and C.is_icdr(p.model.task) else local("dr-grade")
        items.append(hd.sr.CodeContentItem(name, grade_concept(verdict.grade, p), relationship_type="CONTAINS"))
    if (referable := p.eye_referable(eye)) is not None:
        items.append(hd.sr.CodeContentItem(local("referable-dr"), _yes_no(referable), relationship_type="CONTAINS"))
    items.append(_num(local("images-total"), len(images), ("{images}", "images")))
    items.append(_num(local("images-gradable"), sum(i.row.status == "graded" for i in images), ("{images}", "images")))
    items += [_image_items(p, image, pictures) for image in images]
    box.ContentSequence = hd.sr.ContentSequence(items)
    return box


def _content(p: PatientResult, pictures: dict[str, str]) -> hd.sr.ContainerContentItem:
    observer = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derive_uid("device", p.model.sha256), name=p.model.name[:64], manufacturer_name="drtrt",
            model_name=p.model.name[:64], serial_number=p.model.sha256[:64]))
    root = hd.sr.ContainerContentItem(_ln(C.REPORT_TITLE))
    items: list = list(observer)
    items += [_text("model-name", p.model.name), _text("model-sha256", p.model.sha256),
              _text("software-version", f"drtrt {p.model.software}"), _text("validation", p.model.statement),
              _text("verdict", verdict_text(p))]
    if p.read is not None:
        grades = ", ".join(f"{eye} {grade}" for eye, grade in p.read.grades)
        items.append(_text("clinician-read", f"{p.read.words} ({grades}); read by {p.read.reader} "
                                             f"({p.read.role}, {p.read.stage} read) at {p.read.recorded}"))
    if p.referable is not None:
        items.append(hd.sr.CodeContentItem(local("referable-dr"), _yes_no(p.referable), relationship_type="CONTAINS"))
    items += [_eye_items(p, eye, pictures) for eye in p.verdict.eyes]
    root.ContentSequence = hd.sr.ContentSequence(items)
    return root


def report_facts(p: PatientResult, pictures: dict[str, str]) -> dict:
    """Everything the SR says, as plain data: its digest decides whether the SR is new."""
    return {"patient": p.patient, "study": vars(p.study), "model": [p.model.name, p.model.sha256, p.model.software,
                                                                   p.model.statement if p.model.validated else None],
            # verdicts by label, not id: SRs built before the ids were short keep their digest (and UID)
            "verdict": [LABELS[p.verdict.verdict], p.verdict.note],
            "eyes": {eye: [LABELS[v.verdict], v.grade] for eye, v in p.verdict.eyes.items()},
            # what was added since leaves the digest (and the UID) of an SR without it as it was
            **({"visit": p.visit} if p.visit is not None else {}),
            **({"said": verdict_text(p), "m": {eye: [v.m, v.r] for eye, v in p.verdict.eyes.items()}}
               if p.visit is not None else {}),
            "images": [[i.eye, i.row.path, i.row.sha256, i.row.status, i.row.reason, i.record.get("grade"),
                        i.record.get("referable"), i.record.get("lesions"), i.row.warnings, pictures.get(i.row.path),
                        i.source] for i in p.images],
            "last_seen": p.last_seen,
            **({"read": [p.read.reader, p.read.role, p.read.stage, p.read.verdict, p.read.grades, p.read.recorded,
                         p.read.organisation]} if p.read is not None else {})}


def _header(p: PatientResult) -> Dataset:
    """The patient's and study's attributes as an 'evidence' dataset: highdicom copies them into the SR from
    its first evidence item. It names no real instance and is taken out of the evidence afterwards."""
    ds = Dataset()
    s = p.study
    ds.SOPClassUID, ds.SOPInstanceUID = ComprehensiveSRStorage, derive_uid(p.session, "header", *p.key)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = s.uid, derive_uid(p.session, "header-series", *p.key)
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = s.patient_id, s.patient_name, \
        s.patient_birth_date, s.patient_sex
    ds.AccessionNumber, ds.StudyID, ds.StudyDate, ds.StudyTime = s.accession_number, s.study_id, s.study_date, \
        s.study_time
    ds.ReferringPhysicianName = s.referring_physician_name
    ds.SpecificCharacterSet = CHARSET
    return ds


def _reference(sop_class: str, sop_uid: str, study: str, series: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = sop_class, sop_uid, study, series
    return ds


def _evidence(p: PatientResult) -> list[Dataset]:
    """The instances the SR refers to: the patient's pictures and the camera's images (DICOM input)."""
    out = [_reference(SecondaryCaptureImageStorage, sc_uid(p, image), p.study.uid, picture_series(p, image.eye))
           for image, _ in pictured(p)]
    for image in p.images:
        src = image.source
        if src.get("sop_uid") and src.get("sop_class_uid"):
            out.append(_reference(src["sop_class_uid"], src["sop_uid"], src.get("study_uid", p.study.uid),
                                  src.get("series_uid") or derive_uid(p.session, "camera-series", src["sop_uid"])))
    return out


def picture_uids(p: PatientResult) -> dict[str, str]:
    """Path of each photo with a picture → its SC's SOP Instance UID."""
    return {image.row.path: sc_uid(p, image) for image, _ in pictured(p)}


def report_key(p: PatientResult) -> str:
    """The digest of what the patient's SR says: a new one means a new SR."""
    return digest(report_facts(p, picture_uids(p)))


def report_uid(p: PatientResult, key: str, predecessor: str | None) -> str:
    return derive_uid(p.session, "sr", *p.key, p.study.uid, key, predecessor or "")


def build_report(p: PatientResult, previous: Dataset | None = None) -> DicomObject:
    """The patient's Comprehensive SR; ``previous``: the SR it replaces (Predecessor Documents Sequence)."""
    by_path = picture_uids(p)
    key = digest(report_facts(p, by_path))
    uid = report_uid(p, key, previous.SOPInstanceUID if previous else None)
    header = _header(p)
    sr = hd.sr.ComprehensiveSR(
        evidence=[header, *_evidence(p)], content=_content(p, by_path),
        series_instance_uid=derive_uid(p.session, "series", "sr", *p.key, p.study.uid),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=uid, instance_number=1, manufacturer="drtrt",
        is_complete=True, is_final=p.model.validated or p.read is not None, is_verified=p.read is not None,
        verifying_observer_name=f"{p.read.reader}^" if p.read is not None else None,   # the name as one component
        verifying_organization=p.read.organisation if p.read is not None else None,
        previous_versions=[previous] if previous is not None else None,
        series_description="drtrt DR screening report", coding_schemes=_CODING_SCHEMES, **_equipment(p), **_dates(p))
    _drop_header(sr, header.SOPInstanceUID)
    _fix_times(sr, p)
    return DicomObject("sr", uid, sr, key)


def _drop_header(sr: Dataset, header_uid: str) -> None:
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        studies = []
        for study in sr.get(keyword, []):
            kept = []
            for series in study.ReferencedSeriesSequence:
                series.ReferencedSOPSequence = [r for r in series.ReferencedSOPSequence
                                                if r.ReferencedSOPInstanceUID != header_uid]
                if len(series.ReferencedSOPSequence):
                    kept.append(series)
            study.ReferencedSeriesSequence = kept
            if kept:
                studies.append(study)
        if studies:
            setattr(sr, keyword, studies)
        elif keyword in sr:
            delattr(sr, keyword)


def read_dataset(path: Path) -> Dataset:
    return dcmread(path)
