"""What a drtrt model says about itself: its :class:`ModelInfo`, stored as ONNX ``metadata_props``.

Export writes these keys; the runtime reads them back through ONNX Runtime's
``custom_metadata_map`` (no ``onnx`` package needed on the device); a checkpoint and an
engine manifest carry the same keys. Preprocessing and the task vocabulary travel with the
model, so the runtime can never preprocess or name classes differently from training.

The accuracy check travels the same way: ``drtrt.gate`` holds the verdict of the check of this
model against its reference (:func:`gate_record`): the FP32 export against PyTorch, an FP16 or INT8
model against its FP32 source. :func:`gate_status` reads it, and every command that screens, serves
or bundles a model refuses one whose check failed or never ran (:func:`require_checked`) unless told
``--allow-unchecked-model``. A model made before drtrt recorded the check has no key: "never checked".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from dataclasses import dataclass

from drtrt.errors import ArtefactError, DrtrtError, GateError
from drtrt.preprocess import PreprocessSpec
from drtrt.task import TaskSpec

SCHEMA = "drtrt-model/2"
_LEGACY_SCHEMA = "drtrt-model/1"   # grade and lesion names as two keys, no drtrt.task
_KNOWN = ("schema", "preprocess", "task", "precision", "checkpoint_sha256", "model_config")
_LEGACY_KEYS = ("grade_names", "lesion_names")


@dataclass(frozen=True)
class ModelInfo:
    """The metadata every drtrt model carries.

    preprocess: how images become the input tensor. task: grade and lesion names, tensor names.
    precision: fp32 | fp16 | int8. checkpoint_sha256 / model_config: where the weights came from.
    extra: further ``drtrt.*`` keys (calibration provenance, parity thresholds, …), sorted.
    """

    preprocess: PreprocessSpec
    task: TaskSpec = TaskSpec()
    precision: str = "fp32"
    checkpoint_sha256: str = ""
    model_config: str = "{}"
    extra: tuple[tuple[str, str], ...] = ()

    def to_metadata(self) -> dict[str, str]:
        meta = {
            "drtrt.schema": SCHEMA,
            "drtrt.preprocess": json.dumps(self.preprocess.to_dict(), sort_keys=True),
            "drtrt.task": json.dumps(self.task.to_dict(), sort_keys=True),
            "drtrt.precision": self.precision,
            "drtrt.checkpoint_sha256": self.checkpoint_sha256,
            "drtrt.model_config": self.model_config,
        }
        meta.update({f"drtrt.{k}": v for k, v in self.extra})
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str = "model") -> ModelInfo:
        schema = meta.get("drtrt.schema")
        if schema not in (SCHEMA, _LEGACY_SCHEMA):
            raise ArtefactError(f"{source} carries no drtrt metadata (schema {SCHEMA}); "
                                "export it with `drtrt export` so preprocessing travels with it")
        try:
            if schema == SCHEMA:
                task = TaskSpec.from_dict(json.loads(meta["drtrt.task"]))
            else:
                lesions = json.loads(meta["drtrt.lesion_names"])[1:]
                default = TaskSpec()
                long = tuple(default.long_name(c) if c in default.lesion_codes else c for c in lesions)
                task = TaskSpec(grade_names=tuple(json.loads(meta["drtrt.grade_names"])),
                                lesion_codes=tuple(lesions), lesion_long_names=long)
            skip = _KNOWN + (_LEGACY_KEYS if schema == _LEGACY_SCHEMA else ())
            return cls(
                preprocess=PreprocessSpec.from_dict(json.loads(meta["drtrt.preprocess"])),
                task=task,
                precision=meta.get("drtrt.precision", "fp32"),
                checkpoint_sha256=meta.get("drtrt.checkpoint_sha256", ""),
                model_config=meta.get("drtrt.model_config", "{}"),
                extra=tuple(sorted((k[6:], v) for k, v in meta.items()
                                   if k.startswith("drtrt.") and k[6:] not in skip)),
            )
        except (KeyError, ValueError, DrtrtError) as exc:
            raise ArtefactError(f"{source} has damaged drtrt metadata ({exc})") from None

    def derive(self, precision: str, **extra: str) -> ModelInfo:
        """This info with a new precision and extra keys added (or replaced); everything else copied
        but the accuracy check (``gate``): a derived model is another model, and the check of the model
        it came from says nothing about it — it has one only when ``extra`` gives one."""
        merged = {k: v for k, v in self.extra if k != GATE_KEY}
        merged.update(extra)
        return dataclasses.replace(self, precision=precision, extra=tuple(sorted(merged.items())))


# -- the accuracy check against the reference ------------------------------------------------------------

GATE_KEY = "gate"
"""``drtrt.gate``: JSON {"status", "against", "reference_sha256", "checks", "date"} (:func:`gate_record`)."""
GATE_STATUSES = ("passed", "failed", "unchecked")
NEVER_CHECKED = "never_checked"
"""The status of a model without ``drtrt.gate`` (made before drtrt recorded the check)."""
ALLOW_FLAG = "--allow-unchecked-model"


def gate_record(status: str, against: str, reference_sha256: str = "", checks: str = "",
                date: str | None = None, **more: object) -> str:
    """The ``drtrt.gate`` value: ``status`` (passed | failed | unchecked) of the check against ``against``
    ("pytorch" for the FP32 export, "fp32" for a converted model), the reference's sha256, one line of
    what was checked (figures and limits), the UTC date, and ``more`` (e.g. ``enforced``)."""
    if status not in GATE_STATUSES:
        raise ValueError(f"gate status {status!r}; expected one of {', '.join(GATE_STATUSES)}")
    date = date or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return json.dumps({"status": status, "against": against, "reference_sha256": reference_sha256,
                       "checks": checks, "date": date, **more}, sort_keys=True)


@dataclass(frozen=True)
class GateStatus:
    """What a model's ``drtrt.gate`` says. status: passed | failed | unchecked | never_checked.
    reason: one line for a person ("failed its accuracy check against its FP32 reference (...)")."""

    status: str
    reason: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, str]:
        return {"status": self.status, "reason": self.reason}

    def notes(self, source: str) -> list[str]:
        """What to say when ``source`` is used anyway (``--allow-unchecked-model``): nothing when it passed."""
        return [] if self.passed else [f"{source} {self.reason}; used anyway (--allow-unchecked-model): every "
                                       "report says so"]


_REFERENCES = {"pytorch": "its PyTorch checkpoint", "fp32": "its FP32 reference"}


def gate_status(info: ModelInfo) -> GateStatus:
    """The accuracy check ``info``'s model carries (see :func:`gate_record`), as a status and one line."""
    text = dict(info.extra).get(GATE_KEY)
    if text is None:
        return GateStatus(NEVER_CHECKED, "was never checked against its reference (it carries no record of an "
                                         "accuracy check: made before drtrt recorded one)")
    try:
        record = json.loads(text)
        status, against = record["status"], _REFERENCES.get(record.get("against"), "its reference")
        checks, date = str(record.get("checks") or "").strip(), str(record.get("date") or "")[:10]
    except (ValueError, KeyError, TypeError, AttributeError):
        return GateStatus("unchecked", "carries a damaged accuracy-check record (drtrt.gate), so it counts as "
                                       "never checked against its reference")
    detail = f" ({checks}{', ' + date if date else ''})" if checks else (f" ({date})" if date else "")
    if status == "passed":
        return GateStatus("passed", f"passed its accuracy check against {against}{detail}")
    if status == "failed":
        return GateStatus("failed", f"FAILED its accuracy check against {against}{detail}")
    return GateStatus("unchecked", f"was not checked against {against}{detail}")


def require_checked(info: ModelInfo, source: str, allow: bool, what: str = "screening with it") -> GateStatus:
    """``info``'s :func:`gate_status`; a one-line :class:`GateError` when its check failed or never ran,
    unless ``allow`` (the caller's ``--allow-unchecked-model``: it must then say so on every result)."""
    status = gate_status(info)
    if status.passed or allow:
        return status
    raise GateError(f"{source} {status.reason}; {what} is refused: use a model that passed its check (the FP32 "
                    "model of drtrt export, or drtrt calibrate / fp16 with held-out images), or pass "
                    f"{ALLOW_FLAG} to use it anyway, and every result will say so")


# -- the grade head's calibration (``drtrt.calibration``) -------------------------------------------------
CALIBRATION_KEY = "calibration"


@dataclass(frozen=True)
class GradeCalibration:
    """Temperature scaling of the grade logits, fitted on held-out data at the end of training
    (:mod:`drtrt.train.temperature`): probabilities are softmax(logits / temperature). ece_before /
    ece_after: expected calibration error (top label, ``bins`` equal-width bins) of the raw and the
    scaled probabilities on the ``n`` graded images of ``split``, the set T was fitted on."""

    temperature: float
    ece_before: float
    ece_after: float
    n: int
    bins: int = 15
    split: str = "validation"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a positive number, found {self.temperature}")
        for name in ("ece_before", "ece_after"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], found {getattr(self, name)}")
        if self.n < 1 or self.bins < 1:
            raise ValueError(f"n and bins must be at least 1, found {self.n} and {self.bins}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GradeCalibration:
        from drtrt.config import from_dict

        return from_dict(cls, json.loads(text))


def grade_calibration(info: ModelInfo, source: str = "model") -> GradeCalibration | None:
    """The model's grade calibration (``drtrt.calibration``), None when it has none; damaged: ArtefactError."""
    text = dict(info.extra).get(CALIBRATION_KEY)
    if not text:
        return None
    try:
        return GradeCalibration.from_json(text)
    except (ValueError, DrtrtError) as exc:
        raise ArtefactError(f"{source} has a damaged drtrt.calibration ({exc}); export it again") from None
