"""The runner contract every backend implements (Polygraphy's base-runner lifecycle, NumPy I/O).

A runner receives something already built (a file). The base class owns the public lifecycle
and its guards; a backend implements only the three steps in ``_``:

- :meth:`Runner.activate` calls ``_activate()`` once (a second call is a no-op), which loads the
  model and returns its :class:`Signature` (metadata, input specs, output names, batch range);
  if it raises, ``_deactivate()`` releases whatever it had taken.
- :meth:`Runner.infer` refuses to run before ``activate`` (:class:`RunnerStateError`), checks
  the feeds against the input specs (:class:`ShapeError`: names, dtype, rank, fixed
  dimensions, batch range) and calls ``_infer(feeds)``: name → array in, name → array out, in
  the model's output order.
- :meth:`Runner.deactivate` calls ``_deactivate()`` when active; calling it again is a no-op.

Runners do no preprocessing and no task decoding: :class:`~drtrt.runtime.predictor.Predictor`
does both, through :mod:`drtrt.runtime.inference`, so every backend shares them byte for byte.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from drtrt.errors import RunnerStateError, ShapeError
from drtrt.fileio import sha256_file
from drtrt.model_info import ModelInfo


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: its name, shape (-1 for a dynamic dimension) and NumPy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class Signature:
    """What an activated runner serves. ``max_batch`` None = no upper bound (ONNX Runtime, PyTorch)."""

    info: ModelInfo
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    min_batch: int = 1
    max_batch: int | None = None


class Runner(abc.ABC):
    """One backend behind one lifecycle: ``activate`` once, ``infer`` many times, ``deactivate``."""

    backend: ClassVar[str]
    batch_range_name: ClassVar[str] = "the model's batch range"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._signature: Signature | None = None

    # -- the lifecycle (owned here) ------------------------------------------------------------
    def activate(self) -> None:
        """Load the model and allocate what inference needs; a no-op when already active."""
        if self._signature is not None:
            return
        try:
            signature = self._activate()
        except BaseException:
            self._deactivate()
            raise
        self._signature = signature

    def infer(self, feeds: Mapping[str, np.ndarray], validate: bool = True) -> dict[str, np.ndarray]:
        """Run one batch; outputs keyed by name, in the model's output order.

        ``validate`` checks the feeds first (cheap: names, dtypes and shapes); a caller that
        built them from :attr:`input_specs` may skip it.
        """
        self._require("infer()")
        if validate:
            self.validate_feeds(feeds)
        return self._infer(feeds)

    def deactivate(self) -> None:
        """Release what ``activate`` took; a no-op when not active."""
        if self._signature is None:
            return
        try:
            self._deactivate()
        finally:
            self._signature = None

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # -- what an active runner serves ------------------------------------------------------------
    @property
    def name(self) -> str:
        """How the model is named to a user: its file name (a served model: its URL)."""
        return self.path.name

    def model_sha256(self) -> str:
        """The sha256 of the model file: the model's identity in sessions, reports and parity records
        (a served model: the sha256 its server's configuration records for the file it loaded)."""
        return sha256_file(self.path)

    def validated_sha256(self) -> str:
        """The sha256 a clinical validation record must name to count for this model
        (:mod:`drtrt.validation_record`): the model file's (an engine's: the ONNX it was built from)."""
        return self.model_sha256()

    @property
    def active(self) -> bool:
        return self._signature is not None

    @property
    def info(self) -> ModelInfo:
        """The model's drtrt metadata: preprocessing, task vocabulary, precision."""
        return self._require("info").info

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self._require("input_specs").inputs

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._require("output_names").outputs

    @property
    def max_batch(self) -> int | None:
        """Largest batch the model accepts (an engine's optimisation profile); None = no bound."""
        return self._require("max_batch").max_batch

    @property
    def min_batch(self) -> int:
        """Smallest batch the model accepts (1, or a static-batch engine's one batch, as DLA needs)."""
        return self._require("min_batch").min_batch

    def validate_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        """:class:`ShapeError` (one line) unless ``feeds`` match the input specs and the batch range."""
        signature = self._require("validate_feeds()")
        expected = [spec.name for spec in signature.inputs]
        if sorted(feeds) != sorted(expected):
            raise ShapeError(f"{self.path.name}: expected inputs {expected}, found {sorted(feeds)}")
        for spec in signature.inputs:
            array = feeds[spec.name]
            dtype = getattr(array, "dtype", None)
            if dtype is None or np.dtype(dtype).name != spec.dtype:
                raise ShapeError(f"{self.path.name}: input '{spec.name}' must be {spec.dtype}, found "
                                 f"{np.dtype(dtype).name if dtype is not None else type(array).__name__}")
            shape = tuple(array.shape)
            if len(shape) != len(spec.shape) or any(d != s for d, s in zip(shape, spec.shape) if s >= 0):
                raise ShapeError(f"{self.path.name}: input '{spec.name}' must have shape "
                                 f"{_shape_text(spec.shape)}, found {list(shape)}")
            batch = shape[0] if shape else 1
            if spec.shape and spec.shape[0] < 0 and not (signature.min_batch <= batch
                                                         <= (signature.max_batch or batch)):
                raise ShapeError(f"{self.path.name}: input '{spec.name}' batch {batch} is outside "
                                 f"{self.batch_range_name} ({signature.min_batch}…{signature.max_batch or 'any'}); "
                                 f"split the batch{self._batch_hint()}")

    # -- what a backend implements ---------------------------------------------------------------
    @abc.abstractmethod
    def _activate(self) -> Signature:
        """Load the model; return what it serves. On an exception ``_deactivate`` is called."""

    @abc.abstractmethod
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run validated feeds; outputs keyed by name in the model's output order."""

    @abc.abstractmethod
    def _deactivate(self) -> None:
        """Release everything ``_activate`` took, also after a partial activation."""

    def _batch_hint(self) -> str:
        """Extra advice for a batch outside the range (an engine says how to rebuild it)."""
        return ""

    def _require(self, what: str) -> Signature:
        if self._signature is None:
            raise RunnerStateError(f"{type(self).__name__}.{what} used before activate()")
        return self._signature


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("N" if d < 0 else str(d) for d in shape) + "]"
