"""The reading centre while its pages run (``drtrt centre serve --dicomweb``), against a real Orthanc: a final read
recorded through the pages goes back as one VERIFIED SR without stopping the server (the queue page's button, or
the loop's step), a study the PACS received after the start appears after "Fetch new studies", a PACS that cannot
be reached is a warning on the page while the read waits and is sent once it answers, and pressing twice sends
nothing twice. The server's own store is used throughout: nothing else could open it while the pages run."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("highdicom", reason="the centre needs the integration extra")
pytest.importorskip("starlette", reason="the centre's pages need the station extra")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (test extra)")
from centre_helpers import copy_of, station_sends, studies, with_pathway  # noqa: E402
from centre_helpers import orthanc_once, pulled  # noqa: E402, F401  (fixtures)
from orthanc_helpers import free_port  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from test_centre import srs  # noqa: E402
from test_centre_pages import csrf_of, login, queue_of, read  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from drtrt.cli import app as cli  # noqa: E402
from drtrt.clinic.audit import entries  # noqa: E402
from drtrt.integration.centre import load  # noqa: E402
from drtrt.station.centre_app import create_centre_app  # noqa: E402

AGREES = {"right_r": "R2", "right_m": "M0", "left_r": "R0", "left_m": "M0"}      # P-2's visit: refer, as the model



def live_app(centre, dicomweb):
    with_pathway(centre, second_read="never", sample_rate=0.0)          # NHS grades, one read final
    return create_centre_app(centre, organisation="Centro Sur", link={"dicomweb": dicomweb, "every_s": 3600.0,
                                                                       "timeout": 10.0})


def press(client, button):
    return client.post(f"/reads/{button}", data={"csrf": csrf_of(client.get("/reads").text)}, follow_redirects=False)


def verified(orthanc, study):
    return [d for d in srs(orthanc) if d.StudyInstanceUID == study and d.VerificationFlag == "VERIFIED"]


def test_a_final_read_goes_back_from_the_running_pages_once(pulled, tmp_path, orthanc_once):
    centre = copy_of(pulled, tmp_path)
    study = studies(centre)["P-2", "20260302"]
    app = live_app(centre, orthanc_once.dicomweb)
    link = app.state.station.link
    try:
        ana = TestClient(app)
        assert login(ana, "Ana", "4821").status_code == 303
        assert ana.post("/reads/send", data={"csrf": "x"}).status_code == 403            # a screener may not send
        cleo = TestClient(app)
        assert login(cleo, "Cleo", "5555").status_code == 303
        assert cleo.post("/reads/send", data={"csrf": "forged"}).status_code == 403      # CSRF checked
        page = cleo.get("/reads").text
        assert 'id="send-now"' in page and 'id="fetch-now"' in page and orthanc_once.dicomweb in page
        assert "No final read waits to be sent." in page and 'id="link-problem"' not in page
        assert "has not been reached since the pages started" in page
        assert read(cleo, study, **AGREES).headers["location"] == "/reads"
        assert link._wake.is_set()                                      # the loop is woken: it goes out soon
        waiting = cleo.get("/reads").text
        assert "1 final read waiting to be sent." in waiting and f'data-unsent="{study}"' in waiting
        assert verified(orthanc_once, study) == []

        before = len(orthanc_once.instances())
        answer = press(cleo, "send")
        assert answer.status_code == 303 and answer.headers["location"] == "/reads"
        [sr] = verified(orthanc_once, study)
        observer = sr.VerifyingObserverSequence[0]
        assert (observer.VerifyingObserverName.family_name, observer.VerifyingOrganization) == ("Cleo", "Centro Sur")
        assert len(orthanc_once.instances()) == before + 1 and load(centre / "visits" / study)["pushed"] == \
            [sr.SOPInstanceUID]
        after = cleo.get("/reads").text
        assert "No final read waits to be sent." in after and "The PACS was last reached at" in after
        sends = [(e.person, e.details["sr"]) for e in entries(app.state.station.worker.store) if e.action == "send"]
        assert sends == [("Cleo", sr.SOPInstanceUID)]                   # who pressed the button sent it

        ben = TestClient(app)                                           # the lead presses again: nothing twice
        assert login(ben, "Ben", "a long password").status_code == 303
        assert press(ben, "send").status_code == 303 and press(ben, "fetch").status_code == 303
        link.step()                                                     # and the loop's own pass
        assert len(orthanc_once.instances()) == before + 1 and link.state.sent == 1 and link.state.problem is None
        tried = link.state.tried
        link.start()                                                    # the thread: a first pass at once
        deadline = time.monotonic() + 60
        while link.state.tried == tried:
            assert time.monotonic() < deadline, "the link's loop never ran"
            time.sleep(0.05)
        link.stop()
        assert len(orthanc_once.instances()) == before + 1 and link.state.problem is None
        assert study not in queue_of(cleo.get("/reads").text)
    finally:
        link.stop()
        app.state.station.worker.store.close()


def test_a_study_sent_after_the_start_appears_after_fetch(pulled, tmp_path, orthanc_once):
    centre = copy_of(pulled, tmp_path)
    app = live_app(centre, orthanc_once.dicomweb)
    try:
        cleo = TestClient(app)
        assert login(cleo, "Cleo", "5555").status_code == 303
        before = queue_of(cleo.get("/reads").text)
        station_sends(tmp_path / "later", orthanc_once.dicomweb, visits=(("P-6", "2026-03-04T09:00",
                                                                           {"right": 3, "left": 0}),))
        assert queue_of(cleo.get("/reads").text) == before            # not there until fetched
        assert press(cleo, "fetch").headers["location"] == "/reads"
        new = studies(centre)["P-6", "20260304"]
        page = cleo.get("/reads").text
        assert new in queue_of(page) and 'id="link-problem"' not in page and "last reached at" in page
        assert cleo.get(f"/reads/{new}").status_code == 200
    finally:
        app.state.station.worker.store.close()


def test_an_unreachable_pacs_is_a_warning_and_the_read_goes_once_it_answers(pulled, tmp_path, orthanc_once):
    centre = copy_of(pulled, tmp_path)
    study = studies(centre)["P-4", "20260303"]                        # refer urgently
    app = live_app(centre, orthanc_once.dicomweb.replace("http://", "http://centre:s3cret@"))   # Basic auth
    link = app.state.station.link
    try:
        cleo = TestClient(app)
        assert login(cleo, "Cleo", "5555").status_code == 303
        assert read(cleo, study, **{**AGREES, "right_r": "R3a"}).headers["location"] == "/reads"
        orthanc_once.stop()
        try:
            for button in ("send", "fetch"):
                assert press(cleo, button).status_code == 303
                page = cleo.get("/reads").text
                assert 'id="link-problem"' in page and "cannot reach the" in page and "Traceback" not in page
                assert orthanc_once.dicomweb in page and "s3cret" not in page             # never the password
                assert "1 final read waiting to be sent." in page and "has not been reached" in page
            assert load(centre / "visits" / study)["pushed"] == []                # nothing marked that did not go
            assert not any(e.action == "send" for e in entries(app.state.station.worker.store))
        finally:
            orthanc_once.start()
        link.step()                                                     # the loop's next pass, the PACS back
        [sr] = verified(orthanc_once, study)
        page = cleo.get("/reads").text
        assert 'id="link-problem"' not in page and "No final read waits to be sent." in page
        link.step()
        assert press(cleo, "send").status_code == 303 and len(verified(orthanc_once, study)) == 1
        assert [e.details["sr"] for e in entries(app.state.station.worker.store) if e.action == "send"] == \
            [sr.SOPInstanceUID]
    finally:
        app.state.station.worker.store.close()


def test_without_a_pacs_the_pages_say_reads_go_by_centre_push(pulled, tmp_path):
    centre = copy_of(pulled, tmp_path)
    with_pathway(centre, second_read="never", sample_rate=0.0)
    app = create_centre_app(centre, organisation="Centro Sur")
    try:
        cleo = TestClient(app)
        assert login(cleo, "Cleo", "5555").status_code == 303
        assert read(cleo, studies(centre)["P-2", "20260302"], **AGREES).status_code == 303
        page = cleo.get("/reads").text
        assert 'id="push-by-command"' in page and "drtrt centre push" in page and 'id="send-now"' not in page
        assert "1 final read waiting to be sent." in page
        assert press(cleo, "send").status_code == 404 and press(cleo, "fetch").status_code == 404
    finally:
        app.state.station.worker.store.close()


def test_serve_refuses_a_link_it_cannot_use_in_one_line(pulled, tmp_path):
    centre = copy_of(pulled, tmp_path)
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    for extra, said in ((["--fhir", url], "--fhir needs --dicomweb"), (["--since", "20260101"], "--since needs"),
                        (["--dicomweb", "pacs:8042"], "--dicomweb needs an http"),
                        (["--dicomweb", url, "--every", "0"], "--every must be more than 0"),
                        (["--dicomweb", url, "--since", "2026"], "--since needs a date")):
        result = CliRunner().invoke(cli, ["centre", "serve", str(centre), "--organisation", "Centro Sur", *extra])
        assert result.exit_code != 0 and said in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
