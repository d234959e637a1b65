"""``drtrt export-triton``: a Triton Inference Server model repository for a reading centre."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

from drtrt.cli.common import AllowUncheckedOpt, Flag, Opt, command, console


@command("export-triton")
def export_triton(out: Annotated[Path, Opt("Repository folder to write (new, or a drtrt repository with --force).",
                                           "DIR", show_default=False)],
                  onnx: Annotated[Optional[Path], Opt("ONNX model (FP32, FP16 or INT8 Q/DQ).", "FILE")] = None,
                  engine: Annotated[Optional[Path], Opt("TensorRT engine from `drtrt build` (with its manifest).",
                                                        "FILE")] = None,
                  name: Annotated[str, Opt("Model name on the server (also NAME_preprocess, NAME_photo).",
                                           "NAME")] = "drtrt",
                  serve_with: Annotated[Optional[str], Opt("onnxruntime | python (ONNX Runtime in Triton's Python "
                                                           "backend, for a server without the ORT backend) | "
                                                           "tensorrt [default: onnxruntime, tensorrt for --engine]",
                                                           "BACKEND")] = None,
                  max_batch: Annotated[Optional[int], Opt("Triton's max_batch_size [default: the engine's profile, "
                                                          "8 for ONNX].", "N")] = None,
                  preferred: Annotated[Optional[str], Opt("Preferred batch sizes for dynamic batching, e.g. 4,8 "
                                                          "[default: none: what queued is batched].",
                                                          "LIST")] = None,
                  queue_delay_us: Annotated[int, Opt("Longest wait to fill a batch, in microseconds (0: a lone "
                                                     "request is never held back).", "US")] = 0,
                  instances: Annotated[int, Opt("Model instances (per GPU with --gpus).", "N")] = 1,
                  kind: Annotated[str, Opt("Where ONNX Runtime instances run: auto | cpu | gpu.", "KIND")] = "auto",
                  gpus: Annotated[Optional[str], Opt("GPUs for the instances, e.g. 0,1.", "LIST")] = None,
                  preprocess_instances: Annotated[int, Opt("CPU instances of the preprocessing step.", "N")] = 2,
                  warmup: Annotated[bool, Flag("Warm the model up (zeros, batch 1 and the largest) before "
                                               "Triton calls it ready.", "--warmup")] = False,
                  ensemble: Annotated[bool, Flag("Also write the photo ensemble (raw photo bytes in).",
                                                 "--ensemble/--no-ensemble")] = True,
                  force: Annotated[bool, Flag("Replace OUT when it is a drtrt repository.",
                                              "--force")] = False,
                  allow_unchecked_model: AllowUncheckedOpt = False) -> None:
    """Write a Triton model repository: the model with config.pbtxt from its own metadata, dynamic
    batching, instance groups, and an ensemble that takes raw photo bytes (drtrt's preprocessing in
    Triton's Python backend). Serve it with tritonserver; screen with --model triton://HOST:8001/NAME."""
    from drtrt.errors import ConfigError
    from drtrt.serving.repository import RepositorySpec, write_repository

    def numbers(text: str | None, option: str) -> tuple[int, ...] | None:
        if text is None:
            return None
        try:
            return tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise ConfigError(f"{option} takes numbers separated by commas, found {text!r}") from None

    spec = RepositorySpec(out=out, onnx=onnx, engine=engine, name=name, serve_with=serve_with, max_batch=max_batch,
                          preferred=numbers(preferred, "--preferred") or (), queue_delay_us=queue_delay_us,
                          instances=instances, kind=kind, gpus=numbers(gpus, "--gpus") or (), warmup=warmup,
                          ensemble=ensemble, preprocess_instances=preprocess_instances,
                          command="drtrt " + " ".join(sys.argv[1:]), allow_unchecked_model=allow_unchecked_model)
    repository = write_repository(spec, force=force)
    console.print(repository.summary(), highlight=False, soft_wrap=True)
    console.print(f"serve: tritonserver --model-repository {out}  ·  screen: drtrt screen PHOTOS "
                  f"--model triton://localhost:8001/{name}", highlight=False, soft_wrap=True)
