"""What a drtrt model says about itself: its :class:`ModelInfo`, stored as ONNX ``metadata_props``.

Export writes these keys; the runtime reads them back through ONNX Runtime's
``custom_metadata_map`` (no ``onnx`` package needed on the device); a checkpoint and an
engine manifest carry the same keys. Preprocessing and the task vocabulary travel with the
model, so the runtime can never preprocess or name classes differently from training.
"""

from __future__ import annotations

import dataclasses
import json
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
