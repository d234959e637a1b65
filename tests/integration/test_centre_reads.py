"""The reading centre's queue and its second reads (issue 24 item 3), over a session pulled from a real Orthanc: the
queue by the model's urgency with the pathway's sample of negatives, a second reader and arbitration as the pathway
says (the station's own state machine), and push sending only the final read, once."""

from __future__ import annotations

import json
import socket

import pytest

pytest.importorskip("highdicom", reason="the centre needs the integration extra")
from centre_helpers import copy_of, studies, with_pathway  # noqa: E402
from centre_helpers import orthanc_once, pulled  # noqa: E402, F401  (fixtures)
from test_centre import srs  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from drtrt.cli import app  # noqa: E402
from drtrt.clinic.accounts import Actor  # noqa: E402
from drtrt.clinic.audit import entries  # noqa: E402
from drtrt.clinic.read_queue import sampled  # noqa: E402
from drtrt.clinic.store import SessionStore  # noqa: E402
from drtrt.errors import ConfigError  # noqa: E402
from drtrt.integration.centre import load, push, queue, record_read  # noqa: E402
from drtrt.integration.centre_reads import final_read, load_reads, model_verdict  # noqa: E402

CLEO, DEV, BEN, ANA = Actor("Cleo", "reader"), Actor("Dev", "reader"), Actor("Ben", "lead"), Actor("Ana", "screener")



def test_the_queue_is_by_the_models_urgency_then_the_pathways_sample_of_negatives(pulled, tmp_path):
    centre = copy_of(pulled, tmp_path)
    uid = studies(centre)
    verdicts = {key: model_verdict(load(centre / "visits" / study)) for key, study in uid.items()}
    assert verdicts == {("P-4", "20260303"): "refer_urgent", ("P-2", "20260302"): "refer",
                        ("P-3", "20260301"): "ungradable", ("P-1", "20260301"): "rescreen",
                        ("P-2", "20250301"): "rescreen", ("P-5", "20260301"): "incomplete"}
    urgent = [uid["P-4", "20260303"], uid["P-2", "20260302"], uid["P-3", "20260301"], uid["P-5", "20260301"]]
    assert [v["study"] for v in queue(centre)] == urgent + [uid["P-2", "20250301"], uid["P-1", "20260301"]]  # all
    with_pathway(centre, second_read="disagreement", sample_rate=0.0)
    assert [v["study"] for v in queue(centre)] == urgent                        # no negative at 0 %
    with_pathway(centre, second_read="disagreement", sample_rate=0.5)
    negatives = [uid["P-2", "20250301"], uid["P-1", "20260301"]]
    assert [v["study"] for v in queue(centre)] == urgent + [s for s in negatives if sampled(s, 0.5)]
    assert all(v["stage"] == "primary" and v["readers"] == [] for v in queue(centre))
    assert [sampled(s, 0.5) for s in negatives] == [sampled(s, 0.5) for s in negatives]    # stable: the UID's hash


def test_a_disagreement_goes_to_a_second_reader_then_to_arbitration_and_only_the_final_read_is_pushed(
        pulled, tmp_path, orthanc_once):
    centre = copy_of(pulled, tmp_path)
    with_pathway(centre, second_read="disagreement", sample_rate=0.0)
    study = studies(centre)["P-2", "20260302"]
    folder = centre / "visits" / study
    with pytest.raises(ConfigError, match="only a reader"):
        record_read(centre, study, {"right": "R2M0", "left": "R0M0"}, ANA, "Centro Sur")
    first = record_read(centre, study, {"right": "R1M0", "left": "R0M0"}, CLEO, "Centro Sur", reason="dot haemorrhages")
    assert (first["stage"], first["overrules"], first["role"]) == ("primary", True, "reader")
    [waiting] = [v for v in queue(centre, reader="Cleo") if v["study"] == study]
    assert (waiting["stage"], waiting["readers"], waiting["mine"]) == ("secondary", ["Cleo"], True)
    with pytest.raises(ConfigError, match="another person"):
        record_read(centre, study, {"right": "R1M0", "left": "R0M0"}, CLEO, "Centro Sur", reason="again")
    sent_before = len(orthanc_once.instances())
    done = push(orthanc_once.dicomweb, centre)
    assert (done.sent, done.waiting) == ([], [study])                           # nothing VERIFIED while it waits
    second = record_read(centre, study, {"right": "R2M0", "left": "R0M0"}, DEV, "Centro Sur")
    assert (second["stage"], second["overrules"]) == ("secondary", False)
    assert [v["stage"] for v in queue(centre) if v["study"] == study] == ["arbitration"]
    assert push(orthanc_once.dicomweb, centre).waiting == [study]
    with pytest.raises(ConfigError, match="another person"):
        record_read(centre, study, {"right": "R2M0", "left": "R0M0"}, DEV, "Centro Sur")
    final = record_read(centre, study, {"right": "R1M0", "left": "R0M0"}, BEN, "Centro Sur", reason="R1 on review")
    assert final["stage"] == "arbitration" and study not in [v["study"] for v in queue(centre)]
    with pytest.raises(ConfigError, match="already read"):
        record_read(centre, study, {"right": "R1M0", "left": "R0M0"}, Actor("Eve", "reader"), "Centro Sur")
    read, wanted = final_read(load(folder), load_reads(folder), pathway=_kept(centre))
    assert (read["reader"], read["stage"], wanted) == ("Ben", "arbitration", None)   # pushed as the SR states it
    done = push(orthanc_once.dicomweb, centre)
    assert len(done.sent) == 1 and done.waiting == []
    assert push(orthanc_once.dicomweb, centre).sent == []                       # pushed twice: once
    assert len(orthanc_once.instances()) == sent_before + 1
    [new] = [d for d in srs(orthanc_once) if d.SOPInstanceUID == done.sent[0]]
    assert new.VerificationFlag == "VERIFIED"
    assert new.VerifyingObserverSequence[0].VerifyingObserverName.family_name == "Ben"
    assert any("read by Ben (Centro Sur, arbitration read)" in item.TextValue for item in new.ContentSequence
               if "TextValue" in item)
    with SessionStore(centre / "session.db") as store:
        trail = [(e.person, e.role, e.action, (e.details or {}).get("stage")) for e in entries(store)]
    assert trail[:3] == [("Cleo", "reader", "override", "primary"), ("Dev", "reader", "read", "secondary"),
                         ("Ben", "lead", "override", "arbitration")]


def _kept(centre):
    from drtrt.integration.centre_reads import centre_pathway

    with SessionStore(centre / "session.db") as store:
        return centre_pathway(store)


def test_a_read_kept_before_second_reads_is_the_primary_read(pulled, tmp_path):
    centre = copy_of(pulled, tmp_path)
    study = studies(centre)["P-4", "20260303"]
    folder = centre / "visits" / study
    old = {"sr": load(folder)["sr"], "reader": "Dr Old", "organisation": "Centro Sur",
           "grades": {"left": "R0M0", "right": "R3aM0"}, "verdict": "refer_urgent", "words": "R3", "overrules": False,
           "reason": None, "recorded": "2026-03-04T10:00:00Z"}
    (folder / "read.json").write_text(json.dumps(old))                    # read.json as the centre wrote it before
    assert load_reads(folder) == [{"stage": "primary", "role": "reader", **old}]
    assert final_read(load(folder), load_reads(folder), _kept(centre)) == (old, None)   # the same SR UID as before
    assert study not in [v["study"] for v in queue(centre)]


def test_an_eye_nobody_photographed_can_only_be_graded_u(pulled, tmp_path):
    centre = copy_of(pulled, tmp_path)
    study = studies(centre)["P-5", "20260301"]                                 # the left eye missing
    with pytest.raises(ConfigError, match="the left eye was not photographed: grade it U"):
        record_read(centre, study, {"right": "R0M0", "left": "R0M0"}, CLEO, "Centro Sur")
    read = record_read(centre, study, {"right": "R0M0", "left": "U"}, CLEO, "Centro Sur")
    assert (read["verdict"], read["overrules"]) == ("ungradable", False) and study not in [v["study"] for v in queue(centre)]


def test_the_cli_read_names_an_account_where_the_centre_keeps_them(pulled, tmp_path):
    centre = copy_of(pulled, tmp_path)
    study = studies(centre)["P-4", "20260303"]
    base = ["centre", "read", str(centre), "--study", study, "--right", "R3aM0", "--left", "R0M0", "--organisation",
            "Centro Sur", "--reader"]
    for who in ("Dr Nobody", "Ana"):                                      # no such account; a screener's
        refused = CliRunner().invoke(app, [*base, who])
        assert refused.exit_code == 2 and "not an enabled reader's account" in refused.output, refused.output
        assert len(refused.output.strip().splitlines()) == 1
    done = CliRunner().invoke(app, [*base, "cleo"])
    assert done.exit_code == 0 and "read by Cleo" in done.output, done.output
    assert load_reads(centre / "visits" / study)[0]["reader"] == "Cleo"


def test_serve_refuses_a_centre_without_accounts_or_a_folder_that_is_no_centre(pulled, tmp_path):
    centre = copy_of(pulled, tmp_path)
    (centre / "accounts.json").unlink()
    for folder, code, said in ((centre, 2, "has no accounts: a reading centre's reads must name a clinician"),
                               (tmp_path / "nothing", 1, "is not a centre session folder")):
        result = CliRunner().invoke(app, ["centre", "serve", str(folder), "--organisation", "Centro Sur"])
        assert result.exit_code == code and said in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    (centre / "accounts.json").write_text((pulled / "accounts.json").read_text())
    for extra, said in ((["--pathway", str(tmp_path / "none.yaml")], "is neither icdr nor nhs nor a readable file"),
                        ([], "give --organisation: the reading centre's name")):
        result = CliRunner().invoke(app, ["centre", "serve", str(centre), *extra])
        assert result.exit_code == 2 and said in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["centre", "serve", str(centre), "--organisation", "Centro Sur", "--port",
                                          str(port)])
    assert result.exit_code == 1 and f"port {port} is in use" in result.output and "serving" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert CliRunner().invoke(app, ["centre", "list", str(centre)]).exit_code == 0      # the store was let go
