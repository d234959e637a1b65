"""The options of ``drtrt build``, checked before any TensorRT or GPU work.

Apart from :mod:`.trt_build` so that :mod:`.staleness` can judge an engine against the options
without importing the builder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drtrt.errors import ArtefactError, ConfigError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class BuildConfig:
    """What ``drtrt build`` needs.

    precision: None takes the ONNX's own (Q/DQ → int8, else its ``drtrt.precision`` metadata).
    max_batch / opt_batch: the profile is batch 1 … max_batch, tuned for opt_batch (defaults 4
        and 1: images arrive one at a time, and 4 is ``drtrt screen``'s default batch).
    workspace_gib: builder scratch memory limit, GiB (default 1, Jetson-friendly).
    timing_cache: a file, or a folder holding one cache per GPU + TensorRT version (default:
        ``$DRTRT_CACHE_DIR`` or ``~/.cache/drtrt``, under ``timing/``).
    calib_data: images for INT8 calibration when the ONNX has no Q/DQ nodes yet.
    device / cuda: GPU index and CUDA binding ("auto": cuda-python, else pycuda).
    """

    onnx: Path
    out: Path
    precision: str | None = None
    calib_data: Path | None = None
    max_batch: int = 4
    opt_batch: int = 1
    workspace_gib: float = 1.0
    timing_cache: Path | None = None
    device: int = 0
    cuda: str = "auto"
    dla_core: int | None = None
    gpu_fallback: bool = False

    def validate(self) -> None:
        if not Path(self.onnx).is_file():
            raise ArtefactError(f"ONNX model not found: {self.onnx}")
        if self.precision not in (None, *PRECISIONS):
            raise ConfigError(f"unknown precision '{self.precision}'; expected one of {', '.join(PRECISIONS)}")
        if not 1 <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"need 1 <= opt batch <= max batch, found opt {self.opt_batch}, max {self.max_batch}")
        if self.workspace_gib <= 0:
            raise ConfigError(f"--workspace must be a positive number of GiB, found {self.workspace_gib}")
        if self.calib_data is not None and self.precision not in (None, "int8"):
            raise ConfigError("--calib-data is only used with --int8")
        if self.dla_core is not None and self.dla_core < 0:
            raise ConfigError(f"--dla-core must be 0 or more, found {self.dla_core}")
        if self.gpu_fallback and self.dla_core is None:
            raise ConfigError("--gpu-fallback only goes with --dla-core")
