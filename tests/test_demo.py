"""`drtrt demo` end to end at toy scale: every stage runs and leaves its outputs behind."""

import json

from rich.console import Console

from drtrt.cli import _progress
from drtrt.demo import DemoConfig, run_demo


def test_demo_runs_every_stage(tmp_path):
    cfg = DemoConfig(grading=12, segmentation=6, synth_size=256, image_size=64, width=0.0625, epochs=1,
                     batch_size=4, screen_count=2)
    console = Console(record=True, width=120)
    metrics = run_demo(tmp_path, console=console, progress_factory=_progress, cfg=cfg)
    for path in ("data/synthetic-truth.csv", "run/best.pt", "run/history.csv", "model.onnx", "metrics.json",
                 "screening/results.jsonl"):
        assert (tmp_path / path).exists(), path
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written.keys() == metrics.keys() and written["accuracy"] == metrics["accuracy"]
    assert {"accuracy", "majority_rate", "mean_dice"} <= set(metrics)
    rows = (tmp_path / "screening" / "results.jsonl").read_text().splitlines()
    assert len(rows) == 2 and all(json.loads(r)["status"] == "graded" for r in rows)
    text = console.export_text()
    assert "not for clinical use" in text.lower() and "held-out" in text
