"""Fix-up for an INT8 model that fails the parity gate: keep the most-blamed layers in higher precision.

Loop (``drtrt calibrate --auto-exclude``):

1. quantise with the current exclusion list (first round: only the quantiser's own);
2. judge the INT8 model against its FP32 source with the INT8 parity thresholds on held-out
   images (model-vs-model agreement; their ground truth is not used);
3. if it passes, stop; otherwise compare both models layer by layer
   (:mod:`drtrt.verify.layerwise`), try excluding the ``step`` most-blamed nodes not tried yet,
   keep them if the gate gets closer to passing (else set them aside), and go back to 2;
4. stop with ``passed=False`` and a message that says so after ``max_rounds`` trials, or when
   no untried node adds error any more.

The quantiser is a callable, so the search does not depend on how calibration is done.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from drtrt.errors import ConfigError
from drtrt.verify.golden import ParityItem
from drtrt.verify.layerwise import layer_errors, rank_nodes
from drtrt.verify.parity import compare_runners
from drtrt.verify.thresholds import Check, thresholds_for

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
            raise ConfigError(f"auto-exclude needs step >= 1, max_rounds >= 0, layer_images >= 1; found {self}")


@dataclass
class AutoExcludeResult:
    passed: bool
    model: Path
    excluded: tuple[str, ...]
    rounds: list[dict] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict:
        return {"passed": self.passed, "model": str(self.model), "excluded": list(self.excluded),
                "rounds": self.rounds, "message": self.message}

    def summary(self) -> str:
        return self.message


def _judge(fp32: Path, int8: Path, items: Sequence[ParityItem], overrides: dict[str, str]):
    """The INT8 gate for ``int8`` against ``fp32`` on ``items``: the CandidateReport."""
    from drtrt.runtime.ort import OrtRunner

    unlabelled = [replace(it, grade=None, target=None) for it in items]   # model vs model only
    with OrtRunner(fp32) as ref, OrtRunner(int8) as cand:
        info = cand.info if cand.info.precision == "int8" else replace(cand.info, precision="int8")
        result = compare_runners(ref, [cand], [thresholds_for(info, overrides)], unlabelled, keep_worst=0)
    return result.candidates[0]


def shortfall(checks: Sequence[Check]) -> tuple[int, float]:
    """How far a report is from passing: (failing checks, sum of their relative misses); smaller is better."""
    misses = [abs(c.value - c.limit) / max(abs(c.limit), 1e-12) for c in checks if not c.passed and c.value is not None]
    return sum(not c.passed for c in checks), float(sum(misses))


def auto_exclude(fp32: str | Path, quantise: Quantiser, items: Sequence[ParityItem],
                 cfg: AutoExcludeConfig = AutoExcludeConfig(),
                 log: Callable[[str], None] = lambda msg: None) -> AutoExcludeResult:
    """Quantise, judge, and exclude the most-blamed nodes until the INT8 gate passes (see module doc).

    A trial exclusion is kept only when it brings the report closer to passing
    (:func:`shortfall`); otherwise its nodes are set aside and the next-blamed ones are tried, so
    one mis-ranked node cannot stall the search. ``items`` are preprocessed images (tensors and
    geometry); their ground truth is not used. The candidate is judged with the INT8 thresholds
    whatever its metadata says. The returned model is quantised with the returned exclusion list.
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
        return AutoExcludeResult(True, model, excluded, rounds,
                                 f"INT8 passes the gate with {len(excluded)} node(s) kept in higher precision"
                                 + (f": {', '.join(excluded)}" if excluded else ""))
    worst = report.failures[0]
    return AutoExcludeResult(False, model, excluded, rounds,
                             f"INT8 still fails the gate after {len(rounds)} quantisation(s) with {len(excluded)} "
                             f"node(s) excluded ({worst.name} {worst.value:.4g}, needs {worst.op} {worst.limit:g}); "
                             "calibrate on more images, allow more rounds, or ship the FP16 model")


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
                      log: Callable[[str], None] = lambda msg: None) -> AutoExcludeResult:
    """:func:`auto_exclude` with drtrt's calibration: ``calibrate_int8`` on the same calibration
    set every round, ``exclude`` (default: its own default groups) plus the nodes found here.

    source: a CalibrationSet or a folder (see ``calibrate_int8``). gate_images: held-out
    IdridSamples or image paths the INT8 model is judged on (the calibration images themselves
    would flatter it). Writes ``out`` and the search record ``<stem>.auto-exclude.json``.
    Every round recalibrates (``calibrate_int8`` offers no range cache), so keep ``images`` modest.
    """
    from drtrt.calibration.quantize import DEFAULT_EXCLUDE, calibrate_int8, calibration_set
    from drtrt.calibration.source import RECOMMENDED_IMAGES
    from drtrt.runtime.ort import OrtRunner
    from drtrt.verify.golden import items_from_samples

    base = tuple(DEFAULT_EXCLUDE if exclude is None else exclude)
    calib = calibration_set(source, images or RECOMMENDED_IMAGES, seed)
    with OrtRunner(onnx_in) as fp32:
        spec = fp32.info.preprocess
    items = list(items_from_samples(list(gate_images), spec))

    def quantise(extra: tuple[str, ...]) -> Path:
        return calibrate_int8(onnx_in, out, calib, method, base + extra, images=len(calib), seed=seed).path

    result = auto_exclude(onnx_in, quantise, items, cfg, log)
    write_result(result, Path(out).with_suffix(".auto-exclude.json"))
    return result


def auto_exclude_calibration(cfg, log: Callable[[str], None] = lambda msg: None,
                             search: AutoExcludeConfig = AutoExcludeConfig()) -> AutoExcludeResult:
    """``drtrt calibrate --auto-exclude``: the options of a ``CalibrateConfig``, the held-out images
    ``drtrt calibrate`` gates on, and the INT8 parity thresholds (``--min-agreement`` and
    ``--min-dice``, when given, replace the grade-agreement and lesion-Dice ones)."""
    from drtrt.calibration import held_out_images

    if cfg.data is None and cfg.images_dir is None:
        raise ConfigError("calibration needs images: pass --data ROOT (IDRiD layout) and/or --images-dir DIR")
    calib, held = held_out_images(cfg.data, cfg.images_dir, cfg.holdout, cfg.images, cfg.seed)
    if not held:
        raise ConfigError("--auto-exclude judges on held-out images: pass --data ROOT with a test split, "
                          "or more images in --images-dir, and a --holdout above 0")
    overrides = {"grade_agreement": cfg.min_agreement, "lesion_dice": cfg.min_dice}
    search = replace(search, thresholds=search.thresholds + tuple((k, str(v)) for k, v in overrides.items()
                                                                  if v is not None))
    return auto_exclude_int8(cfg.onnx, cfg.out, calib if calib is not None else cfg.data, held, cfg.method,
                             cfg.exclude, cfg.images, cfg.seed, search, log)


def write_result(result: AutoExcludeResult, path: str | Path) -> Path:
    """The search's record as JSON (rounds, blamed nodes, final exclusion list)."""
    path = Path(path)
    path.write_text(json.dumps(result.to_dict(), indent=2))
    return path
