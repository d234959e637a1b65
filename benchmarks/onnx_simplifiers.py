"""ONNX simplifiers on the full model: no simplifier vs onnxslim vs onnx-simplifier (onnxsim).

    PYTHONPATH=. .venv/bin/python benchmarks/onnx_simplifiers.py [--size 512] [--repeats 3]
        [--threads 2] [--out benchmarks/onnx_simplifiers_cpu.json]

Exports the full network (width 1.0, VGG16 widths, shared depth 3, deep and shallow fusion;
random weights, ``torch.manual_seed(0)``) once, exactly as ``drtrt export`` does
(TorchScript exporter, opset 17, dynamic batch on ``image`` and both outputs, constant folding),
then for each of *none*, ``onnxslim.slim(proto)`` and ``onnxsim.simplify(proto)`` records:

* node count before/after, op-type histogram after, simplify wall time (median of
  ``--repeats`` runs, each on a fresh copy of the exported proto), file size;
* ``onnx.checker.check_model(full_check=True)`` pass/fail;
* parity: max |Δ| per output between ONNX Runtime (CPU) and PyTorch on a fixed random batch
  of 2 at ``--size``; then batch 1 and batch 3 through the same session (dynamic batch kept?),
  compared row-wise with the PyTorch reference for the rows they share with the batch of 2;
* what TensorRT's ONNX parser would see (TensorRT is not installed here): op types, each
  flagged against the onnx-tensorrt operator support notes in :data:`TRT_NOTES`; shape
  arithmetic left over from the dynamic batch (``Shape`` → ``Gather``/``Concat``/... chains and
  the ``Reshape``/``Resize``/``Expand`` nodes that consume them); ``Resize`` attributes and
  whether its scales/sizes are constants; and whether two variants' graphs are identical.

Also exports the model once more with non-zero biases (see :func:`build`) and records node counts
only. Prints a markdown table and writes every figure to ``--out`` (JSON). onnxsim is optional: when
it is not importable its row says so and the rest still runs.
"""

from __future__ import annotations

import argparse
import collections
import copy
import hashlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnx
import torch
from onnx import numpy_helper

from drtrt.export.onnx_export import OPSET, _TupleOutputs
from drtrt.runtime.backends.ort import open_session
from drtrt.task import TaskSpec
from drtrt.train.model import ModelConfig, build_model

INPUT = TaskSpec().input_name
OUTPUTS = TaskSpec().outputs

# onnx-tensorrt operator notes (docs/operators.md support matrix, TensorRT 8.4 onwards; later
# releases only relax these) for the op types this model can produce. "ok": supported with no
# caveat that applies here; "note": supported, with the stated caveat. Resize is judged per node
# against RESIZE_SUPPORTED by :func:`trt_flags`.
TRT_NOTES = {
    "Conv": ("ok", "2D/3D only; weights W must be an initializer (they are)"),
    "Relu": ("ok", ""), "Sigmoid": ("ok", ""), "Add": ("ok", ""), "Mul": ("ok", ""),
    "MaxPool": ("ok", "2D/3D only; Indices output unsupported (not used)"),
    "Concat": ("ok", "on activations; on INT64 shape tensors it is shape-tensor arithmetic"),
    "Resize": ("ok", "see RESIZE_SUPPORTED"),
    "ReduceMean": ("ok", "axes as attribute at opset 17"), "ReduceMax": ("ok", "axes as attribute at opset 17"),
    "Softmax": ("ok", ""), "Gemm": ("ok", ""), "MatMul": ("ok", ""), "Flatten": ("ok", ""), "Transpose": ("ok", ""),
    "Reshape": ("note", "a non-constant shape input makes it a dynamic shuffle fed by shape tensors"),
    "Identity": ("note", "supported; a no-op layer the builder removes, so harmless"),
    "Constant": ("ok", "becomes weights, same as an initializer"),
    "Shape": ("note", "supported; starts shape-tensor arithmetic (INT64, cast down to INT32 by TensorRT < 10)"),
    "Gather": ("note", "supported; on INT64 shape tensors it is shape arithmetic"),
    "Unsqueeze": ("note", "axes must be a constant"), "Squeeze": ("note", "axes must be an initializer"),
    "Slice": ("note", "axes must be an initializer"), "Cast": ("ok", ""), "ConstantOfShape": ("ok", ""),
    "Expand": ("ok", ""), "Div": ("ok", ""), "Sub": ("ok", ""), "Floor": ("ok", ""), "Where": ("ok", ""),
}
RESIZE_SUPPORTED = {"mode": {"nearest", "linear"},   # cubic only in newer TensorRT (8.6+)
                    "coordinate_transformation_mode": {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn",
                                                       "asymmetric", "align_corners"},
                    "nearest_mode": {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}}
SHAPE_OPS = {"Shape", "Size"}
SHAPE_PROPAGATING = {"Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Mul", "Add", "Sub", "Div",
                     "Floor", "Ceil", "ConstantOfShape", "Range", "Equal", "Where", "ReduceProd", "Identity"}
SHAPE_INPUTS = {"Reshape": (1,), "Resize": (2, 3), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4),
                "ConstantOfShape": (0,), "Upsample": (1,)}


def machine() -> dict:
    """CPU model, cores, load averages and package versions (figures depend on all of them)."""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    versions = {}
    for pkg in ("torch", "onnx", "onnxruntime", "onnxslim", "onnxsim"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "versions": versions}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def build(seed: int, nonzero_biases: bool = False) -> torch.nn.Module:
    """The full model in eval mode with seeded random weights.

    The model's own initialisation zeroes every bias; the exporter then deduplicates those equal
    initializers into ``Identity`` nodes, which a trained checkpoint would not produce.
    ``nonzero_biases`` draws them from N(0, 0.01) instead, to see the graph a trained model gets.
    """
    torch.manual_seed(seed)
    model = build_model(ModelConfig()).eval()
    if nonzero_biases:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("bias"):
                    param.normal_(0.0, 0.01)
    return model


def nonzero_bias_graphs(seed: int, size: int, work: Path) -> dict:
    """Node counts and op histograms with non-zero biases (no timing or parity)."""
    exported = export(build(seed, nonzero_biases=True), size, work / "nonzero_biases.onnx")
    out = {"exported": {"nodes": len(exported.graph.node), "ops": histogram(exported)}}
    structures = {}
    for name in ("onnxslim", "onnxsim"):
        try:
            proto, _ = SIMPLIFIERS[name](copy.deepcopy(exported))
        except ImportError as exc:
            out[name] = {"error": f"ImportError: {exc}"}
            continue
        out[name] = {"nodes": len(proto.graph.node), "ops": histogram(proto)}
        structures[name] = structural_hashes(proto)
    if len(structures) == 2:
        out["onnxslim_equals_onnxsim"] = structures["onnxslim"] == structures["onnxsim"]
    return out


def export(model: torch.nn.Module, size: int, path: Path) -> onnx.ModelProto:
    """The project's export call (drtrt/export/onnx_export.py) without simplification or metadata."""
    dummy = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_TupleOutputs(model).eval(), (dummy,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=list(OUTPUTS),
                          dynamic_axes={n: {0: "batch"} for n in (INPUT, *OUTPUTS)}, do_constant_folding=True)
    return onnx.load(str(path))


def simplify_none(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    return proto, {}


def simplify_onnxslim(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    import onnxslim

    return onnxslim.slim(proto), {"call": "onnxslim.slim(proto)"}


def simplify_onnxsim(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """onnxsim >= 0.4 keeps symbolic dims without ``overwrite_input_shapes``; ``check_n=0`` (default)
    means it does not run its own random-input check, so no ``test_input_shapes`` are needed."""
    import onnxsim

    out, ok = onnxsim.simplify(proto)
    return out, {"call": "onnxsim.simplify(proto)", "onnxsim_ok": bool(ok)}


SIMPLIFIERS = {"none": simplify_none, "onnxslim": simplify_onnxslim, "onnxsim": simplify_onnxsim}


def timed_simplify(fn, proto: onnx.ModelProto, repeats: int) -> tuple[onnx.ModelProto, dict]:
    """Run ``fn`` ``repeats`` times on fresh copies; return the last result and the times."""
    times, result, info = [], None, {}
    for _ in range(repeats):
        fresh = copy.deepcopy(proto)
        t0 = time.perf_counter()
        result, info = fn(fresh)
        times.append(time.perf_counter() - t0)
    info.update(times_s=[round(t, 3) for t in times], median_s=round(statistics.median(times), 3))
    return result, info


def histogram(proto: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(collections.Counter(n.op_type for n in proto.graph.node).items()))


def batch_dims(proto: onnx.ModelProto) -> dict[str, str]:
    """The first dimension of every graph input and output: a symbol name, a number, or '?'."""
    def first(v):
        dims = v.type.tensor_type.shape.dim
        if not dims:
            return "?"
        d = dims[0]
        return d.dim_param if d.HasField("dim_param") else (str(d.dim_value) if d.HasField("dim_value") else "?")
    return {v.name: first(v) for v in (*proto.graph.input, *proto.graph.output)}


def constant_names(proto: onnx.ModelProto) -> set[str]:
    return {i.name for i in proto.graph.initializer} | {o for n in proto.graph.node if n.op_type == "Constant"
                                                        for o in n.output}


def shape_arithmetic(proto: onnx.ModelProto) -> dict:
    """Nodes computing on shapes (forward taint from Shape/Size) and the data ops they feed."""
    tainted: set[str] = set()
    shape_nodes, consumers = [], []
    for node in proto.graph.node:  # ONNX graphs are topologically sorted
        hit = [i for i in node.input if i in tainted]
        if node.op_type in SHAPE_OPS or (hit and node.op_type in SHAPE_PROPAGATING):
            tainted.update(node.output)
            shape_nodes.append(node.op_type)
        elif hit:
            consumers.append(node.op_type)
    consts = constant_names(proto)
    dynamic_shape_inputs = [f"{n.op_type}:{n.name}" for n in proto.graph.node if n.op_type in SHAPE_INPUTS
                            for k in SHAPE_INPUTS[n.op_type] if k < len(n.input) and n.input[k]
                            and n.input[k] not in consts]
    return {"shape_nodes": dict(collections.Counter(shape_nodes)), "consumers": dict(collections.Counter(consumers)),
            "non_constant_shape_inputs": dynamic_shape_inputs}


def resize_summary(proto: onnx.ModelProto) -> list[dict]:
    """Distinct Resize configurations: attributes and whether scales/sizes are constants."""
    consts = constant_names(proto)
    seen = collections.Counter()
    for n in proto.graph.node:
        if n.op_type != "Resize":
            continue
        attrs = tuple(sorted((a.name, onnx.helper.get_attribute_value(a)) for a in n.attribute))
        attrs = tuple((k, v.decode() if isinstance(v, bytes) else v) for k, v in attrs)
        used = tuple(("roi", "scales", "sizes")[k - 1] for k in (1, 2, 3) if k < len(n.input) and n.input[k])
        const = all(n.input[k] in consts for k in (1, 2, 3) if k < len(n.input) and n.input[k])
        seen[(attrs, used, const)] += 1
    return [{"attributes": dict(a), "inputs_used": list(u), "all_constant": c, "count": k}
            for (a, u, c), k in seen.items()]


def trt_flags(proto: onnx.ModelProto) -> dict[str, str]:
    """Op types with a caveat, unknown to :data:`TRT_NOTES`, or Resize nodes outside
    :data:`RESIZE_SUPPORTED` or with computed scales/sizes (worth checking with trtexec)."""
    flags = {}
    for op in histogram(proto):
        status, note = TRT_NOTES.get(op, ("unknown", "not in TRT_NOTES: check onnx-tensorrt docs/operators.md"))
        if status != "ok":
            flags[op] = f"{status}: {note}"
    for r in resize_summary(proto):
        bad = {k: v for k, v in r["attributes"].items() if k in RESIZE_SUPPORTED and v not in RESIZE_SUPPORTED[k]}
        if bad or not r["all_constant"]:
            flags["Resize"] = f"check: unsupported attributes {bad}; constant scales/sizes: {r['all_constant']}"
    return flags


def graph_signature(proto: onnx.ModelProto) -> list[tuple]:
    """Op type, attributes and input arity per node, in order (tensor names ignored)."""
    sig = []
    for n in proto.graph.node:
        attrs = tuple(sorted((a.name, str(onnx.helper.get_attribute_value(a))) for a in n.attribute))
        sig.append((n.op_type, n.domain, attrs, len(n.input), len(n.output)))
    return sig


def structural_hashes(proto: onnx.ModelProto) -> dict[str, str]:
    """A hash per graph output of the whole computation behind it: op types, attributes, input
    structure and weight values (initializers and ``Constant`` nodes alike); tensor and node
    names are ignored, so two graphs that compute the same thing the same way hash equal."""
    h: dict[str, str] = {i.name: hashlib.sha1(f"input:{i.name}".encode()).hexdigest() for i in proto.graph.input}
    for t in proto.graph.initializer:
        h[t.name] = _tensor_hash(t)
    for n in proto.graph.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            h[n.output[0]] = _tensor_hash(n.attribute[0].t)
            continue
        attrs = sorted((a.name, str(onnx.helper.get_attribute_value(a))) for a in n.attribute)
        base = f"{n.domain}:{n.op_type}:{attrs}:{[h.get(i, '') for i in n.input]}"
        for k, o in enumerate(n.output):
            h[o] = hashlib.sha1(f"{base}:{k}".encode()).hexdigest()
    return {o.name: h[o.name] for o in proto.graph.output}


def _tensor_hash(t: onnx.TensorProto) -> str:
    a = numpy_helper.to_array(t)
    return hashlib.sha1(f"const:{a.dtype}:{a.shape}:".encode() + a.tobytes()).hexdigest()


def weights_signature(proto: onnx.ModelProto) -> tuple[int, int]:
    """(initializer count, total initializer elements)."""
    return len(proto.graph.initializer), int(sum(np.prod(i.dims) for i in proto.graph.initializer))


def checker(path: Path) -> str:
    try:
        onnx.checker.check_model(str(path), full_check=True)
        return "pass"
    except Exception as exc:  # noqa: BLE001 - report any failure as text
        return f"fail: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def session(path: Path, threads: int):
    """drtrt's own session (parity only, nothing here is timed, so its options change no figure)."""
    return open_session(path, threads=threads)


def parity(path: Path, x: np.ndarray, ref: dict[str, np.ndarray], threads: int) -> dict:
    """Max |Δ| vs PyTorch at batch 2, and batch 1 / batch 3 runs compared on their shared rows."""
    result: dict = {}
    try:
        sess = session(path, threads)
    except Exception as exc:  # noqa: BLE001
        return {"load": f"fail: {exc}"}
    names = [o.name for o in sess.get_outputs()]
    extra = np.random.default_rng(1).standard_normal((1, *x.shape[1:])).astype(np.float32)
    for label, batch, rows in (("batch2", x, 2), ("batch1", x[:1], 1), ("batch3", np.concatenate([x, extra]), 2)):
        try:
            got = dict(zip(names, sess.run(None, {INPUT: batch}), strict=True))
        except Exception as exc:  # noqa: BLE001
            result[label] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            continue
        shapes_ok = all(got[k].shape[0] == batch.shape[0] for k in OUTPUTS)
        result[label] = {"ok": shapes_ok, "shapes": {k: list(got[k].shape) for k in OUTPUTS},
                         "max_abs_diff": {k: float(np.max(np.abs(got[k][:rows] - ref[k][:rows]))) for k in OUTPUTS}}
    return result


def reference(model: torch.nn.Module, size: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    x = np.random.default_rng(seed).standard_normal((2, 3, size, size)).astype(np.float32)
    with torch.inference_mode():
        out = model(torch.from_numpy(x))
    return x, {k: out[k].numpy() for k in OUTPUTS}


def measure(name: str, exported: onnx.ModelProto, work: Path, repeats: int, x, ref, threads: int) -> dict:
    """Every figure for one simplifier."""
    row: dict = {"simplifier": name, "nodes_before": len(exported.graph.node), "load_before": loadavg()}
    try:
        proto, info = timed_simplify(SIMPLIFIERS[name], exported, repeats if name != "none" else 1)
    except ImportError as exc:
        row.update(available=False, error=f"ImportError: {exc}")
        return row
    except Exception as exc:  # noqa: BLE001
        row.update(available=True, error=f"{type(exc).__name__}: {str(exc)[:300]}")
        return row
    path = work / f"{name}.onnx"
    onnx.save(proto, str(path))
    row.update(available=True, **info, nodes_after=len(proto.graph.node), ops=histogram(proto),
               file_bytes=path.stat().st_size, batch_dims=batch_dims(proto), checker=checker(path),
               shape_arithmetic=shape_arithmetic(proto), resize=resize_summary(proto),
               trt_flags=trt_flags(proto), initializers=weights_signature(proto),
               value_info=len(proto.graph.value_info), metadata_props=len(proto.metadata_props),
               metadata_bytes=sum(len(p.key) + len(p.value) for p in proto.metadata_props),
               metadata_keys=[p.key for p in proto.metadata_props], signature=graph_signature(proto),
               structure=structural_hashes(proto))
    row["parity"] = parity(path, x, ref, threads)
    row["load_after"] = loadavg()
    return row


def compare(rows: list[dict]) -> dict[str, str]:
    """Pairwise: identical op sequence (and attributes), or how the graphs differ."""
    done = [r for r in rows if "signature" in r]
    out = {}
    for i, a in enumerate(done):
        for b in done[i + 1:]:
            key = f"{a['simplifier']} vs {b['simplifier']}"
            if a["signature"] == b["signature"] and a["initializers"] == b["initializers"]:
                out[key] = "identical (op sequence, attributes, arity, initializer count and size)"
            elif a["structure"] == b["structure"]:
                out[key] = ("same computation (structural hash of every output equal: ops, attributes, wiring, "
                            "weight values), differing only in node order / Constant-vs-initializer / names: "
                            + _op_diff(a, b))
            elif a["ops"] == b["ops"]:
                out[key] = "same op histogram, different order/attributes/weights"
            else:
                out[key] = "different graph structure: " + _op_diff(a, b)
    return out


def _op_diff(a: dict, b: dict) -> str:
    diff = {op: (a["ops"].get(op, 0), b["ops"].get(op, 0)) for op in sorted({*a["ops"], *b["ops"]})
            if a["ops"].get(op, 0) != b["ops"].get(op, 0)}
    return f"op counts ({a['simplifier']}, {b['simplifier']}) differing: {diff or 'none'}"


def table(rows: list[dict]) -> str:
    head = ("| simplifier | nodes before → after | time (median) | file (MB) | checker | max abs diff grade / lesion "
            "(batch 2) | batch 1 / 3 | shape-arith nodes | op types |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "nodes_after" not in r:
            err = r.get("error", "")
            lines.append(f"| {r['simplifier']} | {r['nodes_before']} → — | — | — | — | {err} | — | — | — |")
            continue
        p = r["parity"]
        d = p.get("batch2", {}).get("max_abs_diff", {})
        diffs = " / ".join(f"{d[k]:.1e}" for k in OUTPUTS) if d else str(p)
        b13 = " / ".join("ok" if p.get(k, {}).get("ok") else "FAIL" for k in ("batch1", "batch3"))
        t = "—" if r["simplifier"] == "none" else f"{r['median_s']:.1f} s (n={len(r['times_s'])})"
        sa = sum(r["shape_arithmetic"]["shape_nodes"].values())
        ops = ", ".join(f"{k} {v}" for k, v in r["ops"].items())
        lines.append(f"| {r['simplifier']} | {r['nodes_before']} → {r['nodes_after']} | {t} | "
                     f"{r['file_bytes'] / 1e6:.1f} | {r['checker']} | {diffs} | {b13} | {sa} | {ops} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3, help="simplify runs per tool (median reported)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads and torch threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "onnx_simplifiers_cpu.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {"machine": machine(), "load_start": loadavg(), "size": args.size, "opset": OPSET,
              "command": " ".join(["python", *sys.argv])}
    model = build(args.seed)
    report["parameters"] = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        exported = export(model, args.size, work / "exported.onnx")
        report["export_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        x, ref = reference(model, args.size, args.seed)
        report["torch_reference_s"] = round(time.perf_counter() - t0, 2)
        rows = []
        for name in SIMPLIFIERS:
            rows.append(measure(name, exported, work, args.repeats, x, ref, args.threads))
            print(f"[{name}] done, load {loadavg()}", file=sys.stderr, flush=True)
        report["nonzero_biases"] = nonzero_bias_graphs(args.seed, args.size, work)
    report["comparison"] = compare(rows)
    for r in rows:
        r.pop("signature", None)
        r.pop("structure", None)
    report["results"], report["load_end"] = rows, loadavg()
    md = table(rows)
    print(md)
    print()
    for k, v in report["comparison"].items():
        print(f"- {k}: {v}")
    for r in rows:
        if "ops" in r:
            print(f"- {r['simplifier']}: batch dims {r['batch_dims']}; shape arithmetic {r['shape_arithmetic']}; "
                  f"Resize {r['resize']}; TensorRT flags {r['trt_flags']}")
    nz = report["nonzero_biases"]
    print(f"- non-zero biases (as a trained model): exported {nz['exported']['nodes']} nodes; "
          + "; ".join(f"{k} {v['nodes']} nodes" for k, v in nz.items() if k in SIMPLIFIERS and "nodes" in v)
          + f"; onnxslim == onnxsim: {nz.get('onnxslim_equals_onnxsim')}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
