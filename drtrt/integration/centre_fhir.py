"""The reading centre's side of the FHIR server: find the DiagnosticReport a station sent for a study, and the
same report corrected by a centre's read.

The station's DiagnosticReport names its study (``identifier`` ``urn:dicom:uid`` | ``urn:oid:<StudyInstanceUID>``,
:mod:`.fhir`), so the centre finds it by a search on that identifier. The centre's read keeps its id (``PUT``:
the server updates it, never adds a second), ``final`` with the reader as performer, or ``amended`` when the
read changed the model's result; its conclusion, conclusion code and SR identifier are the read's.
"""

from __future__ import annotations

import copy
import json

from drtrt.clinic.verdicts import REFER, REFER_URGENT, RESCREEN
from drtrt.errors import DataError
from drtrt.integration import codes as C
from drtrt.integration.fhir import _concept, _identifier_query, _local
from drtrt.integration.uids import fhir_id

_STUDY = "DICOM Study Instance UID"
_SR = "DICOM SR SOP Instance UID"


def find_report(server, study: str) -> dict | None:
    """The DiagnosticReport of ``study`` at the FHIR server (``server``: a :class:`.pacs.Server`); None: none.
    More than one is refused: the centre would not know which one is the result."""
    _, body = server.get(f"/DiagnosticReport?{_identifier_query(C.DICOM_UID_SYSTEM, f'urn:oid:{study}')}",
                         "application/fhir+json")
    try:
        bundle = json.loads(body or b"{}")
    except ValueError:
        raise DataError(f"the FHIR server at {server.url} answered a search with something not JSON") from None
    found = [e["resource"] for e in bundle.get("entry") or [] if (e.get("resource") or {}).get("resourceType")
             == "DiagnosticReport" and any(i.get("value") == f"urn:oid:{study}" for i in e["resource"].get(
                 "identifier") or [])]
    if len(found) > 1:
        raise DataError(f"the FHIR server at {server.url} holds {len(found)} DiagnosticReports of study {study}; "
                        "resolve them there before the centre reads it")
    return found[0] if found else None


def corrected_bundle(report: dict, read: dict, visit: dict, sr_uid: str) -> dict:
    """A transaction Bundle that PUTs ``report`` as the centre's ``read`` of ``visit`` (what the station's SR
    said: :func:`.centre.summarise`) made it (module docstring); the model's validation statement is kept."""
    out = copy.deepcopy(report)
    out["status"] = "amended" if read["overrules"] else "final"
    out["performer"] = [{"display": f"{read['reader']} ({read['organisation']})"}]
    out["issued"] = read["recorded"]
    out["conclusion"] = (f"{read['words']} — read by {read['reader']}; the model said: {visit['verdict']}"
                         + (f". {visit['validation']}" if visit.get("validation") else ""))
    referable = {REFER: True, REFER_URGENT: True, RESCREEN: False}.get(read["verdict"])
    out.pop("conclusionCode", None)
    if referable is not None:
        out["conclusionCode"] = [_concept(_local("referable-dr"),
                                          text="referable DR" if referable else "no referable DR")]
    out["identifier"] = [{"system": C.DICOM_UID_SYSTEM, "type": {"text": _SR}, "value": f"urn:oid:{sr_uid}"}] + [
        i for i in out.get("identifier") or [] if (i.get("type") or {}).get("text") != _SR]
    entry = {"fullUrl": f"urn:uuid:{out['id']}", "resource": out,
             "request": {"method": "PUT", "url": f"DiagnosticReport/{out['id']}"}}
    return {"resourceType": "Bundle", "id": fhir_id("centre", sr_uid), "type": "transaction", "entry": [entry]}
