"""Helpers the station's tests share."""

from __future__ import annotations

import re
import time


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html)[1]


def wait_for(check, timeout: float = 60.0, what: str = "the station"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def open_visit(client, patient="P-001", fields="1", **extra):
    token = csrf_of(client.get("/patients/new").text)
    response = client.post("/visits", data={"csrf": token, "patient": patient, "fields": fields, **extra},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    return int(response.headers["location"].rsplit("/", 1)[1]), token


def slot_state(client, visit_id, slot):
    return next(s for s in client.get(f"/api/visits/{visit_id}").json()["slots"] if s["slot"] == slot)
