"""Checks on reduced-precision models: how closely a candidate (FP16, INT8) follows its FP32
source on held-out images, judged the way the runtime reports results (:func:`agreement`), and
whether a Q/DQ model is what TensorRT accepts (:func:`check_tensorrt_qdq`).

Both models run on ONNX Runtime (CPU by default) on the same tensors from
:func:`drtrt.preprocess.preprocess`. The statistics (grade and referable-DR agreement,
per-lesion Dice/IoU of the candidate's masks against the FP32 masks inside the field of view,
|Δ| per output) come from :class:`drtrt.verify.compare.AgreementAccumulator`, the same code
``drtrt parity`` judges with, so both commands report the same figures for the same images.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drtrt import LESION_NAMES
from drtrt.errors import ArtefactError, ConfigError, DrtrtError
from drtrt.idrid import IdridSample
from drtrt.manifest import INPUT_NAME
from drtrt.preprocess import preprocess
from drtrt.runtime.base import Runner
from drtrt.runtime.ort import OrtRunner
from drtrt.verify.compare import AgreementAccumulator

LESIONS = LESION_NAMES[1:]


class GateError(DrtrtError):
    """A reduced-precision model missed the agreement gate (the CLI exits 1 with this message)."""


@dataclass(frozen=True)
class AgreementReport:
    """Candidate vs FP32 on ``n_images`` held-out images.

    grade_agreement / referable_agreement: share of images with the same argmax grade / the
    same referable-DR verdict (grade >= 2); None when the models have no grade output.
    lesion_dice / lesion_iou: per lesion code (EX, SE, MA, HE), the candidate's label map
    against the FP32 one, pixels pooled over images; NaN for a lesion neither model finds.
    mean_dice / mean_iou: over the lesions either model finds; NaN when neither finds any
    (the masks then agree exactly). max_abs_delta / mean_abs_delta: per output, in logits.
    """

    n_images: int
    grade_agreement: float | None
    referable_agreement: float | None
    lesion_dice: dict[str, float]
    lesion_iou: dict[str, float]
    mean_dice: float
    mean_iou: float
    pixel_agreement: float | None
    max_abs_delta: dict[str, float]
    mean_abs_delta: dict[str, float]
    images: tuple[str, ...] = field(default=(), repr=False)

    def failures(self, min_agreement: float = 0.0, min_dice: float = 0.0) -> list[str]:
        """Why the gate fails (empty when it passes). An undefined mean Dice (no lesion in
        either model's masks) counts as agreement; so does a model without a grade output."""
        out = []
        if self.n_images == 0:
            out.append("no held-out images were compared")
        if self.grade_agreement is not None and self.grade_agreement < min_agreement:
            out.append(f"grade agreement {self.grade_agreement:.1%} < {min_agreement:.1%}")
        if not math.isnan(self.mean_dice) and self.mean_dice < min_dice:
            out.append(f"mean lesion Dice {self.mean_dice:.3f} < {min_dice:.3f}")
        return out

    def passed(self, min_agreement: float = 0.0, min_dice: float = 0.0) -> bool:
        return not self.failures(min_agreement, min_dice)

    def summary(self) -> str:
        """One line: agreement, Dice per lesion and the largest logit differences."""
        parts = [f"{self.n_images} held-out images"]
        if self.grade_agreement is not None:
            parts.append(f"grade agreement {self.grade_agreement:.1%}, referable {self.referable_agreement:.1%}")
        dice = ", ".join(f"{k} {_fmt(v)}" for k, v in self.lesion_dice.items())
        parts.append(f"lesion Dice vs FP32 {_fmt(self.mean_dice)} ({dice})")
        parts.append("max |Δ| " + ", ".join(f"{k} {v:.3g}" for k, v in self.max_abs_delta.items()))
        return "; ".join(parts)

    def to_dict(self) -> dict:
        clean = lambda v: None if isinstance(v, float) and math.isnan(v) else v  # noqa: E731 - JSON has no NaN
        return {"n_images": self.n_images, "grade_agreement": self.grade_agreement,
                "referable_agreement": self.referable_agreement,
                "lesion_dice": {k: clean(v) for k, v in self.lesion_dice.items()},
                "lesion_iou": {k: clean(v) for k, v in self.lesion_iou.items()},
                "mean_dice": clean(self.mean_dice), "mean_iou": clean(self.mean_iou),
                "pixel_agreement": self.pixel_agreement, "max_abs_delta": self.max_abs_delta,
                "mean_abs_delta": self.mean_abs_delta, "images": list(self.images)}


def _fmt(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.3f}"


def _image_path(sample: IdridSample | str | os.PathLike) -> Path:
    return sample.image if isinstance(sample, IdridSample) else Path(sample)


def _runner(model: str | os.PathLike | Runner, threads: int | None) -> tuple[Runner, bool]:
    if isinstance(model, Runner):
        return model, False
    return OrtRunner(model, providers=("cpu",), threads=threads), True


def agreement(fp32_model: str | os.PathLike | Runner, candidate_model: str | os.PathLike | Runner,
              samples: Sequence[IdridSample | str | os.PathLike], batch_size: int = 4, threads: int | None = None,
              on_progress: Callable[[int, int], None] | None = None) -> AgreementReport:
    """Compare ``candidate_model`` with ``fp32_model`` on ``samples`` (IDRiD samples or image paths).

    Model paths open as :class:`~drtrt.runtime.ort.OrtRunner` on the CPU provider (``threads``
    intra-op threads, None = ONNX Runtime's default); runners passed in must be activated by
    the caller. Images are preprocessed once with the FP32 model's recorded spec; the
    candidate must record the same spec (it is derived from that model).

    Raises:
        ArtefactError: the two models preprocess differently or their outputs do not match.
        ImageError: a held-out image cannot be read.
    """
    images = [_image_path(s) for s in samples]
    ref, own_ref = _runner(fp32_model, threads)
    cand, own_cand = _runner(candidate_model, threads)
    try:
        if own_ref:
            ref.activate()
        if own_cand:
            cand.activate()
        spec = ref.info.preprocess
        if cand.info.preprocess != spec:
            raise ArtefactError(f"{cand.path.name} preprocesses differently from {ref.path.name}; "
                                "compare a model only with the FP32 model it was converted from")
        acc = AgreementAccumulator(keep_worst=0)
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            pres = [preprocess(p, spec) for p in chunk]
            feeds = {INPUT_NAME: np.stack([p.tensor for p in pres])}
            acc.update(ref.infer(feeds), cand.infer(feeds), [p.name for p in chunk],
                       geometries=[p.geometry for p in pres])
            if on_progress:
                on_progress(min(start + batch_size, len(images)), len(images))
    finally:
        if own_ref:
            ref.deactivate()
        if own_cand:
            cand.deactivate()
    result = acc.result()
    lesions = result.lesions or {}
    nan = float("nan")
    return AgreementReport(
        n_images=result.n_images,
        grade_agreement=result.grade_agreement,
        referable_agreement=result.referable_agreement,
        lesion_dice={k: lesions.get(f"dice_{k}", nan) for k in LESIONS} if lesions else {},
        lesion_iou={k: lesions.get(f"iou_{k}", nan) for k in LESIONS} if lesions else {},
        mean_dice=lesions.get("mean_dice", nan),
        mean_iou=lesions.get("mean_iou", nan),
        pixel_agreement=result.pixel_agreement,
        max_abs_delta={k: float(v["max"]) for k, v in result.logits.items()},
        mean_abs_delta={k: float(v["mean"]) for k, v in result.logits.items()},
        images=tuple(str(p) for p in images),
    )


def check_thresholds(min_agreement: float | None, min_dice: float | None) -> None:
    """ConfigError unless each given threshold is a fraction in [0, 1]."""
    for name, value in (("--min-agreement", min_agreement), ("--min-dice", min_dice)):
        if value is not None and not 0 <= value <= 1:
            raise ConfigError(f"{name} must be a fraction between 0 and 1 (e.g. 0.97), found {value}")


def enforce_gate(report: AgreementReport, what: str, min_agreement: float | None,
                 min_dice: float | None = None, hint: str = "") -> None:
    """Raise :class:`GateError` (one line) when ``report`` misses the thresholds given (None = not gated)."""
    if min_agreement is None and min_dice is None:
        return
    check_thresholds(min_agreement, min_dice)
    missed = report.failures(min_agreement or 0.0, min_dice or 0.0)
    if missed:
        raise GateError(f"{what} misses the accuracy gate against FP32 on {report.n_images} held-out images: "
                        f"{'; '.join(missed)}" + (f"; {hint}" if hint else ""))


def check_tensorrt_qdq(proto) -> int:
    """Count of Q/DQ nodes; ArtefactError unless every one is what TensorRT accepts.

    Rules: INT8 data with zero point 0 (symmetric); activation scales per tensor; weight
    (initializer) scales per output channel, axis 0.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    problems, count = [], 0
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        count += 1
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zp is None or zp.data_type != 3 or numpy_helper.to_array(zp).any():   # 3 = INT8
            problems.append(f"{node.name}: zero point must be an INT8 initializer of zeros")
        scale = numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else None
        weight = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if weight is not None and len(weight.dims) > 1:
            if scale is None or scale.ndim != 1 or scale.size != weight.dims[0] or axis != 0:
                problems.append(f"{node.name}: weights must be quantised per output channel (axis 0)")
        elif scale is None or scale.ndim != 0:
            problems.append(f"{node.name}: activation scale must be one constant per tensor")
    if problems:
        raise ArtefactError(f"the Q/DQ model is not what TensorRT accepts: {'; '.join(problems[:3])}"
                            f"{f' (+{len(problems) - 3} more)' if len(problems) > 3 else ''}")
    return count
