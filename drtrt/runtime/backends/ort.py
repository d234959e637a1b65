"""ONNX Runtime backend: CPU everywhere, CUDA/TensorRT execution providers when present.

Every ONNX Runtime session drtrt makes, to screen, export, calibrate, write a Triton repository
or measure this CPU, comes from :func:`open_session`; its options from :func:`session_options`:
as many intra-op threads as the CPUs this process may use (:func:`drtrt.cpu.usable_cpus`, not
ONNX Runtime's count of the machine's physical cores) and no spin-waiting, so a station whose
CPU is shared does not lose a core to idle threads (``DRTRT_CPU_SPIN=1`` turns spinning back on).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drtrt.cpu import spin_wait, usable_cpus
from drtrt.errors import ArtefactError, BackendUnavailable, ConfigError, DrtrtError
from drtrt.model_info import ModelInfo
from drtrt.runtime.backends.dtypes import UnsupportedDtype, to_numpy
from drtrt.runtime.base import Runner, Signature, TensorSpec

PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider"}

# ONNX Runtime's session config keys (onnxruntime_session_options_config_keys.h).
INTRA_OP_SPINNING = "session.intra_op.allow_spinning"
INTER_OP_SPINNING = "session.inter_op.allow_spinning"


def session_options(threads: int | None = None, spin: bool | None = None):
    """``onnxruntime.SessionOptions`` for a drtrt session: quiet logs, ``threads`` intra-op threads
    (default: the CPUs this process may use) and spin-waiting only when ``spin`` (default:
    ``DRTRT_CPU_SPIN``) says so, for the intra-op and the inter-op pool alike.

    ONNX Runtime's own defaults are one thread per physical core of the machine, pinned to it,
    spinning between runs: the fastest on an idle, dedicated machine and several times slower
    than needed when another process holds one of those cores.
    """
    import onnxruntime as ort

    spin = spin_wait() if spin is None else spin
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads or usable_cpus()
    options.add_session_config_entry(INTRA_OP_SPINNING, "1" if spin else "0")
    options.add_session_config_entry(INTER_OP_SPINNING, "1" if spin else "0")
    return options


def open_session(model: str | Path | bytes, providers: Sequence[str] = ("cpu",), threads: int | None = None,
                 spin: bool | None = None, optimize: bool = True) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``model`` with :func:`session_options` (``threads``,
    ``spin``) on ``providers`` (ONNX Runtime's names or :data:`PROVIDER_ALIASES`), never silently
    on another.

    ``optimize=False`` turns ONNX Runtime's graph optimisations off (``ORT_DISABLE_ALL``), for a
    session that must yield intermediate tensors under their own names (a fused node would not
    produce them) or that only reads the model's metadata.

    ``model`` is a file or a serialised model. A file that is missing or that ONNX Runtime cannot
    load is the user's artefact: one-line :class:`~drtrt.errors.ArtefactError`. Bytes are a graph
    drtrt derived itself (calibration, a GEMM probe), so ONNX Runtime's own error is left whole:
    it is drtrt's bug, and its full text is what finds it.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed; pip install drtrt") from None
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise ArtefactError(f"model file not found: {model}")
    names = _available(ort, providers)
    options = session_options(threads, spin)
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if isinstance(model, bytes):
        return ort.InferenceSession(model, options, providers=names)
    try:
        return ort.InferenceSession(str(model), options, providers=names)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types for bad files
        raise ArtefactError(f"cannot load {model} as an ONNX model: {_first_line(exc, 160)}") from None


def provider_names(providers: Sequence[str]) -> list[str]:
    """``providers`` under ONNX Runtime's names (``cpu`` → ``CPUExecutionProvider``)."""
    return [PROVIDER_ALIASES.get(p, p) for p in providers]


def _available(ort: Any, providers: Sequence[str]) -> list[str]:
    """``providers`` under ONNX Runtime's names; ConfigError for one this install lacks."""
    names = provider_names(providers)
    available = ort.get_available_providers()
    missing = [p for p in names if p not in available]
    if missing:
        raise ConfigError(f"ONNX Runtime provider {missing[0]} is not available here; "
                          f"available: {', '.join(available)}")
    return names


def _first_line(exc: Exception, limit: int) -> str:
    """ONNX Runtime's message cut to its first line (its messages run on with the graph's details)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def tensor_specs(values: Iterable[Any]) -> tuple[TensorSpec, ...]:
    """The runner contract's specs of a session's inputs or outputs (``NodeArg``): a symbolic or
    unknown dimension becomes -1, the element type its NumPy name."""
    return tuple(TensorSpec(v.name, tuple(d if isinstance(d, int) and d > 0 else -1 for d in v.shape),
                            _numpy_name(v.type)) for v in values)


def _numpy_name(ort_type: str) -> str:
    """NumPy's name for ``ort_type``; a type outside the table keeps ONNX Runtime's name, so the
    check that meets it (a feed's dtype, Triton's configuration) names it as the model does."""
    try:
        return to_numpy(ort_type, "ort")
    except UnsupportedDtype:
        return ort_type


class OrtRunner(Runner):
    """Runs an ONNX model with the providers asked for (default: CPU only, never silently another).

    ``threads``: intra-op threads (default: the CPUs this process may use); ``spin``: let idle
    threads spin-wait (default: only with ``DRTRT_CPU_SPIN=1``); see :func:`session_options`.
    On the CPU provider alone, an INT8 Q/DQ model runs with its activations shifted to unsigned
    (:func:`~drtrt.runtime.backends.ort_u8.unsigned_activations`: the same function, on ONNX
    Runtime's integer kernels end to end); ``self.unsigned`` says whether it was.
    """

    backend = "ort"

    def __init__(self, path: str | Path, providers: Sequence[str] = ("cpu",), threads: int | None = None,
                 spin: bool | None = None) -> None:
        super().__init__(path)
        self.providers = provider_names(providers)
        self.threads = threads
        self.spin = spin
        self._session = None
        self.unsigned = False

    def _activate(self) -> Signature:
        model: Path | bytes = self.path
        if self.providers == ["CPUExecutionProvider"]:
            from drtrt.runtime.backends.ort_u8 import unsigned_activations

            model = unsigned_activations(self.path) or self.path
        self.unsigned = isinstance(model, bytes)
        self._session = open_session(model, self.providers, self.threads, self.spin)
        info = ModelInfo.from_metadata(self._session.get_modelmeta().custom_metadata_map, source=str(self.path))
        return Signature(info, tensor_specs(self._session.get_inputs()),
                         tuple(o.name for o in self._session.get_outputs()))

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self._session.run(None, dict(feeds))
        except Exception as exc:  # noqa: BLE001 - ORT's own exception types (out of memory, a kernel failing)
            raise DrtrtError(f"ONNX Runtime could not run {self.path.name}: {_first_line(exc, 200)}") from None
        return dict(zip(self.output_names, outputs))

    def _deactivate(self) -> None:
        self._session = None
