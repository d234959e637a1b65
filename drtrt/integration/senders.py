"""Sending one object to one server, and what counts as the server's confirmation.

* :class:`DicomWebSender` — STOW-RS: ``POST {URL}/studies``, one instance per request as
  ``multipart/related; type="application/dicom"``. Confirmed when the server answers 200 (or 202:
  stored, with warnings) and its response lists the instance in the Referenced SOP Sequence
  (0008,1199) and not in the Failed SOP Sequence (0008,1198).
* :class:`CStoreSender` — C-STORE over a DICOM association (pynetdicom), one association per pass.
  Confirmed by status 0x0000 (Success) or a Warning status (0x0001, 0xB000, 0xB006, 0xB007: stored,
  with coercion or with elements discarded, PS3.4 B.2.3).
* :class:`FhirSender` — the transaction Bundle ``POST``\\ ed to the FHIR base URL. Confirmed by 200/201
  with a ``transaction-response`` Bundle whose every entry has a 2xx status.

A server that cannot be reached raises :class:`Unreachable` (the pass stops sending to it); a server
that answers but does not confirm raises :class:`Rejected` (the object is retried later). Both
messages are one line and never contain a password from the URL.

HTTP is the standard library's ``urllib.request``: STOW-RS needs a ``multipart/related`` body, which
neither urllib nor httpx writes (httpx's multipart is ``multipart/form-data``), so it is built here, a
few lines; no HTTP package is added to the ``integration`` extra for it. ``http://user:password@host/…``
sends HTTP Basic authentication.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import uuid
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit, urlunsplit
from urllib.request import Request, urlopen

from drtrt.errors import ConfigError

_WARNINGS = {0x0001, 0xB000, 0xB006, 0xB007}


class Unreachable(Exception):
    """The server could not be reached (refused, timed out, name unknown, association rejected)."""


class Rejected(Exception):
    """The server answered but did not confirm the object."""


def split_credentials(url: str, option: str) -> tuple[str, dict[str, str]]:
    """``http://user:pw@host/x`` → (``http://host/x``, Basic authorization header); checks the scheme."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{option} needs an http:// or https:// URL, found {url!r}")
    headers = {}
    if parts.username is not None:
        token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    if ":" in parts.hostname:                                   # IPv6 literal
        netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), parts.query, "")), headers


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, TimeoutError):      # socket.timeout too
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "host name not found"
    return str(getattr(reason, "strerror", None) or reason) or type(reason).__name__


def _http(url: str, body: bytes, headers: dict[str, str], timeout: float, what: str) -> tuple[int, bytes]:
    try:
        with urlopen(Request(url, data=body, method="POST", headers=headers), timeout=timeout) as response:
            return response.status, response.read()
    except HTTPError as exc:
        return exc.code, exc.read() or b""
    except (URLError, OSError, TimeoutError) as exc:
        raise Unreachable(f"cannot reach the {what} at {url} ({_reason(exc)})") from None


class DicomWebSender:
    kinds = ("sc", "sr")

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url, self.headers = split_credentials(url, "--dicomweb")
        self.timeout = timeout
        self.destination = f"dicomweb {self.url}"

    def send(self, path: Path, uid: str) -> None:
        data = path.read_bytes()
        boundary = f"drtrt-{uuid.uuid4().hex}"
        while boundary.encode() in data:                        # never, in practice
            boundary = f"drtrt-{uuid.uuid4().hex}"
        body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
                + f"\r\n--{boundary}--\r\n".encode())
        headers = {**self.headers, "Accept": "application/dicom+json",
                   "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
        status, payload = _http(f"{self.url}/studies", body, headers, self.timeout, "DICOMweb server")
        stored, failed = _stow_outcome(payload)
        if status in (200, 202) and uid in stored and uid not in failed:
            return
        detail = failed.get(uid) or (payload[:200].decode(errors="replace").strip() if not stored else "")
        raise Rejected(f"STOW-RS answered HTTP {status}" + (f": {' '.join(detail.split())}" if detail else "")
                       + ("" if uid in stored else f"; instance {uid} not confirmed"))

    def close(self) -> None:
        pass


def _stow_outcome(payload: bytes) -> tuple[set[str], dict[str, str]]:
    """(instances stored, instance → failure reason) from a STOW-RS response (DICOM JSON)."""
    try:
        doc = json.loads(payload or b"{}")
    except ValueError:
        return set(), {}
    if isinstance(doc, list):
        doc = doc[0] if doc else {}

    def seq(tag: str) -> list[dict]:
        return (doc.get(tag) or {}).get("Value") or [] if isinstance(doc, dict) else []

    def first(item: dict, tag: str) -> str:
        values = (item.get(tag) or {}).get("Value") or [""]
        return str(values[0])

    stored = {first(i, "00081155") for i in seq("00081199")}
    failed = {first(i, "00081155"): f"failure reason {first(i, '00081197')}" for i in seq("00081198")}
    return stored, failed


class CStoreSender:
    kinds = ("sc", "sr")

    def __init__(self, address: str, ae_title: str = "DRTRT", called_ae: str = "ANY-SCP",
                 timeout: float = 30.0) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--cstore needs HOST:PORT (a port 1-65535), found {address!r}")
        for option, title in (("--ae-title", ae_title), ("--called-ae", called_ae)):
            if not title.strip() or len(title) > 16 or "\\" in title or not title.isascii():
                raise ConfigError(f"{option} must be 1-16 ASCII characters without a backslash, found {title!r}")
        self.host, self.port = host.strip("[]"), int(port)
        self.ae_title, self.called_ae, self.timeout = ae_title, called_ae, timeout
        self.destination = f"cstore {called_ae}@{host}:{port}"
        self._assoc = None

    def _association(self, sop_class: str):
        if self._assoc is not None and self._assoc.is_established:
            return self._assoc
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        from pynetdicom import AE
        from pynetdicom.sop_class import ComprehensiveSRStorage, SecondaryCaptureImageStorage

        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        for context in {ComprehensiveSRStorage, SecondaryCaptureImageStorage, sop_class}:
            ae.add_requested_context(context, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        assoc = ae.associate(self.host, self.port, ae_title=self.called_ae)
        if not assoc.is_established:
            why = "association rejected" if assoc.is_rejected else "no answer or connection refused"
            raise Unreachable(f"cannot reach the DICOM server {self.called_ae}@{self.host}:{self.port} ({why})")
        self._assoc = assoc
        return assoc

    def send(self, path: Path, uid: str) -> None:
        from pydicom import dcmread

        ds = dcmread(io.BytesIO(path.read_bytes()))
        assoc = self._association(ds.SOPClassUID)
        status = assoc.send_c_store(ds)
        if "Status" not in status:
            self.close()
            raise Unreachable(f"the DICOM server {self.called_ae}@{self.host}:{self.port} dropped the association")
        code = int(status.Status)
        if code != 0x0000 and code not in _WARNINGS:
            comment = f" ({status.ErrorComment})" if "ErrorComment" in status else ""
            raise Rejected(f"C-STORE answered status 0x{code:04X}{comment}")

    def close(self) -> None:
        if self._assoc is not None:
            if self._assoc.is_established:
                self._assoc.release()
            self._assoc = None


class FhirSender:
    kinds = ("fhir",)

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url, self.headers = split_credentials(url, "--fhir")
        self.timeout = timeout
        self.destination = f"fhir {self.url}"

    def send(self, path: Path, uid: str) -> None:
        headers = {**self.headers, "Content-Type": "application/fhir+json; charset=utf-8",
                   "Accept": "application/fhir+json"}
        status, payload = _http(self.url, path.read_bytes(), headers, self.timeout, "FHIR server")
        try:
            doc = json.loads(payload or b"{}")
        except ValueError:
            doc = {}
        if status in (200, 201) and doc.get("resourceType") == "Bundle" \
                and doc.get("type") == "transaction-response":
            bad = [e.get("response", {}).get("status", "?") for e in doc.get("entry", [])
                   if not str(e.get("response", {}).get("status", "")).startswith("2")]
            if not bad:
                return
            raise Rejected(f"the FHIR server answered HTTP {status} with entry status {', '.join(bad)}")
        issues = [i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code", "")
                  for i in doc.get("issue", [])] if doc.get("resourceType") == "OperationOutcome" else []
        detail = "; ".join(filter(None, issues)) or payload[:200].decode(errors="replace").strip()
        raise Rejected(f"the FHIR server answered HTTP {status}" + (f": {' '.join(detail.split())}" if detail else ""))

    def close(self) -> None:
        pass
