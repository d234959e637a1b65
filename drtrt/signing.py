"""The programme's Ed25519 key: what signs a validation record (and a study's registration) and what checks it.

``cryptography`` (the Python Cryptographic Authority's library) does the work; nothing here is
cryptography of our own. A private key is a PEM file (PKCS#8, unencrypted, mode 0600: whoever holds it
can turn the NOT FOR CLINICAL USE banner off); the public key is a PEM file (SubjectPublicKeyInfo) a
station is configured with. What is signed is the canonical JSON of a mapping (keys sorted, no spaces,
UTF-8), so the same figures always give the same bytes. A key's ``key_id`` is the first 16 hex digits of
the sha256 of its 32 raw bytes: what a person compares by eye.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from drtrt.errors import BackendUnavailable, ConfigError, DataError

ENV_KEY = "DRTRT_VALIDATION_KEY"      # the public key a screening command checks records with (a PEM file)


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise BackendUnavailable("checking a signed validation record needs the 'cryptography' package: "
                                 "pip install cryptography") from None
    return serialization, ed25519


def canonical(data: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: ``data`` as JSON, keys sorted, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()[:16]


def generate(private_path: str | Path, public_path: str | Path) -> str:
    """Write a new key pair: the private key (mode 0600, refused when either file exists) and the public key.
    Returns the key's id."""
    serialization, ed25519 = _crypto()
    private_path, public_path = Path(private_path), Path(public_path)
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"{path} exists: a key is never overwritten (move it away first)")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public = key.public_key()
    public_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_id(_raw(public))


def _raw(public) -> bytes:
    serialization, _ = _crypto()
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_private(path: str | Path):
    """The Ed25519 private key in ``path`` (PEM); refused when others may read the file."""
    serialization, ed25519 = _crypto()
    path = Path(path)
    try:
        data, mode = path.read_bytes(), path.stat().st_mode
    except OSError as exc:
        raise DataError(f"cannot read the private key {path}: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise ConfigError(f"the private key {path} can be read by others (mode {mode & 0o777:o}): chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key (make one with drtrt validate keygen)")
    return key


def load_public(path: str | Path) -> bytes:
    """The 32 raw bytes of the Ed25519 public key in ``path`` (PEM)."""
    serialization, ed25519 = _crypto()
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the validation key {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not a PEM public key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key (make one with drtrt validate keygen)")
    return _raw(key)


def public_of(private) -> bytes:
    return _raw(private.public_key())


def sign(private, data: Mapping[str, Any]) -> dict[str, str]:
    """The signature block of ``data``: ``{"key_id", "public_key", "value"}`` (base64)."""
    raw = public_of(private)
    return {"key_id": key_id(raw), "public_key": base64.b64encode(raw).decode(),
            "value": base64.b64encode(private.sign(canonical(data))).decode()}


def verifies(raw_public: bytes, data: Mapping[str, Any], signature_b64: str) -> bool:
    """Whether ``signature_b64`` is the signature of ``data`` by the key whose raw bytes are ``raw_public``."""
    from cryptography.exceptions import InvalidSignature

    _, ed25519 = _crypto()
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(raw_public).verify(base64.b64decode(signature_b64, validate=True),
                                                                      canonical(data))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
