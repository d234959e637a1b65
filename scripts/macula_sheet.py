"""The fovea and M on the real IDRiD photos beside the checkout: figures and contact sheets for
docs/maculopathy.md.

For every photo of ``idrid-seg-512`` (54, squashed to 512x512) and of ``idrid-samples`` (8 at full
resolution) it runs the runtime's own steps (decode, field of view, analysis view, optic disc,
fovea) and grades M from the *expert's* hard-exudate mask in place of a model's; it prints the
table the doc quotes and writes contact sheets (the disc ringed in white, the fovea's cross and
1-DD circle in the overlay's colour, the expert exudates in yellow):

    PYTHONPATH=. .venv/bin/python scripts/macula_sheet.py --data ../shared/data --out docs/maculopathy
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from drtrt.clinic.result_files import FOVEA_COLOUR, draw_fovea
from drtrt.preprocess import PreprocessSpec, decode_image, locate_disc, preprocess_rgb
from drtrt.runtime.macula import assess_macula, locate_fovea
from drtrt.runtime.quality import analysis_view, decode_side

SAMPLES = "A. Segmentation"
TILE = 200
EXUDATE_COLOUR = (255, 230, 0)
SHOWN = ("01", "02", "03", "04", "05", "06", "09", "10", "12", "26", "29", "44")   # idrid-seg-512 on the sheet


def expert_masks(data: Path) -> list[tuple[str, Path, np.ndarray | None]]:
    """(name, photo, expert hard-exudate mask at the photo's resolution or None) for every real photo."""
    out = []
    seg = data / "idrid-seg-512"
    for photo in sorted((seg / "images").glob("*.jpg")):
        overlay = seg / "lesion-overlays" / f"{photo.stem}_EX.jpg"
        mask = cv2.imread(str(overlay)).max(axis=2) > 60 if overlay.exists() else None
        out.append((f"seg512/{photo.stem}", photo, mask))
    samples = data / "idrid-samples" / SAMPLES
    for photo in sorted((samples / "1. Original Images").rglob("*.jpg")):
        tifs = list((samples / "2. All Segmentation Groundtruths").rglob(f"{photo.stem}_EX.tif"))
        mask = cv2.imread(str(tifs[0]), cv2.IMREAD_GRAYSCALE) > 0 if tifs else None
        out.append((f"full/{photo.stem}", photo, mask))
    return out


def examine(photo: Path, mask: np.ndarray | None, size: int = 512) -> dict:
    """The runtime's disc and fovea on ``photo`` and M from the expert ``mask`` (original resolution)."""
    rgb, original_size, _ = decode_image(photo, decode_side(size))
    pre = preprocess_rgb(rgb, PreprocessSpec(size=size), original_size=original_size)
    view = analysis_view(rgb, pre)
    disc = locate_disc(view.image, view.geometry)
    fovea, why = locate_fovea(view.image, view.geometry, disc)
    exudates = None if mask is None else pre.geometry.to_model(mask.astype(np.uint8), "nearest") > 0
    macula = assess_macula(fovea, why, exudates if exudates is not None else np.zeros((size, size), bool),
                           pre.geometry)
    dist = None
    if fovea is not None:
        sx, sy = view.geometry.steps                       # the field is round in the view: distances there
        dist = float(np.hypot((fovea.x - disc.x) / sx, (fovea.y - disc.y) / sy) / (fovea.disc_diameter / sx))
    return {"rgb": rgb, "geometry": pre.geometry, "disc": disc, "macula": macula, "dist_dd": dist}


def tile(found: dict, mask: np.ndarray | None, label: str) -> np.ndarray:
    """The photo at TILE px with the experts' exudates, the disc and the fovea drawn at that size."""
    rgb, geometry, disc = found["rgb"], found["geometry"], found["disc"]
    h, w = rgb.shape[:2]
    f = TILE / max(h, w)
    small = cv2.resize(rgb, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
    if mask is not None:
        small[cv2.resize(mask.astype(np.uint8), small.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0] = EXUDATE_COLOUR
    scale = geometry.original_size[1] / small.shape[1]
    if disc is not None:
        cv2.circle(small, (round(disc.x / scale), round(disc.y / scale)), round(disc.radius / scale), (255, 255, 255), 1)
    draw_fovea(small, found["macula"], geometry)
    out = np.zeros((TILE + 18, TILE, 3), np.uint8)
    y0, x0 = (TILE - small.shape[0]) // 2, (TILE - small.shape[1]) // 2
    out[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    cv2.putText(out, f"{label} {found['macula'].m or 'M ?'}", (4, TILE + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                (255, 255, 255), 1)
    return out


def sheet(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    rows = -(-len(tiles) // columns)
    blank = np.zeros_like(tiles[0])
    tiles = tiles + [blank] * (rows * columns - len(tiles))
    return np.vstack([np.hstack(tiles[r * columns:(r + 1) * columns]) for r in range(rows)])


def palette_png(rgb: np.ndarray, path: Path) -> None:
    """``rgb`` as an 8-bit palette PNG (a third of the size): the photo's colours quantised, the
    drawing's own colours kept exactly in reserved entries (a quantiser would drop so few pixels)."""
    kept = [FOVEA_COLOUR, (255, 255, 255), (0, 0, 0), EXUDATE_COLOUR]
    quantised = Image.fromarray(rgb).quantize(256 - len(kept), method=Image.Quantize.MEDIANCUT,
                                              dither=Image.Dither.NONE)
    palette = quantised.getpalette()[:3 * (256 - len(kept))] + [v for colour in kept for v in colour]
    index = np.array(quantised)
    for i, colour in enumerate(kept):
        index[np.all(rgb == colour, axis=2)] = 256 - len(kept) + i
    out = Image.fromarray(index, mode="P")
    out.putpalette(palette)
    out.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("docs/maculopathy"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tiles: dict[str, list[np.ndarray]] = {"seg512": [], "full": []}
    counts: dict[str, Counter] = {"seg512": Counter(), "full": Counter()}
    dists: dict[str, list[float]] = {"seg512": [], "full": []}
    for name, photo, mask in expert_masks(args.data):
        found = examine(photo, mask)
        group, stem = name.split("/")
        macula = found["macula"]
        counts[group][macula.m or "not assessed"] += 1
        if found["dist_dd"] is not None:
            dists[group].append(found["dist_dd"])
        print(f"{name:18s} eye {str(found['disc'] and found['disc'].eye):5s} "
              f"fovea-disc {found['dist_dd'] or float('nan'):5.2f} DD  {macula.m or '-':3s} {macula.reason}")
        if group == "full" or stem.removeprefix("IDRiD_") in SHOWN:
            tiles[group].append(tile(found, mask, stem.replace("IDRiD_", "")))
    for group in ("seg512", "full"):
        d = np.array(dists[group])
        print(f"{group}: M {dict(counts[group])}; fovea-disc distance (DD) min {d.min():.2f} "
              f"median {np.median(d):.2f} max {d.max():.2f}, in 2-3 DD {(d >= 2).sum() - (d > 3).sum()} of {len(d)}")
        palette_png(sheet(tiles[group], 4), args.out / f"{group}.png")


if __name__ == "__main__":
    main()
