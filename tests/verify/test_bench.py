"""drtrt bench: the timing loop, the report and its log, the CI floor, and the machine facts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from drtrt.cli import app
from drtrt.preprocess import preprocess
from drtrt.verify import sysinfo
from drtrt.verify.bench import BenchConfig, run_bench, synthetic_jpeg

runner = CliRunner()


@pytest.fixture(scope="module")
def report(tiny_run, tiny_onnx, photo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig(models=(tiny_run / "best.pt", tiny_onnx), batches=(1, 2), warmup=1, iters=3, data=photo_root,
                      log=out / "log.jsonl")
    return run_bench(cfg), out


def test_rows_per_model_and_batch_with_consistent_figures(report, tiny_onnx):
    rep, _ = report
    assert [(Path(r.model).suffix, r.batch) for r in rep.rows] == [(".pt", 1), (".pt", 2), (".onnx", 1), (".onnx", 2)]
    assert [r.backend for r in rep.rows] == ["torch", "torch", "ort", "ort"]
    for row in rep.rows:
        q = row.infer_ms
        assert 0 < q["p50"] <= q["p90"] <= q["p99"]
        assert row.images_per_s == pytest.approx(row.batch * 1e3 / q["p50"])
        assert row.end_to_end_ms_per_image > row.intake_ms_per_image > 0
        assert row.end_to_end_ms_per_image >= row.intake_ms_per_image + q["p50"] / row.batch * 0.5
        assert row.peak_rss_mb > 50 and row.peak_rss_scope == "model"
        assert row.gflop_per_image and row.gflop_per_image > 0
        assert 0 < row.peak_fraction < 1
        assert {"accuracy", "macro_f1", "mean_dice"} <= set(row.metrics)
    assert rep.rows[2].size_mb == pytest.approx(tiny_onnx.stat().st_size / 2**20)
    assert rep.rows[0].gflop_per_image == rep.rows[2].gflop_per_image       # same architecture, same count
    assert rep.context["gemm_fp32_gflops"]["best"] > 0 and not rep.failures


def test_log_lines_and_json(report):
    rep, out = report
    log = out / "log.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 4 and {"cpu", "iters", "images_per_s", "infer_ms"} <= set(lines[0])
    saved = json.loads(json.dumps(rep.to_dict()))
    assert saved["passed"] and len(saved["rows"]) == 4
    assert saved["context"]["images_refused_by_quality_gate"] == 0


def test_bench_times_the_screening_path(tiny_onnx, monkeypatch):
    """Every timed iteration is one Predictor.screen_batch, what `drtrt screen` runs, on batch images."""
    from drtrt.runtime.predictor import Predictor

    calls = []
    original = Predictor.screen_batch
    monkeypatch.setattr(Predictor, "screen_batch", lambda self, sources, *a, **k: calls.append(len(sources))
                        or original(self, sources, *a, **k))
    rep = run_bench(BenchConfig(models=(tiny_onnx,), batches=(2,), warmup=1, iters=3, gemm_peak=False))
    assert calls == [1, 2, 2, 2, 2]        # the gradable check of the one synthetic image, then warm-up + 3 timed
    assert rep.rows[0].batch == 2 and not Path("drtrt-bench.jsonl").exists()    # no log unless asked


def test_cli_floor_gate_and_log(tiny_onnx, photo_root, tmp_path):
    log = tmp_path / "log.jsonl"
    args = ["bench", "--model", str(tiny_onnx), "--data", str(photo_root), "--iters", "2", "--warmup", "0",
            "--no-peak", "--log", str(log)]
    ok = runner.invoke(app, [*args, "--floor", "0.001"])
    assert ok.exit_code == 0, ok.output
    slow = runner.invoke(app, [*args, "--floor", "1e9"])
    assert slow.exit_code == 4 and "< floor" in slow.output                  # a gate failed
    as_json = runner.invoke(app, [*args, "--floor", "1e9", "--json"])
    assert as_json.exit_code == 4 and not json.loads(as_json.stdout)["passed"]
    assert len(log.read_text().splitlines()) == 3                            # appended, not overwritten
    bad = runner.invoke(app, ["bench", "--model", str(tiny_onnx), "--batch", "1,x"])
    assert bad.exit_code == 2 and "comma-separated integers" in bad.output   # usage error
    missing = runner.invoke(app, ["bench", "--model", str(tmp_path / "none.onnx")])
    assert missing.exit_code == 1 and "not found" in missing.output


def test_synthetic_image_is_a_gradable_fundus():
    from drtrt.preprocess import PreprocessSpec

    pre = preprocess(synthetic_jpeg(640, 426), PreprocessSpec(size=64))
    assert pre.geometry.fov.found and pre.tensor.shape == (3, 64, 64)


def test_machine_facts():
    gemm = sysinfo.measure_gemm_peak(threads=1, n=256, repeats=3)
    assert gemm["best"] >= gemm["median"] > 0 and gemm["threads"] == 1
    assert {"numpy", "torch", "onnxruntime"} == set(gemm["libraries"])                  # all present here
    assert gemm["best"] == pytest.approx(max(gemm["libraries"].values()), rel=1e-3)
    if sysinfo.reset_peak_rss():
        # Whether or not the kernel honours the reset (a sandbox may not), the peak is never below
        # what is resident now, with a 256 MiB block touched. (How much the block adds to the
        # resident size depends on what the allocator has free: a long test run reuses pages.)
        block = np.ones(256 * 2**20, np.uint8)
        rss = next(int(line.split()[1]) / 1024 for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        assert sysinfo.peak_rss_mb() >= rss - 1 and rss >= 256 and block[-1] == 1


    assert sysinfo.cpu_name()
