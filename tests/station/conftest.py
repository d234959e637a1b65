"""The station's fixtures: the app over a real worker and model, with a real camera folder."""

from __future__ import annotations

import pytest

from drtrt.clinic.visits import Protocol


@pytest.fixture
def station(tmp_path, tiny_onnx):
    from starlette.testclient import TestClient

    from drtrt.station.app import StationConfig, create_app
    from drtrt.station.worker import StationWorker, WorkerConfig

    def start(pin=None, fields=1, data=None, max_upload_bytes=None):
        camera = tmp_path / "camera"
        camera.mkdir(exist_ok=True)
        worker = StationWorker(WorkerConfig(tiny_onnx, data or tmp_path / "station", camera, Protocol(fields),
                                            poll_s=0.05, settle_s=0.1))
        options = {"max_upload_bytes": max_upload_bytes} if max_upload_bytes else {}
        app = create_app(StationConfig(worker.cfg.data_dir, pin=pin, **options), worker)
        worker.start()
        started.append(worker)
        return TestClient(app), worker, camera

    started = []
    yield start
    for worker in started:
        worker.stop()
