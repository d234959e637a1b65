"""The codes drtrt writes into DICOM SR and FHIR, in one place, with why each was chosen.

Standard codes first; drtrt's own codes only where no standard one fits (a local code system, below).

* LOINC 71491-5 / 71490-7 "Right eye / Left eye Diabetic retinopathy severity level by Ophthalmoscopy":
  the LOINC observations for a per-eye DR severity level; their answer list LL2117-1
  ("Eye.PX-diabetic retinopathy") is the five-level international (ICDR) scale drtrt's models grade
  on, and is what US quality measure 117 (diabetic eye exam) accepts. The method in the name is
  ophthalmoscopy; the Observation's ``method`` says the grade came from fundus photographs and a model.
* LOINC answers LA18643-9 … LA18648-8: no apparent retinopathy, mild, moderate, severe
  non-proliferative, proliferative retinopathy (grades 0–4 of the default task vocabulary).
* SNOMED CT 312903003, 312904009, 312905005, 59276001 (mild, moderate, severe non-proliferative,
  proliferative retinopathy due to diabetes mellitus): the eCQM value set "Level of Severity of
  Retinopathy Findings" (VSAC 2.16.840.1.113883.3.526.3.1283), given beside the LOINC answer in FHIR
  (SNOMED CT has no "no retinopathy" concept in that value set: grade 0 carries the LOINC answer only).
* SNOMED CT 18944008 "Right eye structure" / 8966001 "Left eye structure": FHIR ``bodySite``, and the
  SR's Finding Site (SNOMED CT 363698007, as DICOM uses it).
* SNOMED CT 373066001 "Yes" / 373067005 "No" (DICOM CID 230): the answer to "referable DR?" in the SR.
* LOINC 18748-4 "Diagnostic Imaging Report" (DICOM CID 7000): the SR document title.
* LOINC 104212-6 "Views screening for diabetic retinopathy of Eyes": the FHIR DiagnosticReport's code.
* HL7 data-absent-reason "not-performed": an eye with no gradable photo has no grade.

A grade vocabulary other than the five ICDR grades (a model trained on another scale) gets drtrt codes
``dr-grade-N`` only. drtrt's own codes (referable DR, screening verdict, lesion counts and areas, image
status, model identity) are in the code system :data:`LOCAL_SYSTEM` (FHIR) = coding scheme
:data:`LOCAL_SCHEME` (DICOM, a private "99" designator identified by :data:`LOCAL_SCHEME_UID` in the
Coding Scheme Identification Sequence).
"""

from __future__ import annotations

import uuid

from drtrt.task import TaskSpec

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
DICOM_UID_SYSTEM = "urn:dicom:uid"                 # FHIR Identifier.system of a DICOM UID ("urn:oid:" + UID)

LOCAL_SCHEME = "99DRTRT"
LOCAL_SCHEME_UID = f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'drtrt:codes').int}"
LOCAL_SYSTEM = f"urn:oid:{LOCAL_SCHEME_UID}"
# The patients' identifier system, until the site sets its own (``drtrt sync --patient-system``).
DEFAULT_PATIENT_SYSTEM = f"urn:oid:2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'drtrt:patient-id').int}"

EYE_SITE = {"right": ("18944008", "Right eye structure"), "left": ("8966001", "Left eye structure")}
EYE_SEVERITY = {"right": ("71491-5", "Right eye Diabetic retinopathy severity level by Ophthalmoscopy"),
                "left": ("71490-7", "Left eye Diabetic retinopathy severity level by Ophthalmoscopy")}
GRADE_LOINC = (("LA18643-9", "No apparent retinopathy"), ("LA18644-7", "Mild non-proliferative retinopathy"),
               ("LA18645-4", "Moderate non-proliferative retinopathy"),
               ("LA18646-2", "Severe non-proliferative retinopathy"), ("LA18648-8", "Proliferative retinopathy"))
GRADE_SNOMED = (None, ("312903003", "Mild nonproliferative retinopathy due to diabetes mellitus"),
                ("312904009", "Moderate nonproliferative retinopathy due to diabetes mellitus"),
                ("312905005", "Severe nonproliferative retinopathy due to diabetes mellitus"),
                ("59276001", "Proliferative retinopathy due to diabetes mellitus"))
REPORT_TITLE = ("18748-4", "Diagnostic Imaging Report")
REPORT_CODE = ("104212-6", "Views screening for diabetic retinopathy of Eyes")
FINDING_SITE = ("363698007", "Finding Site")
YES, NO = ("373066001", "Yes"), ("373067005", "No")
ICDR_GRADES = TaskSpec().grade_names

# drtrt's own codes: code → meaning (codes of at most 16 characters: a DICOM Code Value is an SH)
LOCAL = {
    "dr-severity": "Diabetic retinopathy severity level, eye not recorded",
    "referable-dr": "Referable diabetic retinopathy",
    "verdict": "Screening verdict",
    "clinician-read": "Clinician's read (the final result)",
    "retinopathy": "Retinopathy grade (R), in the pathway's words",
    "maculopathy": "Maculopathy (M)",
    "eye-result": "Eye result",
    "image-result": "Image result",
    "source-file": "Source file",
    "source-image": "Source image",
    "lesion-overlay": "Lesion overlay",
    "image-status": "Image status",
    "not-graded": "Reason the image was not graded",
    "dr-grade": "Diabetic retinopathy grade",
    "warning": "Warning",
    "images-total": "Images of this eye",
    "images-gradable": "Gradable images of this eye",
    "model-name": "Model name",
    "model-sha256": "Model SHA-256",
    "software-version": "Software version",
    "validation": "Clinical validation",
    "referral": "Referral from diabetic eye screening",
}
PATIENT_REFERRAL = ("3457005", "Patient referral")      # SNOMED CT: the ServiceRequest's category


def is_icdr(task: TaskSpec) -> bool:
    """Whether the model grades on the five ICDR levels the LOINC and SNOMED CT codes name."""
    return tuple(task.grade_names) == ICDR_GRADES


def lesion_count_code(code: str) -> str:
    return f"count-{code}"


def lesion_area_code(code: str) -> str:
    return f"area-{code}"


def grade_code(grade: int) -> str:
    return f"dr-grade-{grade}"
