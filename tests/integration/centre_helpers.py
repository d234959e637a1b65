"""A reading centre's session folder made as in the field: a station's closed visits synced to a real Orthanc, then
pulled by ``drtrt centre pull`` (no hand-made JSON). One module-scoped pull is copied for each test that reads."""

from __future__ import annotations

import hashlib
import shutil
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from orthanc_helpers import Orthanc
from visit_fixture import make_visit

from drtrt.clinic.accounts import Accounts
from drtrt.clinic.pathways import NHS, Pathway, keep_pathway
from drtrt.clinic.store import SessionStore
from drtrt.clinic.visits import VisitBook
from drtrt.integration.centre import load, pull
from drtrt.integration.sync import SyncConfig, sync_session
from drtrt.task import TaskSpec

VISITS = (("P-1", "2026-03-01T09:00", {"right": 0, "left": 0}),               # a negative
          ("P-2", "2025-03-01T10:00", {"right": 1, "left": 1}),               # P-2's visit a year before: a negative
          ("P-2", "2026-03-02T10:00", {"right": 2, "left": 0}),               # refer
          ("P-3", "2026-03-01T11:00", {"right": "ungradable", "left": "ungradable"}),
          ("P-4", "2026-03-03T12:00", {"right": 4, "left": 0}),               # refer urgently
          ("P-5", "2026-03-01T13:00", {"right": 0}))                          # the left eye missing: incomplete
PEOPLE = (("Ana", "screener", "4821"), ("Cleo", "reader", "5555"), ("Dev", "reader", "6666"),
          ("Ben", "lead", "a long password"))


@contextmanager
def sending_station(folder: Path):
    """A station's open session store in ``folder`` (Clínica Norte, NHS pathway, one read each there), with the
    overlay picture each photo's ``extra={"overlay": "overlays/overlay.png"}`` names."""
    (folder / "overlays").mkdir(parents=True)
    picture = np.arange(48 * 64 * 3, dtype=np.uint32).reshape(48, 64, 3) % 251
    cv2.imwrite(str(folder / "overlays" / "overlay.png"), picture.astype(np.uint8))
    with SessionStore(folder / "session.db") as store:
        store.bind_model("b" * 64, "test.onnx", TaskSpec())
        store.set_meta("organisation", "Clínica Norte")
        keep_pathway(store, Pathway.from_dict({**NHS.to_dict(), "reads": {"second_read": "never"}}))
        yield store


def station_sends(folder: Path, dicomweb: str, visits=VISITS) -> None:
    """A station (NHS pathway, one read each there) with ``visits`` (:data:`VISITS`), each photo with its overlay
    picture, synced."""
    with sending_station(folder) as store:
        for patient, opened, eyes in visits:
            visit = make_visit(VisitBook(store), patient, opened, eyes, extra={"overlay": "overlays/overlay.png"})
            for eye in eyes:                      # screened that day: the study's date
                sha = hashlib.sha256(f"{patient}/{visit}/{eye}".encode()).hexdigest()
                store.execute("UPDATE images SET screened_at=? WHERE sha256=?", (f"{opened}:00Z", sha))
        report = sync_session(store, folder, SyncConfig(dicomweb=dicomweb, retry_base=0.01))
    assert report.pending == 0


def pulled_centre(root: Path, dicomweb: str) -> Path:
    """The station's visits pulled into ``root / "centre"``, with :data:`PEOPLE`'s accounts kept there."""
    station_sends(root / "station", dicomweb)
    centre = root / "centre"
    pull(dicomweb, centre)
    accounts = Accounts(centre)
    for name, role, secret in PEOPLE:
        accounts.add(name, role, secret)
    return centre


def copy_of(centre: Path, where: Path) -> Path:
    """A test's own copy of the pulled session (its reads do not reach another test)."""
    return Path(shutil.copytree(centre, where / "centre"))


def studies(centre: Path) -> dict[tuple[str, str], str]:
    """(patient, study date YYYYMMDD) → study UID of every pulled visit."""
    found = {}
    for folder in (centre / "visits").iterdir():
        visit = load(folder)
        found[(visit["patient"], visit["date"])] = visit["study"]
    return found


def with_pathway(centre: Path, **reads) -> None:
    """Keep the NHS pathway with these ``reads:`` settings in the centre's session (as ``centre serve --pathway``)."""
    with SessionStore(centre / "session.db") as store:
        keep_pathway(store, Pathway.from_dict({**NHS.to_dict(), "reads": reads}))


@pytest.fixture(scope="module")
def orthanc_once(tmp_path_factory):
    """One Orthanc for a test module (imported by the module that uses it)."""
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pulled(orthanc_once, tmp_path_factory):
    """A centre session pulled once per module from :func:`orthanc_once`; tests read a :func:`copy_of` it."""
    return pulled_centre(tmp_path_factory.mktemp("pulled"), orthanc_once.dicomweb)
