"""Fix-up for an INT8 model that fails the parity gate: keep the most-blamed layers in higher precision.

Loop (``drtrt calibrate --auto-exclude``):

1. quantise with the current exclusion list (first round: only the quantiser's own);
2. judge the INT8 model against its FP32 source with the INT8 parity thresholds on held-out
   images (model-vs-model agreement; their ground truth is not used);
3. if it passes, stop; otherwise compare both models layer by layer
   (:mod:`drtrt.calibration.layerwise`), try excluding the ``step`` most-blamed nodes not tried yet,
   keep them if the gate gets closer to passing (else set them aside), and go back to 2;
4. stop with ``passed=False`` and a message that says so after ``max_rounds`` trials, or when
   no untried node adds error any more.

The quantiser is a callable, so the search does not depend on how calibration is done.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from drtrt.calibration.gate import judge_items
from drtrt.calibration.layerwise import layer_errors, rank_nodes
from drtrt.errors import ConfigError
from drtrt.runtime.backends.ort import OrtRunner
from drtrt.verify.items import ImageItem
from drtrt.verify.parity import CandidateReport
from drtrt.verify.thresholds import Check

Quantiser = Callable[[tuple[str, ...]], Path]
"""exclude (node names kept out of quantisation) -> path of the INT8 ONNX model written."""


@dataclass(frozen=True)
class AutoExcludeConfig:
    """step: nodes tried per round; max_rounds: trial quantisations after the first;
    layer_images: images used for the layer-wise comparison (each is one ONNX Runtime run)."""

    step: int = 2
    max_rounds: int = 6
    layer_images: int = 4
    thresholds: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.step < 1 or self.max_rounds < 0 or self.layer_images < 1:
            raise ConfigError(f"auto-exclude needs step >= 1, max_rounds >= 0, layer_images >= 1; found "
                              f"{self.step}, {self.max_rounds}, {self.layer_images}")



@dataclass
class AutoExcludeResult:
    """The search's outcome: the model quantised with ``excluded``, its gate report, every round."""

    passed: bool
    model: Path
    excluded: tuple[str, ...]
    report: CandidateReport
    rounds: list[dict] = field(default_factory=list)
    message: str = ""
    calibration: object | None = None      # the CalibrationResult of the final model (auto_exclude_int8)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "model": str(self.model), "excluded": list(self.excluded),
                "rounds": self.rounds, "message": self.message}

    def summary(self) -> str:
        return self.message


def _judge(fp32: Path, int8: Path, items: Sequence[ImageItem], overrides: dict[str, str]) -> CandidateReport:
    with OrtRunner(fp32) as ref, OrtRunner(int8) as cand:
        return judge_items(ref, cand, items, overrides)


def shortfall(checks: Sequence[Check]) -> tuple[int, float]:
    """How far a report is from passing: (failing checks, sum of their relative misses); smaller is better."""
    misses = [abs(c.value - c.limit) / max(abs(c.limit), 1e-12) for c in checks if not c.passed and c.value is not None]
    return sum(not c.passed for c in checks), float(sum(misses))


def auto_exclude(fp32: str | Path, quantise: Quantiser, items: Sequence[ImageItem],
                 cfg: AutoExcludeConfig = AutoExcludeConfig(),
                 log: Callable[[str], None] = lambda msg: None) -> AutoExcludeResult:
    """Quantise, judge, and exclude the most-blamed nodes until the INT8 gate passes (see module doc).

    A trial exclusion is kept only when it brings the report closer to passing
    (:func:`shortfall`); otherwise its nodes are set aside and the next-blamed ones are tried, so
    one mis-ranked node cannot stall the search. ``items`` are preprocessed held-out images
    (with their ground truth where known, as the gate uses it). The returned model is quantised
    with the returned exclusion list.
    """
    fp32 = Path(fp32)
    if not items:
        raise ConfigError("auto-exclude needs at least one image to judge the INT8 model on")
    overrides = dict(cfg.thresholds)
    excluded: tuple[str, ...] = ()
    set_aside: set[str] = set()
    model = quantise(excluded)
    report = _judge(fp32, model, items, overrides)
    rounds = [_record(0, excluded, report, "first quantisation")]
    log(_line(rounds[-1]))
    for number in range(1, cfg.max_rounds + 1):
        if report.passed:
            break
        inputs = [it.tensor[None] for it in items[:cfg.layer_images]]
        blames = [b for b in rank_nodes(model, layer_errors(fp32, model, inputs))
                  if b.node not in excluded and b.node not in set_aside and b.blame > 0]
        if not blames:
            rounds[-1]["note"] = "no remaining node adds error"
            break
        trial = tuple(b.node for b in blames[:cfg.step])
        trial_model = quantise(excluded + trial)
        trial_report = _judge(fp32, trial_model, items, overrides)
        kept = shortfall(trial_report.checks) < shortfall(report.checks)
        if kept:
            excluded, model, report = excluded + trial, trial_model, trial_report
        else:
            set_aside.update(trial)
        rounds.append(_record(number, excluded + trial, trial_report, ("kept " if kept else "set aside ")
                              + ", ".join(trial), [b.to_dict() for b in blames[:cfg.step]]))
        log(_line(rounds[-1]))
    if rounds[-1]["excluded"] != list(excluded):   # the last file written is a set-aside trial
        model = quantise(excluded)
    if report.passed:
        return AutoExcludeResult(True, model, excluded, report, rounds,
                                 f"INT8 passes the gate with {len(excluded)} node(s) kept in higher precision"
                                 + (f": {', '.join(excluded)}" if excluded else ""))
    worst = report.failures[0]
    return AutoExcludeResult(False, model, excluded, report, rounds,
                             f"INT8 still fails the gate after {len(rounds)} quantisation(s) with {len(excluded)} "
                             f"node(s) excluded ({worst.name} {worst.value:.4g}, needs {worst.op} {worst.limit:g}); "
                             "calibrate on more images (--images), or ship the FP16 model (drtrt fp16)")


def _record(number: int, excluded: tuple[str, ...], report, action: str, blamed: list | None = None) -> dict:
    return {"round": number, "excluded": list(excluded), "action": action, "passed": report.passed,
            "failing": [f"{c.name} {c.value:.4g} (needs {c.op} {c.limit:g})" for c in report.failures],
            "grade_agreement": report.agreement.grade_agreement,
            "mean_lesion_dice": report.agreement.lesions.get("mean_dice"), "blamed": blamed or []}


def _line(record: dict) -> str:
    verdict = "gate passed" if record["passed"] else "failing: " + "; ".join(record["failing"])
    return f"round {record['round']} ({record['action']}): {verdict}"


def auto_exclude_int8(onnx_in: str | Path, out: str | Path, source, gate_images: Sequence,
                      method: str = "minmax", exclude: Sequence[str] | None = None, images: int | None = None,
                      seed: int = 0, cfg: AutoExcludeConfig = AutoExcludeConfig(),
                      log: Callable[[str], None] = lambda msg: None, bias_correction: int = 8) -> AutoExcludeResult:
    """:func:`auto_exclude` with drtrt's calibration: ``calibrate_int8`` on the same calibration
    set every round, ``exclude`` (default: its own default groups) plus the nodes found here.

    source: a CalibrationSet or a folder (see ``calibrate_int8``). gate_images: held-out
    IdridSamples or image paths the INT8 model is judged on (the calibration images themselves
    would flatter it). Writes ``out`` and the search record ``<stem>.auto-exclude.json``; the
    result's ``calibration`` is the final model's CalibrationResult. Every round recalibrates
    (``calibrate_int8`` offers no range cache), so keep ``images`` modest. ``bias_correction``: as in
    ``calibrate_int8``.
    """
    from drtrt.calibration.quantize import DEFAULT_EXCLUDE, calibrate_int8, calibration_set
    from drtrt.calibration.source import RECOMMENDED_IMAGES
    from drtrt.verify.items import items_from_samples

    base = tuple(DEFAULT_EXCLUDE if exclude is None else exclude)
    calib = calibration_set(source, images or RECOMMENDED_IMAGES, seed)
    with OrtRunner(onnx_in) as fp32:
        spec, task = fp32.info.preprocess, fp32.info.task
    items = list(items_from_samples(list(gate_images), spec, task))
    written = {}

    def quantise(extra: tuple[str, ...]) -> Path:
        written["last"] = calibrate_int8(onnx_in, out, calib, method, base + extra, images=len(calib), seed=seed,
                                         bias_correction=bias_correction)
        return written["last"].path

    result = auto_exclude(onnx_in, quantise, items, cfg, log)
    result.calibration = written["last"]
    write_result(result, Path(out).with_suffix(".auto-exclude.json"))
    return result


def write_result(result: AutoExcludeResult, path: str | Path) -> Path:
    """The search's record as JSON (rounds, blamed nodes, final exclusion list)."""
    path = Path(path)
    path.write_text(json.dumps(result.to_dict(), indent=2))
    return path
