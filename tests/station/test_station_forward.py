"""The station sends its results to a real PACS (Orthanc) as visits finish, and shows what waits."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from station_helpers import csrf_of, wait_for

pytest.importorskip("highdicom", reason="sending results needs the integration extra")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from orthanc_helpers import Orthanc  # noqa: E402

from drtrt.clinic import audit  # noqa: E402
from drtrt.clinic.visits import Protocol  # noqa: E402

pytest.importorskip("starlette", reason="the station needs the station extra (pip install 'drtrt[station]')")


def test_finished_visits_reach_the_pacs_and_the_dashboard_counts_what_waits(tmp_path, tiny_onnx, fundus_photos):
    from starlette.testclient import TestClient

    from drtrt.integration.outbox import pending_count
    from drtrt.integration.sync import SyncConfig
    from drtrt.station.app import StationConfig, create_app
    from drtrt.station.forward import Forwarder
    from drtrt.station.worker import StationWorker, WorkerConfig

    pacs = Orthanc(tmp_path / "orthanc")
    camera = tmp_path / "camera"
    camera.mkdir()
    worker = StationWorker(WorkerConfig(tiny_onnx, tmp_path / "station", camera, Protocol(1), poll_s=0.05,
                                        settle_s=0.1))
    cfg = SyncConfig(dicomweb=pacs.dicomweb, retry_base=0.1, retry_max=0.5, timeout=5)
    forwarder = Forwarder(worker.store, worker.cfg.data_dir, cfg, every_s=0.5, on_change=worker.changed)
    client = TestClient(create_app(StationConfig(worker.cfg.data_dir), worker, forwarder))
    worker.start()
    forwarder.start()
    try:
        token = csrf_of(client.get("/patients/new").text)
        visit = client.post("/visits", data={"csrf": token, "patient": "P-PACS", "fields": "1"},
                            follow_redirects=False).headers["location"].rsplit("/", 1)[1]
        shutil.copy(fundus_photos["good0"], camera / "1.jpg")
        shutil.copy(fundus_photos["left"], camera / "2.jpg")
        wait_for(lambda: client.get(f"/api/visits/{visit}").json()["complete"], what="both eyes")
        client.post(f"/visits/{visit}/close", data={"csrf": token})
        # the PACS is down: the results wait, and the dashboard says so
        wait_for(lambda: forwarder.state.last_pass and pending_count(worker.store) > 0,
                 what="a pass with the PACS down")
        page = client.get("/").text
        assert "waiting to be sent" in page and forwarder.state.problem
        pacs.start()                                          # the link is back
        wait_for(lambda: pending_count(worker.store) == 0, timeout=90, what="everything sent")
        uids = set(pacs.sop_uids())
        assert len(uids) >= 3                                 # the SR and an overlay per eye
        sends = [e for e in audit.entries(worker.store) if e.action == "send"]    # each confirmed send is audited,
        assert {e.details["uid"] for e in sends} == uids
        assert {(e.person, e.visit) for e in sends} == {("no login (this machine)", int(visit))}  # for who finished
        assert "0 results waiting to be sent" in client.get("/").text
        before = len(pacs.instances())
        forwarder.now()
        wait_for(lambda: forwarder.state.pending == 0 and forwarder.state.problem is None, what="a quiet pass")
        assert len(pacs.instances()) == before                # nothing sent twice
    finally:
        forwarder.stop()
        worker.stop()
        pacs.stop()
