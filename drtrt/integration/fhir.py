"""A patient's results as a FHIR R4 transaction Bundle: Patient, Device, one Observation per eye, DiagnosticReport.

Built as plain JSON and validated by building it with ``fhir.resources``' R4B models (fhir.resources 8
ships R5 as default, R4B and STU3, and no R4 package; every element written here has the same
name, type and cardinality in R4 4.0.1 as in R4B 4.3.0, so the Bundle is R4 as the issue asks).

* Patient: conditional create (``POST`` with ``ifNoneExist: identifier=SYSTEM|ID``): a patient the
  server already has under that identifier is used, never overwritten; the other entries refer to it
  by its ``urn:uuid`` fullUrl, which the server resolves. SYSTEM is the site's patient-ID system
  (``--patient-system``; a drtrt placeholder OID until one is set).
* Device (the model): ``PUT Device/<id>``, id derived from the model's SHA-256; name, drtrt version,
  model SHA-256, and a note saying it is not a validated clinical model (unless the model says so).
* Observation per eye: ``PUT Observation/<id>``; code LOINC 71491-5 / 71490-7 (an eye not recorded:
  drtrt's ``dr-severity``), bodySite SNOMED CT 18944008 / 8966001, value the worst gradable grade
  (LOINC answer, SNOMED CT, drtrt code, the model's grade name) or, with no gradable photo,
  dataAbsentReason not-performed with the reasons in ``note``; components: referable DR (boolean),
  the eye's verdict, images and gradable images, the lesion counts (the most any gradable photo of
  the eye shows: photos of one eye overlap, so counts are not added up). ``method`` says how.
* DiagnosticReport: ``PUT DiagnosticReport/<id>``; code LOINC 104212-6, the Observations as results,
  the patient's verdict and the model statement as conclusion, the DICOM SR's SOP Instance UID and
  the study's UID as identifiers (``urn:dicom:uid``), so the two records of one screening find each other.

* ServiceRequest, when the visit is a referral (refer / refer urgently, :mod:`drtrt.clinic.referrals`):
  ``PUT ServiceRequest/<id>``, status active, intent order, priority urgent / routine, category SNOMED CT
  3457005 (patient referral), subject the Patient, requester the Device, reasonReference the
  DiagnosticReport, supportingInfo the eyes' Observations, occurrencePeriod from the screening to the due
  date (the pathway's timescale), performerType and a note with the destination. A visit that is a
  referral no more keeps its ServiceRequest, revoked, under the same id.

Status ``preliminary`` (a model result no clinician has read) unless the model is validated (``final``).
A clinician's final read (:mod:`drtrt.clinic.reads`) makes the DiagnosticReport ``final`` with the reader as
``performer``, or ``amended`` when the read changed the model's verdict; the same id, so the server updates it.
Every id is derived from the session and the patient (:mod:`.uids`): a resend updates, never duplicates.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from drtrt.clinic.referrals import Referral
from drtrt.integration import codes as C
from drtrt.integration.results import ImageResult, PatientResult, verdict_text
from drtrt.integration.uids import fhir_id


def _coding(system: str, pair: tuple[str, str]) -> dict:
    return {"system": system, "code": pair[0], "display": pair[1]}


def _local(code: str, display: str | None = None) -> dict:
    return {"system": C.LOCAL_SYSTEM, "code": code, "display": display or C.LOCAL[code]}


def _concept(*codings: dict, text: str | None = None) -> dict:
    out: dict = {"coding": list(codings)}
    if text:
        out["text"] = text
    return out


def _instant(stamp: str) -> str:
    """2026-11-25T23:07:41Z: already an ISO 8601 instant in UTC."""
    return stamp


def grade_concept(grade: int, p: PatientResult) -> dict:
    names = p.model.task.grade_names
    codings = []
    if C.is_icdr(p.model.task):
        codings.append(_coding(C.LOINC, C.GRADE_LOINC[grade]))
        if C.GRADE_SNOMED[grade]:
            codings.append(_coding(C.SNOMED, C.GRADE_SNOMED[grade]))
    codings.append(_local(C.grade_code(grade), names[grade]))
    return _concept(*codings, text=names[grade])


def _lesion_counts(p: PatientResult, images: list[ImageResult]) -> list[dict]:
    graded = [i for i in images if i.row.status == "graded"]
    if not graded:
        return []
    task = p.model.task
    components = []
    for code in task.lesion_codes:
        counts = [int((i.record.get("lesions") or {}).get(code, {}).get("count", 0)) for i in graded]
        components.append({"code": _concept(_local(C.lesion_count_code(code), f"{task.long_name(code)} count")),
                           "valueInteger": max(counts)})
    return components


def _observation(p: PatientResult, eye: str, ids: dict, status: str) -> dict:
    verdict = p.verdict.eyes[eye]
    images = p.eyes.get(eye, [])
    code = (_concept(_coding(C.LOINC, C.EYE_SEVERITY[eye]), text=C.EYE_SEVERITY[eye][1]) if eye in C.EYE_SEVERITY
            else _concept(_local("dr-severity"), text=C.LOCAL["dr-severity"]))
    obs: dict = {
        "resourceType": "Observation", "id": ids[f"obs-{eye}"], "status": status,
        "category": [_concept(_coding("http://terminology.hl7.org/CodeSystem/observation-category",
                                      ("imaging", "Imaging")))],
        "code": code, "subject": {"reference": ids["patient-ref"]},
        "effectiveDateTime": _instant(max((i.when for i in images), default=p.last_seen)),
        "device": {"reference": f"urn:uuid:{ids['device']}"},
        "method": {"text": f"automated grading of colour fundus photographs by model {p.model.name} "
                           f"(drtrt {p.model.software})"},
    }
    if eye in C.EYE_SITE:
        obs["bodySite"] = _concept(_coding(C.SNOMED, C.EYE_SITE[eye]), text=f"{eye} eye")
    if verdict.grade is not None:
        obs["valueCodeableConcept"] = grade_concept(verdict.grade, p)
    else:
        obs["dataAbsentReason"] = _concept(_coding(C.DATA_ABSENT, ("not-performed", "Not Performed")),
                                           text=verdict.words)
    notes = [f"{i.name}: {i.row.status} — {i.row.reason}" for i in images if i.row.status != "graded"]
    notes += [f"{i.name}: {w}" for i in images for w in i.row.warnings]
    if notes:
        obs["note"] = [{"text": n} for n in notes]
    components = [{"code": _concept(_local("verdict")), "valueString": verdict.words}]
    if verdict.gradable:                       # R and M apart, as programmes grade them
        components += [{"code": _concept(_local("retinopathy")), "valueString": verdict.r}] if verdict.r else []
        components.append({"code": _concept(_local("maculopathy")),
                           "valueString": f"{verdict.m or 'not assessed'}: {verdict.m_words}"})
    components += [{"code": _concept(_local("images-total")), "valueInteger": len(images)},
                   {"code": _concept(_local("images-gradable")),
                    "valueInteger": sum(i.row.status == "graded" for i in images)}]
    if (referable := p.eye_referable(eye)) is not None:
        components.insert(0, {"code": _concept(_local("referable-dr")), "valueBoolean": referable})
    obs["component"] = components + _lesion_counts(p, images)
    return obs


def service_request(p: PatientResult, referral: Referral, ids: dict[str, str]) -> dict:
    """The referral itself, for a hospital system: ordered by the screening (the model, as Device), urgent or
    routine, due by the pathway's timescale, to the pathway's destination, for the reason the report gives."""
    words = f"{referral.destination}; due by {referral.due.isoformat()} ({referral.days} days from the screening)"
    return {
        "resourceType": "ServiceRequest", "id": ids["referral"], "status": "active", "intent": "order",
        "identifier": [{"system": C.LOCAL_SYSTEM, "type": {"text": "drtrt referral"}, "value": ids["referral"]}],
        "priority": "urgent" if referral.urgent else "routine",
        "category": [_concept(_coding(C.SNOMED, C.PATIENT_REFERRAL))],
        "code": _concept(_local("referral"), text=f"Referral: {verdict_text(p)}"),
        "subject": {"reference": ids["patient-ref"]},
        "occurrencePeriod": {"start": referral.opened[:10], "end": referral.due.isoformat()},
        "authoredOn": _instant(p.last_seen), "requester": {"reference": f"urn:uuid:{ids['device']}"},
        "performerType": {"text": referral.destination},
        "reasonReference": [{"reference": f"urn:uuid:{ids['report']}"}],
        "supportingInfo": [{"reference": f"urn:uuid:{ids[f'obs-{eye}']}"} for eye in p.verdict.eyes],
        "note": [{"text": f"Destination: {words}"}] + ([{"text": p.model.statement}] if p.model.statement else []),
    }


def withdrawn_request(previous: dict | None) -> dict | None:
    """The ServiceRequest an earlier Bundle of the visit carried (``previous``: that Bundle), revoked: the
    visit is no longer a referral, and the hospital is told so under the same id rather than left with it."""
    found = next((e["resource"] for e in (previous or {}).get("entry", [])
                  if e.get("resource", {}).get("resourceType") == "ServiceRequest"), None)
    if found is None:
        return None
    note = {"text": "Revoked by drtrt: the visit's verdict is no longer a referral"}
    found = {k: v for k, v in found.items() if k != "supportingInfo"}    # the eyes it named may be gone
    return {**found, "status": "revoked", "note": [n for n in found.get("note", []) if n != note] + [note]}


def patient_bundle(p: PatientResult, sr_uid: str | None, patient_system: str = C.DEFAULT_PATIENT_SYSTEM,
                   referral: Referral | None = None, previous: dict | None = None) -> dict:
    """The patient's transaction Bundle as JSON-ready data (validate it with :func:`validate_bundle`); with
    a ServiceRequest when the visit is a ``referral``, or the earlier one revoked when the visit's ``previous``
    Bundle carried one and it is a referral no more."""
    status = "final" if p.model.validated else "preliminary"
    report_status = status if p.read is None else "amended" if p.read.changed else "final"
    ids = {"bundle": fhir_id(p.session, "fhir-bundle", *p.key), "patient": fhir_id(p.session, "patient", p.patient),
           "device": fhir_id("device", p.model.sha256), "report": fhir_id(p.session, "report", *p.key),
           "referral": fhir_id(p.session, "referral", *p.key)}
    ids.update({f"obs-{eye}": fhir_id(p.session, "observation", *p.key, eye) for eye in p.verdict.eyes})
    ids["patient-ref"] = f"urn:uuid:{ids['patient']}"
    s = p.study
    patient: dict = {"resourceType": "Patient", "identifier": [{"system": patient_system, "value": p.patient}]}
    if s.patient_name:
        family, _, given = s.patient_name.partition("^")
        name: dict = {"text": " ".join(x for x in (given.replace("^", " ").strip(), family) if x)}
        if family:
            name["family"] = family
        if given.split("^")[0]:
            name["given"] = [given.split("^")[0]]
        patient["name"] = [name]
    if len(s.patient_birth_date) == 8 and s.patient_birth_date.isdigit():
        d = s.patient_birth_date
        patient["birthDate"] = f"{d[:4]}-{d[4:6]}-{d[6:]}"
    if s.patient_sex in ("M", "F", "O"):
        patient["gender"] = {"M": "male", "F": "female", "O": "other"}[s.patient_sex]
    device = {
        "resourceType": "Device", "id": ids["device"], "status": "active", "manufacturer": "drtrt",
        "deviceName": [{"name": p.model.name, "type": "model-name"}],
        "identifier": [{"system": C.LOCAL_SYSTEM, "type": {"text": "model SHA-256"}, "value": p.model.sha256}],
        "type": {"text": "diabetic-retinopathy screening software"},
        "version": [{"type": {"text": "drtrt"}, "value": p.model.software},
                    {"type": {"text": "model SHA-256"}, "value": p.model.sha256}],
        "note": [{"text": p.model.statement}],
    }
    observations = [_observation(p, eye, ids, status) for eye in p.verdict.eyes]
    identifiers = [{"system": C.DICOM_UID_SYSTEM, "type": {"text": "DICOM Study Instance UID"},
                    "value": f"urn:oid:{s.uid}"}]
    if sr_uid:
        identifiers.insert(0, {"system": C.DICOM_UID_SYSTEM, "type": {"text": "DICOM SR SOP Instance UID"},
                               "value": f"urn:oid:{sr_uid}"})
    conclusion = f"{verdict_text(p)}. {p.model.statement}"
    report = {
        "resourceType": "DiagnosticReport", "id": ids["report"], "status": report_status, "identifier": identifiers,
        "code": _concept(_coding(C.LOINC, C.REPORT_CODE), text="Diabetic retinopathy screening"),
        "subject": {"reference": ids["patient-ref"]}, "effectiveDateTime": _instant(p.last_seen),
        "issued": _instant(p.last_seen),
        "result": [{"reference": f"urn:uuid:{o['id']}"} for o in observations], "conclusion": conclusion,
    }
    if p.read is not None:                     # the clinician whose read is the result
        report["performer"] = [{"display": f"{p.read.reader} ({p.read.organisation})"}]
        report["issued"] = _instant(p.read.recorded)
    if p.referable is not None:
        report["conclusionCode"] = [_concept(_local("referable-dr"),
                                             text="referable DR" if p.referable else "no referable DR")]
    entries = [{"fullUrl": ids["patient-ref"], "resource": patient,
                "request": {"method": "POST", "url": "Patient",
                            "ifNoneExist": _identifier_query(patient_system, p.patient)}},
               _put(device)] + [_put(o) for o in observations]
    request = service_request(p, referral, ids) if referral is not None else withdrawn_request(previous)
    entries += ([_put(request)] if request is not None else []) + [_put(report)]
    return {"resourceType": "Bundle", "id": ids["bundle"], "type": "transaction", "entry": entries}


def _identifier_query(system: str, value: str) -> str:
    """``identifier=system|value`` as a search query: FHIR's escapes (``\\ , $ |``), then percent-encoding."""
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace(",", "\\,").replace("$", "\\$").replace("|", "\\|")

    return "identifier=" + quote(f"{escape(system)}|{escape(value)}", safe=":/|")


def _put(resource: dict) -> dict:
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}


def validate_bundle(bundle: dict):
    """The Bundle as fhir.resources' R4B model: raises pydantic's ValidationError when a resource is malformed."""
    from fhir.resources.R4B.bundle import Bundle

    return Bundle.model_validate(bundle)


def bundle_bytes(bundle: dict) -> bytes:
    """Canonical JSON (sorted keys): the same Bundle is the same bytes."""
    validate_bundle(bundle)
    return (json.dumps(bundle, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
