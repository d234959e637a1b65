"""Registering a study and running it: figures, a report, and — only when every endpoint is cleared — a
signed validation record.

**Registration** (:func:`register`) freezes the protocol before the first patient: the file
``PROTOCOL.registration.json`` keeps the protocol's sha256, the minimum sample, the time (UTC) and the
programme key's signature. **The run** (:func:`run_study`) refuses a protocol whose bytes changed since,
and writes a record only when the registration is dated no later than the study's first day, every
endpoint's lower bound is cleared, the sample reaches the plan's minimum, and the programme's private
key was given. Otherwise the report says which endpoint or condition failed, with numbers.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from drtrt.clinic.store import SessionStore
from drtrt.config import to_dict
from drtrt.errors import ConfigError
from drtrt.fileio import sha256_file
from drtrt.signing import load_private, public_of, sign, verifies
from drtrt.validation_record import SCHEMA, Estimate, Signature, ValidationRecord, beside
from drtrt.verify.study.cohort import read_cohort
from drtrt.verify.study.protocol import load_protocol, plan
from drtrt.verify.study.reads import read_reads, reference, station_reads
from drtrt.verify.study.report import report_data, report_html
from drtrt.verify.study.stats import StudyFigures, analyse

REGISTRATION = "drtrt-study-registration/1"


def registration_path(protocol: str | Path) -> Path:
    protocol = Path(protocol)
    return protocol.with_name(protocol.name + ".registration.json")


def register(protocol_path: str | Path, key_path: str | Path, now: dt.datetime | None = None) -> Path:
    """Freeze the protocol: write its registration, signed. Refused when one exists (a registration is
    never replaced: a changed protocol is a new study)."""
    protocol, sha = load_protocol(protocol_path)
    key = load_private(key_path)
    out = registration_path(protocol_path)
    if out.exists():
        raise ConfigError(f"{out} exists: study {protocol.study} is already registered; a changed protocol is a new "
                          "study (a new file)")
    needed = plan(protocol)
    data = {"schema": REGISTRATION, "study": protocol.study, "protocol_sha256": sha,
            "registered": (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "min_patients": needed.min_patients, "min_referable": needed.min_referable}
    out.write_text(json.dumps({**data, "signature": sign(key, data)}, indent=2))
    return out


def read_registration(protocol_path: Path, sha: str) -> dict:
    """The protocol's registration, checked: present, for these exact bytes, its signature whole."""
    path = registration_path(protocol_path)
    try:
        data = json.loads(path.read_text())
        signature = data.pop("signature")
        raw = base64.b64decode(signature["public_key"])
        whole = data.get("schema") == REGISTRATION and verifies(raw, data, signature["value"])
    except FileNotFoundError:
        raise ConfigError(f"study protocol {protocol_path} is not registered: run drtrt validate register "
                          f"{protocol_path} --key PRIVATE before the study starts") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        whole = False
    if not whole:
        raise ConfigError(f"{path} is damaged or its signature does not verify")
    if data["protocol_sha256"] != sha:
        raise ConfigError(f"{protocol_path} changed after it was registered (sha256 {sha[:12]}…, registered "
                          f"{data['protocol_sha256'][:12]}…): endpoints are not moved after a study starts")
    return {**data, "signature": signature}


def kept_reads(sessions: list[Path]) -> list:
    """Every final clinician's read the session folders keep (the station's reader page), as study reads."""
    reads = []
    for folder in dict.fromkeys(sessions):       # a folder named twice is read once
        with SessionStore(folder / "session.db") as store:
            reads += station_reads(store, final_only=True)
    return reads


@dataclass(frozen=True)
class StudyOutcome:
    figures: StudyFigures
    report: dict
    record: Path | None


def run_study(protocol_path: str | Path, sessions: list[Path], reads_path: str | Path | None, out: str | Path,
              key_path: str | Path | None = None, model: str | Path | None = None) -> StudyOutcome:
    """The study's figures from ``sessions`` and the reads CSV (None: the clinicians' reads the sessions keep,
    :func:`~drtrt.verify.study.reads.station_reads`), its report (``out``/study.json and .html)
    and, when it passes, the signed record (``out``/MODEL.validation.json, and beside ``model`` if given)."""
    protocol_path, out = Path(protocol_path), Path(out)
    protocol, sha = load_protocol(protocol_path)
    registration = read_registration(protocol_path, sha)
    needed = plan(protocol)
    key = load_private(key_path) if key_path is not None else None
    cohort = read_cohort([Path(s) for s in sessions], protocol.start, protocol.end)
    if model is not None and sha256_file(model) != cohort.model_sha256:
        raise ConfigError(f"{model} is not the model file the sessions screened with (sha256 "
                          f"{cohort.model_sha256[:12]}…)")
    reads = read_reads(reads_path) if reads_path is not None else kept_reads([Path(s) for s in sessions])
    figures = analyse(cohort.results, reference(reads), protocol, needed)
    why: list[str] = []
    if registration["registered"][:10] > protocol.start:
        why.append(f"the protocol was registered on {registration['registered'][:10]}, after the study began on "
                   f"{protocol.start}")
    if key is None:
        why.append("no programme key given (--key): nothing is signed")
    elif registration["signature"]["public_key"] != base64.b64encode(public_of(key)).decode():
        why.append("the protocol was registered with another key")
    study = {"protocol": to_dict(protocol), "protocol_sha256": sha,
             "registered": registration["registered"], "plan": needed.lines(protocol),
             "model_name": cohort.model_name, "model_sha256": cohort.model_sha256}
    record_path = None
    if figures.passed and not why:
        record = _signed_record(protocol, sha, cohort.model_sha256, figures, key)
        out.mkdir(parents=True, exist_ok=True)
        record_path = out / (cohort.model_name + ".validation.json")
        for path in [record_path] + ([beside(model)] if model is not None else []):
            path.write_text(record.to_json(indent=2))
    data = report_data(study, figures, record_path.name if record_path else None, why)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(data, indent=2))
    (out / "study.html").write_text(report_html(data))
    return StudyOutcome(figures, data, record_path)


def _signed_record(protocol, protocol_sha: str, model_sha: str, figures: StudyFigures, key) -> ValidationRecord:
    f = figures.figures
    estimate = {name: Estimate(round(f[name].value, 6), round(f[name].low, 6))
                for name in ("sensitivity", "specificity", "imageability", "ppv", "npv") if f[name].n}
    unsigned = ValidationRecord(model_sha, protocol.population, protocol.end, protocol.study, estimate["sensitivity"],
                                estimate["specificity"], estimate["imageability"], figures.n_patients,
                                figures.n_referable, SCHEMA, protocol.start, protocol_sha, protocol.ci_method,
                                estimate.get("ppv"), estimate.get("npv"), Signature("-", "-", "-"))
    block = sign(key, unsigned.payload())
    return ValidationRecord.from_json(json.dumps({**unsigned.payload(), "signature": block}))
