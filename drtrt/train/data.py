"""IDRiD samples → training tensors, through the one shared preprocessing.

Decoding a 4288×2848 JPEG costs ~25–110 ms; doing it every epoch is waste, so each sample's
model-space image and label map are cached (in memory, and on disk when ``cache_dir`` is
given, keyed by file identity and the preprocessing spec).

Order and augmentation are pure functions of (seed, epoch, position): :class:`EpochSampler`
yields ``(index, augmentation seed)`` pairs, so a run resumed mid-epoch, or sharded over
DistributedDataParallel ranks, sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from drtrt.data.idrid import IdridIndex, IdridSample
from drtrt.data.masks import load_label_map
from drtrt.preprocess import PreprocessSpec, normalise, preprocess
from drtrt.task import TaskSpec
from drtrt.train.augment import AugmentConfig, augment
from drtrt.train.losses import GRADE_IGNORE, MASK_IGNORE


@dataclass(frozen=True)
class LabelledSample:
    """A sample with the labels training uses: ``grade`` None = unknown, ``has_mask`` False = unknown.

    Grade-0 images get an all-background mask (thesis §4.1.3: no DR means no lesion).
    """

    sample: IdridSample
    grade: int | None
    has_mask: bool
    pseudo_mask: Path | None = None   # label-map PNG (original resolution) from `drtrt pseudo-label`

    @classmethod
    def from_sample(cls, sample: IdridSample) -> "LabelledSample":
        return cls(sample, sample.grade, sample.has_masks or sample.grade == 0)


def split_train_val(items: Sequence[LabelledSample], val_fraction: float, seed: int
                    ) -> tuple[list[LabelledSample], list[LabelledSample]]:
    """Stratified split (thesis: 8:2 per grade); segmentation images stratify by lesion set."""
    from sklearn.model_selection import train_test_split

    items = list(items)
    if len(items) < 2 or val_fraction <= 0:
        return items, []
    keys = [f"g{it.grade}" if it.grade is not None else "s" + "".join(sorted(it.sample.masks)) for it in items]
    counts = {k: keys.count(k) for k in keys}
    n_val = max(1, round(len(items) * val_fraction))
    stratify = keys if min(counts.values()) >= 2 and n_val >= len(counts) else None
    train, val = train_test_split(items, test_size=n_val, random_state=seed, stratify=stratify)
    return list(train), list(val)


def training_items(index: IdridIndex, val_fraction: float, seed: int,
                   subsets: Sequence[str] = ("grading", "segmentation")
                   ) -> tuple[list[LabelledSample], list[LabelledSample]]:
    """Training parts of the IDRiD subsets, each split train/val; test parts stay held out."""
    train: list[LabelledSample] = []
    val: list[LabelledSample] = []
    for subset in subsets:
        items = [LabelledSample.from_sample(s) for s in index.select(subset=subset, split="train")]
        t, v = split_train_val(items, val_fraction, seed)
        train += t
        val += v
    return train, val


class FundusDataset(Dataset):
    """Yields ``{"image": [3,S,S] float32, "grade": long (-1 unknown), "mask": [S,S] long (255 unknown)}``."""

    def __init__(self, items: Sequence[LabelledSample], spec: PreprocessSpec,
                 augment_cfg: AugmentConfig | None = None, cache_dir: str | os.PathLike | None = None,
                 memory_cache: bool = True, task: TaskSpec = TaskSpec()) -> None:
        """``task``: the model's vocabulary, which lesion label each mask becomes."""
        self.items = list(items)
        self.memory_cache = memory_cache   # False: decode on every access (benchmarks' "no cache" case)
        self.spec = spec
        self.task = task
        self.augment_cfg = augment_cfg
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._memory: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def prepared(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Model-space (rgb uint8 [S,S,3], label uint8 [S,S]) of one sample, cached."""
        if not self.memory_cache:
            return self._load_cached(self.items[index])
        if index not in self._memory:
            self._memory[index] = self._load_cached(self.items[index])
        return self._memory[index]

    def fill(self) -> None:
        """Preprocess every sample now (in this process), so forked DataLoader workers inherit them."""
        for index in range(len(self.items)):
            self.prepared(index)

    def _load_cached(self, item: LabelledSample) -> tuple[np.ndarray, np.ndarray]:
        path = self._cache_path(item) if self.cache_dir else None
        if path is not None and path.exists():
            with np.load(path) as data:
                return data["rgb"], data["label"]
        rgb, label = self._load(item)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, rgb=rgb, label=label)
            os.replace(tmp, path)
        return rgb, label

    def _cache_path(self, item: LabelledSample) -> Path:
        files = [item.sample.image, *sorted(item.sample.masks.values()),
                 *([item.pseudo_mask] if item.pseudo_mask else [])]
        ident = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        key = json.dumps([ident, item.has_mask, self.spec.to_dict(), self.task.lesion_codes], sort_keys=True)
        return self.cache_dir / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".npz")

    def _load(self, item: LabelledSample) -> tuple[np.ndarray, np.ndarray]:
        pre = preprocess(item.sample.image, self.spec)
        size = self.spec.size
        if item.sample.has_masks:
            label = pre.geometry.to_model(load_label_map(item.sample, task=self.task), interpolation="nearest")

        elif item.pseudo_mask is not None:
            label = pre.geometry.to_model(read_label_png(item.pseudo_mask), interpolation="nearest")
        elif item.has_mask:  # grade 0: known to be lesion-free
            label = np.zeros((size, size), np.uint8)
        else:
            label = np.full((size, size), MASK_IGNORE, np.uint8)
        return pre.rgb, label

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """``key`` is an index, or ``(index, augmentation seed)`` from :class:`EpochSampler`."""
        index, aug_seed = key if isinstance(key, tuple) else (key, None)
        rgb, label = self.prepared(index)
        if self.augment_cfg is not None:
            if aug_seed is None:  # plain indexing: draw from torch's RNG
                aug_seed = int(torch.randint(0, 2**31 - 1, ()).item())
            rgb, label = augment(rgb, label, np.random.default_rng(aug_seed), self.augment_cfg)
        grade = self.items[index].grade
        return {
            "image": torch.from_numpy(normalise(rgb, self.spec)),
            "grade": torch.tensor(GRADE_IGNORE if grade is None else grade, dtype=torch.long),
            "mask": torch.from_numpy(np.ascontiguousarray(label).astype(np.int64)),
        }


def read_label_png(path: str | Path) -> np.ndarray:
    """A uint8 label map (values 0-4) stored as a single-channel PNG."""
    import cv2

    from drtrt.errors import DataError

    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None or label.ndim != 2:
        raise DataError(f"pseudo-label mask {path} is missing or not a single-channel PNG; "
                        "re-create the labels with `drtrt pseudo-label`")
    return label


class EpochSampler(Sampler):
    """Deterministic per-epoch order, sharded across ranks, resumable mid-epoch.

    Wraps :class:`torch.utils.data.DistributedSampler` (seeded with ``seed + epoch``; one
    replica when not distributed) and yields ``(index, augmentation seed)`` with the seed drawn
    from ``(seed, epoch, position)``. ``skip`` drops the first ``skip`` samples of this rank's
    epoch (a resumed run skips the batches it already trained on).
    """

    def __init__(self, size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                 shuffle: bool = True, drop_last: bool = False, skip: int = 0) -> None:
        self.base = DistributedSampler(range(size), num_replicas=world, rank=rank, shuffle=shuffle,
                                       seed=seed, drop_last=drop_last)
        self.base.set_epoch(epoch)
        self.seed, self.epoch, self.rank, self.skip = seed, epoch, rank, skip

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)

    def __iter__(self):
        order = list(self.base)
        seeds = np.random.default_rng([self.seed, self.epoch, self.rank]).integers(0, 2**31 - 1, len(order))
        for position in range(self.skip, len(order)):
            yield order[position], int(seeds[position])
