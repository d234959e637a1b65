"""TensorRT's timing cache for ``drtrt build``: where it lives, and when an old one may be reused.

Tactic timings hold for one GPU model and one TensorRT version only, so each pair has its own
file, and a key file beside it (``<cache>.json``) says what the cache was made for. A cache is an
optimisation: one that cannot be read, was made for something else or cannot be saved costs
build time, never the build.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drtrt.fileio import atomic_write
from drtrt.runtime.backends.cuda import GpuInfo


def default_cache_dir() -> Path:
    root = os.environ.get("DRTRT_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "drtrt"
    return Path(root) / "timing"


def timing_cache_path(option: Path | None, gpu: GpuInfo, trt_version: str) -> Path:
    """One cache per GPU model + compute capability + TensorRT version, unless a file is given.

    ``option`` is a folder when it is one already or has no suffix (``~/trt-cache``), else a file.
    """
    board = gpu.board.removeprefix("NVIDIA ")
    model = "-".join(filter(None, (gpu.name, board, f"{gpu.multiprocessors}sms" if gpu.multiprocessors else "")))
    key = f"{re.sub(r'[^A-Za-z0-9]+', '-', model).strip('-').lower()}-sm{gpu.compute_capability.replace('.', '')}" \
          f"-trt{trt_version}.cache"
    if option is None:
        return default_cache_dir() / key
    folder = Path(option).is_dir() or not Path(option).suffix
    return Path(option) / key if folder else Path(option)


def timing_cache_key(gpu: GpuInfo, trt_version: str) -> dict[str, str]:
    """What a cache was made for, kept beside it: a named cache file may come from another GPU."""
    return {"tensorrt": trt_version, "gpu": gpu.model, "compute_capability": gpu.compute_capability}


def load_timing_cache(config: Any, path: Path, key: dict[str, str], log: Callable[[str], None]) -> bool:
    """Attach the timing cache at ``path`` when it was made for this GPU + TensorRT (True), else a fresh one."""
    key_file = path.with_name(path.name + ".json")
    if path.is_file() and key_file.is_file():
        try:
            made_for = json.loads(key_file.read_text())
            blob = path.read_bytes()
        except (OSError, ValueError):
            made_for, blob = None, b""     # a cache is an optimisation: an unreadable one is rebuilt
        if made_for == key and blob:
            if config.set_timing_cache(config.create_timing_cache(blob), False):
                return True
            log(f"TensorRT refused the timing cache {path}; starting a new one")
        else:
            log(f"timing cache {path} was made for {made_for}, not {key}; starting a new one")
    config.set_timing_cache(config.create_timing_cache(b""), False)
    return False


def save_timing_cache(config: Any, path: Path, key: dict[str, str], log: Callable[[str], None]) -> None:
    """Write the build's timing cache and its key; a failure is logged, since the engine is still good."""
    try:
        atomic_write(path, memoryview(config.get_timing_cache().serialize()))
        path.with_name(path.name + ".json").write_text(json.dumps(key))
    except OSError as exc:
        log(f"could not save the timing cache {path}: {exc}")
