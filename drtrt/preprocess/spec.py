"""Every parameter of the preprocessing, recorded in checkpoints and exported models."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from drtrt.errors import ConfigError

INTERPOLATIONS = ("nearest", "linear", "area")


@dataclass(frozen=True)
class PreprocessSpec:
    """Every parameter of the preprocessing; recorded in checkpoints and exported models.

    size: model input side in pixels (square). mean/std: RGB, applied to pixel/255.
    margin: extra border around the FOV circle, as a fraction of its radius.
    interpolation: how the image is resized to the model side ("area" anti-aliases downscaling).
    fov_threshold: the field is where the smoothed brightest channel exceeds
        background + fov_threshold * (field level - background).
    fov_min_contrast: field level minus background, in 8-bit levels, below which no field is found.
    fov_min_area: smallest fraction of the image the field must cover.
    fov_min_iou: smallest IoU between the thresholded field and the fitted circle (inside the image).
    """

    size: int = 512
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    margin: float = 0.0
    interpolation: str = "area"
    fov_threshold: float = 0.25
    fov_min_contrast: float = 10.0
    fov_min_area: float = 0.03
    fov_min_iou: float = 0.95

    def __post_init__(self) -> None:
        try:   # JSON lists become tuples, so specs compare and hash by value
            mean, std = (tuple(float(x) for x in v) for v in (self.mean, self.std))
        except (TypeError, ValueError):
            mean = std = ()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(f"preprocess mean/std must be 3 numbers each (std > 0), "
                              f"found {self.mean!r}, {self.std!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        rules = {"size": (isinstance(self.size, int) and self.size >= 8, "an integer >= 8"),
                 "interpolation": (self.interpolation in INTERPOLATIONS, " | ".join(INTERPOLATIONS)),
                 "margin": (self.margin >= 0, ">= 0"), "fov_threshold": (0 < self.fov_threshold < 1, "in (0, 1)"),
                 "fov_min_iou": (0 < self.fov_min_iou <= 1, "in (0, 1]")}
        bad = [f"{name} {getattr(self, name)!r} (needs {need})" for name, (ok, need) in rules.items() if not ok]
        if bad:
            raise ConfigError(f"invalid preprocessing: {'; '.join(bad)}")


    def differences(self, other: PreprocessSpec) -> str:
        """What differs from ``other``, for a message: "input size 128 vs 256, margin 0 vs 0.1"."""
        names = {"size": "input size"}
        mine, theirs = self.to_dict(), other.to_dict()
        return ", ".join(f"{names.get(k, k)} {mine[k]:g} vs {theirs[k]:g}" if isinstance(mine[k], (int, float))
                         else f"{names.get(k, k)} {mine[k]} vs {theirs[k]}" for k in mine if mine[k] != theirs[k])

    def to_dict(self) -> dict[str, Any]:

        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        """Missing keys take their defaults; unknown keys raise ConfigError."""
        from drtrt.config import from_dict

        return from_dict(cls, d, where="preprocess.")

