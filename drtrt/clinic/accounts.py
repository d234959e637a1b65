"""The people who answer for each action: accounts with roles, kept in the station folder.

``accounts.json`` (mode 0600, written atomically) holds, per person, a name, a role and their PIN or
password as an scrypt hash (the standard library's :func:`hashlib.scrypt`, the KDF the station's
shared PIN already uses: no new dependency, memory-hard, its parameters kept with each hash so they can
be raised later). Nothing else is stored: no PIN, no session. ``drtrt accounts`` manages the file.

Roles and what they may do (:data:`PERMISSIONS`, the one table the station asks):

- ``screener``: the visit at the camera — patients, visits, photos, retakes, moves, finishing a
  visit (also with photos missing), the printable report;
- ``reader`` (a clinician): what a screener may, and clinician reads (issue 24 item 3);
- ``lead`` (the programme lead): everything, the audit trail and the validation study's page.

Without accounts the station runs as before: a shared PIN (person "shared PIN", one person does
everything) or, on a loopback address, no login (person "no login (this machine)"). The audit trail
names them so, honestly: it cannot say who that was.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

from drtrt.clinic.store import now
from drtrt.errors import ConfigError, DataError
from drtrt.fileio import atomic_write

ROLES = ("screener", "reader", "lead")
SHARED, LOCAL = "shared", "local"          # the roles of the shared PIN and of no login (one-person clinic)
PERMISSIONS = {
    "screen": {"screener", "reader", "lead", SHARED, LOCAL},
    "read": {"reader", "lead", SHARED, LOCAL},
    "audit": {"lead", SHARED, LOCAL},
    "study": {"lead", SHARED, LOCAL},      # the validation study's progress (the station's /study)
}
FILE = "accounts.json"
MIN_PIN, MIN_PASSWORD, MAX_SECRET, MAX_NAME = 4, 8, 128, 64
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class Actor:
    """Who does an action, as the audit trail names them."""

    name: str
    role: str


SHARED_PIN = Actor("shared PIN", SHARED)
NO_LOGIN = Actor("no login (this machine)", LOCAL)


def may(role: str, what: str) -> bool:
    """Whether ``role`` may do ``what`` (a key of :data:`PERMISSIONS`)."""
    return role in PERMISSIONS[what]


def check_secret(secret: str) -> str:
    """A PIN (at least 4 digits) or a password (at least 8 characters); never stored as given."""
    if len(secret) > MAX_SECRET or not secret.isprintable():
        raise ConfigError(f"a PIN or password has at most {MAX_SECRET} printable characters")
    if secret.isdigit() and len(secret) >= MIN_PIN or not secret.isdigit() and len(secret) >= MIN_PASSWORD:
        return secret
    raise ConfigError(f"a PIN needs at least {MIN_PIN} digits, a password at least {MIN_PASSWORD} characters")


def _hash(secret: str, salt: bytes, params: dict) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=params["n"], r=params["r"], p=params["p"], dklen=32)


def check_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise ConfigError(f"a name has 1 to {MAX_NAME} printable characters")
    return name


class Accounts:
    """The accounts file of station folder ``folder``; each change is written at once."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / FILE

    def _load(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {self.path} ({exc}): restore it or move it aside") from None
        if not isinstance(data, dict) or not isinstance(data.get("accounts"), dict):
            raise DataError(f"{self.path} is not a drtrt accounts file: restore it or move it aside")
        return data["accounts"]

    def _save(self, accounts: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps({"format": "drtrt-accounts/1", "accounts": accounts}, indent=1))
        os.chmod(self.path, 0o600)

    def exist(self) -> bool:
        """Whether any account is kept (enabled or not): then people log in by name."""
        return bool(self._load())

    def has(self, name: str) -> bool:
        """Whether an account (enabled or not) has this name (compared without case)."""
        return self._find(self._load(), name) is not None

    def _find(self, accounts: dict[str, dict], name: str) -> str | None:
        wanted = check_name(name).casefold()
        return next((key for key in accounts if key.casefold() == wanted), None)

    def add(self, name: str, role: str, secret: str) -> None:
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
        accounts, name = self._load(), check_name(name)
        if self._find(accounts, name) is not None:
            raise ConfigError(f"an account named {name!r} exists: choose another name, or change its PIN with "
                              "drtrt accounts passwd")
        accounts[name] = {"role": role, "created": now(), "disabled": None, **self._secret(secret)}
        self._save(accounts)

    def _secret(self, secret: str) -> dict:
        salt = os.urandom(16)
        return {"kdf": "scrypt", **_SCRYPT, "salt": salt.hex(), "hash": _hash(check_secret(secret), salt, _SCRYPT).hex(),
                "changed": now()}

    def _existing(self, accounts: dict[str, dict], name: str) -> str:
        key = self._find(accounts, name)
        if key is None:
            raise ConfigError(f"no account named {check_name(name)!r} (drtrt accounts list shows them)")
        return key

    def passwd(self, name: str, secret: str) -> None:
        accounts = self._load()
        key = self._existing(accounts, name)
        accounts[key].update(self._secret(secret))
        self._save(accounts)

    def disable(self, name: str) -> None:
        """The person can no longer log in (kept, so the trail's names stay theirs); a session open now ends."""
        accounts = self._load()
        key = self._existing(accounts, name)
        accounts[key]["disabled"] = accounts[key]["disabled"] or now()
        self._save(accounts)

    def list(self) -> list[dict]:
        """name, role, created, changed, disabled of every account (no hashes)."""
        return [{"name": key, "role": a["role"], "created": a["created"], "changed": a["changed"],
                 "disabled": a["disabled"]} for key, a in sorted(self._load().items(), key=lambda kv: kv[0].casefold())]

    def active(self, name: str) -> Actor | None:
        """The enabled account ``name`` as an :class:`Actor` (None: none, or disabled)."""
        accounts = self._load()
        key = self._find(accounts, name) if name.strip() else None
        if key is None or accounts[key]["disabled"]:
            return None
        return Actor(key, accounts[key]["role"])

    def check(self, name: str, secret: str) -> Actor | None:
        """The person, when ``name`` is an enabled account and ``secret`` its PIN or password; else None.
        An unknown name costs the same hash as a known one."""
        try:
            accounts = self._load()
            key = self._find(accounts, name)
        except ConfigError:
            key, accounts = None, {}
        kept = accounts.get(key) if key is not None else None
        salt = bytes.fromhex(kept["salt"]) if kept else b"\0" * 16
        digest = _hash(secret[:MAX_SECRET], salt, kept if kept else _SCRYPT)
        if kept is None or not hmac.compare_digest(digest.hex(), kept["hash"]) or kept["disabled"]:
            return None
        return Actor(key, kept["role"])
