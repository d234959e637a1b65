"""Parity thresholds per precision, and the gate that judges an agreement against them.

Defaults (issue 6): grade agreement >= 99 % for FP32/FP16 and >= 97 % for INT8, referable-DR
agreement >= 99 %, mean lesion Dice against the reference >= 0.95 (over the pixels the reference
decides: :mod:`drtrt.verify.compare`), no task metric more than one point (0.01) below the
reference's (the grade metrics counting the reference's grade on images where it is a near-tie:
:func:`drtrt.verify.parity.gated_grade`; a value within float rounding of a limit is on it). FP32 is
also held to max |Δ logit| <= 1e-3 of the reference's largest |logit| (SPEC §8.8: tight elementwise
bounds for FP32; FP16 and INT8 are judged on agreement and task metrics, their elementwise figures
reported only).

Resolution order: the defaults for the candidate's precision (``drtrt.precision`` in its
metadata) -> a JSON object in its ``drtrt.parity_thresholds`` metadata entry, if any ->
explicit overrides (``--threshold key=value``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace

from drtrt.errors import ConfigError
from drtrt.model_info import ModelInfo
from drtrt.verify.compare import NEAR_TIE, Agreement


@dataclass(frozen=True)
class ParityThresholds:
    """Fractions in [0, 1]; ``logit_rel_delta`` None = elementwise |Δ| reported, not gated."""

    grade_agreement: float = 0.99
    referable_agreement: float = 0.99
    lesion_dice: float = 0.95
    metric_drop: float = 0.01
    logit_rel_delta: float | None = None

    def override(self, values: Mapping[str, object]) -> "ParityThresholds":
        """A copy with ``values`` (numbers, numeric strings, or "none" for logit_rel_delta) applied."""
        names = {f.name for f in fields(self)}
        changes = {}
        for key, raw in values.items():
            if key not in names:
                raise ConfigError(f"unknown parity threshold {key!r}; known: {', '.join(sorted(names))}")
            if key == "logit_rel_delta" and (raw is None or str(raw).lower() == "none"):
                changes[key] = None
                continue
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise ConfigError(f"parity threshold {key}={raw!r} is not a number") from None
            upper = math.inf if key == "logit_rel_delta" else 1.0
            if not 0 <= value <= upper:   # also rejects NaN
                raise ConfigError(f"parity threshold {key}={raw!r} must lie in [0, {upper:g}] "
                                  "(agreements and drops are fractions: 0.97 = 97 %)")
            changes[key] = value
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_THRESHOLDS: dict[str, ParityThresholds] = {
    "fp32": ParityThresholds(logit_rel_delta=1e-3),
    "fp16": ParityThresholds(),
    "int8": ParityThresholds(grade_agreement=0.97),
}


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """["grade_agreement=0.98", ...] -> {"grade_agreement": "0.98"}; ConfigError on a malformed pair."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--threshold expects KEY=VALUE (e.g. grade_agreement=0.98), found {pair!r}")
        out[key.strip()] = value.strip()
    return out


def thresholds_for(info: ModelInfo, overrides: Mapping[str, object] | None = None) -> ParityThresholds:
    """The thresholds a candidate with metadata ``info`` is judged by (see the module docstring)."""
    if info.precision not in DEFAULT_THRESHOLDS:
        raise ConfigError(f"model precision {info.precision!r} has no default parity thresholds "
                          f"(known: {', '.join(DEFAULT_THRESHOLDS)}); re-export the model or pass every --threshold")
    thresholds = DEFAULT_THRESHOLDS[info.precision]
    embedded = dict(info.extra).get("parity_thresholds")
    if embedded:
        try:
            thresholds = thresholds.override(json.loads(embedded))
        except (ValueError, AttributeError):
            raise ConfigError(f"the model's drtrt.parity_thresholds metadata is not a JSON object: {embedded!r}") from None
    return thresholds.override(overrides or {})


@dataclass(frozen=True)
class Check:
    """One gate line: ``value`` against ``limit`` (``op`` ">=" or "<="); value None = not measurable."""

    name: str
    value: float | None
    op: str
    limit: float
    passed: bool
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _check(name: str, value: float | None, op: str, limit: float, absent: str) -> Check:
    if value is None or math.isnan(value):
        return Check(name, None, op, limit, True, absent)
    # within float rounding of the limit counts as on it: 0.78 - 0.77 is 0.010000000000000009, and one
    # flip in 100 images (a drop of exactly one point) must not fail a one-point limit
    passed = value >= limit - 1e-9 if op == ">=" else value <= limit + 1e-9
    return Check(name, value, op, limit, passed)


def judge(agreement: Agreement, deltas: Mapping[str, Mapping[str, float]], t: ParityThresholds) -> list[Check]:
    """Every gate line for one candidate; the candidate passes when all do."""
    checks = [Check(f"finite {k}", 0.0 if not s["nonfinite"] else float(s["nonfinite"]), "<=", 0.0,
                    not s["nonfinite"], "" if not s["nonfinite"] else f"{s['nonfinite']} NaN/inf values")
              for k, s in agreement.logits.items()]
    if agreement.grade_agreement is not None:
        grade = _check("grade agreement", agreement.grade_agreement, ">=", t.grade_agreement, "")
        checks.append(replace(grade, note=_flip_note(agreement, t.grade_agreement)) if not grade.passed else grade)
        checks.append(_check("referable agreement", agreement.referable_agreement, ">=", t.referable_agreement, ""))
    if agreement.lesions:
        checks.append(_dice_check(agreement.lesions, t.lesion_dice))
    if t.logit_rel_delta is not None:
        for key, stats in agreement.logits.items():
            checks.append(_check(f"max |Δ| {key} / max |ref|", stats["max_rel"], "<=", t.logit_rel_delta,
                                 "reference output is all zeros"))
    for key, d in deltas.items():
        checks.append(_check(f"{key} drop", d["drop"], "<=", t.metric_drop, "undefined on this set"))
    return checks


def _dice_check(lesions: Mapping[str, float], limit: float) -> Check:
    """Mean lesion Dice over the pixels the reference decides (see :mod:`drtrt.verify.compare`); the
    note gives the Dice over every pixel and the share of lesion pixels left out as near-ties."""
    value = lesions.get("decided_mean_dice", lesions["mean_dice"])
    check = _check("mean lesion Dice vs reference", value, ">=", limit,
                   "no lesion pixels in either model's masks: nothing to disagree on")
    if "near_tie_share" not in lesions or check.value is None:
        return check
    return replace(check, note=f"over the pixels the reference decides (top-two gap >= {NEAR_TIE:g}); "
                               f"{lesions['near_tie_share']:.0%} of lesion pixels are near-ties; "
                               f"over every pixel {lesions['mean_dice']:.3f}")


def images_needed(limit: float) -> int:
    """Images at which one disagreement still clears an agreement ``limit`` (0.97 -> 34, 0.99 -> 100);
    1 where no number helps (a limit of 0 passes anything, a limit of 1 allows no flip at all)."""
    return math.ceil(1 / (1 - limit) - 1e-9) if 0 < limit < 1 else 1


def _flip_note(agreement: Agreement, limit: float) -> str:
    """Why a grade-agreement check failed, in terms a reader can weigh (the gate is unchanged)."""
    flips, n = agreement.grade_flips, sum(map(sum, agreement.confusion or []))
    parts = [f"{len(flips)} flip(s) in {n} images"]
    if flips:
        parts.append(f"{agreement.near_tie_flips} where the reference's top-two grade probabilities are within "
                     f"{NEAR_TIE:g} (a near-tie the reference could not decide)")
    if n and 1 - 1 / n < limit:
        parts.append(f"with {n} images one flip costs {100 / n:.1f} points, more than the {100 * (1 - limit):g} "
                     f"allowed: use at least {images_needed(limit)} images" if limit < 1 else
                     "no flip is allowed")
    return "; ".join(parts)
