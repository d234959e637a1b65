"""``triton://`` against a real Triton server (the nvidia-pytriton wheel's tritonserver, its Python backend
running drtrt's ONNX model on ONNX Runtime and the ensemble's preprocessing): the same results, reports
and session store as the local model, parity and bench against it, the photo ensemble, requests in
flight, a server that restarts or disappears mid-run, and the one-line errors."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="triton:// needs tritonclient (pip install 'drtrt[triton]')")

from processes import track  # noqa: E402
from triton_helpers import TritonServer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from drtrt.cli import app  # noqa: E402
from drtrt.clinic.session import screen_images  # noqa: E402
from drtrt.clinic.session import SessionConfig  # noqa: E402

runner = CliRunner()


def comparable(row) -> dict:
    """A result without what differs between runs (timings, the batch it rode in)."""
    data = row if isinstance(row, dict) else row.to_dict()
    data = {k: v for k, v in data.items() if k not in ("timings_ms",)}
    return data


def assert_same_results(served: list, local: list, tolerance: float = 1e-5) -> None:
    assert [r["image"] for r in served] == [r["image"] for r in local]
    for a, b in zip(served, local):
        assert a["status"] == b["status"] and a["grade"] == b["grade"] and a["referable"] == b["referable"], a["image"]
        if b["probabilities"] is not None:
            assert np.allclose(a["probabilities"], b["probabilities"], atol=tolerance), a["image"]
        assert a["lesions"] == b["lesions"] and a["quality"] == b["quality"], a["image"]


def rows_of(run) -> list[dict]:
    return [comparable(r) for r in run.rows]


@pytest.fixture(scope="module")
def local_rows(tiny_onnx, archive) -> list[dict]:
    return rows_of(screen_images(archive, tiny_onnx, None, cfg=SessionConfig(batch_size=4)))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_screening_through_triton_matches_the_local_model(triton, tiny_onnx, archive, local_rows, tmp_path, protocol):
    out = tmp_path / "session"
    run = screen_images(archive, triton.model_url(protocol=protocol), out, cfg=SessionConfig(batch_size=4))
    assert run.screened == len(archive)
    assert_same_results(rows_of(run), local_rows)
    local = screen_images(archive, tiny_onnx, tmp_path / "local", cfg=SessionConfig(batch_size=4))
    with sqlite3.connect(out / "session.db") as db, sqlite3.connect(tmp_path / "local" / "session.db") as ref:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        assert meta["model_sha256"] == dict(ref.execute("SELECT key, value FROM meta"))["model_sha256"]
        assert meta["model_name"] == triton.model_url(protocol=protocol)
    assert local.screened == len(archive)
    for name in ("summary.csv", "summary.html", "results.jsonl", "patients.csv"):
        assert (out / name).is_file()
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(p.name for p in
                                                                          (tmp_path / "local" / "overlays").iterdir())


def test_a_session_started_locally_is_finished_through_the_server(triton, tiny_onnx, archive, tmp_path):
    """The served model has the local file's identity, so one session can take both."""
    out = tmp_path / "session"
    screen_images(archive[:3], tiny_onnx, out)
    run = screen_images(archive, triton.model_url(), out)
    assert run.already_done == 3 and run.screened == len(archive) - 3


def test_screen_cli_json_and_workers(triton, archive, local_rows, tmp_path):
    out = tmp_path / "session"
    args = ["screen", *map(str, archive), "--model", triton.model_url(), "--out", str(out), "--json",
            "--workers", "4", "--batch-size", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    served = [comparable(json.loads(line)) for line in result.stdout.splitlines() if line.startswith("{")]
    assert_same_results(sorted(served, key=lambda r: r["image"]), sorted(local_rows, key=lambda r: r["image"]))
    again = runner.invoke(app, args)                                 # resumable: nothing screened twice
    assert again.exit_code == 0 and f"{len(archive)} of {len(archive)} image(s) were screened" in again.output

    result = runner.invoke(app, ["screen", str(archive[0]), "--model", str(archive[0].with_suffix(".onnx")),
                                 "--workers", "2"])
    assert result.exit_code == 2 and "--workers keeps requests in flight against a served model" in result.output


def test_parity_and_bench_against_the_server(triton, tiny_onnx, photo_root, tmp_path):
    result = runner.invoke(app, ["parity", "--reference", str(tiny_onnx), "--candidate", triton.model_url(),
                                 "--data", str(photo_root), "--split", "all", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    candidate, = data["candidates"]
    assert data["passed"] and candidate["passed"], candidate["checks"]
    assert candidate["model"] == triton.model_url() and candidate["backend"] == "triton"
    assert candidate["sha256"] == data["reference"]["sha256"]        # the same file, served

    result = runner.invoke(app, ["bench", "--model", triton.model_url(), "--model", str(tiny_onnx), "--batch", "1,4",
                                 "--iters", "3", "--warmup", "1", "--no-peak", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [(r["backend"], r["batch"]) for r in rows] == [("triton", 1), ("triton", 4), ("ort", 1), ("ort", 4)]
    assert all(r["images_per_s"] > 0 for r in rows)


def test_the_photo_ensemble_takes_raw_bytes(triton, tiny_onnx, archive):
    import tritonclient.grpc as grpc

    from drtrt.runtime.predictor import Predictor

    client = grpc.InferenceServerClient(triton.grpc_url)
    photos = [archive[0].read_bytes(), archive[1].read_bytes()]
    tensor = grpc.InferInput("photo", [2, 1], "BYTES")
    tensor.set_data_from_numpy(np.array(photos, dtype=np.object_).reshape(2, 1))
    answer = client.infer("drtrt_photo", [tensor])
    with Predictor(tiny_onnx) as local:
        prepared = local.prepare_batch(photos)
        expected = local.runner.infer({local.task.input_name: np.stack([p.tensor for p in prepared])})
        for i, photo in enumerate(prepared):
            verdict = json.loads(answer.as_numpy("quality")[i, 0])
            assert verdict == json.loads(json.dumps(photo.quality.to_dict()))
        for name, array in expected.items():
            assert np.allclose(answer.as_numpy(name), array, atol=1e-5), name

    tensor = grpc.InferInput("photo", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[b"not a photo"]], dtype=np.object_))
    with pytest.raises(Exception, match="not an image drtrt can read"):
        client.infer("drtrt_photo", [tensor])


def screen_process(archive_dir: Path, url: str, out: Path, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "drtrt.cli", "screen", str(archive_dir), "--model", url, "--out",
                             str(out), "--json", "--workers", "2", "--batch-size", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    track(proc)
    return proc


@pytest.fixture
def big_archive(archive, tmp_path) -> Path:
    """Twice the archive (each photo and its mirror image): long enough to pull the server away mid-run."""
    import cv2

    folder = tmp_path / "archive"
    folder.mkdir()
    for photo in archive:
        image = cv2.imread(str(photo))
        cv2.imwrite(str(folder / photo.name), image)
        cv2.imwrite(str(folder / f"mirror-{photo.name}"), cv2.flip(image, 1))
    return folder


def stored(out: Path) -> tuple[int, int]:
    """(images committed, files recorded) in a session."""
    with sqlite3.connect(out / "session.db") as db:
        return (db.execute("SELECT COUNT(*) FROM images").fetchone()[0],
                db.execute("SELECT COUNT(*) FROM files").fetchone()[0])


def test_a_server_restarting_mid_run_costs_nothing(triton_root, served_repo, big_archive, tmp_path):
    server = TritonServer(triton_root, served_repo, tmp_path / "server.log")
    server.start()
    out = tmp_path / "session"
    proc = screen_process(big_archive, server.model_url(), out)
    first = proc.stdout.readline()
    assert first.startswith("{"), proc.stderr.read()
    server.kill()                                                    # the server goes away mid-run …
    time.sleep(1.0)
    server.start()                                                   # … and is back within the retry window
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    rows = [json.loads(line) for line in [first, *stdout.splitlines()] if line.startswith("{")]
    total = len(list(big_archive.iterdir()))
    assert len(rows) == total and all(r["status"] == "graded" for r in rows)
    assert stored(out) == (total, total)
    server.stop()


def test_a_server_gone_for_good_stops_the_run_and_the_same_command_finishes_it(triton_root, served_repo, big_archive,
                                                                              tiny_onnx, tmp_path):
    server = TritonServer(triton_root, served_repo, tmp_path / "server.log")
    server.start()
    out = tmp_path / "session"
    proc = screen_process(big_archive, server.model_url(), out, {"DRTRT_TRITON_RETRIES": "2"})
    assert proc.stdout.readline().startswith("{")
    server.kill()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("waiting for ")]
    assert len(lines) == 1 and lines[0].startswith("error: cannot run the model on " + server.model_url()), stderr
    assert "after 2 tries" in lines[0] and "Traceback" not in stderr
    done, recorded = stored(out)
    total = len(list(big_archive.iterdir()))
    assert 1 <= done < total and recorded == done                   # what was committed is kept, nothing half

    server.start()
    proc = screen_process(big_archive, server.model_url(), out)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert f"{done} of {total} image(s) were screened by an earlier run" in stderr + stdout
    assert stored(out) == (total, total)                             # each image once
    local = screen_images(sorted(big_archive.iterdir()), tiny_onnx, None)
    served = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by_image = {r["image"]: r for r in served}
    assert_same_results([comparable(by_image[r["image"]]) for r in rows_of(local)], rows_of(local))
    server.stop()


def test_unreachable_server_and_unknown_model_are_one_line(triton, archive, monkeypatch):
    from triton_helpers import free_port

    monkeypatch.setenv("DRTRT_TRITON_RETRIES", "2")
    url = f"triton://127.0.0.1:{free_port()}/drtrt"
    tick = time.monotonic()
    result = runner.invoke(app, ["screen", str(archive[0]), "--model", url])
    assert result.exit_code == 1 and time.monotonic() - tick < 30
    waiting, error = [line for line in result.output.splitlines() if line.strip()]   # the wait at once, then why it stopped
    assert waiting.startswith(f"waiting for {url} (") and "trying again for up to 0.5 s" in waiting
    assert f"cannot read the model's configuration on {url} after 2 tries" in error

    result = runner.invoke(app, ["screen", str(archive[0]), "--model", triton.model_url("grader")])
    assert result.exit_code == 1 and "the server has no model 'grader' (it serves: drtrt, drtrt_photo, " \
        "drtrt_preprocess)" in result.output

    result = runner.invoke(app, ["screen", str(archive[0]), "--model", triton.model_url("drtrt_photo")])
    assert result.exit_code == 1 and "takes photo bytes" in result.output

    result = runner.invoke(app, ["screen", str(archive[0]), "--model", "triton://127.0.0.1:notaport/drtrt"])
    assert result.exit_code == 2 and "the port must be a number" in result.output


def test_a_model_that_failed_to_load_is_named_with_the_servers_reason(triton_root, served_repo, archive, tmp_path,
                                                                       monkeypatch):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(served_repo, repo)
    (repo / "drtrt" / "1" / "model.onnx").write_bytes(b"damaged in transfer")
    server = TritonServer(triton_root, repo, tmp_path / "server.log", "--exit-on-error", "false")
    server.start(ready=False)
    monkeypatch.setenv("DRTRT_TRITON_RETRIES", "2")
    result = runner.invoke(app, ["screen", str(archive[0]), "--model", server.model_url()])
    assert result.exit_code == 1, result.output
    assert "model 'drtrt' is UNAVAILABLE" in result.output and "cannot load" in result.output, result.output
    server.stop()


def test_numpy_2_in_the_servers_python_is_caught(triton_root, served_repo, archive, tmp_path):
    """The wheel's Python backend stub is built against NumPy 1; under NumPy 2 its outputs arrive empty."""
    server = TritonServer(triton_root, served_repo, tmp_path / "server.log", python_bin=Path(sys.executable).parent)
    server.start()
    result = runner.invoke(app, ["screen", str(archive[0]), "--model", server.model_url(), "--json"])
    row = json.loads(result.stdout.splitlines()[0])
    assert row["status"] == "error" and "install numpy<2 in the server's Python" in row["reason"]
    server.stop()


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA, and a server (127.0.0.1) and a station certificate it signed, made with openssl."""
    import shutil

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (it makes the test's certificates)")
    folder.mkdir()

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=folder)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=drtrt test CA")
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1"), ("station", "extendedKeyUsage=clientAuth")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        (folder / f"{name}.ext").write_text(extra + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {name: folder / name for name in ("ca.pem", "server.pem", "server.key", "station.pem", "station.key")}


def test_tls_with_client_certificates(triton_root, served_repo, archive, tmp_path, monkeypatch):
    """``tritons://``: the server's certificate is checked against DRTRT_TRITON_CA, and a server that
    requires client certificates gets the station's (DRTRT_TRITON_CERT / DRTRT_TRITON_KEY)."""
    certs = make_certificates(tmp_path / "pki")
    server = TritonServer(triton_root, served_repo, tmp_path / "server.log", "--grpc-use-ssl=true",
                          f"--grpc-server-cert={certs['server.pem']}", f"--grpc-server-key={certs['server.key']}",
                          f"--grpc-root-cert={certs['ca.pem']}", "--grpc-use-ssl-mutual=true")
    server.start()
    url = f"tritons://127.0.0.1:{server.grpc_port}/drtrt"
    monkeypatch.setenv("DRTRT_TRITON_RETRIES", "1")
    monkeypatch.setenv("DRTRT_TRITON_CA", str(certs["ca.pem"]))
    monkeypatch.setenv("DRTRT_TRITON_CERT", str(certs["station.pem"]))
    monkeypatch.setenv("DRTRT_TRITON_KEY", str(certs["station.key"]))
    result = runner.invoke(app, ["screen", str(archive[0]), "--model", url, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["status"] == "graded"

    plain = runner.invoke(app, ["screen", str(archive[0]), "--model", server.model_url()])
    assert plain.exit_code == 1 and "cannot read the model's configuration" in plain.output

    monkeypatch.delenv("DRTRT_TRITON_CERT")
    monkeypatch.delenv("DRTRT_TRITON_KEY")
    refused = runner.invoke(app, ["screen", str(archive[0]), "--model", url])    # no station certificate
    assert refused.exit_code == 1 and "cannot read the model's configuration" in refused.output

    monkeypatch.setenv("DRTRT_TRITON_CERT", str(tmp_path / "missing.pem"))
    monkeypatch.setenv("DRTRT_TRITON_KEY", str(certs["station.key"]))
    missing = runner.invoke(app, ["screen", str(archive[0]), "--model", url])
    assert missing.exit_code == 2 and "DRTRT_TRITON_CERT=" in missing.output and "no such file" in missing.output
    server.stop()


def test_plain_grpc_to_another_machine_is_flagged(triton, archive, monkeypatch):
    """Images to a server elsewhere without TLS: screening goes on, and the user is told once."""
    import drtrt.runtime.backends.triton as triton_module

    monkeypatch.setattr(triton_module, "_loopback", lambda host: False)   # as if 127.0.0.1 were another machine
    result = runner.invoke(app, ["screen", str(archive[0]), "--model", triton.model_url()])
    assert result.exit_code == 0, result.output
    assert result.output.count("unencrypted") == 1 and "use tritons:// with client certificates" in result.output
    monkeypatch.undo()
    quiet = runner.invoke(app, ["screen", str(archive[0]), "--model", triton.model_url()])
    assert quiet.exit_code == 0 and "unencrypted" not in quiet.output


def test_workers_keep_that_many_requests_in_flight_and_no_more(triton, archive, monkeypatch):
    import threading

    from drtrt.runtime.backends.triton import TritonRunner

    lock, state = threading.Lock(), {"now": 0, "most": 0, "calls": 0}
    original = TritonRunner._request

    def counted(self, client, feeds):
        with lock:
            state["now"] += 1
            state["calls"] += 1
            state["most"] = max(state["most"], state["now"])
        try:
            time.sleep(0.05)                                   # a slower server: requests overlap for sure
            return original(self, client, feeds)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(TritonRunner, "_request", counted)
    run = screen_images(archive, triton.model_url(), None, cfg=SessionConfig(batch_size=1, workers=3))
    assert run.screened == len(archive) and state["calls"] == len(archive)
    assert state["most"] == 3, state                         # three in flight, never a fourth


def test_warmup_runs_before_the_model_is_ready(triton_root, served_repo, tmp_path):
    """--warmup: Triton runs zeros through the model at batch 1 and at the largest batch before it
    reports the model ready (the served repository was written with --warmup --max-batch 8)."""
    server = TritonServer(triton_root, served_repo, tmp_path / "server.log", "--log-verbose=1")
    server.start()
    log = server.log.read_text(errors="replace")
    server.stop()
    for batch in (1, 8):
        assert f"is running warmup sample 'zeros_batch_{batch}'" in log
    ready = log.index("successfully loaded 'drtrt'")
    assert log.index("is running warmup sample 'zeros_batch_8'") < ready


def test_the_station_screens_through_the_server(triton, fundus_photos, tmp_path):
    """A station next to a reading centre's server: the same visit, the served model named on the day page."""
    pytest.importorskip("starlette", reason="the station needs pip install 'drtrt[station]'")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "station"))
    from station_helpers import csrf_of, wait_for
    from starlette.testclient import TestClient

    from drtrt.station.app import StationConfig, create_app
    from drtrt.station.worker import StationWorker, WorkerConfig

    worker = StationWorker(WorkerConfig(triton.model_url(), tmp_path / "station", None))
    try:
        client = TestClient(create_app(StationConfig(worker.cfg.data_dir), worker))
        worker.start()
        token = csrf_of(client.get("/patients/new").text)
        response = client.post("/visits", data={"csrf": token, "patient": "P-7", "fields": "1"},
                               follow_redirects=False)
        visit = int(response.headers["location"].rsplit("/", 1)[1])
        with open(fundus_photos["good0"], "rb") as handle:
            client.post(f"/visits/{visit}/upload", data={"csrf": token},
                        files={"photo": ("right.jpg", handle, "image/jpeg")}, follow_redirects=False)
        slot = wait_for(lambda: next((s for s in client.get(f"/api/visits/{visit}").json()["slots"]
                                      if s["state"] == "graded"), None), what="the photo through Triton")
        assert slot["grade"] is not None
        assert triton.model_url() in client.get("/").text
    finally:
        worker.stop()
