"""Checkpoints: weights-only files (``torch.load(weights_only=True)`` reads them; no pickled code).

A checkpoint is a dict of tensors and plain containers. ``best.pt`` carries the model, its
config, preprocessing and task vocabulary; ``last.pt`` also carries the resume state:
optimizer, scheduler, AMP scaler, epoch, step within the epoch, global step, torch RNG state
(CPU and CUDA), the partial epoch's losses, and the run's history and best score so far (as
JSON strings). :func:`checkpoint_info` is what a checkpoint says about itself, the same
:class:`~drtrt.model_info.ModelInfo` its ONNX export carries (:func:`export_checkpoint`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from drtrt import __version__
from drtrt.errors import ArtefactError
from drtrt.fileio import sha256_file
from drtrt.model_info import ModelInfo
from drtrt.preprocess import PreprocessSpec
from drtrt.task import TaskSpec
from drtrt.train.model import ModelConfig, build_model, count_gflop, task_spec

CHECKPOINT_FORMAT = "drtrt-checkpoint/1"


def make_checkpoint(model: torch.nn.Module, cfg, epoch: int, metrics: dict, optimizer=None, scheduler=None,
                    resume: dict | None = None) -> dict:
    """Checkpoint dict of ``model`` (unwrapped: no DDP/compile prefixes) trained with ``cfg`` (TrainConfig).

    With ``optimizer`` and ``scheduler``, the file can resume training; ``resume`` holds the
    loop state (see :func:`drtrt.train.trainer.train`), stored as given.
    """
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "drtrt_version": __version__,
        "model_config": cfg.model.to_dict(),
        "preprocess": cfg.preprocess.to_dict(),
        "task": json.dumps(task_spec(cfg.model).to_dict()),
        "train_config": json.dumps(cfg.to_dict()),
        "epoch": epoch,
        "metrics": json.dumps(metrics),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
    }
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
        ckpt["scheduler"] = scheduler.state_dict()
        ckpt["rng"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            ckpt["cuda_rng"] = torch.cuda.get_rng_state_all()
    if resume is not None:
        ckpt["resume"] = resume
    return ckpt


def load_checkpoint(path: str | Path) -> dict:
    """Load a drtrt checkpoint safely (``weights_only=True``: no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise ArtefactError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unpickler's protocol notice for foreign files
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint we trust"
        raise ArtefactError(f"{path} is not a loadable drtrt checkpoint ({type(exc).__name__}; "
                            "only weights-only checkpoints written by drtrt are accepted)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ArtefactError(f"{path} is not a drtrt checkpoint (expected format {CHECKPOINT_FORMAT})")
    return ckpt


def checkpoint_info(ckpt: dict, path: str | Path) -> ModelInfo:
    """The :class:`ModelInfo` of a loaded checkpoint (``path``: its file, for the hash): preprocessing,
    task vocabulary (derived from the model config for checkpoints that predate storing it),
    provenance, the architecture's GFLOP per image and the grade calibration (``drtrt.calibration``,
    when training fitted one)."""
    model_cfg = ModelConfig.from_dict(ckpt["model_config"])
    task = TaskSpec.from_dict(json.loads(ckpt["task"])) if "task" in ckpt else task_spec(model_cfg)
    preprocess = PreprocessSpec.from_dict(ckpt["preprocess"])
    gflop = count_gflop(model_cfg, preprocess.size)
    extra = {"gflop_per_image": f"{gflop:.4f}", "source_epoch": str(ckpt.get("epoch", ""))}
    if ckpt.get("calibration"):
        extra["calibration"] = ckpt["calibration"]
    return ModelInfo(preprocess=preprocess, task=task, checkpoint_sha256=sha256_file(path),
                     model_config=json.dumps(ckpt["model_config"], sort_keys=True), extra=tuple(sorted(extra.items())))


def export_checkpoint(checkpoint: str | Path, out: str | Path, simplify: bool = True, check_batch: int = 2):
    """``drtrt export``: the checkpoint's model to ONNX with its :func:`checkpoint_info` as metadata,
    checked against PyTorch on a random batch of ``check_batch`` (:func:`drtrt.export.onnx_export.export_onnx`)."""
    from drtrt.export.onnx_export import export_onnx

    ckpt = load_checkpoint(checkpoint)
    return export_onnx(model_from_checkpoint(ckpt), checkpoint_info(ckpt, checkpoint), out, simplify=simplify,
                       check_batch=check_batch)


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:

    """The checkpoint's model in eval mode, on the CPU."""
    model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def restore_rng(ckpt: dict) -> None:
    """Put torch's RNG (CPU, and CUDA when saved and present) back where ``ckpt`` left it."""
    if "rng" in ckpt:
        torch.set_rng_state(ckpt["rng"])
    if "cuda_rng" in ckpt and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["cuda_rng"])


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` to a temporary name, then rename: a kill never leaves a torn file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
