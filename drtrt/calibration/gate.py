"""The accuracy gate of reduced precision: a candidate (FP16, INT8) against its FP32 source.

Held-out images (the test split of an IDRiD-layout folder, or images set aside from a plain
folder) are preprocessed once and both models run on ONNX Runtime's CPU provider on the same
tensors. The judgement is ``drtrt parity``'s, unchanged: :func:`drtrt.verify.parity.compare_runners`
with the thresholds of the candidate's precision (:func:`drtrt.verify.thresholds.thresholds_for`:
grade agreement >= 97 % for INT8, 99 % for FP16, referable agreement >= 99 %, lesion Dice >= 0.95,
no task metric more than a point down where ground truth exists). So ``drtrt calibrate`` and
``drtrt parity`` pass and fail the same models. A candidate that fails is renamed
``<stem>.rejected.onnx`` (:func:`reject`), so nothing downstream picks it up by mistake, and the
verdict is written into the model's own metadata first (:func:`record`: ``drtrt.gate`` "passed",
"failed", or "unchecked" when there were no held-out images), so a copied or renamed file still says
it; the commands that screen, serve or bundle read it (:func:`drtrt.model_info.require_checked`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from drtrt.calibration.graph import load_onnx, read_info, write_info
from drtrt.calibration.source import CalibrationSet, idrid_samples, select_folder, split_folder
from drtrt.data.idrid import IdridSample
from drtrt.errors import ArtefactError, ConfigError, DataError, GateError
from drtrt.fileio import sha256_file
from drtrt.model_info import GATE_KEY, gate_record
from drtrt.runtime.base import Runner
from drtrt.runtime.backends.ort import OrtRunner
from drtrt.verify.items import ImageItem, items_from_samples
from drtrt.verify.parity import CandidateReport, compare_runners
from drtrt.verify.thresholds import images_needed, thresholds_for

HeldOut = Sequence[IdridSample | Path]


def held_out_images(data: str | os.PathLike | None, images_dir: str | os.PathLike | None, holdout: int,
                    calib_count: int, seed: int = 0) -> tuple[CalibrationSet | None, list[IdridSample | Path]]:
    """(calibration set from ``images_dir`` or None, held-out images for the gate).

    With ``data`` the held-out images are its test split (stratified by grade, with their ground
    truth); otherwise they are set aside from ``images_dir`` so calibration never sees them.
    """
    calib = None
    held: list[IdridSample | Path] = []
    if images_dir is not None and data is None:
        calib, paths = split_folder(images_dir, calib_count, holdout, seed)
        held = list(paths)
    elif images_dir is not None:
        calib = select_folder(images_dir, calib_count, seed)
    if data is not None and holdout > 0:
        try:
            held = list(idrid_samples(data, "test", holdout, seed))
        except DataError as exc:
            raise DataError(f"{exc}; the accuracy gate compares on the test split (pass --holdout 0 to skip it)") from None
    return calib, held


def judge_items(fp32: Runner, candidate: Runner, items: Sequence[ImageItem], overrides: Mapping[str, object],
                batch_size: int = 4, keep_worst: int = 0,
                on_progress: Callable[[int, int], None] | None = None) -> CandidateReport:
    """``candidate`` against ``fp32`` (both active) on preprocessed ``items``, with the parity thresholds
    of the candidate's precision and ``overrides`` on top."""
    thresholds = thresholds_for(candidate.info, overrides)
    result = compare_runners(fp32, [candidate], [thresholds], items, fp32.info.task, batch_size, keep_worst,
                             len(items), on_progress)
    return result.candidates[0]


def judge(fp32: str | os.PathLike, candidate: str | os.PathLike, held: HeldOut, overrides: Mapping[str, object],
          threads: int | None = None, on_progress: Callable[[int, int], None] | None = None) -> CandidateReport:
    """Open both models on ONNX Runtime's CPU provider (``threads`` intra-op threads) and judge the
    candidate on ``held`` (see :func:`judge_items`).

    Raises:
        ArtefactError: the two models preprocess differently. ImageError: a held-out image is unreadable.
    """
    with OrtRunner(fp32, threads=threads) as ref, OrtRunner(candidate, threads=threads) as cand:
        if cand.info.preprocess != ref.info.preprocess:
            raise ArtefactError(f"{cand.path.name} preprocesses differently from {ref.path.name} "
                                f"({cand.info.preprocess.differences(ref.info.preprocess)}); compare a model only "
                                "with the FP32 model it was converted from")
        items = list(items_from_samples(held, ref.info.preprocess, ref.info.task))
        return judge_items(ref, cand, items, overrides, on_progress=on_progress)


def overrides_from(thresholds: Sequence[tuple[str, str]] = (), min_agreement: float | None = None,
                   min_dice: float | None = None) -> dict[str, str]:
    """Gate overrides: ``--threshold KEY=VALUE`` pairs, then the ``--min-agreement`` / ``--min-dice``
    shorthands for ``grade_agreement`` and ``lesion_dice`` (checked against the known keys)."""
    from drtrt.verify.thresholds import ParityThresholds

    merged = dict(thresholds)
    for key, value in (("grade_agreement", min_agreement), ("lesion_dice", min_dice)):
        if value is not None:
            merged[key] = str(value)
    ParityThresholds().override(merged)   # unknown keys and bad values fail now, before any work
    return merged


def too_small(report: CandidateReport) -> str | None:
    """A sentence when the held-out set is too small for the agreement checks to judge: with fewer
    images than :func:`images_needed`, a single flip fails a faithful model, so passing or failing
    says little. None when the set is large enough (or there are no grade outputs)."""
    n, t = report.agreement.n_images, report.thresholds
    if report.agreement.grade_agreement is None:
        return None
    needed = max(images_needed(t.grade_agreement), images_needed(t.referable_agreement))
    if n >= needed:
        return None
    return (f"the gate judged only {n} held-out image(s): one grade or referable flip there costs "
            f"{100 / n:.1f} points, more than the {100 * (1 - t.grade_agreement):g} / "
            f"{100 * (1 - t.referable_agreement):g} allowed, so it cannot tell a faithful model from one that flips "
            f"a patient; judge on at least {needed} images (more test images in --data, or --holdout)")


def summary(report: CandidateReport) -> str:
    """One line: what was compared, the headline figures and the verdict."""
    a = report.agreement
    parts = [f"{a.n_images} held-out images"]
    if a.grade_agreement is not None:
        parts.append(f"grade agreement {a.grade_agreement:.1%}, referable {a.referable_agreement:.1%}")
    if a.lesions:
        dice = a.lesions.get("mean_dice")
        parts.append(f"lesion Dice vs FP32 {'n/a' if dice is None or dice != dice else f'{dice:.3f}'}")
    parts.append("max |Δ| " + ", ".join(f"{k} {v['max']:.3g}" for k, v in a.logits.items()))
    verdict = "PASS" if report.passed else "FAIL: " + "; ".join(_failure(c) for c in report.failures)
    return f"{'; '.join(parts)} — {verdict}"


def _failure(check) -> str:
    value = "n/a" if check.value is None else f"{check.value:.4g}"
    return f"{check.name} {value} (needs {check.op} {check.limit:g})"


def record(path: Path, report: CandidateReport | None, reference: Path, enforced: bool) -> str:
    """Write the gate's verdict on the model ``path`` into its metadata (``drtrt.gate``, against the FP32
    model ``reference``): "passed" / "failed" with :func:`summary`'s figures, "unchecked" without a report
    (no held-out images). ``enforced``: whether a failure stops the command (``--gate``). Returns the status."""
    import onnx

    proto = load_onnx(path)
    info = read_info(proto, str(path))
    if report is None:
        status, checks, more = "unchecked", "no held-out images: not compared with FP32", {}
    else:
        status, checks = ("passed" if report.passed else "failed"), summary(report)
        more = {"images": report.agreement.n_images, "too_small": too_small(report) is not None}
    write_info(proto, info.derive(info.precision, **{GATE_KEY: gate_record(
        status, "fp32", sha256_file(reference), checks, enforced=enforced, **more)}))
    onnx.save(proto, str(path))
    return status


def reject(path: Path) -> Path:
    """Rename a model that failed its gate to ``<stem>.rejected<suffix>``; returns the new path."""
    rejected = path.with_name(f"{path.stem}.rejected{path.suffix}")
    path.replace(rejected)
    return rejected


def enforce(report: CandidateReport | None, path: Path, what: str, hint: str) -> None:
    """:class:`GateError` (the model renamed first, see :func:`reject`) when ``report`` failed."""
    if report is None or report.passed:
        return
    rejected = reject(path)
    raise GateError(f"{what} misses the accuracy gate against FP32 on {report.agreement.n_images} held-out images: "
                    f"{'; '.join(_failure(c) for c in report.failures)}; {hint} (model moved to {rejected})")


def require_held_out(held: HeldOut, why: str) -> None:
    if not held:
        raise ConfigError(f"{why} needs held-out images: pass --data ROOT with a test split, more images in "
                          "--images-dir, or a --holdout above 0")
