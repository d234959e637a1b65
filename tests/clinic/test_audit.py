"""The audit trail and the accounts: the chain, what breaks it and how `drtrt audit verify` says so, the
append-only table, the record and its entry in one transaction; accounts, roles and the lockout."""

from __future__ import annotations

import sqlite3
import stat

import pytest
from typer.testing import CliRunner

from drtrt.cli import app
from drtrt.clinic import audit
from drtrt.clinic.accounts import SHARED_PIN, Accounts, Actor, may
from drtrt.clinic.store import SessionStore
from drtrt.clinic.visits import Protocol, VisitBook
from drtrt.errors import ConfigError
from drtrt.station.security import AccountGuard

ANA, BEN = Actor("Ana", "screener"), Actor("Ben", "lead")
runner = CliRunner()


def a_day(folder) -> list[audit.Entry]:
    """A session with a few audited actions: register, open, retake chosen, close (anyway)."""
    with SessionStore(folder / "session.db") as store:
        book = VisitBook(store)
        book.register("P-001", "Ana Pérez", by=ANA)
        visit = book.open_visit("P-001", Protocol(1), by=ANA)
        book.set_target(visit, "right/any", by=ANA)
        book.close_visit(visit, by=BEN)
        return audit.entries(store)


def tamper(db_path, *statements) -> None:
    """What someone with the file and sqlite3 can do: drop the triggers, then change rows."""
    db = sqlite3.connect(db_path)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("DROP TRIGGER audit_no_delete")
    for sql in statements:
        db.execute(sql)
    db.commit()
    db.close()


def verify(folder):
    result = runner.invoke(app, ["audit", "verify", str(folder)])
    return result.exit_code, result.output.strip().splitlines()


def test_each_action_is_an_entry_chained_to_the_last_and_naming_its_person(tmp_path):
    trail = a_day(tmp_path)
    assert [(e.seq, e.person, e.role, e.action) for e in trail] == [
        (1, "Ana", "screener", "register"), (2, "Ana", "screener", "open_visit"),
        (3, "Ana", "screener", "to_camera"), (4, "Ben", "lead", "finish_anyway")]
    assert trail[0].prev_hash == audit.GENESIS
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(trail, trail[1:]))
    assert all(e.hash == e.digest() for e in trail)
    assert trail[3].details["not_graded"] == ["right/any", "left/any"]
    assert trail[1].visit == trail[3].visit and trail[0].patient == "P-001"
    assert verify(tmp_path) == (0, [f"{tmp_path}: 4 entries, chain intact (head {trail[-1].hash[:16]})"])


def test_the_table_refuses_update_and_delete(tmp_path):
    a_day(tmp_path)
    db = sqlite3.connect(tmp_path / "session.db")
    for sql in ("UPDATE audit SET person='Eve' WHERE seq=1", "DELETE FROM audit WHERE seq=2"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(sql)
    db.close()


def test_a_tampered_trail_is_found_and_the_first_bad_entry_named(tmp_path):
    """An entry edited with sqlite3 and another deleted: verify exits 1 with one line naming the first."""
    a_day(tmp_path)
    tamper(tmp_path / "session.db", "UPDATE audit SET person='Eve' WHERE seq=2", "DELETE FROM audit WHERE seq=3")
    code, lines = verify(tmp_path)
    assert code == 1 and len(lines) == 1, lines
    assert "entry 2: edited" in lines[0]


def test_a_removed_entry_is_named(tmp_path):
    a_day(tmp_path)
    tamper(tmp_path / "session.db", "DELETE FROM audit WHERE seq=2")
    code, lines = verify(tmp_path)
    assert code == 1 and lines == [f"error: {tmp_path}: audit trail broken at entry 2: entry 2 was removed (the "
                                   "trail goes from 1 to 3)"]


def test_entries_removed_from_the_end_are_found_by_the_head(tmp_path):
    a_day(tmp_path)
    tamper(tmp_path / "session.db", "DELETE FROM audit WHERE seq=4")
    code, lines = verify(tmp_path)
    assert code == 1 and "entry 4: removed: the trail ends at entry 3, its head says 4" in lines[0]


def test_a_rewritten_entry_with_a_fresh_hash_breaks_the_link_to_the_next(tmp_path):
    """Someone who recomputes the edited entry's hash still breaks the next entry's prev_hash."""
    trail = a_day(tmp_path)
    forged = audit.Entry(**{**trail[1].to_dict(), "person": "Eve", "hash": ""})
    forged_hash = forged.digest()
    tamper(tmp_path / "session.db", f"UPDATE audit SET person='Eve', hash='{forged_hash}' WHERE seq=2")
    code, lines = verify(tmp_path)
    assert code == 1 and "entry 3: does not follow entry 2" in lines[0]


def test_two_entries_swapped_are_found(tmp_path):
    trail = a_day(tmp_path)
    second, third = trail[1], trail[2]
    moved = [audit.Entry(**{**e.to_dict(), "seq": seq}) for e, seq in ((third, 2), (second, 3))]
    rows = [(e.seq, e.time, e.person, e.role, e.action, e.visit, e.patient, e.image, "{}", e.prev_hash,
             e.digest()) for e in moved]
    tamper(tmp_path / "session.db", "DELETE FROM audit WHERE seq IN (2, 3)")
    db = sqlite3.connect(tmp_path / "session.db")
    db.executemany("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    assert not audit.verify(tmp_path / "session.db").ok


def test_an_action_refused_leaves_no_entry_and_an_entry_never_outlives_its_change(tmp_path):
    """The record and its entry commit together: a change that fails writes neither."""
    with SessionStore(tmp_path / "session.db") as store:
        book = VisitBook(store)
        book.register("P-001", "Ana", by=ANA)
        with pytest.raises(ConfigError):
            book.register("P-001", "Other Name", by=ANA)        # refused before anything is written
        visit = book.open_visit("P-001", Protocol(1), by=ANA)
        with pytest.raises(ConfigError, match="no slot"):
            book.set_target(visit, "nose/any", by=ANA)
        with pytest.raises(ValueError, match="unknown audit action"), store.transaction():
            store.execute("UPDATE visits SET target='left/any' WHERE id=?", (visit,))
            audit.append(store, ANA, "dance")
        assert [e.action for e in audit.entries(store)] == ["register", "open_visit"]
        assert book.visit(visit).target == "right/any"                 # the update rolled back with it


def test_show_lists_a_visits_entries(tmp_path):
    trail = a_day(tmp_path)
    result = runner.invoke(app, ["audit", "show", str(tmp_path), "--visit", str(trail[1].visit)])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert [line.split("\t")[3] for line in lines] == ["open_visit", "to_camera", "finish_anyway"]
    assert "Ben (lead)" in lines[-1]


# -- accounts ---------------------------------------------------------------------------------------
def test_accounts_keep_a_scrypt_hash_in_a_private_file(tmp_path):
    accounts = Accounts(tmp_path)
    accounts.add("Ana López", "screener", "4821")
    assert stat.S_IMODE(accounts.path.stat().st_mode) == 0o600
    text = accounts.path.read_text()
    assert "4821" not in text and '"kdf": "scrypt"' in text
    assert accounts.check("ana  lópez", "4821") == Actor("Ana López", "screener")   # name without case or spaces
    assert accounts.check("Ana López", "4822") is None and accounts.check("Nobody", "4821") is None


@pytest.mark.parametrize("name, role, secret, why", [
    ("Ana", "admin", "4821", "unknown role"), ("Ana", "lead", "123", "at least 4 digits"),
    ("Ana", "lead", "short", "a password at least 8"), ("", "lead", "4821", "a name has 1 to 64")])
def test_a_bad_account_is_refused(tmp_path, name, role, secret, why):
    with pytest.raises(ConfigError, match=why):
        Accounts(tmp_path).add(name, role, secret)


def test_disable_and_passwd(tmp_path):
    accounts = Accounts(tmp_path)
    accounts.add("Ana", "screener", "4821")
    with pytest.raises(ConfigError, match="exists"):
        accounts.add("ANA", "lead", "9999")
    accounts.passwd("Ana", "long password")
    assert accounts.check("Ana", "4821") is None and accounts.check("Ana", "long password") is not None
    accounts.disable("Ana")
    assert accounts.check("Ana", "long password") is None and accounts.active("Ana") is None
    assert accounts.list()[0]["disabled"] and accounts.has("ana")


def test_roles_limit_what_a_person_may_do():
    assert may("screener", "screen") and not may("screener", "audit") and not may("screener", "read")
    assert may("reader", "read") and not may("reader", "audit")
    assert all(may("lead", what) for what in ("screen", "read", "audit"))
    assert may(SHARED_PIN.role, "audit")                   # the one-person clinic does everything


def test_wrong_pins_lock_out_the_client_and_the_name(tmp_path):
    accounts = Accounts(tmp_path)
    accounts.add("Ana", "screener", "4821")
    guard = AccountGuard(accounts)
    for _ in range(5):
        assert guard.check("10.0.0.1", "Ana", "0000") is None
    assert guard.wait_s("10.0.0.1", "Ana") > 0
    assert guard.check("10.0.0.1", "Ana", "4821") is None                 # locked: even the right PIN
    assert guard.check("10.0.0.2", "ana", "4821") is None                 # the name is locked from elsewhere too
    assert guard.wait_s("10.0.0.1", "Ben") > 0                            # and the client for any name
    assert AccountGuard(accounts).check("10.0.0.2", "Ana", "4821") == Actor("Ana", "screener")


def test_a_gap_is_found_even_where_the_next_entry_was_relinked_over_it(tmp_path):
    trail = a_day(tmp_path)
    relinked = audit.Entry(**{**trail[2].to_dict(), "prev_hash": trail[0].hash, "hash": ""})
    tamper(tmp_path / "session.db", "DELETE FROM audit WHERE seq=2",
           f"UPDATE audit SET prev_hash='{trail[0].hash}', hash='{relinked.digest()}' WHERE seq=3")
    check = audit.verify(tmp_path / "session.db")
    assert (check.bad_seq, check.problem) == (2, "entry 2 was removed (the trail goes from 1 to 3)")
