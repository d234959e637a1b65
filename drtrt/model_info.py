"""What a drtrt model says about itself: its :class:`ModelInfo`, stored as ONNX ``metadata_props``.

Export writes these keys; the runtime reads them back through ONNX Runtime's
``custom_metadata_map`` (no ``onnx`` package needed on the device); a checkpoint and an
engine manifest carry the same keys. Preprocessing and the task vocabulary travel with the
model, so the runtime can never preprocess or name classes differently from training.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from drtrt.errors import ArtefactError, DrtrtError
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
        """This info with a new precision and extra keys added (or replaced); everything else copied."""
        merged = dict(self.extra)
        merged.update(extra)
        return dataclasses.replace(self, precision=precision, extra=tuple(sorted(merged.items())))


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
