"""Temperature scaling of the grade head (Guo et al. 2017), fitted at the end of ``drtrt train``.

One scalar T divides the grade logits; it is chosen to minimise the negative log-likelihood of the
held-out grades (the recipe's validation split, never the training images). T > 0 leaves every
argmax, so grades and referrals are unchanged; only how sure the probability sounds moves.

The fit: :func:`scipy.optimize.minimize_scalar` (bounded Brent) on log T in [log 0.05, log 20].
One scalar with natural bounds needs no gradient or line-search settings, and a held-out set the
model separates perfectly (where the NLL keeps falling as T → 0) ends at the bound instead of
running away, deterministically. The NLL is convex in 1/T, so the minimum in the bracket is the one.

ECE: our own :func:`expected_calibration_error`, top-label, 15 equal-width confidence bins, each
bin's |accuracy - mean confidence| weighted by its share of images (Guo et al.). scikit-learn's
``calibration_curve`` is for one binary class and leaves out empty bins without their weights, so
it does not give this figure.

The result goes into ``best.pt`` as ``calibration`` (JSON) and from there, by ``drtrt export``,
into the ONNX metadata ``drtrt.calibration`` (:class:`~drtrt.model_info.GradeCalibration`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from drtrt.model_info import GradeCalibration

T_BOUNDS = (0.05, 20.0)
ECE_BINS = 15
MIN_IMAGES = 10   # fewer held-out grades: no calibration (how far T strays at small n: docs/model-trust.md)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(logits / T)."""
    logp = log_softmax(np.asarray(logits, np.float64) / temperature)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in :data:`T_BOUNDS` minimising the NLL of ``labels`` ([N] ints) under softmax(``logits`` [N,G] / T)."""
    from scipy.optimize import minimize_scalar

    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.int64)
    low, high = (math.log(b) for b in T_BOUNDS)
    found = minimize_scalar(lambda log_t: nll(logits, labels, math.exp(log_t)), bounds=(low, high),
                            method="bounded", options={"xatol": 1e-6})
    return float(math.exp(found.x))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE of ``probabilities`` [N,G] against ``labels`` [N] over ``bins`` equal-width bins of (0, 1]."""
    probabilities = np.asarray(probabilities, np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)    # bin b holds (b/B, (b+1)/B]
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(np.asarray(logits, np.float64)))


def calibrate(logits: np.ndarray, labels: np.ndarray, split: str = "validation") -> GradeCalibration | None:
    """Fit T on held-out ``logits``/``labels`` and measure ECE before and after (on the same images:
    ``ece_after`` is optimistic, the clinical validation study is the real measure). None when fewer
    than :data:`MIN_IMAGES` graded images are held out."""
    if len(labels) < MIN_IMAGES:
        return None
    temperature = fit_temperature(logits, labels)
    return GradeCalibration(temperature=round(temperature, 6),
                            ece_before=round(expected_calibration_error(softmax(logits), labels), 6),
                            ece_after=round(expected_calibration_error(softmax(np.asarray(logits) / temperature),
                                                                       labels), 6),
                            n=int(len(labels)), bins=ECE_BINS, split=split)


def grade_logits(model, loader, device) -> tuple[np.ndarray, np.ndarray]:
    """The grade logits [N,G] and grades [N] of every image of ``loader`` that has a grade."""
    import torch

    from drtrt.train.losses import GRADE_IGNORE

    task, logits, labels = model.task, [], []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            known = batch["grade"] != GRADE_IGNORE
            if not known.any():
                continue
            out = model(batch["image"].to(device))[task.grade_output].float().cpu()
            logits.append(out[known].numpy())
            labels.append(batch["grade"][known].numpy())
    model.train(was_training)
    if not logits:
        return np.zeros((0, task.n_grades)), np.zeros(0, np.int64)
    return np.concatenate(logits).astype(np.float64), np.concatenate(labels).astype(np.int64)


def calibrate_checkpoint(path: Path, loader, device, log: Callable[[str], None]) -> GradeCalibration | None:
    """Fit the temperature of the checkpoint at ``path`` (``best.pt``) on ``loader`` (the validation split)
    and store it in the file as ``calibration``; None (and the file unchanged) when it cannot be fitted."""
    from drtrt.train.checkpoint import load_checkpoint, model_from_checkpoint, save_atomic

    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt).to(device)
    if model.task.grade_output not in model.output_names:
        return None
    logits, labels = grade_logits(model, loader, device)
    found = calibrate(logits, labels)
    if found is None:
        log(f"grade probabilities not calibrated: {len(labels)} graded validation image(s), at least {MIN_IMAGES} "
            "needed; reports will show no probability")
        return None
    ckpt["calibration"] = found.to_json()
    save_atomic(ckpt, path)
    log(f"grade probabilities calibrated on {found.n} validation images: temperature {found.temperature:.3f}, "
        f"ECE {found.ece_before:.3f} → {found.ece_after:.3f}")
    return found
