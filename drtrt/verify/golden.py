"""Golden files: the reference's inputs and outputs, written on the workstation, checked on the device.

Layout of a golden folder::

    golden.json    manifest: schema, reference model (file name, sha256, precision, backend),
                   preprocessing spec, output names, and per image its file, sha256, geometry,
                   grade (or null) and whether it has a lesion target
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drtrt import __version__
from drtrt.errors import ArtefactError, DataError
from drtrt.idrid import IdridSample, load_label_map
from drtrt.manifest import INPUT_NAME, sha256_file
from drtrt.preprocess import Geometry, PreprocessSpec, preprocess
from drtrt.runtime.base import Runner

SCHEMA = "drtrt-golden/1"
MANIFEST = "golden.json"


@dataclass
class ParityItem:
    """One image ready for comparison. ``reference`` holds stored outputs (golden) or None."""

    name: str
    tensor: np.ndarray                         # (3, S, S) float32 model input
    rgb: np.ndarray | None                     # (S, S, 3) uint8 model-space picture
    geometry: Geometry | None
    grade: int | None = None
    target: np.ndarray | None = None           # (S, S) uint8 lesion labels, model space
    reference: dict[str, np.ndarray] | None = field(default=None, repr=False)


def items_from_samples(samples: Sequence[IdridSample | str | Path], spec: PreprocessSpec) -> Iterator[ParityItem]:
    """Preprocess each sample once with ``spec``; targets are warped with the image's own geometry.

    Plain image paths are accepted too (no grade, no target)."""
    for sample in samples:
        if not isinstance(sample, IdridSample):
            pre = preprocess(sample, spec)
            yield ParityItem(str(sample), pre.tensor, pre.rgb, pre.geometry)
            continue
        pre = preprocess(sample.image, spec)
        target = (pre.geometry.to_model(load_label_map(sample), interpolation="nearest")
                  if sample.has_masks else None)
        yield ParityItem(sample.key, pre.tensor, pre.rgb, pre.geometry, sample.grade, target)


def save_golden(out: str | Path, runner: Runner, items: Iterable[ParityItem], batch_size: int = 4,
                source: dict | None = None, on_progress: Callable[[int], None] | None = None) -> Path:
    """Run ``runner`` (the reference) over ``items`` and write a golden folder; returns its manifest path.

    Refuses a folder that already holds a golden manifest (delete it first), so a device never
    mixes two references.
    """
    out = Path(out)
    if (out / MANIFEST).exists():
        raise ArtefactError(f"{out} already holds golden files; delete it or choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict] = []
    batch: list[ParityItem] = []

    def flush() -> None:
        outputs = runner.infer({INPUT_NAME: np.stack([it.tensor for it in batch])})
        for i, item in enumerate(batch):
            path = out / f"{len(entries):04d}.npz"
            arrays = {"image": item.tensor, **{k: np.asarray(v[i], np.float32) for k, v in outputs.items()}}
            if item.rgb is not None:
                arrays["rgb"] = item.rgb
            if item.target is not None:
                arrays["target"] = item.target
            np.savez_compressed(path, **arrays)
            entries.append({"name": item.name, "file": path.name, "sha256": sha256_file(path),
                            "geometry": item.geometry.to_dict() if item.geometry else None,
                            "grade": item.grade, "has_target": item.target is not None})
        batch.clear()
        if on_progress:
            on_progress(len(entries))

    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not entries:
        raise DataError("no images to write golden files from; check --data and --split")
    info = runner.info
    manifest = {
        "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "drtrt_version": __version__,
        "reference": {"file": runner.path.name, "sha256": sha256_file(runner.path), "precision": info.precision,
                      "backend": runner.backend, "checkpoint_sha256": info.checkpoint_sha256},
        "preprocess": info.preprocess.to_dict(), "grade_names": list(info.grade_names),
        "lesion_names": list(info.lesion_names), "outputs": list(runner.output_names),
        "source": source or {}, "images": entries,
    }
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=1))
    return path


class GoldenSet:
    """A golden folder opened for reading (manifest parsed, nothing else loaded yet)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise ArtefactError(f"no {MANIFEST} in {self.folder}: write golden files with "
                                "`drtrt parity --reference MODEL --data ROOT --save-golden DIR`")
        try:
            self.manifest = json.loads(path.read_text())
        except ValueError as exc:
            raise ArtefactError(f"{path} is not valid JSON ({exc}); write the golden files again") from None
        if self.manifest.get("schema") != SCHEMA:
            raise ArtefactError(f"{path} has schema {self.manifest.get('schema')!r}, expected {SCHEMA}")
        self.spec = PreprocessSpec.from_dict(self.manifest["preprocess"])
        self.outputs: tuple[str, ...] = tuple(self.manifest["outputs"])

    def __len__(self) -> int:
        return len(self.manifest["images"])

    def items(self, limit: int | None = None) -> Iterator[ParityItem]:
        """Stored items in order, each file's sha256 checked before it is read."""
        for entry in self.manifest["images"][:limit]:
            path = self.folder / entry["file"]
            if not path.is_file():
                raise ArtefactError(f"golden file {path} is missing; copy the whole golden folder")
            if sha256_file(path) != entry["sha256"]:
                raise ArtefactError(f"golden file {path} does not match its sha256 in {MANIFEST}; "
                                    "it was changed or truncated in transit: copy it again")
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            geometry = Geometry.from_dict(entry["geometry"]) if entry.get("geometry") else None
            yield ParityItem(entry["name"], arrays["image"], arrays.get("rgb"), geometry, entry.get("grade"),
                             arrays.get("target"), {k: arrays[k] for k in self.outputs})
