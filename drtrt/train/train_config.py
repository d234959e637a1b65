"""``TrainConfig``: every training option, thesis values as defaults (SPEC §2, thesis §4.3)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from drtrt.config import from_dict, to_dict
from drtrt.errors import ConfigError
from drtrt.preprocess import PreprocessSpec
from drtrt.train.augment import AugmentConfig
from drtrt.train.losses import LossConfig
from drtrt.train.model import ModelConfig

OPTIMIZERS = ("sgd", "adamw")
LABEL_MODES = ("partial", "pseudo")


@dataclass(frozen=True)
class TrainConfig:
    """Every training option; defaults are the thesis classification recipe (§4.3).

    epochs/batch_size/lr: thesis classification 100 / 4 / 1e-3 (segmentation 300 / 2 / 1e-2,
        see :data:`drtrt.train.recipe.THESIS_RECIPES`). batch_size is per process under torchrun.
    optimizer: "sgd" (thesis: momentum 0.9, weight decay 1e-4) or "adamw"; poly schedule, power 0.9.
    val_fraction: share of each IDRiD training part held out for validation (stratified; 0 = none,
        then ``best.pt`` is the last epoch).
    subsets: IDRiD sets trained on: both (default), or ("segmentation",) for the thesis's
        U-Net-VGG16 baseline, ("grading",) for its VGG16 baseline.
    labels: "partial" (each loss only where its label is real) or "pseudo" (missing labels from
        ``pseudo_labels``, a folder written by ``drtrt pseudo-label``).
    amp: mixed precision (FP16 autocast + gradient scaling) on CUDA.
    cpu_bf16: bfloat16 autocast on the CPU. Worth it only where the CPU has native BF16
        (AVX512-BF16 or AMX): a width-0.25 U-Net-VGG16 step at 512² took 0.31 s against 0.54 s
        in FP32 on a 2-core AVX512-BF16 EPYC. Elsewhere BF16 is emulated and slower.
    channels_last: NHWC memory format; None = on (tensor cores on CUDA; on the CPU oneDNN's
        NHWC convolutions took half the time per training step: 0.54 s against 1.08 s).
    deterministic: torch's deterministic algorithms and cuDNN without autotuning
        (:mod:`drtrt.train.reproducible`); free on the CPU, off for speed on CUDA.
    compile: ``torch.compile`` the model (slow first epoch, faster after; CUDA mostly).
    checkpoint_every_steps: also write ``last.pt`` every N optimizer steps (0 = per epoch only),
        so a killed run loses at most N steps.
    workers: DataLoader worker processes (decoded images are cached, see ``cache_dir``).
    pretrained: ImageNet VGG16(-BN) weights file; None = torch hub cache when present.
    """

    epochs: int = 100
    batch_size: int = 4
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    optimizer: str = "sgd"
    seed: int = 0
    device: str = "auto"
    val_fraction: float = 0.2
    subsets: tuple[str, ...] = ("grading", "segmentation")
    labels: str = "partial"
    pseudo_labels: str | None = None
    amp: bool = True
    cpu_bf16: bool = False
    channels_last: bool | None = None
    compile: bool = False
    deterministic: bool = True
    checkpoint_every_steps: int = 0
    workers: int = 0
    pretrained: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.labels not in LABEL_MODES:
            raise ConfigError(f"labels must be one of {', '.join(LABEL_MODES)}, got {self.labels!r}")
        if self.labels == "pseudo" and not self.pseudo_labels:
            raise ConfigError("labels 'pseudo' needs pseudo_labels: the folder written by "
                              "`drtrt pseudo-label --data ROOT --out LABELS` (or use labels 'partial')")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"need epochs >= 1, batch_size >= 1 and lr > 0; got {self.epochs}, "
                              f"{self.batch_size}, {self.lr}")
        if not self.subsets or set(self.subsets) - {"grading", "segmentation"}:
            raise ConfigError(f"subsets must name grading and/or segmentation, got {list(self.subsets)}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.checkpoint_every_steps < 0 or self.workers < 0:
            raise ConfigError("checkpoint_every_steps and workers must be >= 0")
        crop = self.augment.crop if self.augment else 0
        if crop and (crop % 32 or crop > self.preprocess.size):
            raise ConfigError(f"augment.crop must be a multiple of 32 no larger than the image size "
                              f"{self.preprocess.size}, got {crop}")

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return from_dict(cls, data)


def resolve_device(name: str) -> torch.device:
    """``auto`` = CUDA when available, else CPU. Asking for CUDA without it is an error, never a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    return device


def replace_config(cfg: TrainConfig, **overrides) -> TrainConfig:
    """``dataclasses.replace`` for the flat options, skipping ``None`` (flag not given)."""
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
