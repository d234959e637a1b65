"""Everything that differs between TensorRT 8.5–8.6, 10.x and 11.x — the only module that branches on it.

Checked against the real bindings (tests/fake_tensorrt/surface/, extracted from NVIDIA's
wheels 8.6.1, 10.3.0, 10.13.3 and 11.4.0):

============================  =========  ==================  ============================
                              8.5–8.6    10.x                11.x
============================  =========  ==================  ============================
explicit batch                flag       default (flag kept  flag removed
                              required   but deprecated)
``BuilderFlag.FP16/INT8``     yes (set,  yes (not set:       removed
                              + FP32     strongly typed;
                              pinned)    set for DLA)
``NetworkDefinitionCreation`` —          yes (used)          yes (used)
``Flag.STRONGLY_TYPED``                  precision lives in the ONNX: FP16 converted by drtrt,
                                         INT8 as Q/DQ nodes, the same numerics as ONNX Runtime
``IProgressMonitor``          no         yes                 yes
IInt8 calibrators             yes        deprecated (10.1)   removed (drtrt never uses them)
============================  =========  ==================  ============================

The name-based I/O that the runner uses (``num_io_tensors``, ``get_tensor_name/mode/shape/
dtype``, ``get_tensor_profile_shape``, ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``) is the same from 8.5 on; drtrt refuses anything older.
"""

from __future__ import annotations

import logging
import re
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from drtrt.errors import BackendUnavailable, ConfigError
from drtrt.runtime.backends.dtypes import UnsupportedDtype, to_numpy
from drtrt.runtime.jetpack import install_hint

_log = logging.getLogger("drtrt.tensorrt")
MIN_VERSION = (8, 5)
CPU_PATH = ("The CPU path needs no TensorRT: `drtrt calibrate` makes the INT8 model and ONNX Runtime "
            "runs it (`drtrt screen --model model.onnx`)")


@dataclass(frozen=True)
class TrtFeatures:
    """What the installed TensorRT offers, derived from its version."""

    version: str
    major: int
    minor: int
    needs_explicit_batch_flag: bool    # 8.x: the ONNX parser wants an explicit-batch network
    has_precision_flags: bool          # BuilderFlag.FP16 / INT8 exist (≤ 10.x)
    strongly_typed: bool               # drtrt builds strongly typed (10.x on; 11.x: the only way)
    has_progress_monitor: bool         # IProgressMonitor (10.x +)


def import_tensorrt() -> ModuleType:
    """``import tensorrt`` or one clear line saying what is missing and what works without it."""
    try:
        import tensorrt
    except ImportError as exc:   # also the bindings present without libnvinfer (OSError is wrapped)
        detail = "not installed" if isinstance(exc, ModuleNotFoundError) else f"cannot be loaded ({exc})"
        raise BackendUnavailable(f"TensorRT is {detail}; {install_hint()}. {CPU_PATH}") from None
    features(tensorrt)   # refuses versions drtrt does not support
    return tensorrt


def parse_version(text: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", text or "")
    if not match:
        raise BackendUnavailable(f"cannot read the TensorRT version from '{text}'")
    return int(match[1]), int(match[2])


def features(trt: ModuleType) -> TrtFeatures:
    """The feature set of ``trt`` (the imported ``tensorrt`` module)."""
    version = str(getattr(trt, "__version__", ""))
    major, minor = parse_version(version)
    if (major, minor) < MIN_VERSION:
        raise BackendUnavailable(f"TensorRT {version} is too old: drtrt needs {MIN_VERSION[0]}.{MIN_VERSION[1]} or "
                                 "newer (name-based I/O, execute_async_v3); JetPack 5.1 ships 8.5")
    return TrtFeatures(version=version, major=major, minor=minor, needs_explicit_batch_flag=major < 10,
                       has_precision_flags=major < 11, strongly_typed=major >= 10, has_progress_monitor=major >= 10)


def network_flags(trt: ModuleType, feats: TrtFeatures) -> int:
    """``Builder.create_network`` flags: explicit batch on 8.x, strongly typed from 10.x on."""
    if feats.needs_explicit_batch_flag:
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if feats.strongly_typed:   # its value is 1 on 10.x but 0 on 11.x: never hard-code it
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def apply_precision(trt: ModuleType, config: Any, feats: TrtFeatures, precision: str, dla: bool = False) -> list[str]:
    """Set the builder flags ``precision`` needs; returns their names (recorded in the manifest).

    Strongly typed (10.x and 11.x on the GPU): none — the ONNX's own types and Q/DQ nodes are the
    precision, exactly as ONNX Runtime runs that ONNX (weak typing is deprecated from 10.12 and would
    let TensorRT run the layers the conversion kept in FP32 — softmax, the heads — in FP16).
    Weakly typed (8.5–8.6; DLA builds on 10.x), where the flags say what TensorRT *may* use:
    "fp16" → FP16 + OBEY_PRECISION_CONSTRAINTS, so the layers :func:`hold_fp32` pins stay FP32 as in
    the FP16 ONNX; "int8" → INT8 only, so what the Q/DQ nodes leave unquantised runs in FP32 as on a
    strongly typed build (an FP16 flag would let TensorRT move those layers to FP16); "fp32" → none.
    DLA has no FP32: "fp16" → FP16 alone (every layer in FP16, as trtexec --useDLACore --fp16), "int8" →
    INT8 + FP16. DLA on 11.4.1 is strongly typed like the rest of 11.x: no flags, the FP16 ONNX.
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"unknown precision '{precision}'; expected fp32, fp16 or int8")
    if feats.strongly_typed or not feats.has_precision_flags:
        return []
    gpu = {"fp32": [], "fp16": [trt.BuilderFlag.FP16, trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS],
           "int8": [trt.BuilderFlag.INT8]}
    on_dla = {"fp32": [], "fp16": [trt.BuilderFlag.FP16], "int8": [trt.BuilderFlag.INT8, trt.BuilderFlag.FP16]}
    flags = (on_dla if dla else gpu)[precision]
    for item in flags:
        config.set_flag(item)
    return [item.name for item in flags]


def clear_tf32(trt: ModuleType, config: Any) -> bool:
    """Clear BuilderFlag.TF32, which every new builder config has set (8.6–11.x): with it, FP32
    convolutions and matrix multiplies (of an FP32 engine, and the layers an FP16 or INT8 build keeps
    in FP32) may round their inputs to TF32 (10-bit mantissa) on Ampere and later (Orin, A100, H100),
    which ONNX Runtime on that ONNX does not. Returns the flag as the config now has it (for the manifest)."""
    config.clear_flag(trt.BuilderFlag.TF32)
    return bool(config.get_flag(trt.BuilderFlag.TF32))


def hold_fp32(trt: ModuleType, network: Any, tensors: set[str]) -> list[str]:
    """Pin to FP32 (``precision`` and output types) every layer producing one of ``tensors`` — the
    outputs of the layers the FP16 conversion kept in FP32; returns the pinned layers' names.

    For a weakly typed FP16 build (8.5–8.6), with BuilderFlag.OBEY_PRECISION_CONSTRAINTS: the same
    precision per layer as the strongly typed build of the same FP16 ONNX. onnx-tensorrt names each
    node's output tensors after the ONNX, so the match is by tensor name.
    """
    held = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        outputs = [(j, layer.get_output(j)) for j in range(layer.num_outputs)]
        mine = [j for j, tensor in outputs if tensor is not None and tensor.name in tensors]
        if not mine:
            continue
        layer.precision = trt.float32
        for j in mine:
            layer.set_output_type(j, trt.float32)
        held.append(layer.name)
    return held


def make_progress_monitor(trt: ModuleType, feats: TrtFeatures, on_phase_start: Callable[[str, str | None, int], None],
                          on_step: Callable[[str, int], bool], on_phase_finish: Callable[[str], None]) -> Any | None:
    """A ``trt.IProgressMonitor`` calling the three callbacks, or None where TensorRT has none (8.x).

    ``on_step`` returns False to cancel the build.
    """
    if not feats.has_progress_monitor:
        return None

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            on_phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return bool(on_step(phase_name, step))

        def phase_finish(self, phase_name: str) -> None:
            on_phase_finish(phase_name)

    return _Monitor()


_LOGGERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # tensorrt module -> the process's logger


def make_logger(trt: ModuleType) -> Any:
    """The process's ``trt.ILogger``: it keeps the latest warnings and errors and logs them.

    One per process, not one per builder or runtime: TensorRT keeps the first logger it is given
    and sends every later message there (NVIDIA/TensorRT#1475), so a second logger would hear
    nothing. Each operation takes ``mark()`` before it starts and reads ``errors(mark)`` after,
    to see only its own messages.
    """
    logger = _LOGGERS.get(trt)
    if logger is not None:
        return logger

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: deque[tuple[int, int, str]] = deque(maxlen=200)   # (number, level, text), newest last
            self.count = 0

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)
            if level <= int(trt.Logger.WARNING):
                self.count += 1
                self.messages.append((self.count, level, str(msg)))
                _log.log(logging.WARNING if level == int(trt.Logger.WARNING) else logging.ERROR, "TensorRT: %s", msg)

        def mark(self) -> int:
            """The number of the latest message: pass it to :meth:`errors` for what comes after."""
            return self.count

        def errors(self, since: int = 0) -> list[str]:
            return [msg for number, level, msg in self.messages if number > since and level <= int(trt.Logger.ERROR)]

    logger = _LOGGERS[trt] = _Logger()
    return logger


def parser_errors(parser: Any) -> list[str]:
    """The ONNX parser's errors as "node N: description" lines."""
    return [f"node {parser.get_error(i).node()}: {parser.get_error(i).desc()}" for i in range(parser.num_errors)]


def has_qdq(trt: ModuleType, network: Any) -> bool:
    """Whether the parsed network holds Q/DQ layers (explicit INT8 quantisation)."""
    kinds = {trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE}
    return any(network.get_layer(i).type in kinds for i in range(network.num_layers))


def numpy_dtype(trt: ModuleType, dtype: Any) -> Any:
    """NumPy dtype of a TensorRT ``DataType``, by its name (:mod:`~drtrt.runtime.backends.dtypes`).
    Not ``trt.nptype``: TensorRT 8.5's builds its table with ``np.bool`` and fails on NumPy 1.24-1.26
    (NVIDIA/TensorRT#2557). A type outside the table is a ConfigError, as it was before the table
    (an engine that is not one of drtrt's was given), not the table's ArtefactError."""
    import numpy as np

    name = getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])
    try:
        return np.dtype(to_numpy(name, "tensorrt"))
    except UnsupportedDtype as exc:
        raise ConfigError(str(exc)) from None
