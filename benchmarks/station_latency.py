"""Station latency on this CPU: a photo written into the camera folder → its result on the page.

    PYTHONPATH=. .venv/bin/python benchmarks/station_latency.py --model M.onnx [--model M.int8.onnx]
        [--photos N] [--settle S] [--poll S] [--watch events] [--watch poll] [--before DIR] [--json OUT]

For each model: start ``drtrt station`` (a subprocess, as a clinic runs it) on a free localhost
port with a camera folder; for each of N photos open a visit for a new patient (as the operator
does), write the photo into the camera folder the way a camera does (a temp name, then a rename),
and wait as the page does — long-polling ``/api/version`` and fetching the visit's panel — until
the panel shows the photo's result. Reported: median and p95 seconds, and the same figures with
the settle time (how long a file must stay unchanged before it is read, ``--settle``) taken off.

Each ``--watch`` mode (``events``: the file is read when the camera renames it; ``poll``: after
``--settle`` quiet seconds) is one row per model. ``--before DIR`` adds a first row run from another
drtrt source tree, as it is (e.g. main's, unpacked with ``git archive main | tar -x -C DIR``), with
its own camera watch: the baseline in the same run, on the same photos.

Photos: the real 4288x2848 IDRiD samples when ../shared/data is present (cycled, each made distinct
by one changed pixel so no two visits share a photo), else synthetic 4288x2848 renders.
"""

from __future__ import annotations

import argparse
import hashlib
import http.cookiejar
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def photos(work: Path, count: int) -> tuple[list[Path], str]:
    samples = ROOT.parent / "shared" / "data" / "idrid-samples" / "A. Segmentation" / "1. Original Images"
    sources = sorted(samples.glob("*/*.jpg")) if samples.is_dir() else []
    if not sources:
        from drtrt.data.synthetic_fundus import render_fundus
        from drtrt.data.synth import IDRID_HEIGHT, IDRID_WIDTH

        sources = []
        for i in range(4):
            path = work / f"synthetic_{i}.jpg"
            rgb, _ = render_fundus(np.random.default_rng(i), IDRID_WIDTH, IDRID_HEIGHT, grade=i % 5)
            cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            sources.append(path)
    out, seen = [], set()
    for i in range(count):
        picture = cv2.imread(str(sources[i % len(sources)]))
        for k in range(3):                                  # distinct bytes (a corner outside the field), same photo:
            picture[:8, 8 * k:8 * k + 8] = 40 + 9 * (i // 24 ** k % 24)   # i in base 24, one 8x8 block a digit
        path = work / f"photo_{i:03d}.jpg"
        cv2.imwrite(str(path), picture, [cv2.IMWRITE_JPEG_QUALITY, 95])
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest not in seen, "two benchmark photos have the same bytes"
        seen.add(digest)
        out.append(path)
    return out, ("real IDRiD 4288x2848" if samples.is_dir() else "synthetic 4288x2848")


class Page:
    """What the browser does, with the standard library: a session cookie, the CSRF token, long-polls."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str, timeout: float = 30) -> str:
        with self.opener.open(self.url + path, timeout=timeout) as response:
            return response.read().decode()

    def post(self, path: str, fields: dict) -> str:
        data = urllib.parse.urlencode(fields).encode()
        with self.opener.open(self.url + path, data=data, timeout=30) as response:
            return response.geturl()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def screening_seconds(data: Path) -> list[float]:
    """Each photo's own screening seconds (the session's ``timings_ms.total``: decode to overlay), from its store."""
    from drtrt.clinic.store import SessionStore

    with SessionStore(data / "session.db") as store:
        return [r.to_dict()["timings_ms"]["total"] / 1000 for r in store.rows() if r.to_dict().get("timings_ms")]


def run(model: Path, images: list[Path], work: Path, settle: float, poll: float, watch: str | None,
        code: Path = ROOT) -> tuple[list[float], list[float]]:
    """Seconds from each photo's rename into the camera folder to its result on the page, and each photo's own
    screening seconds; ``watch`` None: the source tree ``code`` is run without ``--watch`` (a tree from before
    it existed)."""
    label = f"{model.stem}-{watch or 'before'}"
    camera, data = work / f"camera-{label}", work / f"station-{label}"
    camera.mkdir()
    port = _free_port()
    log = (work / f"station-{label}.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "drtrt.cli", "station", "--model", str(model), "--data-dir",
                               str(data), "--camera-dir", str(camera), "--port", str(port), "--settle", str(settle),
                               "--poll", str(poll), *(["--watch", watch] if watch else [])],
                              stdout=log, stderr=subprocess.STDOUT, cwd=code)
    page = Page(f"http://127.0.0.1:{port}")
    try:
        for _ in range(600):
            try:
                page.get("/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        seconds = []
        for i, photo in enumerate(images):
            token = re.search(r'name="csrf" value="([^"]+)"', page.get("/patients/new"))[1]
            visit = page.post("/visits", {"csrf": token, "patient": f"B-{i:03d}", "fields": "1"}).rsplit("/", 1)[1]
            version = json.loads(page.get("/api/version"))["version"]
            temp = camera / f".IMG_{i:04d}.JPG.part"
            temp.write_bytes(photo.read_bytes())
            start = time.monotonic()
            os.replace(temp, camera / f"IMG_{i:04d}.JPG")
            while True:
                if time.monotonic() - start > 120:
                    raise SystemExit(f"photo {i} never showed a result; see {log.name}")
                version = json.loads(page.get(f"/api/version?since={version}"))["version"]
                panel = page.get(f"/visits/{visit}/panel")
                if re.search(r'id="slot-right-any" data-state="(graded|retake)"', panel):
                    seconds.append(time.monotonic() - start)
                    break
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
        print((work / f"station-{label}.log").read_text().strip(), file=sys.stderr)
    return seconds, screening_seconds(data)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--poll", type=float, default=0.5)
    parser.add_argument("--watch", action="append", choices=("auto", "events", "poll"),
                        help="camera watch mode(s) to measure, one row each (default: events)")
    parser.add_argument("--before", type=Path, help="a drtrt source tree to measure first, as it is (the baseline)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    variants = ([(None, args.before.resolve())] if args.before else []) + [(w, ROOT) for w in args.watch or ["events"]]
    with tempfile.TemporaryDirectory(prefix="drtrt-station-bench-") as tmp:
        work = Path(tmp)
        images, kind = photos(work, args.photos)
        rows = []
        for model in args.model:
            for watch, code in variants:
                seconds, screening = run(model.resolve(), images, work, args.settle, args.poll, watch, code)
                rows.append({"model": model.name, "watch": watch or f"before ({code.name})", "photos": len(seconds),
                             "seconds": seconds, "screening_s": screening,
                             "median_screening_s": statistics.median(screening), "median_s": statistics.median(seconds),
                             "p95_s": p95(seconds)})
                if watch != "events":                       # polling: the settle wait is in every figure
                    rows[-1].update(median_after_settle_s=statistics.median(seconds) - args.settle,
                                    p95_after_settle_s=p95(seconds) - args.settle)
    print(f"{kind}; settle {args.settle:g} s, poll {args.poll:g} s; {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}")
    print("| model | watch | photos | median s | p95 s | median − settle | p95 − settle | screening, median s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        after = [f"{r[k]:.2f}" if k in r else "—" for k in ("median_after_settle_s", "p95_after_settle_s")]
        print(f"| {r['model']} | {r['watch']} | {r['photos']} | {r['median_s']:.2f} | {r['p95_s']:.2f} | "
              f"{after[0]} | {after[1]} | {r['median_screening_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"images": kind, "settle_s": args.settle, "poll_s": args.poll,
                                         "load": os.getloadavg()[0], "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
