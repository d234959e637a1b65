"""Training and screening on a CPU shared with one busy process: the old thread settings against drtrt's.

    PYTHONPATH=. .venv/bin/python benchmarks/cpu_sharing.py [--runs 3] [--epochs 3] [--images 12]
                                                            [--screen-model demo|full] [--work DIR] [--json OUT]

A station's CPU is shared (issue 13). Each workload runs in a fresh process, alone and beside
one competing CPU-bound process (a ``while True: pass`` loop in Python), with two behaviours:

* ``old``: what drtrt did before: OpenMP's own wait policy for PyTorch (``OMP_WAIT_POLICY``
  unset: libgomp spins 300,000 rounds before sleeping), PyTorch's own thread count, and ONNX
  Runtime sessions with its defaults (one thread per physical core, spin-waiting);
* ``new``: drtrt's defaults now (:mod:`drtrt.cpu`): ``OMP_WAIT_POLICY=PASSIVE``, threads =
  usable CPUs (affinity mask capped by the cgroup quota), ONNX Runtime intra-op threads = usable
  CPUs with ``session.intra_op.allow_spinning=0`` (and inter-op).

Workloads:

* training: the demo's model and recipe (width 0.125, VGG16-BN layout, 256x256, batch 8,
  ``drtrt.train.trainer.train``) for ``--epochs`` epochs on a smaller synthetic set (48 grading
  + 16 segmentation images at 640 px, the demo's image size) whose preprocessed images are
  cached on disk before timing; the figure is seconds per epoch of the training loop (the
  history's ``seconds``), the first epoch of each run left out;
* screening: ``Predictor.screen`` (decode, preprocessing, quality gate, ONNX Runtime FP32 on the
  CPU, post-processing; no files written) of ``--images`` synthetic photos one by one, after one
  warm-up image; the figure is milliseconds per image. ``--screen-model demo`` screens with the
  model the training set-up trained (the demo's size); ``full`` with the full network (width
  1.0, 512x512) with random weights.

Runs are interleaved (every configuration's run r before any run r + 1) and medians taken over
runs. The machine may be shared with other jobs, so each run also records the share of the
CPUs that processes other than its own used meanwhile (``/proc/stat`` minus its own CPU time):
each run waits (``--wait-calm``) for the machine to be quiet first, is run again
(``--retries``) when others used more than ``--max-foreign`` meanwhile, and is left out of the
medians if it never ran undisturbed; the load average is recorded too.
Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drtrt.cpu import usable_cpus  # noqa: E402
from screening_e2e import full_model  # noqa: E402 - the same random full network as the e2e benchmark

MODES = ("old", "new")
# The competitor: a CPU-bound loop that also ends when this benchmark does, however it ends.
BUSY_LOOP = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    for _ in range(10**6): pass"
# What the parent strips from the children's environment, so that only the mode decides.
THREAD_ENV = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "DRTRT_CPU_SPIN", "MKL_NUM_THREADS")
DEMO = {"width": 0.125, "image_size": 256, "batch_size": 8, "lr": 0.02}


def train_config(epochs: int):
    from drtrt.preprocess import PreprocessSpec
    from drtrt.train.losses import LossConfig
    from drtrt.train.model import ModelConfig
    from drtrt.train.train_config import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=DEMO["batch_size"], lr=DEMO["lr"], seed=0, device="cpu",
                       model=ModelConfig(width=DEMO["width"], batch_norm=True),
                       preprocess=PreprocessSpec(size=DEMO["image_size"]),
                       loss=LossConfig(beta=0.99999, dice_weight=1.0))


# ----------------------------------------------------------------------------------------------- children


def child_train(work: Path, mode: str, epochs: int) -> dict:
    """Train in this fresh process; returns seconds per epoch."""
    if mode == "old":
        import drtrt.train.trainer as trainer

        trainer.limit_cpu_threads = lambda ctx: trainer.torch.get_num_threads()   # PyTorch's own count
    from drtrt.train.trainer import train

    import torch

    with tempfile.TemporaryDirectory(dir=work) as run:
        result = train(train_config(epochs), work / "data", run, log=lambda m: None, cache_dir=work / "cache")
    return {"epoch_s": [row["seconds"] for row in result.history], "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def child_screen(work: Path, mode: str, model: Path, images: list[Path]) -> dict:
    """Screen ``images`` one by one in this fresh process; returns milliseconds per image."""
    import drtrt.runtime.backends.ort as drtrt_ort

    if mode == "old":
        # This benchmark measures session options: it swaps the old ones in for drtrt's, under
        # open_session, which looks session_options up at each call.
        def old_options(threads=None, spin=None):   # the session options drtrt made before issue 13
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            return options

        drtrt_ort.session_options = old_options
    from drtrt.runtime.predictor import Predictor

    with Predictor(model) as predictor:
        predictor.screen(images[0])                                   # warm-up
        start = time.perf_counter()
        results = [predictor.screen(p) for p in images]
        seconds = time.perf_counter() - start
        options = predictor.runner._session.get_session_options()
    try:
        spinning = options.get_session_config_entry(drtrt_ort.INTRA_OP_SPINNING)
    except RuntimeError:                                              # not set: ONNX Runtime's default, on
        spinning = "default (on)"
    return {"ms_per_image": 1000 * seconds / len(images), "statuses": sorted({r.status for r in results}),
            "threads": options.intra_op_num_threads or "default", "spinning": spinning}


# ----------------------------------------------------------------------------------------------- parent


def setup(work: Path, screen_model: str, n_images: int) -> tuple[Path, list[Path]]:
    """Synthetic data, its disk cache (one epoch), the demo-sized model and its ONNX; the images to screen."""
    from drtrt.data.idrid import read_idrid
    from drtrt.data.synth import write_synthetic_idrid

    data = work / "data"
    if not data.is_dir():
        write_synthetic_idrid(data, 48, 16, size=640, seed=0)
    demo = work / "demo.onnx"
    if not demo.exists():
        from drtrt.train.checkpoint import export_checkpoint
        from drtrt.train.trainer import train

        train(train_config(1), data, work / "setup-run", log=lambda m: None, cache_dir=work / "cache")
        export_checkpoint(work / "setup-run" / "best.pt", demo)
    model = demo if screen_model == "demo" else full_model(work)
    from drtrt.runtime.predictor import Predictor

    candidates = [s.image for s in read_idrid(data).select(subset="grading")]
    with Predictor(model) as predictor:
        graded = [p for p in candidates if predictor.screen(p).status == "graded"]
    if len(graded) < n_images + 1:
        raise SystemExit(f"only {len(graded)} synthetic images pass the quality gate; ask for fewer")
    return model, graded[: n_images]


def busy_cpu_seconds() -> float:
    """CPU-seconds the whole machine has been busy since boot (``/proc/stat``; 0 where there is none)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU-seconds of this process and of its children that have been waited for."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def run_child(args: list[str], mode: str, busy: bool) -> tuple[dict, float, float]:
    """One measurement in a fresh process (beside a busy loop when ``busy``); returns its JSON, the 1-minute
    load before it, and the share of the machine's CPUs that other processes used meanwhile."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    env["PYTHONPATH"] = str(ROOT)
    if mode == "old":
        env["DRTRT_CPU_SPIN"] = "1"         # drtrt leaves OMP_WAIT_POLICY unset, as before
    load = os.getloadavg()[0]
    wall, machine, own = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()
    competitor = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if busy else None
    try:
        if competitor:
            time.sleep(0.5)
        proc = subprocess.run([sys.executable, __file__, "--child", *args, "--mode", mode], env=env,
                              capture_output=True, text=True, timeout=900)
    finally:
        if competitor:
            competitor.kill()
            competitor.wait()
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    foreign = (busy_cpu_seconds() - machine) - (own_cpu_seconds() - own)
    share = max(0.0, foreign / ((time.perf_counter() - wall) * (os.cpu_count() or 1)))
    return json.loads(proc.stdout.strip().splitlines()[-1]), load, share


def wait_for_calm(max_share: float, limit_s: float) -> float:
    """Wait (at most ``limit_s``) until the machine's CPUs are at most ``max_share`` busy over 3 s, with
    nothing of this benchmark running; returns the seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        before = busy_cpu_seconds()
        time.sleep(3)
        if (busy_cpu_seconds() - before) / (3 * (os.cpu_count() or 1)) <= max_share:
            break
    return round(time.perf_counter() - start, 1)


def summary(runs: list[tuple[bool, list[float]]]) -> dict:
    """Median, min, max over the runs other processes left alone (over all runs when none was)."""
    counted = [v for clean, values in runs if clean for v in values]
    values = counted or [v for _, values in runs for v in values]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "runs_counted": sum(clean for clean, _ in runs), "runs": len(runs)}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x"


def table(report: dict) -> str:
    rows = ["| workload | behaviour | alone | beside 1 busy process | slowdown when shared | alone, vs old |",
            "|---|---|---|---|---|---|"]
    for workload, unit in (("train", "s/epoch"), ("screen", "ms/image")):
        if workload not in report["results"]:
            continue
        res = report["results"][workload]
        for mode in MODES:
            alone, busy = res[mode]["alone"]["median"], res[mode]["busy"]["median"]
            label = {"train": "training (demo model)", "screen": f"screening ({report['screen_model']} model)"}
            fmt = (lambda v: f"{v:.2f} {unit}") if workload == "train" else (lambda v: f"{v:.0f} {unit}")
            rows.append(f"| {label[workload]} | {mode} | {fmt(alone)} | {fmt(busy)} | {ratio(busy, alone)} | "
                        f"{ratio(alone, res['old']['alone']['median'])} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per training run (the first is not counted)")
    parser.add_argument("--images", type=int, default=12, help="images screened per screening run")
    parser.add_argument("--screen-model", choices=("demo", "full"), default="demo")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "drtrt-bench-cpu-sharing")
    parser.add_argument("--only", choices=("train", "screen"), help="one workload only")
    parser.add_argument("--max-foreign", type=float, default=0.1,
                        help="run again when other processes used more than this share of the CPUs meanwhile")
    parser.add_argument("--retries", type=int, default=2, help="at most this many runs again per measurement")
    parser.add_argument("--wait-calm", type=float, default=60,
                        help="before each run, wait at most this many seconds for other processes to go quiet")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=("train", "screen"), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--image", type=Path, action="append", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C: subprocess.run kills the child it waits on, finally the busy loop
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    args.work.mkdir(parents=True, exist_ok=True)
    if args.child == "train":
        print(json.dumps(child_train(args.work, args.mode, args.epochs)))
        return
    if args.child == "screen":
        print(json.dumps(child_screen(args.work, args.mode, args.model, args.image)))
        return

    started = time.perf_counter()
    model, images = setup(args.work, args.screen_model, args.images)
    workloads = {"train": ["train", "--work", str(args.work), "--epochs", str(args.epochs)],
                 "screen": ["screen", "--work", str(args.work), "--model", str(model),
                            *[a for p in images for a in ("--image", str(p))]]}
    if args.only:
        workloads = {args.only: workloads[args.only]}
    samples = {w: {m: {"alone": [], "busy": []} for m in MODES} for w in workloads}
    report = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": platform.machine(),
              "cpus": os.cpu_count(), "usable_cpus": usable_cpus(),
              "python": platform.python_version(), "screen_model": args.screen_model, "runs": args.runs,
              "epochs": args.epochs, "images": len(images), "load_at_start": os.getloadavg(), "raw": []}
    for run in range(args.runs):
        for workload, child_args in workloads.items():
            for busy in (False, True):
                for mode in MODES:
                    for attempt in range(args.retries + 1):     # a run other jobs disturbed is run again
                        waited = wait_for_calm(args.max_foreign, args.wait_calm)
                        out, load, foreign = run_child(child_args, mode, busy)
                        if foreign <= args.max_foreign:
                            break
                        print(f"  (other processes used {foreign:.0%} of the CPUs: run again)", flush=True)
                    key = "busy" if busy else "alone"
                    clean = foreign <= args.max_foreign
                    if workload == "train":
                        values = out["epoch_s"][1:]
                    else:
                        if out["statuses"] != ["graded"]:
                            raise RuntimeError(f"not every image was graded: {out}")
                        values = [out["ms_per_image"]]
                    samples[workload][mode][key].append((clean, values))
                    report["raw"].append({"run": run, "workload": workload, "mode": mode, "busy": busy,
                                          "load_1min_before": load, "foreign_cpu_share": foreign,
                                          "attempts": attempt + 1, "waited_s": waited, "counted": clean, **out})
                    print(f"run {run + 1}/{args.runs} {workload:6} {mode} {key:5} load {load:4.2f}, "
                          f"others {foreign:4.0%}{'' if clean else ' (not counted)'}: "
                          f"{' '.join(f'{v:.2f}' for v in values)}", flush=True)
    report["results"] = {w: {m: {k: summary(runs) for k, runs in by_mode.items()} for m, by_mode in by_w.items()}
                         for w, by_w in samples.items()}
    report["load_at_end"] = os.getloadavg()
    report["seconds"] = round(time.perf_counter() - started, 1)
    print()
    print(table(report))
    foreign = [r["foreign_cpu_share"] for r in report["raw"] if r["counted"]]
    print(f"\nload average at start {report['load_at_start']}, at end {report['load_at_end']}; "
          f"{len(foreign)} of {len(report['raw'])} runs counted (other processes used at most "
          f"{args.max_foreign:.0%} of the CPUs meanwhile; "
          f"median {statistics.median(foreign) if foreign else float('nan'):.0%}); {report['seconds']:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
