"""The validation study's page at the station (/study, the programme lead's): the registered protocol, progress
counted from the station's own session with reads made through the real read page, no figure while the study
runs, and the exact `drtrt validate run` once it is ready (the real app, worker, model)."""

from __future__ import annotations

import re

import pytest
from station_helpers import csrf_of
from station_helpers import station  # noqa: F401  (the fixture)
from study_helpers import programme_keys, write_protocol
from test_station_people import login, with_accounts
from typer.testing import CliRunner
from visit_fixture import at, make_visit

from drtrt.clinic.pathways import ICDR, Pathway, keep_pathway

pytest.importorskip("starlette", reason="the station needs the station extra (pip install 'drtrt[station]')")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (test extra)")
pytest.importorskip("statsmodels", reason="a validation study needs the study extra (pip install 'drtrt[study]')")

RUNNING, ENDED = at("2027-03-01T09:00"), at("2027-07-05T09:00")     # the protocol's period: 2027-01-04 to 06-30


def registered(tmp_path):
    """A protocol registered now, before its start (min 2 patients, 1 with referable DR), loaded as the station
    loads it."""
    from drtrt.station.study import load_study
    from drtrt.verify.study.run import register

    protocol = write_protocol(tmp_path / "protocol.yaml")
    register(protocol, programme_keys()[0])
    return load_study(protocol)


def study_clinic(worker) -> dict[str, int]:
    """Three study patients (A: the model refers; B, C: the model says rescreen) and one screened before the
    study; one reading is final (second_read: never)."""
    keep_pathway(worker.store, Pathway.from_dict({**ICDR.to_dict(), "reads": {"second_read": "never",
                                                                             "sample_rate": 0.0}}))
    return {"A": make_visit(worker.book, "A", "2027-02-01T10:00", {"right": 2, "left": 0}),
            "B": make_visit(worker.book, "B", "2027-02-02T10:00", {"right": 0, "left": 0}),
            "C": make_visit(worker.book, "C", "2027-02-03T10:00", {"right": 0, "left": 0}),
            "D": make_visit(worker.book, "D", "2026-12-01T10:00", {"right": 3, "left": 0})}


def read(client, visit: int, right: str, left: str, reason: str | None = None) -> None:
    """A clinician's read through the station's read page."""
    token = csrf_of(client.get(f"/reads/{visit}").text)
    form = {"csrf": token, "right_icdr": right, "left_icdr": left, **({"reason": reason} if reason else {})}
    assert client.post(f"/reads/{visit}/read", data=form, follow_redirects=False).status_code == 303


def cell(page: str, row: str) -> tuple[int, int]:
    """(so far, minimum) of a progress row."""
    found = re.search(rf'<tr id="study-{row}"><td>[^<]*</td><td>(\d+)</td><td>(\d+)</td>', page)
    return int(found[1]), int(found[2])


def lead_at_study(station, tmp_path, when):
    """A station following the registered study, its clinic's visits (:func:`study_clinic`), its clock at ``when``
    and the lead (Ben) logged in: (client, worker, visits, setup)."""
    with_accounts(tmp_path)
    setup = registered(tmp_path)
    client, worker, _ = station(study=setup)
    visits = study_clinic(worker)
    client.app.state.clock = lambda: when
    assert login(client, "Ben", "a long password").status_code == 303
    return client, worker, visits, setup


def test_only_the_lead_opens_the_study_page_and_without_a_study_it_says_how(station, tmp_path):
    with_accounts(tmp_path)
    client, worker, _ = station()
    for name, pin in (("Ana", "4821"), ("Cleo", "5555")):                     # a screener, a reader
        other = type(client)(client.app)
        assert login(other, name, pin).status_code == 303
        assert other.get("/study").status_code == 403
        assert 'id="study-link"' not in other.get("/").text
    assert login(client, "Ben", "a long password").status_code == 303       # the lead
    page = client.get("/study")
    assert page.status_code == 200 and 'id="study-none"' in page.text and "--study PROTOCOL" in page.text
    assert 'id="validation-reason"' in page.text                             # the model's validation, as the dashboard
    assert 'href="/study"' in client.get("/").text and 'href="/study"' in client.get("/programme").text


def test_progress_counts_the_stations_own_reads_and_shows_no_figure_while_the_study_runs(station, tmp_path):
    client, worker, visits, setup = lead_at_study(station, tmp_path, RUNNING)
    page = client.get("/study").text
    assert "RX-DR-01" in page and setup.sha256 in page and setup.registration["registered"] in page
    assert "sensitivity at least 20.0%" in page and "2027-01-04 to 2027-06-30" in page
    assert "at least 2 patients, 1 of them with referable DR" in page and 'id="study-phase"' in page
    assert "trusts no programme key" in page                      # the fixture's station has no --validation-key
    worker.store.set_meta("validation_key", setup.registration["signature"]["public_key"])
    assert 'id="study-keys"' not in client.get("/study").text
    worker.store.set_meta("validation_key", "b3RoZXI=")
    assert "registered with another key" in client.get("/study").text
    assert (cell(page, "screened"), cell(page, "read"), cell(page, "referable")) == ((3, 2), (0, 2), (0, 1))
    waiting = re.findall(r'<a href="/reads/(\d+)">', page)
    assert sorted(map(int, waiting)) == sorted(visits[p] for p in "ABC")       # D is before the study

    reader = type(client)(client.app)
    assert login(reader, "Cleo", "5555").status_code == 303
    read(reader, visits["A"], "2", "0")
    read(reader, visits["B"], "0", "0")
    read(reader, visits["C"], "2", "0", reason="new haemorrhages the model missed")
    page = client.get("/study").text
    assert (cell(page, "screened"), cell(page, "read"), cell(page, "referable")) == ((3, 2), (3, 2), (2, 1))
    assert 'id="study-waiting"' not in page and 'id="study-no-peeking"' in page
    # sensitivity 1/2, specificity 1/1, PPV 1/1, NPV 1/2: none of them is on the page, nor on the dashboard
    assert not re.search(r"\b(50|100)(\.0)?\s?%", page) and 'id="study-ready"' not in page
    day = client.get("/").text
    assert 'id="agreement-hidden"' in day and 'id="agreement"' not in day


def test_a_read_waiting_for_its_second_reader_is_no_reference_yet(station, tmp_path):
    client, worker, visits, _ = lead_at_study(station, tmp_path, RUNNING)
    keep_pathway(worker.store, Pathway.from_dict({**ICDR.to_dict(), "reads": {"second_read": "always"}}))
    read(client, visits["A"], "2", "0")                                         # the first of two reads
    page = client.get("/study").text
    assert cell(page, "read") == (0, 2) and f'href="/reads/{visits["A"]}"' in page
    reader = type(client)(client.app)
    assert login(reader, "Cleo", "5555").status_code == 303
    read(reader, visits["A"], "2", "0")                                         # the second agrees: final
    page = client.get("/study").text
    assert (cell(page, "read"), cell(page, "referable")) == ((1, 2), (1, 1))


def test_the_ended_study_is_ready_for_validate_run_with_its_paths(station, tmp_path):
    from drtrt.verify.study.run import run_study

    client, worker, visits, setup = lead_at_study(station, tmp_path, ENDED)
    page = client.get("/study").text
    assert 'id="study-short"' in page and 'id="study-ready"' not in page       # nobody has read yet
    for patient, grades in (("A", ("2", "0")), ("B", ("0", "0")), ("C", ("0", "0"))):
        read(client, visits[patient], *grades)                                 # the lead reads too
    page = client.get("/study").text
    assert 'id="study-ready"' in page and "never sits on a station" in page
    command = re.search(r'<pre id="study-command">([^<]*)</pre>', page)[1]
    data = worker.cfg.data_dir
    assert command == (f"drtrt validate run {setup.path} --sessions {data.absolute()} --out study --key PRIVATE "
                       f"--model {worker.cfg.model.absolute()}")
    assert 'id="agreement-hidden"' not in client.get("/").text               # the period is over

    worker.stop()                                       # the command runs on a copy, elsewhere: here, the folder
    private = programme_keys()[0]
    outcome = run_study(setup.path, [data], None, tmp_path / "study", private, worker.cfg.model)
    assert (outcome.figures.n_patients, outcome.figures.n_referable) == (3, 1)   # the page's counts
    assert outcome.record is not None                                         # 1/1 and 2/2 clear the 20% bounds


def queue_of(client) -> dict[int, bool]:
    """The readers' queue as the page shows it: visit id → marked a study visit, in the page's order."""
    html = client.get("/reads").text
    return {int(v): bool(study) for v, study in re.findall(r'<tr id="queue-(\d+)"[^>]*?( data-study="1")?>', html)}


def waiting_of(client) -> set[int]:
    """The study visits the /study page lists as waiting for a read."""
    return {int(v) for v in re.findall(r'<a href="/reads/(\d+)">', client.get("/study").text)}


def command_visit(worker, patient: str, day: str, opened: str) -> int:
    """A command's visit (``drtrt receive`` into the station's session: kind 'session') of photos taken on ``day``
    and received on ``opened`` (UTC, "YYYY-MM-DDTHH:MM"), both eyes graded 0 (the model says rescreen)."""
    from drtrt.clinic.store import FileEntry

    worker.book.register(patient)
    visit = worker.book.visit_for(patient, day=day)
    for n, eye in enumerate(("right", "left")):
        sha = f"{visit:032x}{n:032x}"
        record = {"status": "graded", "grade": 0, "referable": False, "lesions": {}, "reason": None}
        worker.store.record_image(sha, record, FileEntry(f"/in/{patient}-{eye}.jpg", sha, 1, 1, patient, eye,
                                                         "screened", visit=visit), run_id=1)
    worker.store.execute("UPDATE visits SET opened=? WHERE id=?", (at(opened).strftime("%Y-%m-%dT%H:%M:%SZ"), visit))
    return visit


def test_during_the_study_every_visit_of_the_period_is_in_the_queue_and_the_study_page_agrees(station, tmp_path):
    """Negatives outside the quality sample (rate 0 here) are queued while they are study visits, marked so, after
    the urgent ones; a negative after the period is back to the sample; the /study page's waiting visits are the
    queue's study visits, before and after reads."""
    client, worker, visits, _ = lead_at_study(station, tmp_path, RUNNING)
    later = make_visit(worker.book, "E", "2027-07-02T10:00", {"right": 0, "left": 0})     # after the period
    reader = type(client)(client.app)
    assert login(reader, "Cleo", "5555").status_code == 303
    queue = queue_of(reader)
    assert list(queue) == [visits["D"], visits["A"], visits["B"], visits["C"]]    # refer (oldest first), negatives
    assert later not in queue and queue[visits["A"]] and not queue[visits["D"]]    # D: before the study, refers
    assert {v for v, study in queue.items() if study} == waiting_of(client) == {visits[p] for p in "ABC"}
    page = reader.get("/reads").text
    assert 'id="queue-study"' in page and "2027-01-04 to 2027-06-30" in page and "validation study" in page
    assert "quality sample of negatives" not in page                                # a study visit is no sample

    read(reader, visits["B"], "0", "0")
    assert {v for v, study in queue_of(reader).items() if study} == waiting_of(client) == {visits[p] for p in "AC"}
    client.app.state.clock = lambda: ENDED                        # an unread study visit stays after the period
    assert {v for v, study in queue_of(reader).items() if study} == waiting_of(client) == {visits[p] for p in "AC"}
    reader.cookies.set("lang", "es")
    page = reader.get("/reads").text
    assert "estudio de validación" in page and "Esta estación sigue el estudio de validación RX-DR-01" in page


def test_a_station_without_a_study_samples_its_negatives(station, tmp_path):
    with_accounts(tmp_path)
    client, worker, _ = station()
    visits = study_clinic(worker)
    assert login(client, "Cleo", "5555").status_code == 303
    page = client.get("/reads").text
    assert list(queue_of(client)) == [visits["D"], visits["A"]] and 'id="queue-study"' not in page


def test_a_commands_visit_dated_by_its_photos_is_read_for_the_study(station, tmp_path):
    """A visit `drtrt receive` brought in: photos of 2027-02-10, received 2027-02-12. The cohort dates it by its
    photos; its read is dated the same way, so once read it leaves the waiting list (the read was dated by the
    opening day before, and the visit waited for ever)."""
    client, worker, visits, _ = lead_at_study(station, tmp_path, RUNNING)
    received = command_visit(worker, "F", "2027-02-10", "2027-02-12T08:00")
    assert queue_of(client)[received] is True and received in waiting_of(client)
    assert cell(client.get("/study").text, "screened") == (4, 2)
    read(client, received, "0", "0")
    page = client.get("/study").text
    assert received not in waiting_of(client) and received not in queue_of(client)
    assert cell(page, "read") == (1, 2)
    assert waiting_of(client) == {v for v, study in queue_of(client).items() if study} == {visits[p] for p in "ABC"}


def test_the_study_page_reads_in_spanish(station, tmp_path):
    from test_station_spanish import english_left, english_only_words, english_phrases

    setup = registered(tmp_path)
    client, worker, _ = station(study=setup)
    study_clinic(worker)
    pages = {}
    for clock in (RUNNING, ENDED):
        client.app.state.clock = lambda clock=clock: clock
        for language in ("en", "es"):
            client.cookies.set("lang", language)
            pages[(clock, language)] = client.get("/study").text
    english = english_only_words("es", [pages[(c, "en")] for c in (RUNNING, ENDED)])
    from drtrt.station.i18n import LANGUAGES

    allowed = {"adults", "with", "diabetes", "region", "primary", "care", "model", "onnx",      # the protocol's words
               *(w.lower() for w in LANGUAGES.values())}                                   # "English"
    for clock in (RUNNING, ENDED):
        assert english_left(pages[(clock, "es")], english, allowed, english_phrases("es")) == []
    assert "Estudio de validación RX-DR-01" in pages[(RUNNING, "es")]


def test_a_station_with_an_unregistered_or_changed_protocol_does_not_start(tmp_path, tiny_onnx):
    from drtrt.cli import app
    from drtrt.verify.study.run import register

    protocol = write_protocol(tmp_path / "protocol.yaml")
    base = ["station", "--model", str(tiny_onnx), "--data-dir", str(tmp_path / "station"), "--study"]
    for path, why, code in ((tmp_path / "nowhere.yaml", "cannot read the protocol", 1),      # a missing file: 1
                            (protocol, "is not registered", 2)):                            # a refused input: 2
        result = CliRunner().invoke(app, [*base, str(path)])
        assert result.exit_code == code and why in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    register(protocol, programme_keys()[0])
    protocol.write_text(protocol.read_text().replace("0.2", "0.1"))
    result = CliRunner().invoke(app, [*base, str(protocol)])
    assert result.exit_code == 2 and "changed after it was registered" in result.output
    assert not (tmp_path / "station").exists()                                # refused before the model loaded
