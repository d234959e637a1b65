"""The reading centre's pages (``drtrt centre serve``) with Starlette's test client over a session pulled from a real
Orthanc: a login is needed, a screener is refused, a reader reads (a read that overrules needs its reason), a second
reader reads blind, an arbitrator sees both reads, and push sends the arbitrator's read as the one VERIFIED SR."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("highdicom", reason="the centre needs the integration extra")
pytest.importorskip("starlette", reason="the centre's pages need the station extra")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (test extra)")
from centre_helpers import copy_of, studies, with_pathway  # noqa: E402
from centre_helpers import orthanc_once, pulled  # noqa: E402, F401  (fixtures)
from starlette.testclient import TestClient  # noqa: E402
from test_centre import srs  # noqa: E402

from drtrt.clinic.audit import entries  # noqa: E402
from drtrt.errors import ConfigError  # noqa: E402
from drtrt.integration.centre import push  # noqa: E402
from drtrt.station.centre_app import create_centre_app  # noqa: E402



def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html)[1]


def login(client, name, secret):
    return client.post("/login", data={"csrf": csrf_of(client.get("/login").text), "name": name, "pin": secret},
                       follow_redirects=False)


def queue_of(html: str) -> list[str]:
    return re.findall(r'<tr id="queue-([\d.]+)"', html)


def read(client, study, reason=None, **grades):
    form = {"csrf": csrf_of(client.get(f"/reads/{study}").text), **grades, **({"reason": reason} if reason else {})}
    return client.post(f"/reads/{study}/read", data=form, follow_redirects=False)


def test_a_login_is_needed_and_a_screener_is_refused_the_reads(pulled, tmp_path):
    app = create_centre_app(copy_of(pulled, tmp_path), organisation="Centro Sur", pathway="nhs")
    study = studies(pulled)["P-2", "20260302"]
    try:
        client = TestClient(app)
        for path in ("/", "/reads", f"/reads/{study}"):
            answer = client.get(path, follow_redirects=False)
            assert answer.status_code == 303 and answer.headers["location"] in ("/login", "/reads"), path
        page = client.get("/login")
        assert 'name="name"' in page.text and "content-security-policy" in page.headers
        assert 'id="nav-new"' not in page.text and 'id="model-banner"' not in page.text    # no station parts
        assert login(client, "Ana", "4821").status_code == 303
        assert client.get("/reads").status_code == 403 and client.get(f"/reads/{study}").status_code == 403
        assert client.get(f"/reads/{study}/picture/x.png").status_code == 403
        assert login(client, "Cleo", "wrong").status_code == 401
        forged = client.post(f"/reads/{study}/read", data={"csrf": "forged", "right_r": "R0"})
        assert forged.status_code == 403
    finally:
        app.state.station.worker.store.close()


def test_a_reader_reads_from_the_queue_and_a_disagreement_is_arbitrated_then_pushed(pulled, tmp_path, orthanc_once):
    centre = copy_of(pulled, tmp_path)
    with_pathway(centre, second_read="disagreement", sample_rate=0.0)
    app = create_centre_app(centre, organisation="Centro Sur")
    uid = studies(centre)
    study = uid["P-2", "20260302"]
    try:
        cleo = TestClient(app)
        assert login(cleo, "Cleo", "5555").status_code == 303
        page = cleo.get("/reads")
        assert page.status_code == 200 and 'id="nav-reads"' in page.text
        assert queue_of(page.text) == [uid["P-4", "20260303"], study, uid["P-3", "20260301"],   # urgent first
                                       uid["P-5", "20260301"]]                                # an eye missing
        shown = cleo.get(f"/reads/{study}").text
        assert 'data-zoom="in"' in shown and 'name="right_r"' in shown and 'name="right_m"' in shown   # NHS form
        assert 'id="previous-visit"' in shown and "2025-03-01" in shown         # the patient's visit before
        assert 'id="outlines-note"' in shown and 'id="reads-so-far"' not in shown
        pictures = re.findall(rf'src="(/reads/{re.escape(study)}/picture/sc-[\d.]+\.png)"', shown)
        assert len(pictures) == 2
        png = cleo.get(pictures[0])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
        assert cleo.get(f"/reads/{study}/picture/visit.json").status_code == 404        # only a listed picture
        assert cleo.get("/reads/1.2.3").status_code == 404 and cleo.get("/reads/..%2Fx").status_code == 404

        grades = {"right_r": "R1", "right_m": "M0", "left_r": "R0", "left_m": "M0"}
        refused = read(cleo, study, **grades)                      # refer → R1: overrules the model, no reason
        assert refused.status_code == 303 and "/reads/" in refused.headers["location"]
        assert "give the reason" in cleo.get(refused.headers["location"]).text
        assert read(cleo, study, reason="dot haemorrhages only", **grades).headers["location"] == "/reads"
        mine = cleo.get("/reads").text
        assert "You read it: another reader takes this one" in mine and f'href="/reads/{study}"' not in mine
        assert 'id="read-taken"' in cleo.get(f"/reads/{study}").text

        dev = TestClient(app)
        assert login(dev, "Dev", "6666").status_code == 303
        blind = dev.get(f"/reads/{study}").text
        assert 'id="reads-so-far"' not in blind and "dot haemorrhages" not in blind and "A second read" in blind
        assert read(dev, study, **{**grades, "right_r": "R2"}).headers["location"] == "/reads"   # agrees with the model
        assert f'id="queue-{study}" data-verdict="refer" data-stage="arbitration"' in dev.get("/reads").text

        ben = TestClient(app)
        assert login(ben, "Ben", "a long password").status_code == 303
        both = ben.get(f"/reads/{study}").text
        assert 'id="reads-so-far"' in both and "Cleo" in both and "Dev" in both and "Arbitration" in both
        assert read(ben, study, reason="R1 on review", **grades).headers["location"] == "/reads"
        assert study not in queue_of(ben.get("/reads").text)
        assert 'id="read-final"' in ben.get(f"/reads/{study}").text
        trail = [(e.person, e.action, e.details.get("stage")) for e in entries(app.state.station.worker.store)
                 if e.action in ("override", "read")]
        assert trail == [("Cleo", "override", "primary"), ("Dev", "read", "secondary"), ("Ben", "override", "arbitration")]
        with pytest.raises(ConfigError, match="in use by another drtrt process"):     # while the pages hold the store
            push(orthanc_once.dicomweb, centre)
    finally:
        app.state.station.worker.store.close()
    before = len(orthanc_once.instances())
    done = push(orthanc_once.dicomweb, centre)
    assert len(done.sent) == 1 and done.waiting == [] and len(orthanc_once.instances()) == before + 1
    [sr] = [d for d in srs(orthanc_once) if d.SOPInstanceUID == done.sent[0]]
    observer = sr.VerifyingObserverSequence[0]
    assert (sr.VerificationFlag, observer.VerifyingObserverName.family_name, observer.VerifyingOrganization) == \
        ("VERIFIED", "Ben", "Centro Sur")
