"""Shared fixtures: a small synthetic IDRiD set, a tiny trained checkpoint, its ONNX export.

Everything is generated here (nothing downloaded); sizes are tiny so the suite stays fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """Path to ``../shared/data/NAME``; skips the test when it is not beside the checkout."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is not present (it sits beside the developers' checkout only)")
    return path


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from drtrt.synth import write_synthetic_idrid

    root = tmp_path_factory.mktemp("synth")
    write_synthetic_idrid(root, grading=12, segmentation=6, size=256, seed=1)
    return root


@pytest.fixture(scope="session")
def tiny_run(synth_root, tmp_path_factory) -> Path:
    """Two epochs of a width-1/16 multi-task model at 64×64: enough for shapes and parity."""
    from drtrt.preprocess import PreprocessSpec
    from drtrt.train.model import ModelConfig
    from drtrt.train.trainer import TrainConfig, train

    run = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.01, device="cpu",
                      model=ModelConfig(width=0.0625, batch_norm=True), preprocess=PreprocessSpec(size=64))
    train(cfg, synth_root, run, log=lambda msg: None)
    return run


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run, tmp_path_factory) -> Path:
    from drtrt.export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(tiny_run / "best.pt", out)
    return out
