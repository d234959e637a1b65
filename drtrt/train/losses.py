"""Losses of thesis §3.3: cross-entropy for the grade, class-balanced cross-entropy for lesions.

Labels that are unknown are ignored, so one loss covers both thesis-style pseudo-labelled
training and partial-label training: grade ``-1`` means "no grade label", lesion label
``255`` means "no mask for this pixel/image".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from drtrt.task import TaskSpec

GRADE_IGNORE = -1
MASK_IGNORE = 255


def class_balanced_weights(target: torch.Tensor, n_classes: int, beta: float) -> torch.Tensor:
    """Cui et al. 2019 weights, (1 - β) / (1 - β^n_c), from the pixel counts n_c in ``target``.

    Counts are pooled over the batch (ignored pixels excluded); classes absent from the batch
    get weight 0 (they contribute no pixels anyway). Weights are scaled to sum to the number
    of present classes, as in the paper.
    """
    valid = target[target != MASK_IGNORE]
    counts = torch.bincount(valid.reshape(-1), minlength=n_classes)[:n_classes].double()
    present = counts > 0
    effective = 1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts)
    weights = torch.where(present, (1.0 - beta) / effective.clamp_min(1e-300), torch.zeros_like(counts))
    if present.any():
        weights = weights * present.sum() / weights.sum()
    return weights.float()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the lesion classes (background excluded), ignored pixels masked."""
    valid = (target != MASK_IGNORE).unsqueeze(1)
    probs = logits.softmax(dim=1) * valid
    onehot = F.one_hot(target.clamp_max(logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2)
    onehot = onehot * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)[1:]
    denom = (probs + onehot).sum(dims)[1:]
    return 1.0 - ((2 * inter + 1.0) / (denom + 1.0)).mean()


@dataclass(frozen=True)
class LossConfig:
    """Loss options. ``beta`` 0.999 is the thesis value; ``dice_weight`` adds a soft-Dice term."""

    beta: float = 0.999
    dice_weight: float = 0.0
    grade_weight: float = 1.0
    lesion_weight: float = 1.0


def multitask_loss(outputs: dict[str, torch.Tensor], grade: torch.Tensor, mask: torch.Tensor,
                   cfg: LossConfig, task: TaskSpec) -> dict[str, torch.Tensor]:
    """Returns ``{"grade", "lesion", "total"}``; a term with no labelled sample in the batch is 0.

    ``outputs`` are keyed by ``task``'s output names (a baseline has only one of them)."""
    # Zero that touches every output, so every parameter gets a (zero) gradient and
    # DistributedDataParallel never waits for a branch a batch had no label for.
    zero = sum(o.sum() for o in outputs.values()) * 0.0
    losses = {"grade": zero, "lesion": zero}
    if task.grade_output in outputs and (grade != GRADE_IGNORE).any():
        losses["grade"] = F.cross_entropy(outputs[task.grade_output], grade, ignore_index=GRADE_IGNORE)
    if task.lesion_output in outputs and (mask != MASK_IGNORE).any():
        logits = outputs[task.lesion_output]

        weights = class_balanced_weights(mask, logits.shape[1], cfg.beta).to(logits.device)
        lesion = F.cross_entropy(logits, mask, weight=weights, ignore_index=MASK_IGNORE)
        if cfg.dice_weight:
            lesion = lesion + cfg.dice_weight * soft_dice_loss(logits, mask)
        losses["lesion"] = lesion
    losses["total"] = cfg.grade_weight * losses["grade"] + cfg.lesion_weight * losses["lesion"]
    return losses
