"""Helpers the station's tests share."""

from __future__ import annotations

import re
import time

import pytest

from drtrt.clinic.visits import Protocol


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


# The station's fixture: the app over a real worker and model, with a real camera folder. Kept here, not in a
# tests/station/conftest.py: a second conftest module would shadow tests/conftest.py for `from conftest import`.
@pytest.fixture
def station(tmp_path, tiny_onnx):
    from starlette.testclient import TestClient

    from drtrt.station.app import StationConfig, create_app
    from drtrt.station.worker import StationWorker, WorkerConfig

    def start(pin=None, fields=1, data=None, max_upload_bytes=None, incomplete_report_s=10.0, study=None):
        camera = tmp_path / "camera"
        camera.mkdir(exist_ok=True)
        worker = StationWorker(WorkerConfig(tiny_onnx, data or tmp_path / "station", camera, Protocol(fields),
                                            poll_s=0.05, settle_s=0.1, incomplete_report_s=incomplete_report_s))
        options = {"max_upload_bytes": max_upload_bytes} if max_upload_bytes else {}
        app = create_app(StationConfig(worker.cfg.data_dir, pin=pin, study=study, **options), worker)
        worker.start()
        started.append(worker)
        return TestClient(app), worker, camera

    started = []
    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def clinic_station(station):
    """The station over the failsafe's hand-built clinic (tests/visit_fixture.py), its clock at 2026-03-16 09:00
    UTC (U1's two weeks are over): (client, worker, {patient: visit id})."""
    from visit_fixture import at, clinic

    client, worker, _ = station()
    visits = clinic(worker.book)
    client.app.state.clock = lambda: at("2026-03-16T09:00")
    return client, worker, visits
