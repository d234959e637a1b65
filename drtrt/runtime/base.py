"""The backend interface every runner implements (Polygraphy-style lifecycle, NumPy I/O).

A runner receives something already built (a file), is activated once, then ``infer`` is
called many times with name → array feeds and returns name → array outputs in the model's
order. Runners do no preprocessing and no task decoding: the predictor does both, so every
backend shares them byte for byte.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np

from drtrt.manifest import ModelInfo


class Runner(abc.ABC):
    backend: ClassVar[str]

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.active = False

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    @abc.abstractmethod
    def activate(self) -> None:
        """Load the model and allocate what inference needs."""

    @abc.abstractmethod
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; outputs keyed by output name, in the model's output order."""

    @abc.abstractmethod
    def deactivate(self) -> None:
        """Release what ``activate`` took."""

    @property
    @abc.abstractmethod
    def info(self) -> ModelInfo:
        """The model's drtrt metadata (preprocessing, class names, precision)."""

    @property
    @abc.abstractmethod
    def output_names(self) -> tuple[str, ...]:
        """Names of the outputs ``infer`` returns."""
