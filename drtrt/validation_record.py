"""A model's clinical validation record: which model file a study validated, on whom, when, what it found, and who signed it.

The record is a JSON file (schema ``drtrt-validation/2``, ``docs/model-trust.md``) beside the model,
``<model file name>.validation.json``, or given with ``--validation FILE`` to the commands that screen.
``drtrt validate run`` writes it, signed with the programme's Ed25519 key (:mod:`drtrt.signing`), only
when a registered study cleared every endpoint. It counts only when its signature verifies against the
public key the screening command is configured with (``--validation-key PUB`` or ``DRTRT_VALIDATION_KEY``)
and it names the model file's sha256 (a TensorRT engine: the ONNX it was built from, as its manifest
records). The session keeps the record that counted in its meta (``validation``), the configured key
(``validation_key``, base64) and, when none counted, why (``validation_why``); every page, SR, FHIR
resource and the station ask :func:`validation_of` / :func:`validation_why`. Anything else in that
place (an empty value, the free text older sessions kept, an unsigned ``drtrt-validation/1`` record, a
damaged one) is no record: the NOT FOR CLINICAL USE banner stays, and says why.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from drtrt.config import from_dict, to_dict
from drtrt.errors import ConfigError

SCHEMA = "drtrt-validation/2"          # signed
UNSIGNED_SCHEMA = "drtrt-validation/1"  # before issue 24: read, never counted
SUFFIX = ".validation.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_log = logging.getLogger("drtrt.validation")     # the CLI prints its warnings on stderr

# Why a session has no record: one line each, shown on the banner (the station translates them).
NO_RECORD = "there is no validation record for this model"
UNSIGNED = "the validation record is unsigned"
NO_KEY = "no validation key is configured to check the record"
OTHER_KEY = "the validation record is not signed by the configured key"
OTHER_MODEL = "the validation record is for another model file (its sha256 differs)"
DAMAGED = "the validation record is damaged"
REASONS = (NO_RECORD, UNSIGNED, NO_KEY, OTHER_KEY, OTHER_MODEL, DAMAGED)


@dataclass(frozen=True)
class Estimate:
    """A proportion the study measured (0-1) and the lower bound of its two-sided 95 % confidence interval."""

    value: float
    ci95_low: float


@dataclass(frozen=True)
class Signature:
    """Who signed a record: the key's id and raw public key (base64), and the Ed25519 signature (base64) of the
    record's canonical JSON without this block."""

    key_id: str
    public_key: str
    value: str


@dataclass(frozen=True)
class ValidationRecord:
    """What one clinical validation study established about one model file.

    model_sha256: sha256 of the exact model file validated. population: who was screened (e.g.
    "adults with diabetes, Region X primary care"). date: ISO date the study ended (start: began). study:
    its short name or ID. sensitivity / specificity (referable DR, per patient) and imageability (share of
    patients the model could grade): each an :class:`Estimate`. n_patients: patients in the study;
    n_referable: of them, with referable DR by the reference standard. protocol_sha256: the registered
    protocol's; ci_method: how the intervals were made (beta: exact Clopper-Pearson | wilson).
    signature: None only in an unsigned (``drtrt-validation/1``) record, which never counts.
    """

    model_sha256: str
    population: str
    date: str
    study: str
    sensitivity: Estimate
    specificity: Estimate
    imageability: Estimate
    n_patients: int
    n_referable: int
    schema: str = SCHEMA
    start: str = ""
    protocol_sha256: str = ""
    ci_method: str = ""
    ppv: Estimate | None = None
    npv: Estimate | None = None
    signature: Signature | None = None

    def __post_init__(self) -> None:
        if self.schema not in (SCHEMA, UNSIGNED_SCHEMA):
            raise ConfigError(f"validation record field 'schema' must be {SCHEMA}, found {self.schema!r}")
        if not _SHA256.match(self.model_sha256):
            raise ConfigError("validation record field 'model_sha256' must be the 64 lower-case hex digits of the "
                              f"model file's sha256, found {self.model_sha256!r}")
        for name in ("population", "study"):
            if not getattr(self, name).strip():
                raise ConfigError(f"validation record field '{name}' is empty")
        for name in ("date", "start") if self.schema == SCHEMA else ("date",):
            _iso_date(getattr(self, name), f"validation record field '{name}'")
        for name in ("sensitivity", "specificity", "imageability", "ppv", "npv"):
            figure = getattr(self, name)
            for part in ("value", "ci95_low") if figure is not None else ():
                if not 0.0 <= getattr(figure, part) <= 1.0:
                    raise ConfigError(f"validation record field '{name}.{part}' must be a proportion in [0, 1], "
                                      f"found {getattr(figure, part)}")
            if figure is not None and figure.ci95_low > figure.value:
                raise ConfigError(f"validation record field '{name}.ci95_low' ({figure.ci95_low}) is above its "
                                  f"value ({figure.value})")
        if self.n_patients < 1:
            raise ConfigError(f"validation record field 'n_patients' must be at least 1, found {self.n_patients}")
        if not 0 <= self.n_referable <= self.n_patients:
            raise ConfigError(f"validation record field 'n_referable' must be in [0, n_patients = {self.n_patients}],"
                              f" found {self.n_referable}")
        if self.schema == SCHEMA and not _SHA256.match(self.protocol_sha256):
            raise ConfigError("validation record field 'protocol_sha256' must be 64 lower-case hex digits, found "
                              f"{self.protocol_sha256!r}")
        if self.schema == SCHEMA and self.ci_method not in ("wilson", "exact"):
            raise ConfigError(f"validation record field 'ci_method' must be wilson or exact, found {self.ci_method!r}")
        if self.schema == SCHEMA and self.signature is None:
            raise ConfigError("validation record field 'signature' is missing (drtrt validate run --key signs it)")

    def payload(self) -> dict:
        """What the signature covers: every field but the signature, as the JSON has it."""
        data = json.loads(self.to_json())
        data.pop("signature", None)
        return data

    def to_json(self, indent: int | None = None) -> str:
        data = to_dict(self)
        for name in ("ppv", "npv", "signature"):
            if data[name] is None:
                del data[name]
        if self.schema == UNSIGNED_SCHEMA:
            for name in ("start", "protocol_sha256", "ci_method"):
                del data[name]
        return json.dumps({"schema": data.pop("schema"), **data}, indent=indent)

    @classmethod
    def from_json(cls, text: str) -> ValidationRecord:
        """Parse and check every field; a bad one is one :class:`ConfigError` line naming it."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"validation record is not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"validation record must be a JSON object, found {type(data).__name__}")
        if data.get("schema") not in (SCHEMA, UNSIGNED_SCHEMA):
            raise ConfigError(f"validation record field 'schema' must be {SCHEMA}, found {data.get('schema')!r}")
        optional = {"schema", "ppv", "npv", "signature"} | (
            {"start", "protocol_sha256", "ci_method"} if data["schema"] == UNSIGNED_SCHEMA else set())
        required = [n for n in cls.__dataclass_fields__ if n not in optional and n not in data]
        if required:
            raise ConfigError(f"validation record field '{required[0]}' is missing")
        for name in ("sensitivity", "specificity", "imageability", "ppv", "npv"):
            missing = [p for p in ("value", "ci95_low") if isinstance(data.get(name), dict) and p not in data[name]]
            if missing:
                raise ConfigError(f"validation record field '{name}.{missing[0]}' is missing")
        for name in ("n_patients", "n_referable"):     # a count, not 12.5 (or true)
            if isinstance(data[name], bool) or not isinstance(data[name], int):
                raise ConfigError(f"validation record field '{name}' must be a whole number, found {data[name]!r}")
        try:
            return from_dict(cls, data)
        except ConfigError as exc:
            text = str(exc)
            raise ConfigError(text if text.startswith("validation record") else f"validation record: {text}") from None

    def signed_by(self, raw_public: bytes) -> bool:
        """Whether the record carries a signature by the key whose raw bytes are ``raw_public`` that verifies."""
        from drtrt.signing import verifies

        if self.signature is None or self.signature.public_key != base64.b64encode(raw_public).decode():
            return False
        return verifies(raw_public, self.payload(), self.signature.value)

    @property
    def statement(self) -> str:
        """The one line every output carries for a validated model."""
        return (f"validated clinical model: study {self.study}, {self.population}, ended {self.date}; "
                f"model sha256 {self.model_sha256[:12]}")

    @property
    def figures(self) -> str:
        """The study's figures as every report states them (the lower bound of each 95 % interval)."""
        def one(name: str, e: Estimate) -> str:
            return f"{name} {100 * e.value:.1f}% (95% CI lower bound {100 * e.ci95_low:.1f}%)"
        return "; ".join([one("sensitivity", self.sensitivity), one("specificity", self.specificity),
                          one("imageability", self.imageability)]) + (
            f"; {self.n_patients} patients, {self.n_referable} with referable DR")


def _iso_date(text: str, what: str) -> None:
    try:
        ok = len(text) == 10 and dt.date.fromisoformat(text) is not None
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{what} must be an ISO date (YYYY-MM-DD), found {text!r}")


def _key_bytes(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text or "", validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def validation_status(meta: Mapping[str, str]) -> tuple[ValidationRecord | None, str]:
    """(the record a session keeps, '') or (None, why there is none: one of :data:`REASONS`).

    The record counts when it is whole, signed, and its signature verifies against the key the session
    was configured with (meta ``validation_key``); its model's sha256 was checked when the session opened."""
    text = meta.get("validation") or ""
    if not text.strip():
        return None, meta.get("validation_why") or NO_RECORD
    try:
        record = ValidationRecord.from_json(text)
    except ConfigError:
        return None, NO_RECORD if not text.lstrip().startswith("{") else DAMAGED   # older sessions' free text
    if record.signature is None:
        return None, UNSIGNED
    key = _key_bytes(meta.get("validation_key") or "")
    if key is None:
        return None, NO_KEY
    if not record.signed_by(key):
        return None, OTHER_KEY
    return record, ""


def validation_of(meta: Mapping[str, str]) -> ValidationRecord | None:
    """The validation record a session keeps, when it counts (:func:`validation_status`), or None."""
    return validation_status(meta)[0]


def validation_why(meta: Mapping[str, str]) -> str | None:
    """Why a session's results are not from a validated model (None: they are)."""
    return validation_status(meta)[1] or None


def beside(model: str | Path) -> Path:
    """``model.onnx`` → ``model.onnx.validation.json``."""
    model = Path(model)
    return model.with_name(model.name + SUFFIX)


def read_validation(path: str | Path) -> ValidationRecord:
    """The record in ``path``; a file that cannot be read or is not a whole record is a :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the validation record {path}: {exc.strerror or exc}") from None
    try:
        return ValidationRecord.from_json(text)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def check_validation(record: ValidationRecord, model_sha256: str, where: str,
                     key: bytes | None = None) -> tuple[str, str] | None:
    """(reason, warning line) when ``record`` (read from ``where``) does not count for the model whose identity
    is ``model_sha256`` under the configured public key ``key`` (raw bytes; None: none configured);
    None when it counts."""
    stays = " — results stay NOT FOR CLINICAL USE"
    if record.model_sha256 != model_sha256:
        return OTHER_MODEL, (f"validation record {where} ignored: it is for model {record.model_sha256[:12]}…, this "
                             f"model is {model_sha256[:12]}…{stays}")
    if record.signature is None:
        return UNSIGNED, f"validation record {where} ignored: it is unsigned ({UNSIGNED_SCHEMA}){stays}"
    if key is None:
        return NO_KEY, (f"validation record {where} ignored: no validation key is configured (--validation-key "
                        f"or DRTRT_VALIDATION_KEY){stays}")
    if not record.signed_by(key):
        return OTHER_KEY, (f"validation record {where} ignored: it is signed by key {record.signature.key_id}, not "
                           f"by the configured key, or was changed after signing{stays}")
    return None


def load_validation(model: str | Path, given: str | Path | None, model_sha256: str,
                    key: bytes | None = None) -> tuple[ValidationRecord | None, str]:
    """(the validation record that counts for ``model``, '') or (None, why: one of :data:`REASONS`).

    The record is the file ``given`` (``--validation``) or else the one beside the model; ``model_sha256``
    is the model's identity, ``key`` the configured public key (raw bytes, None: none). One that was found
    and does not count is ignored with a one-line warning saying why (logger ``drtrt.validation``: the CLI
    prints it). A ``given`` file that cannot be read or is not a whole record is a :class:`ConfigError`; a
    damaged one beside the model is only ignored."""
    if given is not None:
        path = Path(given)
        record = read_validation(path)
    else:
        path = beside(model)
        if not path.is_file():
            return None, NO_RECORD
        try:
            record = read_validation(path)
        except ConfigError as exc:
            _log.warning(f"{exc}; ignored — results stay NOT FOR CLINICAL USE")
            return None, DAMAGED
    found = check_validation(record, model_sha256, path.name, key)
    if found:
        _log.warning(found[1])
        return None, found[0]
    return record, ""


def validation_meta(model: str | Path, given: str | Path | None, model_sha256: str,
                    key_file: str | Path | None) -> dict[str, str]:
    """What a session keeps about its model's validation (meta ``validation``, ``validation_why``,
    ``validation_key``, ``validated_sha256``: the identity a record must name, which a study reads back):
    :func:`load_validation` under the public key in ``key_file`` (None: none configured)."""
    from drtrt.signing import load_public

    key = load_public(key_file) if key_file else None
    record, why = load_validation(model, given, model_sha256, key)
    return {"validation": record.to_json() if record else "", "validation_why": why,
            "validation_key": base64.b64encode(key).decode() if key else "", "validated_sha256": model_sha256}
