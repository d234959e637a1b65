"""Identifiers of everything a session sends out, derived, never drawn at random: a resend is the same object.

Every DICOM UID is ``2.25.<UUID as an integer>`` (DICOM PS3.5 B.2, ISO/IEC 9834-8: no organisation
root needs registering), where the UUID is a name-based one (RFC 4122 version 5, SHA-1) of the
session's ID and the object's parts: the kind of object, the patient, the content it carries. The
same session, patient and content give the same UID on every machine and every run; other content
gives another UID (DICOM demands a new SOP Instance UID when the content changes). FHIR resource
ids are the same UUIDs written in hex (``[a-f0-9-]{36}``, a valid FHIR id).

The session ID is a random UUID made the first time anything is exported from a session and kept in
the store's ``meta`` table (key ``session_id``): two sessions never share UIDs, one session keeps its
own across runs, crashes and copies of its folder.
"""

from __future__ import annotations

import hashlib
import json
import uuid

from drtrt.clinic.store import SessionStore

# A fixed namespace for drtrt's name-based UUIDs (itself uuid5(NAMESPACE_URL, "drtrt:uids")): changing it
# would give every object of every session a new UID, so it never changes.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "drtrt:uids")
SESSION_KEY = "session_id"


def session_id(store: SessionStore) -> str:
    """The session's ID: read from the store's meta table, or made (a random UUID) and kept there."""
    with store.transaction():
        found = store.get_meta(SESSION_KEY)
        if found:
            return found
        made = str(uuid.uuid4())
        store.set_meta(SESSION_KEY, made)
        return made


def _uuid(*parts: object) -> uuid.UUID:
    # JSON of the list: parts never run into each other ("ab", "c" differs from "a", "bc")
    return uuid.uuid5(NAMESPACE, json.dumps([str(p) for p in parts], ensure_ascii=False))


def derive_uid(*parts: object) -> str:
    """A DICOM UID (``2.25.…``, at most 44 characters) determined by ``parts``."""
    return f"2.25.{_uuid(*parts).int}"


def fhir_id(*parts: object) -> str:
    """A FHIR resource id (a UUID in hex with dashes) determined by ``parts``."""
    return str(_uuid(*parts))


def digest(value: object) -> str:
    """SHA-256 of a JSON-able value, written canonically (sorted keys): what content is, as a string."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()
