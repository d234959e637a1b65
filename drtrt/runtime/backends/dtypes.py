"""The element types drtrt's tensors carry, as each backend spells them: one table, read both ways.

The runner contract speaks NumPy (:class:`~drtrt.runtime.base.TensorSpec`); ONNX Runtime says
``tensor(float)``, Triton's model configuration ``TYPE_FP32``, Triton's inference protocol ``FP32``
and TensorRT ``DataType.FLOAT``. One row per type in every spelling keeps the backends agreeing
(a type added is added to all, and a backend without it, TensorRT without float64, says so in its
column), and a type a backend cannot carry is one error (:class:`UnsupportedDtype`) that names
the type, the backend and what it does carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from drtrt.errors import ArtefactError

Spelling = Literal["numpy", "ort", "triton", "wire", "tensorrt"]

LABELS: dict[Spelling, str] = {"numpy": "NumPy", "ort": "ONNX Runtime", "triton": "Triton's model configuration",
                               "wire": "Triton's inference protocol", "tensorrt": "TensorRT"}


class UnsupportedDtype(ArtefactError):
    """A tensor's element type that a backend cannot carry, or that drtrt's models do not use: a
    property of the model or engine at hand, hence an :class:`~drtrt.errors.ArtefactError`."""


@dataclass(frozen=True)
class ElementType:
    """One element type in every spelling; ``tensorrt`` is None where TensorRT has no such type."""

    numpy: str          # numpy.dtype(...).name
    ort: str            # onnxruntime NodeArg.type
    triton: str         # model_config.proto DataType
    wire: str           # KServe v2 / Triton client datatype
    tensorrt: str | None  # tensorrt.DataType member name


TYPES: tuple[ElementType, ...] = (
    ElementType("float32", "tensor(float)", "TYPE_FP32", "FP32", "FLOAT"),
    ElementType("float16", "tensor(float16)", "TYPE_FP16", "FP16", "HALF"),
    ElementType("float64", "tensor(double)", "TYPE_FP64", "FP64", None),
    ElementType("int8", "tensor(int8)", "TYPE_INT8", "INT8", "INT8"),
    ElementType("uint8", "tensor(uint8)", "TYPE_UINT8", "UINT8", "UINT8"),
    ElementType("int32", "tensor(int32)", "TYPE_INT32", "INT32", "INT32"),
    ElementType("int64", "tensor(int64)", "TYPE_INT64", "INT64", "INT64"),
    ElementType("bool", "tensor(bool)", "TYPE_BOOL", "BOOL", "BOOL"),
)


def to_numpy(name: str, spelling: Spelling, what: str = "") -> str:
    """The NumPy name of ``name`` as ``spelling`` writes it (``"TYPE_FP16"``, "triton" → ``"float16"``).

    ``what`` names the tensor for the error (e.g. ``"input 'image'"``).
    """
    for row in TYPES:
        if getattr(row, spelling) == name:
            return row.numpy
    raise _unsupported(name, spelling, spelling, what)


def from_numpy(numpy: str, spelling: Spelling, what: str = "") -> str:
    """``numpy`` (a NumPy dtype name) as ``spelling`` writes it (``"float16"``, "wire" → ``"FP16"``).

    ``what`` names the tensor for the error (e.g. ``"tensor 'grade'"``).
    """
    for row in TYPES:
        if row.numpy == numpy and getattr(row, spelling) is not None:
            return getattr(row, spelling)
    raise _unsupported(numpy, "numpy", spelling, what)


def _unsupported(name: str, given: Spelling, backend: Spelling, what: str) -> UnsupportedDtype:
    """The one error: ``name`` (spelt as ``given``) has no row that ``backend`` can carry; lists
    the types it can, spelt as ``name`` is."""
    carried = ", ".join(getattr(row, given) for row in TYPES if getattr(row, backend) is not None)
    subject = f"{what} is {name}, a type" if what else f"{name} is a type"
    return UnsupportedDtype(f"{subject} drtrt does not carry through {LABELS[backend]} (it carries {carried})")
