"""Triton against local ONNX Runtime on the same CPU, in the same run: 1, 4 and 8 concurrent clients.

    PYTHONPATH=. .venv/bin/python benchmarks/triton_serving.py [--model demo|demo512|full] [--seconds 6]
                                         [--repeats 3] [--paired ROUNDS] [--work DIR] [--json OUT]

What a ``triton://`` model adds over a local one is the request path: serialising the batch, gRPC
to the server on this machine, Triton's scheduler, its Python backend (shared memory to the stub)
and back. Preprocessing is the client's in both cases, so the benchmark times the model call alone
(``Runner.infer`` of one preprocessed image, batch 1) by C client threads calling in a loop for
``--seconds`` (after one second of warm-up), each call's latency recorded:

* ``local``: one :class:`~drtrt.runtime.backends.ort.OrtRunner` shared by the C threads (ONNX Runtime runs
  concurrent calls; its intra-op threads = the usable CPUs);
* ``triton``: :class:`~drtrt.runtime.backends.triton.TritonRunner` (one gRPC connection per thread) to
  tritonserver from the ``nvidia-pytriton`` wheel serving the repository ``drtrt export-triton
  --serve-with python`` writes (ONNX Runtime inside Triton's Python backend, one instance, the
  same threads; the wheel has no ONNX Runtime or TensorRT backend), dynamic batching as
  export-triton writes it by default (no preferred sizes, no queue delay: what queued while the
  model was busy is batched);
* ``triton, shared memory`` (issue 26): the ``triton`` server again, the batch and the outputs through
  system shared memory (``?shm=on``; every other ``triton`` row goes over the wire, ``?shm=off``), with
  Triton's own time per request in each stage (queue, input, execution, output) for both;
* ``triton, 2 ms delay``: the same with preferred sizes 4 and 8 and a 2 ms queue delay;
* ``triton, no batching``: the same with ``--max-batch 1``, to show what dynamic batching adds;
* ``triton, 2 instances``: dynamic batching and ``--instances 2`` (each instance's ONNX Runtime
  then takes half the CPUs), two batches running at once.

Configurations are interleaved, every repeat of all of them before the next; medians over the
repeats. The load average is recorded before and after. Prints a markdown table, writes JSON.
``--paired N`` adds N rounds of one client calling every path in turn (the order rotating), the
comparison least moved by other work on a shared machine. ``demo512`` is the demo-size network at
the full model's 512² input (a 3 MB input and a 5 MB lesion map per image).

``--photos`` measures whole photos instead (``--clients 1,2,4`` suits it): a synthetic
4288x2848 fundus JPEG (IDRiD's size) as the camera wrote it, screened locally by
:class:`~drtrt.runtime.predictor.Predictor` (decode, preprocessing, quality gate, model,
post-processing; C threads sharing it) against the bytes sent to the photo ensemble
(``NAME_photo``: preprocessing and gate in the server's Python backend, two instances, then the
model), which answers with the verdict and the raw outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "serving")]

from screening_e2e import random_model  # noqa: E402 - the same random networks as the e2e benchmark
from triton_helpers import TritonServer, server_folder  # noqa: E402 - the tests' server, started the same way

MODELS = {"demo": (0.125, 256), "demo512": (0.125, 512), "full": (1.0, 512)}


def run_clients(infer, feeds: dict, clients: int, seconds: float) -> dict:
    """``clients`` threads calling ``infer(feeds)`` until ``seconds`` pass (after a 1 s warm-up)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    timing = {"stop": float("inf")}                         # set once every client is warm

    def client(i: int) -> None:
        warm_until = time.perf_counter() + 1.0
        while time.perf_counter() < warm_until:
            infer(feeds)
        start.wait()
        while time.perf_counter() < timing["stop"]:
            tick = time.perf_counter()
            infer(feeds)
            latencies[i].append(time.perf_counter() - tick)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    t0 = time.perf_counter()
    timing["stop"] = t0 + seconds
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    every = sorted(x for lat in latencies for x in lat)
    return {"images_per_s": len(every) / wall, "p50_ms": 1e3 * every[len(every) // 2],
            "mean_ms": 1e3 * statistics.fmean(every),
            "p95_ms": 1e3 * every[min(len(every) - 1, int(0.95 * len(every)))], "requests": len(every)}


def paired(runners: dict, feeds: dict, rounds: int) -> dict:
    """One client calling each runner in turn, ``rounds`` times (after 5 warm-up rounds): on a shared
    machine the load drifts, and turn by turn every path meets the same drift. Median latency per path,
    and the median of the per-round difference from the first path (local)."""
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds + 5):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:     # rotate who goes first
            tick = time.perf_counter()
            runners[name].infer(feeds, validate=False)
            if round_ >= 5:
                times[name].append(1e3 * (time.perf_counter() - tick))
    base = times[names[0]]
    return {name: {"p50_ms": statistics.median(t), "minus_local_p50_ms": statistics.median(
        a - b for a, b in zip(t, base)), "vs_local_p50": statistics.median(t) / statistics.median(base) - 1}
        for name, t in times.items()}


def server_statistics(port: int, model: str) -> dict:
    """Triton's own count of inferences and executions (executions < inferences: batches were formed)."""
    import tritonclient.grpc as grpc

    stats = grpc.InferenceServerClient(f"127.0.0.1:{port}").get_inference_statistics(model, as_json=True)
    entry = stats["model_stats"][0]
    return {"inferences": int(entry.get("inference_count", 0)), "executions": int(entry.get("execution_count", 0))}


STAGES = ("queue", "compute_input", "compute_infer", "compute_output", "success")


def server_stages(port: int, model: str) -> dict:
    """Triton's cumulative time per stage (ns) and request count: deltas give ms per request."""
    import tritonclient.grpc as grpc

    stats = grpc.InferenceServerClient(f"127.0.0.1:{port}").get_inference_statistics(model, as_json=True)
    entry = stats["model_stats"][0]["inference_stats"]
    return {k: (int(entry.get(k, {}).get("count", 0)), int(entry.get(k, {}).get("ns", 0))) for k in STAGES}


def per_request_ms(before: dict, after: dict) -> dict:
    """Milliseconds per request in each of Triton's stages between two :func:`server_stages` readings."""
    count = after["success"][0] - before["success"][0]
    return {k: (after[k][1] - before[k][1]) / 1e6 / max(1, count) for k in STAGES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="demo")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", default="1,4,8", help="concurrent clients to measure, e.g. 1,4,8")
    parser.add_argument("--variants", default="all", help="server variants besides local, e.g. triton (default all)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "drtrt-bench-triton")
    parser.add_argument("--json", type=Path, default=None, help="default: benchmarks/triton_serving[_photos]_cpu.json")
    parser.add_argument("--paired", type=int, default=0, help="also N rounds of one client calling each path in turn")
    parser.add_argument("--photos", action="store_true", help="whole photos: local screening vs the photo ensemble")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    default = "triton_photos_cpu.json" if args.photos else "triton_serving_cpu.json"
    args.json = args.json or ROOT / "benchmarks" / default
    if args.photos:
        return photos(args)

    from drtrt.runtime.backends.ort import OrtRunner
    from drtrt.runtime.backends.triton import TritonRunner
    from drtrt.serving.repository import RepositorySpec, write_repository

    clients_list = tuple(int(c) for c in args.clients.split(","))
    onnx = random_model(args.work, *MODELS[args.model])
    repos = {"triton": RepositorySpec(args.work / "repo-batching", onnx=onnx, serve_with="python", ensemble=False),
             "triton, 2 ms delay": RepositorySpec(args.work / "repo-delay", onnx=onnx, serve_with="python",
                                                  ensemble=False, preferred=(4, 8), queue_delay_us=2000),
             "triton, no batching": RepositorySpec(args.work / "repo-single", onnx=onnx, serve_with="python",
                                                   ensemble=False, max_batch=1),
             "triton, 2 instances": RepositorySpec(args.work / "repo-two", onnx=onnx, serve_with="python",
                                                   ensemble=False, instances=2)}
    if args.variants != "all":
        repos = {name: spec for name, spec in repos.items() if name in args.variants.split(",")}
    server_dir = server_folder(args.work / "tritonserver")
    servers = {}
    for name, spec in repos.items():
        write_repository(spec, force=True)
        server = TritonServer(server_dir, spec.out, args.work / f"{spec.out.name}.log")
        server.start(tracked=False)
        servers[name] = server
    remote: dict = {}
    try:
        local = OrtRunner(onnx)
        local.activate()
        # every server variant over the wire (as before issue 26); the default one also through system shared
        # memory, the runner's default with a server on this host
        remote = {name: TritonRunner(server.model_url() + "?shm=off") for name, server in servers.items()}
        if "triton" in servers:
            remote["triton, shared memory"] = TritonRunner(servers["triton"].model_url() + "?shm=on")
        for runner in remote.values():
            runner.activate()
        size = local.info.preprocess.size
        feeds = {local.input_specs[0].name: np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)}
        runners = {"local ONNX Runtime": local, **remote}
        load_start = os.getloadavg()
        results: dict[str, dict[int, list[dict]]] = {name: {c: [] for c in clients_list} for name in runners}
        for repeat in range(args.repeats):
            for clients in clients_list:
                for name, runner in runners.items():
                    port = servers["triton"].grpc_port if name in ("triton", "triton, shared memory") else None
                    before = server_stages(port, "drtrt") if port else None
                    row = run_clients(lambda f, r=runner: r.infer(f, validate=False), feeds, clients, args.seconds)
                    if port:
                        row["server_ms"] = per_request_ms(before, server_stages(port, "drtrt"))
                    results[name][clients].append(row)
                    print(f"repeat {repeat + 1} · {name} · {clients} client(s): {row['images_per_s']:.1f} images/s, "
                          f"p50 {row['p50_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms", flush=True)
        turns = paired(runners, feeds, args.paired) if args.paired else {}
        for name, row in turns.items():
            print(f"paired · {name}: p50 {row['p50_ms']:.1f} ms, {100 * row['vs_local_p50']:+.1f} % vs local, "
                  f"per-round difference from local {row['minus_local_p50_ms']:+.1f} ms", flush=True)
        batching = {name: server_statistics(server.grpc_port, "drtrt") for name, server in servers.items()}
    finally:
        for runner in remote.values():            # shared-memory regions unregistered and unlinked
            runner.deactivate()
        for server in servers.values():
            server.stop()
    load_end = os.getloadavg()

    def median(name: str, clients: int, key: str) -> float:
        return statistics.median(r[key] for r in results[name][clients])

    table = ["| path | clients | images/s | p50 ms | p95 ms | vs local (images/s) |", "|---|---:|---:|---:|---:|---:|"]
    summary = {}
    for name in runners:
        for clients in clients_list:
            ips = median(name, clients, "images_per_s")
            base = median("local ONNX Runtime", clients, "images_per_s")
            summary[f"{name} / {clients}"] = {k: median(name, clients, k) for k in ("images_per_s", "p50_ms", "p95_ms")}
            table.append(f"| {name} | {clients} | {ips:.3g} | {median(name, clients, 'p50_ms'):.1f} | "
                         f"{median(name, clients, 'p95_ms'):.1f} | {ips / base:.2f} |")
    overheads = {name: median(name, 1, "p50_ms") / median("local ONNX Runtime", 1, "p50_ms") - 1
                 for name in runners if name.startswith("triton") and 1 in clients_list}
    overhead = overheads.get("triton")
    stages = {}
    for name in runners:
        for clients in clients_list:
            rows = [r["server_ms"] for r in results[name][clients] if "server_ms" in r]
            if rows:
                stages[f"{name} / {clients}"] = {k: statistics.median(r[k] for r in rows) for k in STAGES}
                # what the request costs beyond the model's own execution, and beyond the server's time
                stages[f"{name} / {clients}"]["beyond_compute_infer"] = statistics.median(
                    r["mean_ms"] - r["server_ms"]["compute_infer"] for r in results[name][clients])
                stages[f"{name} / {clients}"]["client_and_transport"] = statistics.median(
                    r["mean_ms"] - r["server_ms"]["success"] for r in results[name][clients])
    text = "\n".join(table)
    print(text)
    for name, value in overheads.items():
        print(f"{name} at 1 client: {100 * value:+.1f} % p50 latency over local")
    for key, value in stages.items():
        print(f"{key}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in value.items()))
    print("executions/inferences: " + ", ".join(f"{k} {v['executions']}/{v['inferences']}" for k, v in batching.items()))
    record = {"date": time.strftime("%Y-%m-%d %H:%M"), "host": platform.node(), "cpus": os.cpu_count(),
              "model": {"name": args.model, "width": MODELS[args.model][0], "size": MODELS[args.model][1]},
              "seconds": args.seconds, "repeats": args.repeats, "loadavg": [load_start, load_end],
              "server_batching": batching, "overhead_1_client_p50": overhead,
              "overheads_1_client_p50": overheads, "server_stages_ms": stages, "paired": turns,
              "paired_rounds": args.paired, "medians": summary,
              "runs": {name: {str(c): rows for c, rows in by.items()} for name, by in results.items()},
              "table": text}
    args.json.write_text(json.dumps(record, indent=1) + "\n")


def photos(args) -> None:
    """Whole photos: local ``Predictor.screen`` against the photo ensemble, C clients each."""
    import tritonclient.grpc as grpc

    from drtrt.runtime.predictor import Predictor
    from drtrt.serving.repository import RepositorySpec, write_repository
    from drtrt.verify.bench import synthetic_jpeg

    clients_list = tuple(int(c) for c in args.clients.split(","))
    onnx = random_model(args.work, *MODELS[args.model])
    photo = synthetic_jpeg()
    spec = RepositorySpec(args.work / "repo-photos", onnx=onnx, serve_with="python", preprocess_instances=2)
    write_repository(spec, force=True)
    server = TritonServer(server_folder(args.work / "tritonserver"), spec.out, args.work / "repo-photos.log")
    server.start(tracked=False)
    local = Predictor(onnx)
    local_clients = threading.local()

    def served(_feeds) -> None:
        client = getattr(local_clients, "client", None)
        if client is None:
            client = local_clients.client = grpc.InferenceServerClient(server.grpc_url)
        tensor = grpc.InferInput("photo", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[photo]], dtype=np.object_))
        answer = client.infer("drtrt_photo", [tensor])
        assert json.loads(answer.as_numpy("quality")[0, 0])["gradable"]

    def screened(_feeds) -> None:
        assert local.screen(photo, name="photo.jpg").status == "graded"

    paths = {"local drtrt screen": screened, "triton photo ensemble": served}
    try:
        load_start = os.getloadavg()
        results: dict[str, dict[int, list[dict]]] = {name: {c: [] for c in clients_list} for name in paths}
        for repeat in range(args.repeats):
            for clients in clients_list:
                for name, call in paths.items():
                    row = run_clients(call, {}, clients, args.seconds)
                    results[name][clients].append(row)
                    print(f"repeat {repeat + 1} · {name} · {clients} client(s): {row['images_per_s']:.2f} photos/s, "
                          f"p50 {row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms", flush=True)
    finally:
        server.stop()
        local.close()
    load_end = os.getloadavg()
    table = ["| path | clients | photos/s | p50 ms | p95 ms |", "|---|---:|---:|---:|---:|"]
    medians = {}
    for name in paths:
        for clients in clients_list:
            m = {k: statistics.median(r[k] for r in results[name][clients]) for k in ("images_per_s", "p50_ms",
                                                                                    "p95_ms")}
            medians[f"{name} / {clients}"] = m
            table.append(f"| {name} | {clients} | {m['images_per_s']:.2f} | {m['p50_ms']:.0f} | {m['p95_ms']:.0f} |")
    text = "\n".join(table)
    print(text)
    args.json.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M"), "host": platform.node(), "cpus": os.cpu_count(),
        "model": {"name": args.model, "width": MODELS[args.model][0], "size": MODELS[args.model][1]},
        "photo": "synthetic 4288x2848 JPEG", "seconds": args.seconds, "repeats": args.repeats,
        "loadavg": [load_start, load_end], "medians": medians,
        "runs": {name: {str(c): rows for c, rows in by.items()} for name, by in results.items()}, "table": text},
        indent=1) + "\n")


if __name__ == "__main__":
    main()
