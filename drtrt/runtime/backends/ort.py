"""ONNX Runtime backend: CPU everywhere, CUDA/TensorRT execution providers when present.

Every ONNX Runtime session drtrt makes takes its options from :func:`session_options`: as many
intra-op threads as the CPUs this process may use (:func:`drtrt.cpu.usable_cpus`, not ONNX
Runtime's count of the machine's physical cores) and no spin-waiting, so a station whose CPU is
shared does not lose a core to idle threads (``DRTRT_CPU_SPIN=1`` turns spinning back on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from drtrt.cpu import spin_wait, usable_cpus
from drtrt.errors import ArtefactError, BackendUnavailable, ConfigError, DrtrtError
from drtrt.model_info import ModelInfo
from drtrt.runtime.base import Runner, Signature, TensorSpec

PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider"}
# ONNX Runtime names element types "tensor(float)"; the runner contract speaks NumPy.
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64",
               "tensor(bool)": "bool"}


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


class OrtRunner(Runner):
    """Runs an ONNX model with the providers asked for (default: CPU only, never silently another).

    ``threads``: intra-op threads (default: the CPUs this process may use); ``spin``: let idle
    threads spin-wait (default: only with ``DRTRT_CPU_SPIN=1``); see :func:`session_options`.
    """

    backend = "ort"

    def __init__(self, path: str | Path, providers: Sequence[str] = ("cpu",), threads: int | None = None,
                 spin: bool | None = None) -> None:
        super().__init__(path)
        self.providers = [PROVIDER_ALIASES.get(p, p) for p in providers]
        self.threads = threads
        self.spin = spin
        self._session = None

    def _activate(self) -> Signature:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("onnxruntime is not installed; pip install drtrt") from None
        if not self.path.is_file():
            raise ArtefactError(f"model file not found: {self.path}")
        available = ort.get_available_providers()
        missing = [p for p in self.providers if p not in available]
        if missing:
            raise ConfigError(f"ONNX Runtime provider {missing[0]} is not available here; "
                              f"available: {', '.join(available)}")
        options = session_options(self.threads, self.spin)
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types for bad files
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise ArtefactError(f"cannot load {self.path} as an ONNX model: {first}") from None
        info = ModelInfo.from_metadata(self._session.get_modelmeta().custom_metadata_map, source=str(self.path))
        inputs = tuple(TensorSpec(i.name, tuple(d if isinstance(d, int) and d > 0 else -1 for d in i.shape),
                                  _ORT_DTYPES.get(i.type, i.type)) for i in self._session.get_inputs())
        return Signature(info, inputs, tuple(o.name for o in self._session.get_outputs()))

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self._session.run(None, dict(feeds))
        except Exception as exc:  # noqa: BLE001 - ORT's own exception types (out of memory, a kernel failing)
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise DrtrtError(f"ONNX Runtime could not run {self.path.name}: {first}") from None
        return dict(zip(self.output_names, outputs))

    def _deactivate(self) -> None:
        self._session = None
