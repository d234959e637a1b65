"""Golden files: the reference's inputs and outputs, written on the workstation, checked on the device.

Layout of a golden folder::

    golden.json    the index: schema, reference model (file name, sha256, precision, backend),
                   preprocessing spec, task vocabulary, output names, and per image its file,
                   sha256, geometry, grade (or null) and whether it has a lesion target
    0000.npz ...   one per image: ``image`` [3, S, S] float32 (the exact model input),
                   ``rgb`` [S, S, 3] uint8 (model-space picture, for reports), each reference
                   output without the batch axis (float32), ``target`` [S, S] uint8 lesion
                   labels in model space (255 = ignore) when the image has masks

Reading needs NumPy only (no data set, no PyTorch, no ONNX): the device replays the stored
inputs through its candidate and compares against the stored outputs. Every file's sha256
is checked on load.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from drtrt import __version__
from drtrt.errors import ArtefactError, DataError
from drtrt.fileio import sha256_file
from drtrt.preprocess import Geometry, PreprocessSpec
from drtrt.runtime.base import Runner
from drtrt.runtime.inference import BatchedInference
from drtrt.task import TaskSpec
from drtrt.verify.items import ImageItem

SCHEMA = "drtrt-golden/1"
INDEX = "golden.json"


def save_golden(out: str | Path, runner: Runner, items: Iterable[ImageItem], batch_size: int = 4,
                source: dict | None = None, on_progress: Callable[[int], None] | None = None) -> Path:
    """Run ``runner`` (the reference) over ``items`` and write a golden folder; returns its index path.

    Refuses a folder that already holds a golden index (delete it first), so a device never
    mixes two references.
    """
    out = Path(out)
    if (out / INDEX).exists():
        raise ArtefactError(f"{out} already holds golden files; delete it or choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict] = []
    for batch in BatchedInference(runner, batch_size)(items):
        for item, outputs in zip(batch.items, batch.per_image()):
            path = out / f"{len(entries):04d}.npz"
            arrays = {"image": item.tensor, **{k: np.asarray(v, np.float32) for k, v in outputs.items()}}
            if item.rgb is not None:
                arrays["rgb"] = item.rgb
            if item.target is not None:
                arrays["target"] = item.target
            np.savez_compressed(path, **arrays)
            entries.append({"name": item.name, "file": path.name, "sha256": sha256_file(path),
                            "geometry": item.geometry.to_dict() if item.geometry else None,
                            "grade": item.grade, "has_target": item.target is not None})
        if on_progress:
            on_progress(len(entries))
    if not entries:
        raise DataError("no images to write golden files from; check --data and --split")
    info = runner.info
    index = {
        "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "drtrt_version": __version__,
        "reference": {"file": runner.name, "sha256": runner.model_sha256(), "precision": info.precision,
                      "backend": runner.backend, "checkpoint_sha256": info.checkpoint_sha256},
        "preprocess": info.preprocess.to_dict(), "task": info.task.to_dict(), "outputs": list(runner.output_names),
        "source": source or {}, "images": entries,
    }
    path = out / INDEX
    path.write_text(json.dumps(index, indent=1))
    return path


class GoldenSet:
    """A golden folder opened for reading (index parsed, nothing else loaded yet)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        path = self.folder / INDEX
        if not path.is_file():
            raise ArtefactError(f"no {INDEX} in {self.folder}: write golden files with "
                                "`drtrt parity --reference MODEL --data ROOT --save-golden DIR`")
        try:
            self.index = json.loads(path.read_text())
        except ValueError as exc:
            raise ArtefactError(f"{path} is not valid JSON ({exc}); write the golden files again") from None
        if self.index.get("schema") != SCHEMA:
            raise ArtefactError(f"{path} has schema {self.index.get('schema')!r}, expected {SCHEMA}")
        self.spec = PreprocessSpec.from_dict(self.index["preprocess"])
        self.task = TaskSpec.from_dict(self.index["task"]) if "task" in self.index else TaskSpec()
        self.outputs: tuple[str, ...] = tuple(self.index["outputs"])

    def __len__(self) -> int:
        return len(self.index["images"])

    def items(self, limit: int | None = None) -> Iterator[ImageItem]:
        """Stored items in order, each file's sha256 checked before it is read."""
        for entry in self.index["images"][:limit]:
            path = self.folder / entry["file"]
            if not path.is_file():
                raise ArtefactError(f"golden file {path} is missing; copy the whole golden folder")
            if sha256_file(path) != entry["sha256"]:
                raise ArtefactError(f"golden file {path} does not match its sha256 in {INDEX}; "
                                    "it was changed or truncated in transit: copy it again")
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            geometry = Geometry.from_dict(entry["geometry"]) if entry.get("geometry") else None
            yield ImageItem(entry["name"], arrays["image"]
, arrays.get("rgb"), geometry, entry.get("grade"),
                             arrays.get("target"), {k: arrays[k] for k in self.outputs})
