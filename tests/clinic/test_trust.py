"""Issue 22, defect 4: "normal" must not sound surer than the product is.

A validation record counts only for the model file whose sha256 it names, signed by the programme's
configured key (issue 24; the model's own
``drtrt.validation`` string no longer turns the NOT FOR CLINICAL USE banner off), and a person reads a
grade probability only when it is calibrated (temperature-scaled on held-out data).
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from drtrt.clinic.patients import Assignment
from drtrt.clinic.reports import model_banner
from drtrt.clinic.session import ScreeningSession, SessionConfig, screen_images
from drtrt.clinic.store import SessionStore
from drtrt.errors import ArtefactError, ConfigError
from drtrt.fileio import sha256_file
from drtrt.model_info import GradeCalibration, ModelInfo
from drtrt.validation_record import UNSIGNED, UNSIGNED_SCHEMA, ValidationRecord, beside, validation_of
from study_helpers import programme_keys, signed_record

pytest.importorskip("onnx", reason="rewriting a model's metadata needs the export extra")
BANNER = "NOT FOR CLINICAL USE"
CALIBRATION = GradeCalibration(temperature=2.0, ece_before=0.21, ece_after=0.031, n=40)


def with_metadata(src: Path, dst: Path, **extra: str) -> Path:
    """A copy of the ONNX model ``src`` whose drtrt metadata also carries ``extra`` (drtrt.KEY = value)."""
    import onnx

    from drtrt.calibration.graph import write_info
    from drtrt.model_info import GATE_KEY

    proto = onnx.load(str(src))
    info = ModelInfo.from_metadata({p.key: p.value for p in proto.metadata_props})
    kept = {k: v for k, v in info.extra if k == GATE_KEY}    # the same model, its metadata edited: its check stands
    write_info(proto, info.derive(info.precision, **{**kept, **extra}))
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(dst))
    return dst


def record_for(sha256: str, **changes) -> ValidationRecord:
    return signed_record(sha256, programme_keys()[0], population="adults with diabetes, Region X primary care",
                         **changes)


KEYED = SessionConfig(validation_key=str(programme_keys()[1]))      # the station's configured public key


@pytest.fixture(scope="module")
def images(photo_root) -> list[Path]:
    return sorted((photo_root / "B. Disease Grading" / "1. Original Images").glob("*/*.jpg"))[:2]


def meta_of(out: Path) -> dict[str, str]:
    with SessionStore(out / "session.db") as store:
        return store.meta()


# -- the validation record ----------------------------------------------------------------------------------

def test_a_model_whose_metadata_says_validated_still_gets_the_banner(tiny_onnx, images, tmp_path):
    """Before: any non-empty ``drtrt.validation`` string turned the banner off on every page."""
    model = with_metadata(tiny_onnx, tmp_path / "m" / "model.onnx", validation="site study 2026, sensitivity 0.91")
    screen_images(images, model, tmp_path / "s")
    assert meta_of(tmp_path / "s")["validation"] == ""
    assert BANNER in (tmp_path / "s" / "summary.html").read_text()


def test_a_record_beside_the_model_counts_for_that_model_only(tiny_onnx, images, tmp_path, caplog):
    model = tmp_path / "m" / "model.onnx"
    model.parent.mkdir()
    shutil.copy(tiny_onnx, model)
    sha = sha256_file(model)
    beside(model).write_text(record_for(sha).to_json(indent=2))
    screen_images(images, model, tmp_path / "valid", cfg=KEYED)
    meta = meta_of(tmp_path / "valid")
    assert validation_of(meta) == record_for(sha) and model_banner(meta) is None
    assert BANNER not in (tmp_path / "valid" / "summary.html").read_text()

    other = "9f8e" + "0" * 60                      # a record for another model file
    beside(model).write_text(record_for(other).to_json())
    with caplog.at_level(logging.WARNING, logger="drtrt.validation"):
        screen_images(images, model, tmp_path / "other", cfg=KEYED)
    assert meta_of(tmp_path / "other")["validation"] == ""
    assert BANNER in (tmp_path / "other" / "summary.html").read_text()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "drtrt.validation"]
    assert f"is for model 9f8e00000000…, this model is {sha[:12]}…" in line and "\n" not in line


def test_a_given_record_must_be_whole_and_one_beside_the_model_that_is_not_is_ignored(tiny_onnx, images, tmp_path,
                                                                                     caplog):
    model = tmp_path / "m" / "model.onnx"
    model.parent.mkdir()
    shutil.copy(tiny_onnx, model)
    damaged = json.loads(record_for(sha256_file(model)).to_json())
    del damaged["population"]
    given = tmp_path / "study.json"
    given.write_text(json.dumps(damaged))
    with pytest.raises(ConfigError, match="field 'population' is missing"):
        ScreeningSession(model, tmp_path / "given", SessionConfig(validation=str(given)))
    beside(model).write_text(json.dumps(damaged))
    with caplog.at_level(logging.WARNING, logger="drtrt.validation"):
        screen_images(images[:1], model, tmp_path / "beside")
    assert meta_of(tmp_path / "beside")["validation"] == ""
    assert any("'population' is missing" in r.getMessage() for r in caplog.records)
    given.write_text(record_for(sha256_file(model)).to_json())      # a whole one given wins over the one beside
    screen_images(images[:1], model, tmp_path / "given", cfg=replace(KEYED, validation=str(given)))
    assert validation_of(meta_of(tmp_path / "given")).study == "RX-DR-01"


@pytest.mark.parametrize("field, value, named", [
    ("model_sha256", "1A2B", "model_sha256"), ("date", "31/10/2026", "date"), ("population", "  ", "population"),
    ("sensitivity", {"value": 0.8, "ci95_low": 0.9}, "sensitivity.ci95_low"),
    ("specificity", {"value": 1.2, "ci95_low": 0.9}, "specificity.value"),
    ("n_referable", 900, "n_referable"), ("n_patients", 1.5, "n_patients"), ("colour", "red", "colour"),
    ("protocol_sha256", "abc", "protocol_sha256"), ("ci_method", "normal", "ci_method"), ("start", "", "start"),
    ("signature", None, "signature"),
])
def test_every_field_is_checked_and_a_bad_one_named(field, value, named):
    data = json.loads(record_for("a" * 64).to_json())
    data[field] = value
    with pytest.raises(ConfigError) as caught:
        ValidationRecord.from_json(json.dumps(data))
    assert named in str(caught.value) and "\n" not in str(caught.value)


def test_what_older_sessions_kept_is_no_record():
    meta = {"model_name": "model.onnx", "model_sha256": "b" * 64}
    for kept in ("", "site study 2026, sensitivity 0.91", '{"study": "x"}', "null"):
        assert validation_of({**meta, "validation": kept}) is None
        assert model_banner({**meta, "validation": kept}).startswith(BANNER)
    record = record_for("b" * 64)
    assert ValidationRecord.from_json(record.to_json()) == record
    key = record.signature.public_key
    assert validation_of({**meta, "validation": record.to_json(), "validation_key": key}) == record
    unsigned = {k: v for k, v in json.loads(record.to_json()).items()       # a record from before issue 24
                if k not in ("signature", "start", "protocol_sha256", "ci_method")}
    old = {**meta, "validation": json.dumps({**unsigned, "schema": UNSIGNED_SCHEMA}), "validation_key": key}
    assert validation_of(old) is None and model_banner(old).endswith(f"(why: {UNSIGNED})")
    assert record.statement == ("validated clinical model: study RX-DR-01, adults with diabetes, Region X primary "
                                f"care, ended 2026-10-31; model sha256 {'b' * 12}")


# -- the calibrated probability -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_sessions(tiny_onnx, images, tmp_path_factory) -> dict[str, Path]:
    """The same photos screened by the tiny model as exported (no calibration) and with a temperature of 2."""
    root = tmp_path_factory.mktemp("trust")
    calibrated = with_metadata(tiny_onnx, root / "cal" / "model.onnx", calibration=CALIBRATION.to_json())
    sessions = {"raw": root / "raw", "calibrated": root / "calibrated"}
    eyes = {images[0].resolve(): Assignment("T-1", "right"), images[1].resolve(): Assignment("T-1", "left")}
    for out, model in zip(sessions.values(), (tiny_onnx, calibrated)):
        screen_images(images, model, out, assignments=eyes)
    return {**sessions, "model": calibrated}


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_a_calibrated_model_gives_temperature_scaled_probabilities(two_sessions, tiny_onnx, images):
    from drtrt.runtime.predictor import Predictor

    with Predictor(tiny_onnx) as predictor:                 # the grade logits, straight from the model
        prepared = predictor.prepare_batch([images[0]])[0]
        logits = predictor.runner.infer({predictor.task.input_name: prepared.tensor[None]})[predictor.task.grade_output]
    logits = [float(v) for v in logits[0]]
    raw, calibrated = rows_of(two_sessions["raw"])[0], rows_of(two_sessions["calibrated"])[0]
    by_hand = [math.exp(v / 2.0) / sum(math.exp(w / 2.0) for w in logits) for v in logits]
    assert calibrated["probabilities"] == pytest.approx(by_hand, abs=2e-6)
    assert calibrated["calibrated"] is True and calibrated["ece"] == 0.031
    assert raw["probabilities"] == pytest.approx([math.exp(v) / sum(math.exp(w) for w in logits) for v in logits],
                                                 abs=2e-6)
    assert raw["calibrated"] is False and raw["ece"] is None
    assert calibrated["grade"] == raw["grade"] == int(np.argmax(logits))            # T moves no grade


def figcaptions(page: str) -> list[str]:
    return re.findall(r"<figcaption>(.*?)</figcaption>", page, re.S)


def test_a_person_reads_a_probability_only_when_it_is_calibrated(two_sessions):
    """Before: the patient report said "grade 0 — No DR (97%)" from the raw softmax."""
    pages = {name: next((two_sessions[name] / "reports").glob("patient-T-1*.html")).read_text()
             for name in ("raw", "calibrated")}
    graded = [r for r in rows_of(two_sessions["calibrated"]) if r["status"] == "graded"]
    assert graded
    assert not any("%" in caption for caption in figcaptions(pages["raw"]))
    shown = [f"calibrated probability {100 * r['probabilities'][r['grade']]:.0f}%" for r in graded]
    assert all(any(s in c for c in figcaptions(pages["calibrated"])) for s in shown)
    csv_rows = (two_sessions["raw"] / "summary.csv").read_text().splitlines()
    header = csv_rows[0].split(",")
    assert header[header.index("p_grade4") + 1] == "calibrated"     # research output keeps the raw numbers, marked


def test_the_station_card_shows_a_probability_only_when_it_is_calibrated(two_sessions):
    pytest.importorskip("jinja2", reason="the station needs the station extra")
    from drtrt.station.state import Templates
    from drtrt.task import TaskSpec

    macros = Templates(Path(__import__("drtrt.station", fromlist=["x"]).__file__).parent / "templates")("en") \
        .get_template("_macros.html").module

    def card(record: dict) -> str:
        slot = SimpleNamespace(state="graded", row=SimpleNamespace(record=record), warnings=[])
        return str(macros.result(slot, TaskSpec(), {}))

    raw, calibrated = rows_of(two_sessions["raw"])[0], rows_of(two_sessions["calibrated"])[0]
    assert "%" not in card(raw) and "probability" not in card(raw)
    expected = f"calibrated probability of this grade: {round(100 * calibrated['probabilities'][calibrated['grade']])}%"
    assert expected in card(calibrated)
    assert "%" not in card({**calibrated, "calibrated": False})


def test_a_damaged_calibration_is_refused_not_shown(tiny_onnx, tmp_path):
    from drtrt.runtime.predictor import Predictor

    model = with_metadata(tiny_onnx, tmp_path / "model.onnx", calibration='{"temperature": 0}')
    with pytest.raises(ArtefactError, match="damaged drtrt.calibration"):
        Predictor(model)


def test_screen_takes_a_record_with_validation_and_refuses_a_broken_one_in_one_line(tiny_onnx, images, tmp_path):
    from typer.testing import CliRunner

    from drtrt.cli import app

    given = tmp_path / "study.json"
    broken = json.loads(record_for(sha256_file(tiny_onnx)).to_json())
    broken["date"] = "2026-02-30"
    given.write_text(json.dumps(broken))
    result = CliRunner().invoke(app, ["screen", str(images[0]), "--model", str(tiny_onnx), "--validation", str(given)])
    assert result.exit_code == 2 and "field 'date' must be an ISO date" in result.output
    assert len(result.output.strip().splitlines()) == 1
    given.write_text(record_for(sha256_file(tiny_onnx)).to_json())
    args = ["screen", str(images[0]), "--model", str(tiny_onnx), "--validation", str(given)]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "nokey")], env={"DRTRT_VALIDATION_KEY": ""})
    assert result.exit_code in (0, 3), result.output            # no key configured: the banner stays, and says so
    assert "no validation key is configured" in (tmp_path / "nokey" / "summary.html").read_text()
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "s")],
                                env={"DRTRT_VALIDATION_KEY": str(programme_keys()[1])})
    assert result.exit_code in (0, 3), result.output
    assert BANNER not in (tmp_path / "s" / "summary.html").read_text()
    assert "sensitivity 91.0% (95% CI lower bound 84.0%)" in (tmp_path / "s" / "summary.html").read_text()
    bad = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "bad"), "--validation-key", str(given)])
    assert bad.exit_code == 2 and "is not a PEM public key" in bad.output and len(bad.output.strip().splitlines()) == 1
