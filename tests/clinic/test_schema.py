"""``session.db`` has one owner (drtrt/clinic/schema.py): a session folder an installed station of
35c20eb left behind opens, migrates and keeps every row; a database from a newer drtrt is refused with
one line and left as it was; an upgrade cut short leaves the old layout whole."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import drtrt
from drtrt.clinic import schema
from drtrt.clinic.store import SessionStore
from drtrt.clinic.verdicts import patient_verdicts
from drtrt.clinic.visits import VisitBook
from drtrt.errors import ConfigError, DataError

LEGACY = Path(__file__).parent / "data" / "session-35c20eb"     # made by data/make_session_35c20eb.py
LEGACY_PARTS = ("record", "visits", "outbox")                    # the parts 35c20eb had (failsafe came later)
LATEST = {part: len(migrations) for part, migrations in schema.PARTS.items()}


@pytest.fixture
def legacy(tmp_path) -> Path:
    folder = tmp_path / "session"
    shutil.copytree(LEGACY, folder)
    return folder


def dump(db_path: Path) -> dict[str, set[tuple]]:
    """Every row of every table, read with plain sqlite3 (nothing of drtrt's)."""
    db = sqlite3.connect(db_path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                           "AND name NOT LIKE 'sqlite_%'")]
        return {t: set(db.execute(f"SELECT * FROM {t}")) for t in tables}
    finally:
        db.close()


def test_the_committed_session_is_the_35c20eb_layout_with_rows_in_all_ten_tables(legacy):
    before = dump(legacy / "session.db")               # a copy: SQLite may write beside a database it reads
    assert sorted(before) == sorted(t for part in LEGACY_PARTS for t in schema.TABLES[part])
    assert all(before.values()), {t: len(rows) for t, rows in before.items()}
    db = sqlite3.connect(legacy / "session.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    db.close()


def test_a_35c20eb_session_opens_migrates_and_keeps_every_row_result_and_outbox_entry(legacy):
    from drtrt.integration.outbox import items

    before = dump(legacy / "session.db")
    with SessionStore(legacy / "session.db") as store:
        assert store.migrated_from == {"record": 1, "visits": 1, "outbox": 1, "failsafe": 0, "audit": 0, "reads": 0}
        rows = store.rows()
        verdicts = {v.patient: v.verdict for v in patient_verdicts(rows)}
        visit = VisitBook(store).visit(1)
        pending = items(store, "pending")
    after = dump(legacy / "session.db")
    # columns added since (files.visit; visits' kind, study, day; captures' reason, moved_from) come last
    kept = {t: {row[:len(next(iter(before[t])))] for row in rows} for t, rows in after.items() if before.get(t)}
    for table, old in before.items():
        if table != "visits":
            assert old <= kept[table], table                           # every row, unchanged
    assert after["meta"] - before["meta"] == {(f"schema.{p}", str(v)) for p, v in LATEST.items()}
    assert all(kept[t] == before[t] for t in before if t not in ("meta", "visits"))
    (old_visit,) = before["visits"]
    new_visit = next(v for v in after["visits"] if v[0] == old_visit[0])  # visits 2: the closed verdict by id
    assert new_visit[:5] == old_visit[:5] and new_visit[6:7] == old_visit[6:]
    assert json.loads(new_visit[5]) == {"verdict": "screening", "words": json.loads(old_visit[5])["words"]}
    # visits 3: every photo with a patient has a visit — the station's capture's, else one per patient and day
    files = {r.path: r for r in rows}
    captured = {c[3] for c in after["captures"]}
    assert all(r.visit == old_visit[0] for p, r in files.items() if p in captured)
    others = [r for p, r in files.items() if p not in captured and r.patient]
    assert others and all(r.visit not in (None, old_visit[0]) for r in others)
    assert len({r.visit for r in others}) == len({(r.patient, r.seen_at[:10]) for r in others})
    assert [r.status for r in rows] == ["graded", "graded", "graded", "duplicate", "error"]
    assert set(verdicts) == {"P-001", "P-002"}
    assert visit.patient.name == "Ana Pérez" and visit.closed is not None and visit.closed_verdict
    assert len(pending) == len(before["outbox"]) == 7
    with SessionStore(legacy / "session.db") as store:                  # the second open changes nothing
        assert store.migrated_from == LATEST
    assert dump(legacy / "session.db") == after


def test_a_visit_closed_with_a_bare_sentence_keeps_its_words_under_the_verdict_id(legacy):
    """Stations older still kept the closing verdict as the bare sentence."""
    db = sqlite3.connect(legacy / "session.db")
    db.execute("UPDATE visits SET verdict='ungradable — retake or refer'")
    db.commit()
    db.close()
    with SessionStore(legacy / "session.db") as store:
        visit = VisitBook(store).visit(1)
    assert (visit.closed_verdict, visit.closed_words) == ("ungradable", "ungradable — retake or refer")


def test_a_fresh_store_has_every_table_at_its_latest_version(tmp_path):
    with SessionStore(tmp_path / "session.db") as store:
        assert store.migrated_from == {part: 0 for part in schema.PARTS}
        assert schema.versions(store.db) == LATEST
        assert store.meta() == {}                                       # versions are not session meta
    assert sorted(dump(tmp_path / "session.db")) == sorted(t for ts in schema.TABLES.values() for t in ts)


def test_no_module_but_the_schema_creates_a_table():
    package = Path(drtrt.__file__).parent
    creators = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if "CREATE TABLE" in p.read_text())
    assert creators == ["clinic/schema.py"]


@pytest.mark.parametrize("newer", ["format", "part", "unknown part"])
def test_a_database_from_a_newer_drtrt_is_refused_with_one_line_and_left_alone(legacy, newer):
    with SessionStore(legacy / "session.db"):
        pass
    db = sqlite3.connect(legacy / "session.db")
    if newer == "format":
        db.execute(f"PRAGMA user_version={schema.FORMAT + 1}")
    else:
        key = "schema.record" if newer == "part" else "schema.reads"
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(LATEST["record"] + 1)))
        db.commit()
    db.close()
    before = (legacy / "session.db").read_bytes()
    with pytest.raises(DataError, match="written by a newer drtrt"):
        SessionStore(legacy / "session.db")
    assert (legacy / "session.db").read_bytes() == before
    proc = subprocess.run([sys.executable, "-m", "drtrt.cli", "sync", str(legacy), "--once"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "newer drtrt" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_upgrade_cut_short_leaves_the_old_layout_whole(legacy, monkeypatch):
    def power_cut(db):
        db.execute("CREATE TABLE half_made(x)")
        raise OSError("power cut")

    monkeypatch.setitem(schema.PARTS, "visits", (*schema.PARTS["visits"], power_cut))
    before = dump(legacy / "session.db")
    with pytest.raises(OSError, match="power cut"):
        SessionStore(legacy / "session.db")
    assert dump(legacy / "session.db") == before
    db = sqlite3.connect(legacy / "session.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    db.close()
    monkeypatch.undo()
    with SessionStore(legacy / "session.db") as store:                    # and the real upgrade still runs
        assert store.migrated_from == {"record": 1, "visits": 1, "outbox": 1, "failsafe": 0, "audit": 0, "reads": 0}


def test_a_file_that_is_not_a_database_is_one_data_error(tmp_path):
    (tmp_path / "session.db").write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(DataError, match="not a session store drtrt can read"):
        SessionStore(tmp_path / "session.db")


def test_meta_keys_are_declared_and_typed(tmp_path):
    with SessionStore(tmp_path / "session.db") as store:
        store.set_meta("pathway", {"name": "x", "grades": []})
        assert store.get_meta("pathway") == {"name": "x", "grades": []}
        store.set_meta("station_active_visit", 7)
        assert store.get_meta("station_active_visit") == "7"
        store.set_meta("station_active_visit", None)
        assert store.get_meta("station_active_visit") is None
        with pytest.raises(ConfigError, match="no meta key 'colour'"):
            store.set_meta("colour", "blue")
