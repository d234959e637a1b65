"""What the intake (decode → field of view → quality gate → optic disc) says about each photo, and the
reference it is held to: ``tests/runtime/intake_reference.json``, written by the code before issue 26
made the intake faster (``python tests/intake_reference.py --write``; only when a change of results is
meant, and said so in docs/quality.md).

Photos: every variant of :mod:`intake_variants` made from the IDRiD originals ``KEEP`` (re-encoded,
resized, turned, cut, padded, dimmed, blurred, badly exposed ..., their damaged copies), the 54
``idrid-seg-512`` images, scikit-image's retina and ordinary photos (when ../shared/data is present),
and the synthetic photos of ``drtrt.data.synth`` (always).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "runtime" / "intake_reference.json"
KEEP = ("IDRiD_01", "IDRiD_57")


def intake(data: bytes) -> dict:
    """The runtime's intake of one file at the 512-px model's sizes, as Predictor runs it."""
    from drtrt.errors import ImageError
    from drtrt.preprocess import PreprocessSpec, decode_image, locate_disc, preprocess_rgb
    from drtrt.runtime.quality import analysis_view, assess_quality, decode_side

    spec = PreprocessSpec(size=512)
    try:
        rgb, size, _ = decode_image(data, decode_side(spec.size))
    except ImageError as exc:
        return {"code": exc.code}
    pre = preprocess_rgb(rgb, spec, size)
    view = analysis_view(rgb, pre) if pre.geometry.fov.found else None
    verdict = assess_quality(rgb, pre, view=view)
    disc = locate_disc(view.image, view.geometry) if verdict.gradable else None
    fov = pre.geometry.fov
    return {"code": verdict.code, "measures": verdict.measures, "crop": list(pre.geometry.crop),
            "fov": [fov.cx, fov.cy, fov.radius, fov.aspect, fov.found],
            "disc": None if disc is None else [disc.x, disc.y, disc.radius, disc.score, disc.eye]}


def synthetic_photos() -> dict[str, bytes]:
    """The synthetic photos the tests screen (conftest's ``photo_root``: 512 px, seed 1), and a blurred copy."""
    import cv2

    from drtrt.data.synth import write_synthetic_idrid

    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_idrid(Path(tmp), grading=12, segmentation=6, size=512, seed=1)
        files = sorted(Path(tmp).rglob("*.jpg"))
        photos = {f"synth/{p.relative_to(tmp)}": p.read_bytes() for p in files}
        blurred = cv2.GaussianBlur(cv2.imread(str(files[0])), (0, 0), 6)
        photos["synth/blurred"] = cv2.imencode(".jpg", blurred)[1].tobytes()
    return photos


def real_photos() -> dict[str, bytes]:
    """The variants of the real photos (empty when ../shared/data or scikit-image is absent)."""
    sys.path.insert(0, str(HERE))
    import intake_variants

    if not (intake_variants.IDRID.is_dir() and intake_variants.SEG512.is_dir()):
        return {}
    try:
        import skimage  # noqa: F401
    except ImportError:
        return {}
    return {v.name: v.data for v in intake_variants.everything(originals=KEEP)}


def outputs(photos: dict[str, bytes]) -> dict[str, dict]:
    return {name: intake(data) for name, data in photos.items()}


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/intake_reference.py --write   (rewrites the reference: see the docstring)")
    sys.path.insert(0, str(HERE.parent))
    found = {"synthetic": outputs(synthetic_photos()), "real": outputs(real_photos())}
    if not found["real"]:
        sys.exit("needs ../shared/data and scikit-image for the real photos")
    REFERENCE.write_text(json.dumps(found, indent=0, sort_keys=True) + "\n")
    print(f"{REFERENCE}: {len(found['synthetic'])} synthetic, {len(found['real'])} real photos")
