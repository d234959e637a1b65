"""`drtrt parity`: every candidate against a reference on the same inputs, judged by a gate.

Inputs come either from a data set (preprocessed once with the reference's spec, so every
model sees byte-identical tensors) or from golden files (stored inputs and reference
outputs: no data set, no reference model, no PyTorch needed). Per candidate the report
holds the model-vs-model agreement (:mod:`drtrt.verify.compare`), the task metrics of both
models against ground truth and their drop, and the gate lines with their thresholds.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from drtrt.errors import ArtefactError, ConfigError, DataError
from drtrt.fileio import json_ready
from drtrt.preprocess import PreprocessSpec
from drtrt.runtime.base import Runner
from drtrt.runtime.inference import Batch, BatchedInference, split_outputs
from drtrt.runtime.registry import is_model_url, load_runner
from drtrt.task import TaskSpec
from drtrt.verify.compare import Agreement, AgreementAccumulator, near_tie_grade
from drtrt.verify.golden import GoldenSet, save_golden
from drtrt.verify.items import ImageItem, items_from_samples
from drtrt.verify.metrics import TaskMetricsAccumulator, metric_deltas
from drtrt.verify.thresholds import Check, ParityThresholds, judge, thresholds_for


@dataclass(frozen=True)
class ParityConfig:
    """What to compare. Either ``reference`` + ``data`` (optionally ``save_golden``) or ``golden``.

    thresholds: overrides applied on top of each candidate's per-precision defaults.
    limit: first N images only (None = the whole split / golden set).
    """

    candidates: tuple[Path, ...] = ()
    reference: Path | None = None
    data: Path | None = None
    split: str = "test"
    golden: Path | None = None
    save_golden: Path | None = None
    thresholds: tuple[tuple[str, str], ...] = ()
    batch_size: int = 4
    limit: int | None = None
    keep_worst: int = 6
    report: Path | None = None

    def __post_init__(self) -> None:
        """Usage errors surface here, before any model is loaded."""
        if self.golden is not None:
            if self.reference is not None or self.data is not None or self.save_golden is not None:
                raise ConfigError("--golden already holds the inputs and the reference outputs; "
                                  "do not combine it with --reference, --data or --save-golden")
            if not self.candidates:
                raise ConfigError("--golden needs at least one --candidate to check")
        else:
            if self.reference is None or self.data is None:
                raise ConfigError("parity needs --reference MODEL and --data ROOT "
                                  "(or --golden DIR written by --save-golden)")
            if not self.candidates and self.save_golden is None:
                raise ConfigError("nothing to do: give at least one --candidate, or --save-golden DIR")
        if self.batch_size < 1 or (self.limit is not None and self.limit < 1):
            raise ConfigError(f"--batch-size and --limit must be >= 1, found {self.batch_size} and {self.limit}")
        ParityThresholds().override(dict(self.thresholds))   # unknown keys and bad values fail now
        missing = [str(p) for p in (self.reference, *self.candidates)
                   if p is not None and not is_model_url(p) and not Path(p).is_file()]
        if missing:
            raise ArtefactError(f"model file not found: {', '.join(missing)}")


@dataclass
class CandidateReport:
    model: str
    backend: str
    precision: str
    sha256: str
    thresholds: ParityThresholds
    agreement: Agreement
    metrics: dict
    deltas: dict
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict:
        return {"model": self.model, "backend": self.backend, "precision": self.precision, "sha256": self.sha256,
                "passed": self.passed, "thresholds": self.thresholds.to_dict(), "agreement": self.agreement.to_dict(),
                "metrics": self.metrics, "metric_deltas": self.deltas, "checks": [c.to_dict() for c in self.checks]}


@dataclass
class ParityResult:
    reference: dict
    source: dict
    reference_metrics: dict
    task: TaskSpec
    candidates: list[CandidateReport] = field(default_factory=list)
    golden_written: Path | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.candidates)

    def to_dict(self) -> dict:
        return json_ready({"passed": self.passed, "reference": self.reference, "source": self.source,
                           "reference_metrics": self.reference_metrics,
                           "golden_written": str(self.golden_written) if self.golden_written else None,
                           "candidates": [c.to_dict() for c in self.candidates]})


@dataclass
class _Source:
    """Where the inputs come from: the reference runner (None for golden files) and the items."""

    ref: Runner | None
    items: Iterable[ImageItem]
    total: int
    spec: PreprocessSpec
    task: TaskSpec
    reference: dict
    where: dict


def _open_source(cfg: ParityConfig) -> _Source:
    if cfg.golden is not None:
        golden = GoldenSet(cfg.golden)
        return _Source(None, golden.items(cfg.limit), min(len(golden), cfg.limit or len(golden)), golden.spec,
                       golden.task, {**golden.index["reference"], "model": golden.index["reference"]["file"]},
                       {"golden": str(cfg.golden)})
    from drtrt.data.idrid import read_idrid

    ref = load_runner(cfg.reference)
    try:
        samples = read_idrid(cfg.data).select(split=None if cfg.split == "all" else cfg.split)[:cfg.limit]
    except BaseException:
        ref.deactivate()
        raise
    spec, task = ref.info.preprocess, ref.info.task
    return _Source(ref, items_from_samples(samples, spec, task), len(samples), spec, task,
                   {"model": str(cfg.reference), "sha256": ref.model_sha256(), "backend": ref.backend,
                    "precision": ref.info.precision}, {"data": str(cfg.data), "split": cfg.split})


def run_parity(cfg: ParityConfig, on_progress: Callable[[int, int], None] | None = None) -> ParityResult:
    """Compare every candidate with the reference; write golden files / JSON / HTML when asked.

    With ``save_golden`` the golden files are written first and the comparison then reads them
    back, so the files a device will use are exercised before they leave the workstation.
    """
    src = _open_source(cfg)
    runners: list[Runner] = [src.ref] if src.ref is not None else []
    try:
        if src.total == 0:
            raise DataError(f"no images to compare in {cfg.golden or cfg.data} (split {cfg.split!r})")
        cands, thresholds = [], []
        for path in cfg.candidates:
            runner = load_runner(path)
            runners.append(runner)
            if runner.info.preprocess != src.spec:
                raise ConfigError(f"{path} preprocesses differently from the reference "
                                  f"({runner.info.preprocess.differences(src.spec)}); parity needs identical "
                                  "inputs: compare models exported from one training run")
            cands.append(runner)
            thresholds.append(thresholds_for(runner.info, dict(cfg.thresholds)))
        golden_written, ref, items = None, src.ref, src.items
        if cfg.save_golden is not None:
            golden_written = save_golden(cfg.save_golden, src.ref, items, cfg.batch_size, src.where)
            ref, items = None, GoldenSet(cfg.save_golden).items()
            src.where = {**src.where, "golden": str(cfg.save_golden)}
        result = compare_runners(ref, cands, thresholds, items, src.task, cfg.batch_size, cfg.keep_worst, src.total,
                                 on_progress)
    finally:
        for runner in runners:
            runner.deactivate()
    for path, runner, report in zip(cfg.candidates, cands, result.candidates):
        if runner.backend == "trt":
            _record_engine_check(Path(path), report, src.reference)
    result.reference, result.source = src.reference, {**src.where, "n_images": src.total}
    result.golden_written = golden_written
    if cfg.report is not None:

        from drtrt.verify.parity_report import write_html

        write_html(result, cfg.report)
    return result


def _record_engine_check(engine: Path, report: CandidateReport, reference: dict) -> None:
    """Parity's verdict on an engine, in its manifest (``drtrt.gate``): a failure always; a pass where the
    engine had no verdict of its own or an "unchecked" one (an FP16 engine TensorRT made of an FP32 ONNX),
    never over its ONNX's failed gate, which judged more images than a golden set usually holds."""
    from drtrt.model_info import ModelInfo, gate_record, gate_status
    from drtrt.runtime.backends.trt_manifest import read_engine_manifest, record_engine_gate

    if report.passed and gate_status(ModelInfo.from_metadata(read_engine_manifest(engine).metadata)).status in (
            "passed", "failed"):
        return
    figures = "; ".join(f"{c.name} {'n/a' if c.value is None else f'{c.value:.4g}'} (needs {c.op} {c.limit:g})"
                        for c in report.failures) or "every check passed"
    against = "pytorch" if str(reference.get("model", "")).endswith(".pt") else reference.get("precision", "fp32")
    record_engine_gate(engine, gate_record("passed" if report.passed else "failed", against,
                                           str(reference.get("sha256", "")),
                                           f"drtrt parity on {report.agreement.n_images} images: {figures}",
                                           images=report.agreement.n_images))


def compare_runners(ref: Runner | None, cands: Sequence[Runner], thresholds: Sequence[ParityThresholds],
                    items: Iterable[ImageItem], task: TaskSpec, batch_size: int = 4, keep_worst: int = 6,
                    total: int = 0, on_progress: Callable[[int, int], None] | None = None) -> ParityResult:
    """The reference's outputs (``ref`` run, or stored in the items) and every candidate's on the same
    tensors, through one :class:`~drtrt.runtime.inference.BatchedInference`; one report per
    candidate, judged by its ``thresholds``.

    The result's ``reference`` and ``source`` are left empty for the caller to fill in.
    """
    runners = ([ref] if ref is not None else []) + list(cands)
    accs = [AgreementAccumulator(task, keep_worst=keep_worst) for _ in cands]
    ref_metrics = TaskMetricsAccumulator(task)
    cand_metrics = [TaskMetricsAccumulator(task) for _ in cands]
    # The grade metrics the gate compares: the candidate's, except on images whose reference grade is a
    # near-tie (the reference's own coin toss), where the candidate is taken to say what the reference
    # says. One flip there would otherwise cost a point of accuracy (or several of macro-F1) on 100 images.
    cand_decided = [TaskMetricsAccumulator(task) for _ in cands]
    loop = BatchedInference(runners, batch_size) if runners else None
    chunks = loop(items) if loop else (Batch(chunk, [], []) for chunk in _chunks(items, batch_size))
    done = 0
    for batch in chunks:
        outs = batch.outputs[1:] if ref is not None else batch.outputs
        ref_out = batch.outputs[0] if ref is not None else {
            k: np.stack([it.reference[k] for it in batch.items]) for k in batch.items[0].reference}
        n = len(batch.items)
        ref_images = list(split_outputs(ref_out, n))
        for i, (item, ref_image) in enumerate(zip(batch.items, ref_images)):
            ref_metrics.update(done + i, ref_image, item.grade, item.target)
        for acc_m, acc_d, out in zip(cand_metrics, cand_decided, outs):
            for i, (item, image) in enumerate(zip(batch.items, split_outputs(out, n))):
                acc_m.update(done + i, image, item.grade, item.target)
                if task.grade_output in image and item.grade is not None:
                    acc_d.update(done + i, {task.grade_output: gated_grade(ref_images[i], image, task)}, item.grade,
                                 None)
        for acc, out in zip(accs, outs):
            acc.update(ref_out, out, [it.name for it in batch.items], [it.geometry for it in batch.items],
                       [it.rgb for it in batch.items])
        done += n
        if on_progress:
            on_progress(done, total)
    # Grade AUC and PR-AUC come from scikit-learn, which a runtime-only install (the device) may lack:
    # the agreement checks still run, and the report says plainly that the metric checks did not.
    have_sklearn = importlib.util.find_spec("sklearn") is not None
    reference_metrics = ref_metrics.result() if have_sklearn else {}
    reports = []
    for runner, limits, acc, acc_m, acc_d in zip(cands, thresholds, accs, cand_metrics, cand_decided):
        agreement, metrics = acc.result(), acc_m.result() if have_sklearn else {}
        deltas = metric_deltas(reference_metrics, {**metrics, **(acc_d.result() if have_sklearn else {})})
        checks = judge(agreement, deltas, limits)
        if not have_sklearn:
            checks.append(Check("task metrics vs ground truth", None, "<=", limits.metric_drop, True,
                                "not computed: scikit-learn is not installed here (pip install scikit-learn)"))
        reports.append(CandidateReport(runner.name if runner.backend == "triton" else str(runner.path),
                                       runner.backend, runner.info.precision, runner.model_sha256(), limits,
                                       agreement, metrics, deltas, checks))
    return ParityResult({}, {}, reference_metrics, task, reports)


def gated_grade(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], task: TaskSpec) -> np.ndarray:
    """The grade output the gate's metric drops count for one image: the candidate's, or the reference's
    where the reference's two most probable grades are within :data:`~drtrt.verify.compare.NEAR_TIE`."""
    key = task.grade_output
    return reference[key] if near_tie_grade(reference[key]) else candidate[key]


def _chunks(items: Iterable[ImageItem], size: int) -> Iterator[list[ImageItem]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
