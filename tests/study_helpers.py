"""A validation study's parts for tests: a key pair, a session folder whose visits have the grades a test
chooses (written through the store, as a screening run writes them), a protocol and a reads CSV."""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile

from pathlib import Path

from drtrt.clinic.store import FileEntry, SessionStore
from drtrt.clinic.visits import VisitBook
from drtrt.signing import generate, load_private, sign
from drtrt.task import TaskSpec
from drtrt.validation_record import SCHEMA, ValidationRecord


def keypair(folder: Path, name: str = "programme") -> tuple[Path, Path]:
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    generate(private, public)
    return private, public


def graded(grade: int) -> dict:
    return {"status": "graded", "grade": grade, "referable": grade >= 2, "reason": None, "macula": {"m": "M0"}}


UNGRADABLE = {"status": "ungradable", "grade": None, "referable": None, "reason": "too dark"}


def make_session(folder: Path, model_sha256: str, visits: dict[str, tuple[dict, dict]], day: str = "2027-02-01",
                 model_name: str = "model.onnx") -> Path:
    """A session folder: patient → (right eye record, left eye record), one visit each on ``day``."""
    with SessionStore(folder / "session.db") as store:
        store.bind_model(model_sha256, model_name, TaskSpec())
        store.set_meta("validated_sha256", model_sha256)
        book, run = VisitBook(store), store.begin_run("test")
        for patient, eyes in visits.items():
            visit = book.visit_for(patient, day=day)
            for eye, record in zip(("right", "left"), eyes):
                sha = hashlib.sha256(f"{patient}-{eye}".encode()).hexdigest()
                entry = FileEntry(f"/photos/{patient}-{eye}.jpg", sha, 1, 1, patient, eye, "screened", visit=visit)
                store.record_image(sha, record, entry, run)
        store.finish_run(run)
    return folder


PROTOCOL = """study: RX-DR-01
population: adults with diabetes, Region X primary care
start: 2027-01-04
end: 2027-06-30
endpoints: {{sensitivity: {sens}, specificity: {spec}, imageability: {img}}}
ci_method: {method}
ungradable: {rule}
power:
  level: 0.5
  expected: {{sensitivity: 0.99, specificity: 0.99, imageability: 0.99}}
  prevalence: 0.5
"""


def write_protocol(path: Path, sens=0.2, spec=0.2, img=0.2, method="wilson", rule="referred") -> Path:
    path.write_text(PROTOCOL.format(sens=sens, spec=spec, img=img, method=method, rule=rule))
    return path


def write_reads(path: Path, grades: dict[str, str], day: str = "2027-02-01") -> Path:
    """patient → the grade both eyes were read as, by one primary reader."""
    lines = ["patient_id,visit_date,reader,role,eye,grade"]
    lines += [f"{p},{day},Dr A,primary,{eye},{g}" for p, g in grades.items() for eye in ("right", "left")]
    path.write_text("\n".join(lines) + "\n")
    return path


RECORD = dict(population="adults with diabetes, Region X primary care", date="2026-10-31", start="2026-04-01",
              study="RX-DR-01", n_patients=812, n_referable=97, protocol_sha256="c" * 64, ci_method="wilson",
              sensitivity={"value": 0.91, "ci95_low": 0.84}, specificity={"value": 0.88, "ci95_low": 0.85},
              imageability={"value": 0.94, "ci95_low": 0.92})


def signed_record(model_sha256: str, private: Path, **changes) -> ValidationRecord:
    """A validation record for ``model_sha256`` (the fields of :data:`RECORD`, ``changes`` over them) signed with
    the private key in ``private``, as ``drtrt validate run`` signs one."""
    unsigned = {"schema": SCHEMA, "model_sha256": model_sha256, **RECORD, **changes}
    return ValidationRecord.from_json(json.dumps({**unsigned, "signature": sign(load_private(private), unsigned)}))


@functools.lru_cache(maxsize=1)
def programme_keys() -> tuple[Path, Path]:
    """One programme key pair for a test run (private, public), in a folder of its own."""
    return keypair(Path(tempfile.mkdtemp(prefix="drtrt-keys-")))
