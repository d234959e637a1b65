"""The station's app over a real worker and model (Starlette's test client): a visit end to end, the
live version, and every guard — PIN off localhost, CSRF, paths, uploads."""

from __future__ import annotations

import shutil

import pytest
from station_helpers import csrf_of, wait_for
from station_helpers import station  # noqa: F401  (the fixture)
from station_helpers import open_visit as _open_visit
from station_helpers import slot_state as _state
from study_helpers import programme_keys, signed_record
from typer.testing import CliRunner

from drtrt.clinic.visits import Protocol
from drtrt.clinic.verdicts import HUMAN_READ, INCOMPLETE, NOT_PHOTOGRAPHED, REFER, RESCREEN, UNGRADABLE

pytest.importorskip("starlette", reason="the station needs the station extra (pip install 'drtrt[station]')")

pytest.importorskip("httpx", reason="Starlette's test client needs httpx (test extra)")


def test_a_visit_from_camera_to_report(station, fundus_photos):
    client, worker, camera = station()
    assert "NOT FOR CLINICAL USE" in client.get("/").text             # the demo model has no validation record
    visit_id, token = _open_visit(client, name="Ana Pérez", birth_date="1961-03-04")
    assert worker.active_visit() == visit_id
    page = client.get(f"/visits/{visit_id}").text
    assert "Ana Pérez" in page and "not photographed — take it" in page and "ungradable" not in page

    shutil.copy(fundus_photos["blurred"], camera / "IMG_0001.JPG")           # the camera writes a blurred photo
    refused = wait_for(lambda: _state(client, visit_id, "right/any")["state"] == "retake"
                       and _state(client, visit_id, "right/any"), what="the blurred photo's verdict")
    assert refused["code"] == "blurred"
    assert "refocus, hold still and retake" in client.get(f"/visits/{visit_id}/panel").text
    assert client.get("/api/visits/%d" % visit_id).json()["target"] == "right/any"   # the retake goes there

    shutil.copy(fundus_photos["good0"], camera / "IMG_0002.JPG")             # the retake
    wait_for(lambda: _state(client, visit_id, "right/any")["state"] == "graded", what="the retake")
    right = _state(client, visit_id, "right/any")
    assert right["replaced"] == 1 and right["grade"] is not None
    sha = right["sha256"]
    view = client.get(f"/image/{sha}/view.jpg")
    assert view.status_code == 200 and view.headers["content-type"] == "image/jpeg"
    for code in ("EX", "SE", "MA", "HE"):
        layer = client.get(f"/image/{sha}/layer-{code}.png")
        assert layer.status_code == 200 and layer.content.startswith(b"\x89PNG")
    assert client.get(f"/api/visits/{visit_id}").json()["verdict"] == INCOMPLETE

    with open(fundus_photos["good1"], "rb") as handle:                 # a right eye uploaded as the left one
        response = client.post(f"/visits/{visit_id}/upload", data={"csrf": token},
                               files={"photo": ("left.jpg", handle, "image/jpeg")}, follow_redirects=False)
    assert response.status_code == 303 and "error" not in response.headers["location"]
    wait_for(lambda: client.get(f"/api/visits/{visit_id}").json()["complete"], what="the left eye")
    assert any("eye mismatch" in w for w in _state(client, visit_id, "left/any")["warnings"])
    assert "eye mismatch" in client.get(f"/visits/{visit_id}/panel").text
    state = client.get(f"/api/visits/{visit_id}").json()
    assert state["verdict"] in (REFER, RESCREEN, HUMAN_READ)
    version = client.get("/api/version").json()["version"]
    response = client.post(f"/visits/{visit_id}/close", data={"csrf": token}, follow_redirects=False)
    assert response.headers["location"] == f"/visits/{visit_id}/report"
    assert client.get(f"/api/version?since={version}").json()["version"] != version    # screens learn of it
    report = client.get(f"/visits/{visit_id}/report").text
    assert "Visit closed" not in report and state["words"] in report and "NOT FOR CLINICAL USE" in report
    assert f"/image/{sha}/view.jpg" in report
    assert next((worker.cfg.data_dir / "reports").glob("patient-P-001-visit-*.html")).is_file()      # the CLI's reports too
    day = client.get("/").text
    assert "P-001" in day and 'id="fig-done">1<' in day


def test_refused_photos_and_the_ungradable_verdict(station, fundus_photos, tmp_path):
    client, worker, camera = station()
    damaged = tmp_path / "damaged.jpg"
    data = fundus_photos["good2"].read_bytes()
    damaged.write_bytes(data[: len(data) // 2] + b"\xff\xd9")             # damaged: scan data cut, yet an end
    shutil.copy(damaged, camera / "IMG_0009.JPG")
    wait_for(lambda: [w.name for w in worker.waiting] == ["IMG_0009.JPG"], what="the photo waiting for a visit")
    assert "IMG_0009.JPG" in client.get("/").text
    visit_id, token = _open_visit(client, patient="P-002")       # asked about, not attached: a person says whose
    response = client.post(f"/visits/{visit_id}/attach", data={"csrf": token, "photo": worker.waiting[0].id,
                                                               "slot": "right/any"}, follow_redirects=False)
    assert response.status_code == 303 and "error" not in response.headers["location"]
    refused = wait_for(lambda: _state(client, visit_id, "right/any")["state"] == "retake"
                       and _state(client, visit_id, "right/any"), what="the damaged file's verdict")
    assert refused["code"] == "file_damaged"
    response = client.post(f"/visits/{visit_id}/close", data={"csrf": token}, follow_redirects=False)
    assert response.status_code == 303
    state = client.get(f"/api/visits/{visit_id}").json()
    assert state["closed_verdict"] == UNGRADABLE and state["eyes"]["left"] == NOT_PHOTOGRAPHED
    assert state["closed_words"] == "ungradable — retake or refer"


def test_a_camera_file_without_its_end_waits_and_is_never_screened_half(station, fundus_photos):
    client, worker, camera = station(incomplete_report_s=0.3)
    visit_id, _ = _open_visit(client, patient="P-003")
    data = fundus_photos["good0"].read_bytes()
    (camera / "IMG_0010.JPG").write_bytes(data[: len(data) // 2])           # the camera closed it half-written
    notice = wait_for(lambda: worker.visit_notices(visit_id), what="the notice about the incomplete file")
    assert notice[0][0] == "IMG_0010.JPG" and "not read: a JPEG without its end marker" in notice[0][1]
    assert "IMG_0010.JPG" in client.get(f"/visits/{visit_id}/panel").text and "IMG_0010.JPG" in client.get("/").text
    assert _state(client, visit_id, "right/any")["state"] != "graded" and worker.waiting == []
    assert not list((worker.cfg.data_dir / "photos").glob("*"))             # never taken in
    with (camera / "IMG_0010.JPG").open("ab") as fh:                        # the camera finishes it
        fh.write(data[len(data) // 2:])
    wait_for(lambda: _state(client, visit_id, "right/any")["state"] == "graded", what="the whole photo")
    assert _state(client, visit_id, "right/any")["replaced"] == 0


def test_two_fields_per_eye_and_the_day(station, fundus_photos):
    client, worker, camera = station(fields=2)
    visit_id, token = _open_visit(client, fields="2")
    slots = [s["slot"] for s in client.get(f"/api/visits/{visit_id}").json()["slots"]]
    assert slots == ["right/disc", "right/macula", "left/disc", "left/macula"]
    response = client.post(f"/visits/{visit_id}/target", data={"csrf": token, "slot": "left/macula"},
                           follow_redirects=False)
    assert response.status_code == 303
    shutil.copy(fundus_photos["good3"], camera / "a.jpg")
    wait_for(lambda: _state(client, visit_id, "left/macula")["state"] == "graded", what="the chosen slot")
    assert client.get(f"/api/visits/{visit_id}").json()["target"] == "right/disc"
    day = client.get("/panel").text
    assert "waiting for photos" in day and 'id="fig-visits">1<' in day


def test_spanish_from_the_first_page_to_the_report(station, fundus_photos):
    client, worker, camera = station()
    response = client.get("/lang/es?next=/patients/new", follow_redirects=True)
    assert "Registrar un paciente" in response.text and 'lang="es"' in response.text
    visit_id, token = _open_visit(client, patient="P-ES")
    page = client.get(f"/visits/{visit_id}").text
    assert "sin fotografiar — tómela" in page and "NO APTO PARA USO CLÍNICO" in page
    shutil.copy(fundus_photos["blurred"], camera / "b.jpg")
    wait_for(lambda: "repita" in client.get(f"/visits/{visit_id}/panel").text, what="Spanish advice")
    assert "Borrosa" in client.get(f"/visits/{visit_id}/panel").text
    english = client.get("/lang/en?next=/", follow_redirects=True).text                # switch back at any time
    assert "Today" in english and 'lang="en"' in english
    client.cookies.clear()
    assert 'lang="es"' in client.get("/", headers={"accept-language": "es-MX,es;q=0.9"}).text   # the browser's
    assert 'lang="en"' in client.get("/", headers={"accept-language": "th,fr;q=0.8"}).text
    assert client.get("/lang/xx?next=https://evil.example/", follow_redirects=False).headers["location"] == "/"
    assert client.get("/lang/es?next=//evil.example/", follow_redirects=False).headers["location"] == "/"


def test_pin_login_is_required_and_rate_limited(station):
    client, worker, camera = station(pin="4821")
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert client.get("/api/version", follow_redirects=False).status_code == 303
    assert client.get("/health").status_code == 200                          # the container's health check
    token = csrf_of(client.get("/login").text)
    for _ in range(4):
        response = client.post("/login", data={"csrf": token, "pin": "0000"})
        assert response.status_code == 401 and "Wrong PIN" in response.text
    response = client.post("/login", data={"csrf": token, "pin": "1111"})     # the fifth: locked for 30 s
    assert response.status_code == 401 and "wait 30 seconds" in response.text
    response = client.post("/login", data={"csrf": token, "pin": "4821"})   # locked out now, even the right PIN
    assert response.status_code == 401 and "Too many wrong PINs" in response.text
    assert client.get("/", follow_redirects=False).status_code == 303
    fresh, _, _ = station(pin="4821", data=worker.cfg.data_dir.parent / "other")
    token = csrf_of(fresh.get("/login").text)
    response = fresh.post("/login", data={"csrf": token, "pin": "4821"}, follow_redirects=False)
    assert response.status_code == 303 and fresh.get("/").status_code == 200
    assert "set-cookie" not in fresh.get("/").headers or "httponly" in fresh.get("/").headers["set-cookie"].lower()


def test_pin_needed_off_localhost_from_the_command_line(tiny_onnx, tmp_path):
    from drtrt.cli import app

    result = CliRunner().invoke(app, ["station", "--model", str(tiny_onnx), "--data-dir", str(tmp_path / "s"),
                                      "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "give an operator PIN" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["station", "--model", str(tmp_path / "missing.onnx"), "--data-dir",
                                      str(tmp_path / "s")])
    assert result.exit_code != 0 and "not found" in result.output and "Traceback" not in result.output


SAMPLE_PARAMETERS = {"visit_id": 1, "sha": "0" * 64, "kind": "view.jpg", "action": "close", "code": "es"}


def _every_route(app):
    """(method, path) of each route the app has, read from the app itself so that a new route is checked
    too: its parameters filled in from SAMPLE_PARAMETERS, a mount as one of its files."""
    from starlette.routing import Mount

    for route in app.routes:
        if isinstance(route, Mount):
            yield "GET", f"{route.path}/station.css"
        else:
            path = route.path_format.format(**SAMPLE_PARAMETERS)
            yield from ((method, path) for method in sorted(route.methods - {"HEAD"}))


def test_the_open_paths_are_the_only_ones_without_login(station):
    """A stranger to a station with a PIN tries every route the app has: the paths in OPEN_PATHS answer,
    every other one sends them to the PIN form, whatever the method."""
    from drtrt.station.middleware import LOGIN_PATH, is_open

    client, worker, camera = station(pin="4821")
    routes = list(_every_route(client.app))
    assert {path for _, path in routes if is_open(path)} == {"/login", "/health", "/lang/es", "/static/station.css"}
    for method, path in routes:
        response = client.request(method, path, follow_redirects=False)
        to_login = response.status_code == 303 and response.headers["location"] == LOGIN_PATH
        assert to_login != is_open(path), (method, path, response.status_code)
    stranger = type(client)(client.app)          # no route: the router's own answer, and no session cookie
    for method, path, status in (("GET", "/nowhere", 404), ("GET", "/logout", 405), ("POST", "/health", 405)):
        response = stranger.request(method, path, follow_redirects=False)
        assert response.status_code == status and "set-cookie" not in response.headers, (method, path)


def test_every_post_needs_its_csrf_token(station):
    """Every POST route refuses a request without its session's token, as a form field or a header."""
    client, worker, camera = station()
    visit_id, token = _open_visit(client)
    posts = [path for method, path in _every_route(client.app) if method == "POST"]
    assert len(posts) >= 4
    for path in posts:
        assert client.post(path).status_code == 403, path
        assert client.post(path, data={"csrf": "forged"}).status_code == 403, path
        assert client.post(path, headers={"x-csrf-token": token + "x"}).status_code == 403, path
    assert client.get(f"/api/visits/{visit_id}").json()["closed"] is None


def test_csrf_paths_and_uploads_are_guarded(station, fundus_photos, tmp_path):
    client, worker, camera = station(max_upload_bytes=2 * 2**20)
    visit_id, token = _open_visit(client)
    assert client.post("/visits", data={"patient": "X"}).status_code == 403                # no token
    assert client.post("/visits", data={"patient": "X", "csrf": "forged"}).status_code == 403
    assert client.post(f"/visits/{visit_id}/close", data={"csrf": token + "x"}).status_code == 403
    other = type(client)(client.app)                                                   # another browser
    assert other.post(f"/visits/{visit_id}/close", data={"csrf": token}).status_code == 403
    assert client.get(f"/api/visits/{visit_id}").json()["closed"] is None

    secret = tmp_path / "secret.jpg"
    secret.write_bytes(fundus_photos["good0"].read_bytes())
    for path in ("/image/../../../etc/passwd", "/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd/view.jpg",
                 f"/image/{'0' * 64}/view.jpg", f"/image/{secret}/view.jpg", "/image//etc/passwd/view.jpg",
                 "/image/" + "a" * 64 + "/..%2f..%2fsession.db", "/static/../app.py", "/static/%2e%2e/app.py",
                 "/visits/..%2f..%2fetc", "/visits/1/../../session.db", "/station-secret", "/session.db",
                 f"/image/{'A' * 64}/view.jpg"):
        response = client.get(path)
        assert response.status_code in (400, 404), (path, response.status_code)
        assert b"SQLite" not in response.content and b"drtrt_station" not in response.content
    assert client.get("/static/station.css").status_code == 200
    headers = client.get("/").headers
    assert "default-src 'self'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"

    big = b"\xff\xd8\xff" + b"0" * (3 * 2**20)
    response = client.post(f"/visits/{visit_id}/upload", data={"csrf": token},
                           files={"photo": ("big.jpg", big, "image/jpeg")}, follow_redirects=False)
    assert response.status_code == 413
    response = client.post(f"/visits/{visit_id}/upload", data={"csrf": token},
                           files={"photo": ("notes.jpg", b"#!/bin/sh\nrm -rf /\n", "image/jpeg")},
                           follow_redirects=False)
    assert response.status_code == 303 and "not%20a%20photo" in response.headers["location"]
    response = client.post(f"/visits/{visit_id}/upload", data={"csrf": token},
                           files={"photo": ("../../evil.jpg", fundus_photos["good0"].read_bytes(), "image/jpeg")},
                           follow_redirects=False)
    assert response.status_code == 303 and "error" not in response.headers["location"]
    assert not (tmp_path / "evil.jpg").exists() and not (worker.cfg.data_dir.parent / "evil.jpg").exists()
    kept = list((worker.cfg.data_dir / "photos").iterdir())                  # kept under its content hash only
    assert [p.name for p in kept] == [_state(client, visit_id, "right/any")["sha256"] + ".jpg"]
    assert client.post("/visits", data={"csrf": token, "patient": "a\x00b"}).status_code == 400
    assert client.post("/visits", data={"csrf": token, "patient": "P", "birth_date": "2999-01-01"}).status_code == 400


def test_a_restart_shows_exactly_what_was_saved(station, fundus_photos, tmp_path):
    client, worker, camera = station()
    visit_id, token = _open_visit(client)
    shutil.copy(fundus_photos["good0"], camera / "1.jpg")
    wait_for(lambda: _state(client, visit_id, "right/any")["state"] == "graded", what="the first photo")
    before = client.get(f"/api/visits/{visit_id}").json()
    worker.stop()
    client2, worker2, _ = station(data=worker.cfg.data_dir)
    after = client2.get(f"/api/visits/{visit_id}").json()
    assert after == before and worker2.active_visit() == visit_id
    shutil.copy(fundus_photos["good0"], camera / "1-again.jpg")           # the same file as new: not taken twice
    (camera / "1.jpg").touch()
    wait_for(lambda: worker2.visit_notices(visit_id), what="a notice")
    assert client2.get(f"/api/visits/{visit_id}").json()["slots"][1]["state"] == "missing"
    assert "already in the visit" in client2.get(f"/visits/{visit_id}/panel").text      # the operator sees why


def test_the_dashboard_names_the_study_that_validated_the_model(tmp_path, tiny_onnx):
    """Issue 22: the operator sees which study validated the model (and no banner) only when a record names
    the model's sha256; the model's own drtrt.validation text is not one."""
    import json
    import re

    from starlette.testclient import TestClient

    from drtrt.fileio import sha256_file
    from drtrt.station.app import StationConfig, create_app
    from drtrt.station.worker import StationWorker, WorkerConfig
    from drtrt.validation_record import beside

    model = tmp_path / "model" / "model.onnx"
    model.parent.mkdir()
    shutil.copy(tiny_onnx, model)
    from drtrt.clinic.session import SessionConfig

    private, public = programme_keys()
    beside(model).write_text(signed_record(sha256_file(model), private, population="adults with diabetes, Region X",
                                           start="2026-04-01").to_json())
    worker = StationWorker(WorkerConfig(model, tmp_path / "station", None, Protocol(1), poll_s=0.05, settle_s=0.1,
                                        session=SessionConfig(batch_size=1, validation_key=str(public))))
    try:
        page = TestClient(create_app(StationConfig(worker.cfg.data_dir), worker)).get("/").text
    finally:
        worker.stop()
    assert "NOT FOR CLINICAL USE" not in page
    shown = re.search(r'<dd id="validation">(.*?)</dd>', page, re.S)[1]
    text, link = shown.split(" · ")                                    # the study page's link beside it
    assert text == "validated: study RX-DR-01, adults with diabetes, Region X, ended 2026-10-31"
    assert 'href="/study"' in link
    figures = re.search(r'<dd id="validation-figures">(.*?)</dd>', page, re.S)[1]
    assert figures.startswith("sensitivity 91.0% (95% CI from 84.0%), specificity 88.0% (from 85.0%), imageability "
                              "94.0% (from 92.0%); 812 patients, 97 with referable DR; 2026-04-01 to 2026-10-31")
    assert figures.endswith(f"signed by key {signed_record(sha256_file(model), private).signature.key_id}")
    unkeyed = StationWorker(WorkerConfig(model, tmp_path / "unkeyed", None, Protocol(1), poll_s=0.05, settle_s=0.1))
    try:                                   # the same record, no key configured: the banner stays and says why
        page = TestClient(create_app(StationConfig(unkeyed.cfg.data_dir), unkeyed)).get("/").text
    finally:
        unkeyed.stop()
    assert "NOT FOR CLINICAL USE" in page
    assert re.search(r'<span id="validation-why">(.*?)</span>', page, re.S)[1] == (
        "Why: no validation key is configured to check the record.")
    assert "(no validation key is configured to check the record)" in page


def test_a_model_that_failed_its_check_is_refused_or_said_on_every_page(tiny_onnx, tmp_path):
    """Issue 22, defect 5: the station refuses a model whose accuracy check failed; with
    --allow-unchecked-model it serves, and every page says it first, in the operator's language."""
    import onnx
    from starlette.testclient import TestClient

    from drtrt.calibration.graph import read_info, write_info
    from drtrt.clinic.session import SessionConfig
    from drtrt.errors import GateError
    from drtrt.model_info import GATE_KEY, gate_record
    from drtrt.station.app import StationConfig, create_app
    from drtrt.station.worker import StationWorker, WorkerConfig

    proto = onnx.load(str(tiny_onnx))
    info = read_info(proto)
    write_info(proto, info.derive(info.precision, **{GATE_KEY: gate_record("failed", "fp32", "0" * 64, "FAIL")}))
    failed = tmp_path / "model.int8.rejected.onnx"
    onnx.save(proto, str(failed))
    with pytest.raises(GateError, match="FAILED its accuracy check"):
        StationWorker(WorkerConfig(failed, tmp_path / "refused", None))
    assert not (tmp_path / "refused").exists()
    worker = StationWorker(WorkerConfig(failed, tmp_path / "station", None,
                                        session=SessionConfig(batch_size=1, allow_unchecked_model=True)))
    client = TestClient(create_app(StationConfig(worker.cfg.data_dir), worker))
    worker.start()
    try:
        page = client.get("/").text
        assert 'id="model-gate"' in page and "THIS MODEL FAILED ITS ACCURACY CHECK" in page
        assert "NOT FOR CLINICAL USE" in page                      # and still not a validated model
        spanish = client.get("/lang/es?next=/", follow_redirects=True).text
        assert "ESTE MODELO NO SUPERÓ SU CONTROL DE PRECISIÓN" in spanish
    finally:
        worker.stop()
