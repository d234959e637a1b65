"""What a drtrt model file says about itself: ONNX ``metadata_props`` keys and their parsing.

Export writes these keys; the runtime reads them back through ONNX Runtime's
``custom_metadata_map`` (no ``onnx`` package needed on the device). Preprocessing travels
with the model, so the runtime can never preprocess differently from training.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from drtrt import GRADE_NAMES, LESION_NAMES
from drtrt.errors import ArtefactError
from drtrt.preprocess import PreprocessSpec

SCHEMA = "drtrt-model/1"
INPUT_NAME = "image"
OUTPUT_NAMES = ("grade_logits", "lesion_logits")


@dataclass(frozen=True)
class ModelInfo:
    """The metadata every drtrt ONNX model carries."""

    preprocess: PreprocessSpec
    grade_names: tuple[str, ...] = GRADE_NAMES
    lesion_names: tuple[str, ...] = LESION_NAMES
    precision: str = "fp32"
    checkpoint_sha256: str = ""
    model_config: str = "{}"
    extra: tuple[tuple[str, str], ...] = ()

    def to_metadata(self) -> dict[str, str]:
        meta = {
            "drtrt.schema": SCHEMA,
            "drtrt.preprocess": json.dumps(self.preprocess.to_dict(), sort_keys=True),
            "drtrt.grade_names": json.dumps(list(self.grade_names)),
            "drtrt.lesion_names": json.dumps(list(self.lesion_names)),
            "drtrt.precision": self.precision,
            "drtrt.checkpoint_sha256": self.checkpoint_sha256,
            "drtrt.model_config": self.model_config,
        }
        meta.update({f"drtrt.{k}": v for k, v in self.extra})
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str = "model") -> "ModelInfo":
        if meta.get("drtrt.schema") != SCHEMA:
            raise ArtefactError(f"{source} carries no drtrt metadata (schema {SCHEMA}); "
                                "export it with `drtrt export` so preprocessing travels with it")
        known = {"schema", "preprocess", "grade_names", "lesion_names", "precision", "checkpoint_sha256", "model_config"}
        try:
            return cls(
                preprocess=PreprocessSpec.from_dict(json.loads(meta["drtrt.preprocess"])),
                grade_names=tuple(json.loads(meta["drtrt.grade_names"])),
                lesion_names=tuple(json.loads(meta["drtrt.lesion_names"])),
                precision=meta.get("drtrt.precision", "fp32"),
                checkpoint_sha256=meta.get("drtrt.checkpoint_sha256", ""),
                model_config=meta.get("drtrt.model_config", "{}"),
                extra=tuple(sorted((k[6:], v) for k, v in meta.items()
                                   if k.startswith("drtrt.") and k[6:] not in known)),
            )
        except (KeyError, ValueError) as exc:
            raise ArtefactError(f"{source} has damaged drtrt metadata ({exc})") from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
