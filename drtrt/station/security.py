"""The station's guards: the operator PIN or the people's accounts (hashed, attempts rate-limited),
CSRF tokens, and what the app accepts as an upload.

Starlette's SessionMiddleware signs the session cookie (itsdangerous); the rest is small enough to
keep here: hashing is the standard library's scrypt, and a CSRF token is a random value kept in
that signed session and compared in constant time (the synchroniser-token pattern; Starlette has
no CSRF middleware of its own).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from drtrt.clinic.accounts import Accounts, Actor
from drtrt.errors import ConfigError
from drtrt.fileio import atomic_write

MIN_PIN = 4
MAX_UPLOAD_BYTES = 40 * 2**20
_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"II*\x00", "tif"), (b"MM\x00*", "tif"),
          (b"BM", "bmp"))


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and "localhost": reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Lockout:
    """Failed attempts per key (a client, an account name) lock it out for a while that doubles with
    each further failure: 5 free attempts, then 30 s, 60 s, … up to 1 h."""

    free_attempts: int = 5
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_s(self, *keys: str) -> float:
        """Seconds to wait before any of ``keys`` may try again (0: may try now)."""
        with self._lock:
            until = max((self._failures.get(key, (0, 0.0))[1] for key in keys), default=0.0)
        return max(0.0, until - time.monotonic())

    def record(self, ok: bool, *keys: str) -> None:
        with self._lock:
            for key in keys:
                if ok:
                    self._failures.pop(key, None)
                    continue
                count = self._failures.get(key, (0, 0.0))[0] + 1
                extra = count - self.free_attempts
                lock_s = 0.0 if extra < 0 else min(3600.0, 30.0 * 2**extra)
                self._failures[key] = (count, time.monotonic() + lock_s)


@dataclass
class PinGuard:
    """The shared operator PIN, kept only as an scrypt hash; failed attempts per client lock it out
    (:class:`Lockout`)."""

    salt: bytes
    digest: bytes
    lockout: Lockout = field(default_factory=Lockout)

    @staticmethod
    def _hash(pin: str, salt: bytes) -> bytes:
        return hashlib.scrypt(pin.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)

    @classmethod
    def from_pin(cls, pin: str) -> PinGuard:
        if len(pin) < MIN_PIN or not pin.isdigit():
            raise ConfigError(f"the operator PIN must be at least {MIN_PIN} digits")
        salt = os.urandom(16)
        return cls(salt, cls._hash(pin, salt))

    def wait_s(self, client: str) -> float:
        """Seconds this client must wait before trying again (0: may try now)."""
        return self.lockout.wait_s(client)

    def check(self, client: str, pin: str) -> bool:
        if self.wait_s(client) > 0:
            return False
        ok = hmac.compare_digest(self._hash(pin[:64], self.salt), self.digest)
        self.lockout.record(ok, client)
        return ok


@dataclass
class AccountGuard:
    """Log in by name and PIN or password (:class:`~drtrt.clinic.accounts.Accounts`). Failures lock out
    both the client and the name tried (:class:`Lockout`): guessing one person's PIN from many clients
    is as slow as from one."""

    accounts: Accounts
    lockout: Lockout = field(default_factory=Lockout)

    @staticmethod
    def _keys(client: str, name: str) -> tuple[str, str]:
        return f"client:{client}", "name:" + " ".join(name.split()).casefold()

    def wait_s(self, client: str, name: str) -> float:
        return self.lockout.wait_s(*self._keys(client, name))

    def check(self, client: str, name: str, secret: str) -> Actor | None:
        """The person logging in, or None (wrong, disabled, or locked out for now)."""
        if self.wait_s(client, name) > 0:
            return None
        actor = self.accounts.check(name, secret)
        self.lockout.record(actor is not None, *self._keys(client, name))
        return actor


def session_secret(data_dir: Path) -> str:
    """The key that signs session cookies, made once per station folder (mode 0600)."""
    path = data_dir / "station-secret"
    try:
        secret = path.read_text().strip()
        if len(secret) >= 32:
            return secret
    except OSError:
        pass
    secret = secrets.token_urlsafe(48)
    atomic_write(path, secret)
    os.chmod(path, 0o600)
    return secret


def csrf_token(session: dict) -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_ok(session: dict, sent: str | None) -> bool:
    expected = session.get("csrf")
    return bool(expected and sent and hmac.compare_digest(expected, sent))


def image_kind(data: bytes) -> str | None:
    """jpg | png | tif | bmp | dcm (DICOM: "DICM" at byte 128) by the file's first bytes (never by its
    name), else None."""
    if data[128:132] == b"DICM":
        return "dcm"
    return next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)
