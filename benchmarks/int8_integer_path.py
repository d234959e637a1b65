"""INT8 on the CPU, integer path (issue 26): the full model at 512², batch 1, before and after.

    PYTHONPATH=. OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/int8_integer_path.py \\
        [--runs 7] [--warmup 2] [--threads 1] [--work DIR] [--json OUT]

Paths, timed interleaved (run r of every path before run r + 1 of any; medians):

* PyTorch eager FP32 (``torch.inference_mode``), ``--threads`` threads: the baseline;
* ONNX Runtime FP32;
* ONNX Runtime INT8 **before**: the Q/DQ file ``calibrate_int8`` writes, opened as written (main's
  behaviour: signed activations; ONNX Runtime leaves MaxPools, most Concats and fanned-out ReLUs in FP32);
* ONNX Runtime INT8 **after**: the same file through :class:`~drtrt.runtime.backends.ort.OrtRunner`,
  which shifts its activations to unsigned at load (``drtrt.runtime.backends.ort_u8``).

Then, per INT8 path, ONNX Runtime's profiler (1 warm-up + ``--profile-runs`` runs): kernel time per op
type and the node types of the optimised graph; the INT8 ceiling of this CPU at the same threads: the
best of a 2048³ ``MatMulInteger`` (u8 x s8) and a fused 3x3 ``QLinearConv`` (256 -> 256 channels at
128², NHWC u8); and the model's FLOPs (``count_gflop``; multiply-add = 2), so each path's
GFLOP/s-equivalent and share of the ceiling, both per CPU second (with one thread, process CPU time
is the work done; wall time on a shared machine adds the wait for a core). Random weights (seed 0):
timing does not depend on them; the INT8 model is calibrated on 4 images without bias correction (it
changes bias values, not the graph).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from precision_cpu import add_full_model_args, calibration_root, export_full_model, machine  # noqa: E402

from drtrt.runtime.backends.ort import OrtRunner, open_session, session_options  # noqa: E402


def profile(model: Path | bytes, threads: int, x: np.ndarray, runs: int, work: Path, tag: str) -> dict:
    """Kernel ms per run by op type and the optimised graph's node types of one session."""
    import onnx
    import onnxruntime as ort

    options = session_options(threads)
    options.enable_profiling = True
    options.profile_file_prefix = str(work / f"profile-{tag}")
    options.optimized_model_filepath = str(work / f"optimised-{tag}.onnx")
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                   providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        session.run(None, {"image": x})
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1e3 / (runs + 1)
    nodes = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath,
                                                             load_external_data=False).graph.node)
    return {"kernel_ms": dict(per_op.most_common()), "nodes": dict(nodes.most_common())}


def int8_ceiling(threads: int, repeats: int = 10) -> dict:
    """Best GOP/s (multiply-add = 2, per CPU second) of a u8 x s8 MatMulInteger (2048³) and a fused QLinearConv."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    n = 2048
    spec = [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [n, n]),
            helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])]
    gemm = helper.make_model(helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "g",
                                               spec[:2], spec[2:]), opset_imports=[helper.make_opsetid("", 17)])
    a = rng.integers(0, 255, (n, n), dtype=np.uint8)
    b = rng.integers(-127, 127, (n, n), dtype=np.int8)
    s = open_session(gemm.SerializeToString(), threads=threads)
    results = {"MatMulInteger 2048³": (2 * n**3, lambda: s.run(None, {"a": a, "b": b}))}

    c, hw = 256, 128   # a QDQ 3x3 conv ONNX Runtime fuses into QLinearConv (u8 activations, s8 weights)
    w = numpy_helper.from_array(rng.integers(-127, 127, (c, c, 3, 3), dtype=np.int8), "w")
    consts = [numpy_helper.from_array(np.array(v, t), k) for k, v, t in
              (("s", 0.02, np.float32), ("z", 128, np.uint8), ("ws", [0.01] * c, np.float32),
               ("wz", [0] * c, np.int8))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0),
             helper.make_node("Conv", ["xf", "wf"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["y", "s", "z"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["out"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, c, hw, hw])], [w, *consts])
    conv = open_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                        threads=threads)
    x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    results["QLinearConv 3x3 256->256 @128²"] = (2 * c * c * 9 * hw * hw, lambda: conv.run(None, {"x": x}))
    out = {}
    for name, (ops, run) in results.items():
        run()
        best = min(_seconds(run) for _ in range(repeats))
        out[name] = ops / best / 1e9
    return out


def time_interleaved(paths: dict, x: np.ndarray, warmup: int, runs: int) -> tuple[dict, dict]:
    """(wall ms, CPU ms) per call of each path; run r of every path before run r + 1 of any. CPU time is
    the process's (``time.process_time``): with one thread it is the work done, not the wait for a core
    that other jobs hold, so it is what separates two paths on a loaded machine."""
    for fn in paths.values():
        for _ in range(warmup):
            fn(x)
    wall: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(runs):
        for name, fn in paths.items():
            tick, cpu_tick = time.perf_counter(), time.process_time()
            fn(x)
            wall[name].append((time.perf_counter() - tick) * 1e3)
            cpu[name].append((time.process_time() - cpu_tick) * 1e3)
    return wall, cpu


def fp32_gemm(threads: int, repeats: int = 10, n: int = 2048) -> float:
    """GFLOP per CPU second of ONNX Runtime's FP32 MatMul (MLAS), n³: the FP32 side of the ratio."""
    from onnx import TensorProto, helper

    spec = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "abc"]
    model = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "g", spec[:2],
                                                spec[2:]), opset_imports=[helper.make_opsetid("", 17)])
    s = open_session(model.SerializeToString(), threads=threads)
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    run = lambda: s.run(None, {"a": a, "b": a})  # noqa: E731
    run()
    return 2 * n**3 / min(_seconds(run) for _ in range(repeats)) / 1e9


def _seconds(run) -> float:
    """Process CPU seconds of one call (one thread: the work, not the wait for a core)."""
    tick = time.process_time()
    run()
    return time.process_time() - tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile-runs", type=int, default=3)
    add_full_model_args(parser)
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from drtrt.calibration.quantize import calibrate_int8
    from drtrt.train.model import count_gflop

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model, fp32 = export_full_model(work, args.width, args.size)
        int8 = work / "model.int8.nobc.onnx"
        if not int8.exists():
            log(calibrate_int8(fp32, int8, calibration_root(work, None), images=4, bias_correction=0).summary())
        torch.set_num_threads(args.threads)

        def torch_fp32(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x))

        ort_fp32, before = (open_session(p, threads=args.threads) for p in (fp32, int8))
        after = OrtRunner(int8, threads=args.threads)
        after.activate()
        assert after.unsigned, "OrtRunner did not shift the INT8 model's activations"
        paths = {f"PyTorch eager FP32, {args.threads} thread(s)": torch_fp32,
                 "ONNX Runtime FP32": lambda x: ort_fp32.run(None, {"image": x}),
                 "ONNX Runtime INT8, before (file as written, signed activations)":
                     lambda x: before.run(None, {"image": x}),
                 "ONNX Runtime INT8, after (OrtRunner: unsigned activations)": lambda x: after.infer({"image": x})}
        x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
        gap = [float(np.abs(p - q).max())
               for p, q in zip(before.run(None, {"image": x}), after.infer({"image": x}).values())]
        load = [os.getloadavg()]
        log(f"timing {len(paths)} paths: {args.warmup} warm-up + {args.runs} interleaved runs each")
        times, cpu_ms = time_interleaved(paths, x, args.warmup, args.runs)
        load.append(os.getloadavg())
        log("profiling and measuring the INT8 ceiling")
        from drtrt.runtime.backends.ort_u8 import unsigned_activations

        profiles = {"before": profile(int8, args.threads, x, args.profile_runs, work, "before"),
                    "after": profile(unsigned_activations(int8), args.threads, x, args.profile_runs, work, "after")}
        ceiling = int8_ceiling(args.threads)
        fp32_peak = fp32_gemm(args.threads)
        load.append(os.getloadavg())
        gflop = count_gflop(_model_config(args.width), args.size)

    peak = max(ceiling.values())
    base = statistics.median(next(iter(times.values())))
    cpu_base = statistics.median(next(iter(cpu_ms.values())))
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {machine()}; onnxruntime "
          f"{ort.__version__}, torch {torch.__version__}; threads {args.threads}; load average (1/5/15 min) "
          f"before timing {_load(load[0])}, after timing {_load(load[1])}, after the ceiling {_load(load[2])}")
    print(f"command: {' '.join(sys.argv)}; model {gflop:.1f} GFLOP per image; INT8 ceiling "
          + ", ".join(f"{k} {v:,.0f} GOP/s" for k, v in ceiling.items())
          + f"; FP32 MatMul 2048³ {fp32_peak:,.0f} GFLOP/s (INT8 ceiling ÷ FP32 = {peak / fp32_peak:.2f}); "
          f"before/after max |Δ| {gap}\n")
    print("| path | median ms | min–max ms | × PyTorch FP32 | CPU ms, median | × PyTorch FP32, CPU | "
          "GFLOP/s-equivalent (per CPU second) | % of INT8 ceiling |")
    print("|---|---|---|---|---|---|---|---|")
    for name, ms in times.items():
        med, cpu = statistics.median(ms), statistics.median(cpu_ms[name])
        print(f"| {name} | {med:,.0f} | {min(ms):,.0f}–{max(ms):,.0f} | {base / med:.2f} | {cpu:,.0f} | "
              f"{cpu_base / cpu:.2f} | {gflop / cpu * 1e3:,.0f} | {100 * gflop / cpu * 1e3 / peak:.0f} % |")
    for tag, prof in profiles.items():
        total = sum(prof["kernel_ms"].values())
        print(f"\nprofile {tag}: {total:,.0f} ms kernel time per run; nodes: "
              + ", ".join(f"{k} {v}" for k, v in prof["nodes"].items() if v and k in _SHOWN))
        print(" | ".join(f"{k} {v:,.0f} ms ({100 * v / total:.0f} %)" for k, v in list(prof["kernel_ms"].items())[:12]))
    if args.json:
        args.json.write_text(json.dumps({"times_ms": times, "cpu_ms": cpu_ms, "profiles": profiles,
                                         "ceiling_gops": ceiling, "fp32_gemm_gflops": fp32_peak,
                                         "gflop": gflop, "load": load, "machine": machine(), "gap": gap,
                                         "threads": args.threads}, indent=2))


_SHOWN = ("QLinearConv", "Conv", "QLinearConcat", "Concat", "NhwcMaxPool", "MaxPool", "QuantizeLinear",
          "DequantizeLinear", "LeakyRelu", "QLinearLeakyRelu", "Transpose", "ReorderInput", "ReorderOutput")


def _load(avg: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.1f}" for v in avg)


def _model_config(width: float):
    from drtrt.train.model import ModelConfig

    return ModelConfig(width=width)


if __name__ == "__main__":
    main()
