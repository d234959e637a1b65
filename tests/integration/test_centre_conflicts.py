"""Two current drtrt reports in one study at a real Orthanc (issue 24): the centre pushed its VERIFIED read and
another VERIFIED SR naming the same station SR arrived by STOW-RS (a second centre, or the station's clinician).
``centre pull`` leaves that visit as it was, keeps the conflict, pulls the other studies and exits 1 after; the
queue page lists it ("resolve at the PACS", a referable one first), the visit cannot be read and push skips it; once
the PACS holds one current report again, the next pull imports it. And ``visit.json``'s "pushed" marks survive a
pull running in another process beside a push (each paused inside its read-modify-write: a deterministic
interleaving)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.request

import pytest

pytest.importorskip("highdicom", reason="the centre needs the integration extra")
pytest.importorskip("starlette", reason="the centre's pages need the station extra")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (test extra)")
from centre_helpers import pulled_centre, station_sends, studies, with_pathway  # noqa: E402
from orthanc_helpers import orthanc  # noqa: E402, F401  (the fixture)
from pydicom import dcmread  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from test_centre import srs  # noqa: E402
from test_centre_pages import login, queue_of  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from drtrt.cli import app as cli  # noqa: E402
from drtrt.errors import ConfigError  # noqa: E402
from drtrt.integration.centre import _write_summary, load, pull, push, queue, record_read  # noqa: E402
from drtrt.integration.centre_conflicts import conflict_of  # noqa: E402
from drtrt.integration.centre_marks import mark  # noqa: E402
from drtrt.integration.centre_reads import load_reads, unsent  # noqa: E402
from drtrt.integration.centre_sr import verified_report  # noqa: E402
from drtrt.integration.senders import DicomWebSender  # noqa: E402
from drtrt.station.centre_app import create_centre_app  # noqa: E402


def another_verified_sr(folder, reader, dicomweb, tmp_path) -> str:
    """A VERIFIED SR naming the visit's station SR, read by ``reader`` elsewhere (the words of the centre's own read
    of it: the same verdict), stored at the PACS by STOW-RS; its UID."""
    visit, [kept] = load(folder), load_reads(folder)
    return stowed(dcmread(folder / f"sr-{visit['sr']}.dcm"), reader, kept, dicomweb, tmp_path)


def stowed(station, reader, said, dicomweb, tmp_path) -> str:
    """``station``'s SR VERIFIED by ``reader`` of another centre saying ``said`` (grades, verdict, words), by STOW."""
    read = {**{k: said[k] for k in ("grades", "verdict", "words", "overrules", "reason")},
            "sr": station.SOPInstanceUID, "reader": reader, "organisation": "Otro Centro",
            "recorded": "2026-03-09T10:00:00Z"}
    report = verified_report(station, read)
    path = tmp_path / f"{report.SOPInstanceUID}.dcm"
    report.save_as(path, enforce_file_format=True)
    DicomWebSender(dicomweb).send(path, report.SOPInstanceUID)
    return report.SOPInstanceUID


def delete_at_orthanc(orthanc, uid) -> None:
    lookup = urllib.request.Request(f"{orthanc.url}/tools/lookup", data=uid.encode(), method="POST")
    with urllib.request.urlopen(lookup, timeout=10) as answer:
        [found] = json.loads(answer.read())
    urllib.request.urlopen(urllib.request.Request(f"{orthanc.url}/instances/{found['ID']}", method="DELETE"),
                           timeout=10).close()


def test_two_current_reports_are_a_conflict_and_the_rest_is_pulled(tmp_path, orthanc):
    centre = pulled_centre(tmp_path, orthanc.dicomweb)
    with_pathway(centre, second_read="never", sample_rate=0.0)
    ids = studies(centre)
    p2, p3 = ids["P-2", "20260302"], ids["P-3", "20260301"]             # refer; ungradable
    folder2, folder3 = centre / "visits" / p2, centre / "visits" / p3
    record_read(centre, p2, {"right": "R2M0", "left": "R0M0"}, "Cleo", "Centro Sur")
    [ours] = push(orthanc.dicomweb, centre).sent                        # the centre's VERIFIED read of P-2
    record_read(centre, p3, {"right": "U", "left": "U"}, "Cleo", "Centro Sur")     # final, not sent yet
    theirs = another_verified_sr(folder2, "Dr Local", orthanc.dicomweb, tmp_path)  # same verdict: still two
    other3 = [another_verified_sr(folder3, who, orthanc.dicomweb, tmp_path) for who in ("Dr X", "Dr Y")]
    station_sends(tmp_path / "station2", orthanc.dicomweb, (("P-8", "2026-03-04T09:00", {"right": 0, "left": 0}),
                                                            ("P-9", "2026-03-04T10:00", {"right": 2, "left": 0})))
    [station9] = [d for d in srs(orthanc) if d.PatientID == "P-9"]     # a new study, read twice elsewhere already
    said = {"grades": {"left": "R0M0", "right": "R2M0"}, "verdict": "refer", "words": "R2 pre-proliferative",
            "overrules": False, "reason": None}
    new9 = sorted(stowed(station9, who, said, orthanc.dicomweb, tmp_path) for who in ("Dr X", "Dr Z"))
    before2 = (folder2 / "visit.json").read_bytes()

    result = CliRunner().invoke(cli, ["centre", "pull", "--dicomweb", orthanc.dicomweb, "--out", str(centre)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("8 studies at the PACS, 8 with a drtrt report")
    assert lines[1].startswith(f"conflict: study {p2} (patient P-2) has 2 current drtrt reports (a report in it "
                               "refers the patient)") and ours in lines[1] and theirs in lines[1]
    assert lines[2].startswith(f"conflict: study {station9.StudyInstanceUID} (patient P-9) has 2 current drtrt "
                               "reports (a report in it refers")                # referable first, then by date
    assert lines[3].startswith(f"conflict: study {p3} (patient P-3) has 2 current") and "refers" not in lines[3]
    assert "3 studies not imported: two final results for one visit; resolve at the PACS" in result.output
    folder9 = centre / "visits" / station9.StudyInstanceUID
    assert not (folder9 / "visit.json").exists() and sorted(r["sr"] for r in conflict_of(folder9)["reports"]) == new9
    assert [load(f)["patient"] for f in (centre / "visits").iterdir() if load(f)].count("P-8") == 1   # imported
    assert (folder2 / "visit.json").read_bytes() == before2             # left as it was: the station's, our mark
    conflict = conflict_of(folder2)
    assert sorted(r["sr"] for r in conflict["reports"]) == sorted([ours, theirs])
    assert {r["verification"] for r in conflict["reports"]} == {"VERIFIED"} and conflict["referable"] is True
    assert sorted(r["sr"] for r in conflict_of(folder3)["reports"]) == sorted(other3)
    assert conflict_of(folder3)["referable"] is False

    assert [v["study"] for v in queue(centre) if v["study"] in (p2, p3)] == []
    listed = CliRunner().invoke(cli, ["centre", "list", str(centre)])
    assert listed.exit_code == 0, listed.output
    [line2, _, line3] = [line for line in listed.output.splitlines() if "two final results for one visit" in line]
    assert line2.startswith(f"{p2}  P-2") and line2.endswith("a report in it refers the patient)") and theirs in line2
    assert line3.startswith(f"{p3}  P-3") and "refers" not in line3
    with pytest.raises(ConfigError, match="two final results at the PACS"):
        record_read(centre, p3, {"right": "U", "left": "U"}, "Dev", "Centro Sur")
    assert unsent(centre, load_pathway_of(centre)) == []
    count = len(orthanc.instances())
    done = push(orthanc.dicomweb, centre)                               # P-3's final read: never sent
    assert done.sent == [] and sorted(done.conflicts) == sorted([p2, p3]) and len(orthanc.instances()) == count
    said = CliRunner().invoke(cli, ["centre", "push", str(centre), "--dicomweb", orthanc.dicomweb])
    assert said.exit_code == 0 and "2 read visit(s) not sent: two final results" in said.output, said.output

    app = create_centre_app(centre, organisation="Centro Sur")
    try:
        cleo = TestClient(app)
        assert login(cleo, "Cleo", "5555").status_code == 303
        page = cleo.get("/reads").text
        assert "Two final results for one visit: resolve at the PACS" in page
        assert re.findall(r'<tr id="conflict-([\d.]+)"', page) == [p2, station9.StudyInstanceUID, p3]
        assert page.index(f'id="conflict-{p2}" data-referable="yes"') < page.index(f'id="conflict-{p3}" '
                                                                                 'data-referable="no"')
        assert all(uid in page for uid in (ours, theirs, *other3)) and "A report in it refers the patient" in page
        assert p2 not in queue_of(page) and p3 not in queue_of(page) and page.index('id="conflicts"') < page.index(
            'id="read-queue"')
        assert cleo.get(f"/reads/{p3}").status_code == 409
    finally:
        app.state.station.worker.store.close()

    delete_at_orthanc(orthanc, theirs)                                  # resolved at the PACS: ours is the result
    again = pull(orthanc.dicomweb, centre)
    assert [c["study"] for c in again.conflicts] == [station9.StudyInstanceUID, p3] and conflict_of(folder2) is None
    visit = load(folder2)
    assert (visit["sr"], visit["verification"], visit["pushed"]) == (ours, "VERIFIED", [ours])


def load_pathway_of(centre):
    from drtrt.clinic.store import SessionStore
    from drtrt.integration.centre_reads import centre_pathway

    with SessionStore(centre / "session.db") as store:
        return centre_pathway(store)


HOLDER = """
import sys
from pathlib import Path
from drtrt.integration.centre_marks import locked, read_visit_json, write_visit_json
folder, key, uid = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
with locked(folder):                     # one process's read-modify-write of visit.json, paused between the two
    visit = read_visit_json(folder)
    print("read", flush=True)
    sys.stdin.readline()
    visit.setdefault(key, []).append(uid)
    write_visit_json(folder, visit)
"""


def interleaved(folder, key, uid, call) -> None:
    """Another process reads visit.json under the visit's lock and waits; ``call`` (this process) starts; the other
    process writes back what it read plus ``uid`` in ``key``; then ``call`` ends."""
    other = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), key, uid], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "read\n"
        here = threading.Thread(target=call)
        here.start()
        here.join(1.0)
        assert here.is_alive()                  # it waits for the other process's write (unlocked, it would not)
        other.communicate("go\n", timeout=60)
        here.join(60)
        assert not here.is_alive() and other.returncode == 0
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


def test_a_pull_and_a_push_in_two_processes_drop_neither_mark_nor_summary(tmp_path, orthanc):
    """A pull rewriting the summary while a push marks a confirmed SR, each side paused inside its read-modify-write
    in another process: the push's mark and the pull's new summary are both kept."""
    centre = pulled_centre(tmp_path, orthanc.dicomweb)
    folder = centre / "visits" / studies(centre)["P-2", "20260302"]
    pulled = load(folder)
    (folder / "visit.json").write_text(json.dumps({**pulled, "verdict": "an older summary"}), encoding="utf-8")
    first, second = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
    interleaved(folder, "pushed", first, lambda: _write_summary(folder, set()))    # a push marks; this pull waits
    assert load(folder) == {**pulled, "pushed": [first]}                            # the summary new, the mark kept
    interleaved(folder, "fhir_pushed", "x", lambda: mark(folder, "pushed", second))  # a pull writes; this push waits
    assert load(folder)["pushed"] == [first, second] and load(folder)["fhir_pushed"] == ["x"]
