"""A local validation study (issue 24, item 4): the figures against hand-computed values, the power
calculation, the reads, and the banner's life cycle — no record → a study that fails an endpoint → one
that passes → a signed record → a model changed by one byte has none → a record signed by another key
has none."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from drtrt.clinic.reports import model_banner
from drtrt.errors import ConfigError, DataError
from drtrt.fileio import sha256_file
from drtrt.validation_record import (NO_KEY, NO_RECORD, OTHER_KEY, OTHER_MODEL, UNSIGNED, UNSIGNED_SCHEMA,
                                     ValidationRecord, beside, validation_meta, validation_status)
from study_helpers import UNGRADABLE, graded, keypair, make_session, write_protocol, write_reads

statsmodels = pytest.importorskip("statsmodels", reason="the study's statistics need statsmodels (study extra)")
from statsmodels.stats.proportion import proportion_confint  # noqa: E402

from drtrt.verify.study.cohort import ModelResult  # noqa: E402
from drtrt.verify.study.protocol import Plan, load_protocol, plan, power_at  # noqa: E402
from drtrt.verify.study.reads import Read, Reference, read_reads, reference  # noqa: E402
from drtrt.verify.study.run import register, run_study  # noqa: E402
from drtrt.verify.study.stats import analyse  # noqa: E402

DAY = "2027-02-01"


# -- the figures --------------------------------------------------------------------------------------------

def twenty() -> tuple[dict, dict]:
    """20 patients with known cells: 8 TP, 2 FN, 2 FP, 6 TN; P19 the model could not grade (truly not
    referable); P20 the readers could not grade."""
    truth_outcome = ([(True, "positive")] * 8 + [(True, "negative")] * 2 + [(False, "positive")] * 2
                     + [(False, "negative")] * 6 + [(False, "not_imageable"), (None, "positive")])
    results, refs = {}, {}
    for i, (truth, outcome) in enumerate(truth_outcome, start=1):
        pid = f"P{i:02d}"
        results[pid] = ModelResult(pid, DAY, "x", outcome, "s", i)
        refs[(pid, DAY)] = Reference(truth, ("Dr A",))
    return results, refs


NO_MINIMUM = Plan(1, 1, 1, 1, 1)


def test_the_figures_match_hand_counts_and_statsmodels(tmp_path):
    results, refs = twenty()
    protocol, _ = load_protocol(write_protocol(tmp_path / "p.yaml", rule="excluded"))
    found = analyse(results, refs, protocol, NO_MINIMUM)
    assert {c: len(ids) for c, ids in found.cells.items()} == {"true_positive": 8, "false_positive": 2,
                                                               "false_negative": 2, "true_negative": 6}
    assert found.cells["false_negative"] == ["P09", "P10"] and found.cells["false_positive"] == ["P11", "P12"]
    assert found.excluded == {"model_ungradable": ["P19"], "reference_ungradable": ["P20"]}
    f = found.figures
    assert (f["sensitivity"].k, f["sensitivity"].n) == (8, 10) and (f["specificity"].k, f["specificity"].n) == (6, 8)
    assert (f["imageability"].k, f["imageability"].n) == (19, 20)
    assert (f["ppv"].k, f["ppv"].n, f["npv"].k, f["npv"].n) == (8, 10, 6, 8)
    for figure in f.values():
        assert (figure.low, figure.high) == pytest.approx(proportion_confint(figure.k, figure.n, method="wilson"))
    # Wilson 8/10 by hand: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), z = 1.959964
    assert (f["sensitivity"].low, f["sensitivity"].high) == pytest.approx((0.49016, 0.94332), abs=5e-5)
    assert found.n_referable == 10 and found.n_patients == 20 and found.passed

    referred, _ = load_protocol(write_protocol(tmp_path / "r.yaml", rule="referred", method="exact"))
    again = analyse(results, refs, referred, NO_MINIMUM)          # P19 sent to a person: a false positive
    assert again.cells["false_positive"] == ["P11", "P12", "P19"] and again.excluded["model_ungradable"] == []
    spec = again.figures["specificity"]
    assert (spec.k, spec.n) == (6, 9)
    assert (spec.low, spec.high) == pytest.approx(proportion_confint(6, 9, method="beta"))


def test_an_endpoint_missed_and_too_few_patients_are_said_with_numbers(tmp_path):
    results, refs = twenty()
    protocol, _ = load_protocol(write_protocol(tmp_path / "p.yaml", sens=0.85, rule="excluded"))
    found = analyse(results, refs, protocol, Plan(10, 8, 20, 12, 400))
    assert not found.passed
    assert found.failures == ["sensitivity: 8/10 = 80.0% (95% CI 49.0–94.3%) — FAILS its endpoint 85.0%",
                              "n: 20 patients, the power calculation asks for at least 400",
                              "n: 10 patients with referable DR, the power calculation asks for at least 12"]


def test_every_study_visit_must_be_read(tmp_path):
    results, refs = twenty()
    del refs[("P03", DAY)]
    protocol, _ = load_protocol(write_protocol(tmp_path / "p.yaml"))
    with pytest.raises(DataError, match=r"1 have no read \(P03\)"):
        analyse(results, refs, protocol, NO_MINIMUM)


def test_the_power_calculation_gives_the_smallest_n_that_reaches_the_power(tmp_path):
    path = tmp_path / "p.yaml"
    write_protocol(path, sens=0.85, spec=0.825, img=0.9)
    text = path.read_text().replace("level: 0.5", "level: 0.8").replace(
        "{sensitivity: 0.99, specificity: 0.99, imageability: 0.99}", "{sensitivity: 0.92, specificity: 0.9, "
        "imageability: 0.96}").replace("prevalence: 0.5", "prevalence: 0.15")
    path.write_text(text)
    protocol, _ = load_protocol(path)
    needed = plan(protocol)
    assert needed == Plan(167, 163, 140, 167, 1114)
    assert power_at(167, 0.92, 0.85, "wilson") >= 0.8 > max(power_at(n, 0.92, 0.85, "wilson") for n in range(1, 167))


@pytest.mark.parametrize("change, named", [
    (("ci_method: wilson", "ci_method: normal"), "'ci_method' must be one of exact, wilson"),
    (("end: 2027-06-30", "end: 2026-06-30"), "'end' (2026-06-30) is before 'start'"),
    (("ungradable: referred", "ungradable: ignored"), "'ungradable' must be one of referred, excluded"),
    (("sensitivity: 0.99", "sensitivity: 0.1"), "'power.expected.sensitivity' (0.1) must be above its endpoint"),
    (("study: RX-DR-01", "studdy: RX-DR-01"), "unknown config key 'studdy'"),
])
def test_a_bad_protocol_is_one_line_naming_the_field(tmp_path, change, named):
    path = write_protocol(tmp_path / "p.yaml")
    path.write_text(path.read_text().replace(*change))
    with pytest.raises(ConfigError) as caught:
        load_protocol(path)
    assert named in str(caught.value) and "\n" not in str(caught.value)


# -- the reads ------------------------------------------------------------------------------------------------

def test_reads_are_checked_strictly_and_disagreements_need_an_arbitration(tmp_path):
    path = write_reads(tmp_path / "reads.csv", {"P1": "R2M0", "P2": "ICDR1+DME", "P3": "ICDR1", "P4": "U"})
    reads = read_reads(path)
    assert [r.referable for r in reads[::2]] == [True, True, False, None]
    assert reference(reads)[("P3", DAY)] == Reference(False, ("Dr A",))
    assert reference(reads)[("P4", DAY)].referable is None
    path.write_text(path.read_text().replace("R2M0", "R4M0", 1))
    with pytest.raises(ConfigError, match="reads.csv line 2: grade 'R4M0' is none of"):
        read_reads(path)
    two = [Read("P1", DAY, "Dr A", "primary", eye, "R2M0", True) for eye in ("right", "left")]
    two += [Read("P1", DAY, "Dr B", "secondary", eye, "R1M0", False) for eye in ("right", "left")]
    with pytest.raises(DataError, match="disagree with no arbitration read for 1 visit"):
        reference(two)
    two += [Read("P1", DAY, "Dr C", "arbitration", eye, "R1M0", False) for eye in ("right", "left")]
    assert reference(two)[("P1", DAY)] == Reference(False, ("Dr C",))


# -- the banner's life cycle ----------------------------------------------------------------------------------

def session_meta(model: Path, public: Path | None) -> dict[str, str]:
    """What a screening session opening ``model`` keeps (the function the session calls), with the banner's
    other inputs."""
    meta = validation_meta(model, None, sha256_file(model), public)
    return {**meta, "model_name": model.name, "model_sha256": sha256_file(model)}


def test_the_banner_life_cycle(tmp_path):
    private, public = keypair(tmp_path)
    model = tmp_path / "model" / "model.onnx"
    model.parent.mkdir()
    model.write_bytes(b"an onnx model's bytes" * 100)
    sha = sha256_file(model)
    assert validation_status(session_meta(model, public)) == (None, NO_RECORD)
    assert model_banner(session_meta(model, public)).endswith(f"(why: {NO_RECORD})")

    patients = {f"P{i:02d}": (graded(3), graded(0)) for i in range(1, 6)}          # refer
    patients |= {f"P{i:02d}": (graded(0), graded(1)) for i in range(6, 11)}        # rescreen
    patients["P11"] = (UNGRADABLE, UNGRADABLE)
    session = make_session(tmp_path / "session", sha, patients)
    protocol = write_protocol(tmp_path / "protocol.yaml", sens=0.5, spec=0.4, img=0.6)
    register(protocol, private, now=dt.datetime(2027, 1, 2, 9, 0))
    truth = {p: ("R3aM0" if i <= 5 else "R1M0") for i, p in enumerate(patients, start=1)}
    truth["P04"] = truth["P05"] = "R0M0"                  # two false positives (P11, ungradable, is a third)...
    truth["P06"] = "R2M1"                                   # ...and a miss
    failing = run_study(protocol, [session], write_reads(tmp_path / "reads.csv", truth), tmp_path / "fail", private,
                        model)
    assert failing.record is None and not beside(model).exists()
    assert failing.report["failures"] == [
        "sensitivity: 3/4 = 75.0% (95% CI 30.1–95.4%) — FAILS its endpoint 50.0%",
        "specificity: 4/7 = 57.1% (95% CI 25.0–84.2%) — FAILS its endpoint 40.0%"]
    assert "FAILS" in (tmp_path / "fail" / "study.html").read_text()
    assert validation_status(session_meta(model, public)) == (None, NO_RECORD)

    truth = {p: ("R3aM0" if i <= 5 else "R1M0") for i, p in enumerate(patients, start=1)}
    passing = run_study(protocol, [session], write_reads(tmp_path / "reads.csv", truth), tmp_path / "pass", private,
                        model)
    assert passing.record == tmp_path / "pass" / "model.onnx.validation.json" and beside(model).is_file()
    record = ValidationRecord.from_json(beside(model).read_text())
    assert (record.model_sha256, record.n_patients, record.n_referable, record.start, record.date) == (
        sha, 11, 5, "2027-01-04", "2027-06-30")
    assert record.imageability.value == pytest.approx(10 / 11) and record.sensitivity.value == 1.0
    meta = session_meta(model, public)
    assert validation_status(meta) == (record, "") and model_banner(meta) is None
    report = json.loads((tmp_path / "pass" / "study.json").read_text())
    assert report["confusion"]["true_positive"]["patients"] == ["P01", "P02", "P03", "P04", "P05"]
    assert report["confusion"]["false_positive"]["patients"] == ["P11"]      # ungradable: referred

    assert validation_status(session_meta(model, None)) == (None, NO_KEY)          # no key configured
    changed = tmp_path / "changed" / "model.onnx"                                  # one byte changed
    changed.parent.mkdir()
    changed.write_bytes(model.read_bytes()[:-1] + b"X")
    shutil.copy(beside(model), beside(changed))
    assert validation_status(session_meta(changed, public)) == (None, OTHER_MODEL)
    assert model_banner(session_meta(changed, public)).endswith(f"(why: {OTHER_MODEL})")
    _, other = keypair(tmp_path, "someone-else")                                   # another programme's key
    assert validation_status(session_meta(model, other)) == (None, OTHER_KEY)
    edited = json.loads(beside(model).read_text())                                 # figures edited after signing
    edited["sensitivity"]["ci95_low"] = 0.99
    beside(model).write_text(json.dumps(edited))
    assert validation_status(session_meta(model, public)) == (None, OTHER_KEY)
    old = {k: v for k, v in edited.items() if k not in ("signature", "start", "protocol_sha256", "ci_method")}
    beside(model).write_text(json.dumps({**old, "schema": UNSIGNED_SCHEMA}))       # before issue 24
    assert validation_status(session_meta(model, public)) == (None, UNSIGNED)


def test_endpoints_cannot_move_after_registration(tmp_path):
    private, _ = keypair(tmp_path)
    protocol = write_protocol(tmp_path / "protocol.yaml")
    session = make_session(tmp_path / "s", "a" * 64, {"P01": (graded(3), graded(3)), "P02": (graded(0), graded(0))})
    reads = write_reads(tmp_path / "reads.csv", {"P01": "R3aM0", "P02": "R0M0"})
    with pytest.raises(ConfigError, match="is not registered: run drtrt validate register"):
        run_study(protocol, [session], reads, tmp_path / "out", private)
    register(protocol, private, now=dt.datetime(2027, 3, 1))   # after the start
    late = run_study(protocol, [session], reads, tmp_path / "out", private)
    assert late.record is None and late.report["why_no_record"] == [
        "the protocol was registered on 2027-03-01, after the study began on 2027-01-04"]
    with pytest.raises(ConfigError, match="already registered"):
        register(protocol, private)
    protocol.write_text(protocol.read_text().replace("sensitivity: 0.2", "sensitivity: 0.1"))
    with pytest.raises(ConfigError, match="changed after it was registered"):
        run_study(protocol, [session], reads, tmp_path / "out", private)


# -- the commands ---------------------------------------------------------------------------------------------

def drtrt(*args) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from drtrt.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def test_the_validate_commands_and_their_one_line_errors(tmp_path):
    code, out, _ = drtrt("validate", "keygen", tmp_path / "k" / "programme.key", tmp_path / "k" / "programme.pub")
    assert code == 0 and out.startswith("key ")
    assert (tmp_path / "k" / "programme.key").stat().st_mode & 0o777 == 0o600
    code, _, err = drtrt("validate", "keygen", tmp_path / "k" / "programme.key", tmp_path / "k" / "other.pub")
    assert code == 2 and "exists: a key is never overwritten" in one_line(err)

    protocol = write_protocol(tmp_path / "protocol.yaml", sens=0.5, spec=0.4, img=0.6)
    code, out, _ = drtrt("validate", "plan", protocol)
    assert code == 0 and "minimum: 4 patients with referable DR and 8 patients in all" in out
    bad = write_protocol(tmp_path / "bad.yaml")
    bad.write_text(bad.read_text().replace("start: 2027-01-04", "start: 2027-13-04"))
    code, _, err = drtrt("validate", "plan", bad)
    assert code == 2 and "'start' must be an ISO date" in one_line(err)

    private = tmp_path / "k" / "programme.key"
    assert drtrt("validate", "register", protocol, "--key", private)[0] == 0
    sha = "d" * 64
    patients = {f"P{i}": (graded(3), graded(3)) for i in range(4)} | {f"N{i}": (graded(0), graded(0)) for i in range(4)}
    session = make_session(tmp_path / "s", sha, patients, day="2027-02-01")
    reads = write_reads(tmp_path / "reads.csv", {p: "R3aM0" if p[0] == "P" else "R0M0" for p in patients})
    run = ["validate", "run", protocol, "--sessions", session, "--reads", reads, "--out", tmp_path / "out"]
    code, out, err = drtrt(*run)
    assert code == 4 and one_line(err) == "no record: no programme key given (--key): nothing is signed"
    assert "sensitivity: 4/4 = 100.0%" in out and not list((tmp_path / "out").glob("*.validation.json"))
    other, _ = keypair(tmp_path, "another-programme")
    code, _, err = drtrt(*run, "--key", other)
    assert code == 4 and one_line(err) == "no record: the protocol was registered with another key"
    code, out, err = drtrt(*run, "--key", private)
    assert code == 0 and f"validation record written: {tmp_path / 'out' / 'model.onnx.validation.json'}" in out
    assert ValidationRecord.from_json((tmp_path / "out" / "model.onnx.validation.json").read_text()).model_sha256 == sha

    reads.write_text(reads.read_text().replace("R0M0", "R9M0", 1))
    code, _, err = drtrt(*run)
    assert code == 2 and "reads.csv line " in one_line(err) and "grade 'R9M0'" in err
    reads.write_text("patient,date\nP1,2027-02-01\n")
    code, _, err = drtrt(*run)
    assert code == 2 and "the columns must be patient_id,visit_date,reader,role,eye,grade" in one_line(err)
    private.chmod(0o644)
    code, _, err = drtrt(*run, "--key", private)
    assert code == 2 and "can be read by others" in one_line(err)
