"""Image intake on real photos and what a clinic's first weeks bring: the table in docs/quality.md.

    PYTHONPATH=. .venv/bin/python benchmarks/intake_real.py [--limit N] [--json OUT] [--repeats R]

Every variant of ``tests/intake_variants.py`` (the eight IDRiD originals re-encoded, resized,
turned, cut, padded, on grey, dimmed, squashed, blurred, badly exposed, washed out, hazy,
greyscale and too small; their damaged copies; the 54 ``idrid-seg-512`` images; scikit-image's
retina and ordinary photos, plain and masked to a circle) goes through the runtime's intake
path exactly as ``Predictor`` runs it for the 512-pixel model: decode → field of view → quality
gate → optic disc. Reported per group: accepted, refused with the right reason, refused with a
wrong one; the field of view's IoU against the true mask carried through each transformation;
the optic disc's centre inside the true disc (``idrid-seg-512``'s ``*_OD.jpg``) and the eye
that position implies; the distributions of each quality measure; and the speed of the intake
path on one core for the real 4288x2848 JPEGs against a naive full decode + area resize in
the same run (medians of ``--repeats``): the whole intake path, and its part that makes the
model's input (reduced-scale decode, field of view, crop and resize, normalise). Needs
../shared/data and scikit-image.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from intake_variants import IDRID, Variant, everything  # noqa: E402

from drtrt.cpu import keep_freed_memory  # noqa: E402
from drtrt.errors import ImageError  # noqa: E402
from drtrt.preprocess import PreprocessSpec, decode_image, locate_disc, preprocess_rgb  # noqa: E402
from drtrt.runtime.quality import analysis_view, assess_quality, decode_side  # noqa: E402

SPEC = PreprocessSpec(size=512)
MEASURES = ("brightness", "clipped_fraction", "saturation", "chroma", "red_green", "blue_red", "neutral_fraction",
            "contrast", "sharpness", "isotropy")


def intake(data: bytes) -> tuple:
    """The runtime's intake path: (rgb, preprocessed, verdict, disc or None)."""
    rgb, original_size, _ = decode_image(data, decode_side(SPEC.size))
    pre = preprocess_rgb(rgb, SPEC, original_size)
    view = analysis_view(rgb, pre) if pre.geometry.fov.found else None
    verdict = assess_quality(rgb, pre, view=view)
    disc = locate_disc(view.image, view.geometry) if verdict.gradable else None
    return rgb, pre, verdict, disc


def judge(variant: Variant) -> dict:
    row: dict = {"name": variant.name, "group": variant.group, "kind": variant.kind,
                 "expected": sorted(variant.expected)}
    try:
        _, pre, verdict, disc = intake(variant.data)
    except ImageError as exc:
        row.update(outcome=exc.code, reason=str(exc))
        return row
    row.update(outcome="graded" if verdict.gradable else verdict.code, reason=verdict.reason,
               measures=verdict.measures, cuts=list(pre.geometry.fov.cuts))
    if variant.fov is not None and pre.geometry.fov.found:
        found = pre.geometry.fov_mask("original")
        row["fov_iou"] = float((found & variant.fov).sum() / (found | variant.fov).sum())
    if disc is not None:
        row["disc"] = disc.to_dict()
        if variant.disc is not None:
            ys, xs = np.nonzero(variant.disc)
            row["disc_hit"] = bool(variant.disc[min(round(disc.y), variant.disc.shape[0] - 1),
                                                min(round(disc.x), variant.disc.shape[1] - 1)])
            row["true_eye"] = "right" if xs.mean() > variant.disc.shape[1] / 2 else "left"
    return row


def group_table(rows: list[dict]) -> list[dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["group"]].append(r)
    table = []
    for group, members in groups.items():
        graded = sum(r["outcome"] == "graded" for r in members)
        right = sum(r["outcome"] != "graded" and r["outcome"] in r["expected"] for r in members)
        ious = [r["fov_iou"] for r in members if "fov_iou" in r]
        table.append({"group": group, "kind": members[0]["kind"], "n": len(members), "graded": graded,
                      "refused_right": right, "refused_wrong": len(members) - graded - right,
                      "min_fov_iou": min(ious) if ious else None,
                      "wrong": [f"{r['name']}: {r['outcome']}" for r in members if r["outcome"] not in r["expected"]]})
    return table


def targets(rows: list[dict]) -> dict:
    def share(hits: int, n: int) -> dict:
        return {"n": n, "hits": hits, "share": hits / n if n else None}

    gradable = [r for r in rows if r["kind"] == "gradable"]
    bad = [r for r in rows if r["kind"] == "bad"]
    refused = [r for r in rows if r["outcome"] != "graded" and r["kind"] != "gradable"]
    never = [r for r in rows if r["kind"] in ("ordinary", "damaged")]
    discs = [r for r in rows if "disc_hit" in r]
    eyes = [r for r in discs if r["disc"]["eye"] is not None]
    return {"gradable_graded": share(sum(r["outcome"] == "graded" for r in gradable), len(gradable)),
            "bad_refused": share(sum(r["outcome"] != "graded" for r in bad), len(bad)),
            "refusals_right_reason": share(sum(r["outcome"] in r["expected"] for r in refused), len(refused)),
            "ordinary_or_damaged_graded": sum(r["outcome"] == "graded" for r in never),
            "min_fov_iou_gradable": min((r["fov_iou"] for r in gradable if "fov_iou" in r), default=None),
            "disc_centre_in_true_disc": share(sum(r["disc_hit"] for r in discs), len(discs)),
            "eye_from_disc": {"inferred": len(eyes), "of": len(discs),
                              "right": sum(r["disc"]["eye"] == r["true_eye"] for r in eyes)}}


def distributions(rows: list[dict]) -> dict:
    """min / median / max of each measure per kind of photo (gradable vs each bad group)."""
    out: dict = {}
    for r in rows:
        key = "gradable (all variants)" if r["kind"] == "gradable" else r["group"]
        for m, v in r.get("measures", {}).items():
            out.setdefault(key, {}).setdefault(m, []).append(v)
    return {k: {m: [min(v), statistics.median(v), max(v)] for m, v in ms.items() if m in MEASURES}
            for k, ms in out.items()}


def speed(repeats: int) -> dict:
    """Median ms per 4288x2848 JPEG on one core: the intake path, and a naive full decode + resize."""
    cv2.setNumThreads(1)
    keep_freed_memory()                    # the process's memory policy as the Predictor sets it (issue 26)
    files = sorted((IDRID / "A. Segmentation" / "1. Original Images").glob("*/*.jpg"))
    data = [f.read_bytes() for f in files]
    steps: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for d in data:
            t0 = time.perf_counter()
            rgb, size, _ = decode_image(d, decode_side(SPEC.size))
            t1 = time.perf_counter()
            pre = preprocess_rgb(rgb, SPEC, size)
            t2 = time.perf_counter()
            view = analysis_view(rgb, pre)
            assess_quality(rgb, pre, view=view)
            t3 = time.perf_counter()
            locate_disc(view.image, view.geometry)
            t4 = time.perf_counter()
            full = cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR)
            t5 = time.perf_counter()
            cv2.resize(full, (512, 512), interpolation=cv2.INTER_AREA)
            t6 = time.perf_counter()
            for step, ms in zip(("decode", "fov_crop_resize", "quality", "disc", "intake_total", "naive_decode",
                                 "naive_decode_resize"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0, t5 - t4, t6 - t4)):
                steps[step].append(ms * 1e3)
    medians = {k: statistics.median(v) for k, v in steps.items()}
    medians["naive_decode_over_decode"] = medians["naive_decode"] / medians["decode"]
    medians["model_input"] = medians["decode"] + medians["fov_crop_resize"]
    medians["naive_over_model_input"] = medians["naive_decode_resize"] / medians["model_input"]
    medians["naive_over_intake"] = medians["naive_decode_resize"] / medians["intake_total"]
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N IDRiD originals")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not IDRID.is_dir():
        sys.exit(f"needs the real images in {IDRID.parent}")
    start = time.perf_counter()
    rows = [judge(v) for v in everything(limit=args.limit)]
    result = {"machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
              "groups": group_table(rows), "targets": targets(rows), "distributions": distributions(rows),
              "speed_ms": speed(args.repeats), "seconds": time.perf_counter() - start}
    print("| group | kind | n | graded | refused, right reason | refused, wrong reason | min FOV IoU |")
    print("|---|---|---|---|---|---|---|")
    for g in result["groups"]:
        iou = "" if g["min_fov_iou"] is None else f"{g['min_fov_iou']:.3f}"
        print(f"| {g['group']} | {g['kind']} | {g['n']} | {g['graded']} | {g['refused_right']} | "
              f"{g['refused_wrong']} | {iou} |")
    for g in result["groups"]:
        for wrong in g["wrong"]:
            print("wrong:", wrong)
    print(json.dumps(result["targets"], indent=1))
    print(json.dumps({k: round(v, 2) for k, v in result["speed_ms"].items()}))
    if args.json:
        args.json.write_text(json.dumps({**result, "rows": rows}, indent=1, default=float))


if __name__ == "__main__":
    main()
