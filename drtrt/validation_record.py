"""A model's clinical validation record: which model file a study validated, on whom, when, and what it found.

The record is a JSON file (schema ``drtrt-validation/1``, ``docs/model-trust.md``) beside the model,
``<model file name>.validation.json``, or given with ``--validation FILE`` to the commands that screen.
It counts only for the model file whose sha256 it names (a TensorRT engine: the ONNX it was built
from, as its manifest records); a session keeps the record that counted in its meta (``validation``,
the record's JSON, ``''`` for none) and every page, SR, FHIR resource and the station ask
:func:`validation_of` whether the results are from a validated model. Anything else in that place
(an empty value, the free text older sessions kept, a damaged record) is no record: the
NOT FOR CLINICAL USE banner stays.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from drtrt.config import from_dict, to_dict
from drtrt.errors import ConfigError

SCHEMA = "drtrt-validation/1"
SUFFIX = ".validation.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_log = logging.getLogger("drtrt.validation")     # the CLI prints its warnings on stderr


@dataclass(frozen=True)
class Estimate:
    """A proportion the study measured (0-1) and the lower bound of its two-sided 95 % confidence interval."""

    value: float
    ci95_low: float


@dataclass(frozen=True)
class ValidationRecord:
    """What one clinical validation study established about one model file.

    model_sha256: sha256 of the exact model file validated. population: who was screened (e.g.
    "adults with diabetes, Region X primary care"). date: ISO date the study ended. study: its short
    name or ID. sensitivity / specificity (referable DR, per patient) and imageability (share of
    patients the model could grade): each an :class:`Estimate`. n_patients: patients in the study;
    n_referable: of them, with referable DR by the reference standard.
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

    def __post_init__(self) -> None:
        if self.schema != SCHEMA:
            raise ConfigError(f"validation record field 'schema' must be {SCHEMA}, found {self.schema!r}")
        if not _SHA256.match(self.model_sha256):
            raise ConfigError("validation record field 'model_sha256' must be the 64 lower-case hex digits of the "
                              f"model file's sha256, found {self.model_sha256!r}")
        for name in ("population", "study"):
            if not getattr(self, name).strip():
                raise ConfigError(f"validation record field '{name}' is empty")
        try:
            ended = dt.date.fromisoformat(self.date)
        except ValueError:
            ended = None
        if ended is None or len(self.date) != 10:
            raise ConfigError(f"validation record field 'date' must be an ISO date (YYYY-MM-DD), found {self.date!r}")
        for name in ("sensitivity", "specificity", "imageability"):
            figure = getattr(self, name)
            for part in ("value", "ci95_low"):
                if not 0.0 <= getattr(figure, part) <= 1.0:
                    raise ConfigError(f"validation record field '{name}.{part}' must be a proportion in [0, 1], "
                                      f"found {getattr(figure, part)}")
            if figure.ci95_low > figure.value:
                raise ConfigError(f"validation record field '{name}.ci95_low' ({figure.ci95_low}) is above its "
                                  f"value ({figure.value})")
        if self.n_patients < 1:
            raise ConfigError(f"validation record field 'n_patients' must be at least 1, found {self.n_patients}")
        if not 0 <= self.n_referable <= self.n_patients:
            raise ConfigError(f"validation record field 'n_referable' must be in [0, n_patients = {self.n_patients}],"
                              f" found {self.n_referable}")

    def to_json(self, indent: int | None = None) -> str:
        data = to_dict(self)
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
        if data.get("schema") != SCHEMA:
            raise ConfigError(f"validation record field 'schema' must be {SCHEMA}, found {data.get('schema')!r}")
        required = [n for n in cls.__dataclass_fields__ if n != "schema" and n not in data]
        if required:
            raise ConfigError(f"validation record field '{required[0]}' is missing")
        for name in ("sensitivity", "specificity", "imageability"):
            missing = [p for p in ("value", "ci95_low") if isinstance(data[name], dict) and p not in data[name]]
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

    @property
    def statement(self) -> str:
        """The one line every output carries for a validated model."""
        return (f"validated clinical model: study {self.study}, {self.population}, ended {self.date}; "
                f"model sha256 {self.model_sha256[:12]}")


def validation_of(meta: Mapping[str, str]) -> ValidationRecord | None:
    """The validation record a session keeps (store meta ``validation``), or None: empty, the free text
    older sessions kept, or anything else that is not a whole record."""
    try:
        return ValidationRecord.from_json(meta.get("validation") or "")
    except ConfigError:
        return None


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


def check_validation(record: ValidationRecord, model_sha256: str, where: str) -> str | None:
    """Why ``record`` (read from ``where``) does not count for the model whose identity is ``model_sha256``
    (None: it counts)."""
    if record.model_sha256 != model_sha256:
        return (f"validation record {where} ignored: it is for model {record.model_sha256[:12]}…, this model is "
                f"{model_sha256[:12]}… — results stay NOT FOR CLINICAL USE")
    return None


def load_validation(model: str | Path, given: str | Path | None, model_sha256: str) -> ValidationRecord | None:
    """The validation record that counts for ``model`` (whose identity is ``model_sha256``): the file
    ``given`` (``--validation``) or else the one beside the model. One that was found and does not count
    is ignored with a one-line warning saying why (logger ``drtrt.validation``: the CLI prints it). A
    ``given`` file that cannot be read or is not a whole record is a :class:`ConfigError`; a damaged one
    beside the model is only ignored."""
    if given is not None:
        path = Path(given)
        record = read_validation(path)
    else:
        path = beside(model)
        if not path.is_file():
            return None
        try:
            record = read_validation(path)
        except ConfigError as exc:
            _log.warning(f"{exc}; ignored — results stay NOT FOR CLINICAL USE")
            return None
    why = check_validation(record, model_sha256, path.name)
    if why:
        _log.warning(why)
        return None
    return record
