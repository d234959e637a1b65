"""Reading from a PACS (QIDO-RS, WADO-RS) and a FHIR server: GETs with the sync's URLs and credentials.

``http://user:password@host/…`` sends HTTP Basic authentication (:func:`.senders.split_credentials`); a server
that cannot be reached raises :class:`.senders.Unreachable` (one line, no password), one that answers an HTTP
error :class:`~drtrt.errors.DataError`. The standard library's urllib, as the sync's senders use.
"""

from __future__ import annotations

import json
from urllib.error import HTTPError, URLError
from urllib.parse import quote
from urllib.request import Request, urlopen

from drtrt.errors import DataError
from drtrt.integration.senders import Unreachable, _reason, split_credentials


class Server:
    """GETs to one server (``http://user:pw@host/…`` sends Basic authentication, as the sync does)."""

    def __init__(self, url: str, option: str, what: str, timeout: float = 30.0) -> None:
        self.url, self.headers = split_credentials(url, option)
        self.what, self.timeout = what, timeout

    def get(self, path: str, accept: str) -> tuple[str, bytes]:
        url = f"{self.url}{path}"
        try:
            with urlopen(Request(url, headers={**self.headers, "Accept": accept}), timeout=self.timeout) as answer:
                return answer.headers.get("Content-Type", ""), answer.read()
        except HTTPError as exc:
            raise DataError(f"the {self.what} at {self.url} answered HTTP {exc.code} to GET {path}") from None
        except (URLError, OSError, TimeoutError) as exc:
            raise Unreachable(f"cannot reach the {self.what} at {self.url} ({_reason(exc)})") from None


class Pacs(Server):
    """QIDO-RS and WADO-RS of one DICOMweb server."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        super().__init__(url, "--dicomweb", "DICOMweb server", timeout)

    def qido(self, path: str) -> list[dict]:
        _, body = self.get(path, "application/dicom+json")
        try:
            found = json.loads(body or b"[]")
        except ValueError:
            raise DataError(f"the DICOMweb server at {self.url} answered {path} with something not DICOM JSON") \
                from None
        return found if isinstance(found, list) else []

    def instance(self, study: str, series: str, sop: str) -> bytes:
        """WADO-RS: one instance, as its Part 10 file."""
        kind, body = self.get(f"/studies/{quote(study)}/series/{quote(series)}/instances/{quote(sop)}",
                              'multipart/related; type="application/dicom"')
        parts = multipart(kind, body)
        if len(parts) != 1:
            raise DataError(f"the DICOMweb server at {self.url} gave {len(parts)} parts for instance {sop}, not 1")
        return parts[0]


def multipart(content_type: str, body: bytes) -> list[bytes]:
    """The bodies of a ``multipart/related`` answer."""
    boundary = next((p.split("=", 1)[1].strip().strip('"') for p in content_type.split(";")
                     if p.strip().lower().startswith("boundary=")), None)
    if not boundary:
        raise DataError(f"a WADO-RS answer without a multipart boundary ({content_type or 'no Content-Type'})")
    out = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if sep:
            out.append(data[:-2] if data.endswith(b"\r\n") else data)
    return out


def value(item: dict, tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or [""]
    return str(values[0])
