"""Which runner serves a model file: by its suffix, or by the backend asked for.

Runners are registered by import path, so importing :mod:`drtrt.runtime` never imports torch
or tensorrt: only the chosen runner's module is imported, when a model is loaded.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from pathlib import Path

from drtrt.errors import BackendUnavailable, ConfigError
from drtrt.runtime.base import Runner

BACKENDS = {".onnx": "ort", ".engine": "trt", ".plan": "trt", ".pt": "torch"}
RUNNERS = {"ort": "drtrt.runtime.backends.ort:OrtRunner", "trt": "drtrt.runtime.backends.trt:TrtRunner",
           "torch": "drtrt.train.torch_runner:TorchRunner", "triton": "drtrt.runtime.backends.triton:TritonRunner"}
_BACKEND_EXTRAS = {"trt": "TensorRT (JetPack's python3-libnvinfer, or pip install 'drtrt[gpu]' with tensorrt)",
                   "torch": "torch (pip install 'drtrt[train]')",
                   "triton": "tritonclient (pip install 'drtrt[triton]')"}


def load_runner(model: str | Path, backend: str = "auto", providers: Sequence[str] | None = None,
                **options) -> Runner:
    """Pick the runner for ``model`` by its suffix (or ``backend``: ort | trt | torch | triton) and activate it.

    A ``triton://HOST:PORT/MODEL`` URL (also ``tritons://`` over TLS, ``triton+http://``) is a model on a
    Triton server.

    ``providers`` (ONNX Runtime only; default ("cpu",)) is used exactly as given: a missing
    provider is an error, never a silent fall-back. ``options`` go to the runner's constructor.
    """
    path = Path(model)
    if is_model_url(model):
        if backend not in ("auto", "triton"):
            raise ConfigError(f"{model} is served by Triton; --backend {backend} does not apply to it")
        backend, path = "triton", model_reference(model)
    if backend == "auto":
        backend = BACKENDS.get(path.suffix.lower(), "")
        if not backend:
            raise ConfigError(f"cannot tell the backend for '{path.name}' from its suffix; expected one of "
                              f"{', '.join(BACKENDS)}, or pass --backend {'|'.join(RUNNERS)}")
    if backend not in RUNNERS:
        raise ConfigError(f"unknown backend '{backend}'; available: {', '.join(RUNNERS)}")
    if backend == "ort":
        options["providers"] = tuple(providers or ("cpu",))
    elif providers:
        raise ConfigError(f"providers {', '.join(providers)} apply to ONNX Runtime only, not backend '{backend}'")
    runner: Runner = runner_class(backend)(path, **options)
    runner.activate()
    return runner


def is_model_url(model: object) -> bool:
    """Whether ``model`` names a served model (``triton://…``) rather than a file."""
    return re.match(r"^tritons?(\+grpc|\+http)?:/", str(model), re.I) is not None


def model_reference(model: str | Path) -> str | Path:
    """A model option as typed: a served model's URL as a string (a ``Path`` folds its ``//``), else a Path."""
    if is_model_url(model):
        scheme, _, rest = str(model).partition(":")
        return f"{scheme.lower()}://{rest.lstrip('/')}"
    return Path(model)


def runner_class(backend: str) -> type[Runner]:
    """Import the runner class registered for ``backend`` (BackendUnavailable when it cannot be)."""
    module_name, _, class_name = RUNNERS[backend].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or module_name
        if missing == module_name:
            raise BackendUnavailable(f"backend '{backend}' is not part of this drtrt build ({module_name} "
                                     f"is missing); use an .onnx model with --backend ort") from None
        need = _BACKEND_EXTRAS.get(backend, missing)
        raise BackendUnavailable(f"backend '{backend}' needs {missing}, which is not installed; "
                                 f"install {need}") from None
    return getattr(module, class_name)
