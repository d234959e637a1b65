"""Preprocessing: decoding, field-of-view detection, crop geometry, normalisation."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from drtrt.errors import ConfigError, ImageError
from drtrt.preprocess import (FieldOfView, Geometry, PreprocessSpec, decode_image, find_fov, normalise,
                              preprocess, preprocess_rgb)

IDRID = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "idrid-samples"
IDRID_IMAGES = {"a. Training Set": ["01", "02", "03", "04"], "b. Testing Set": ["55", "56", "57", "58"]}
IDRID_CASES = [(split, n) for split, ns in IDRID_IMAGES.items() for n in ns]


def idrid_image(split: str, n: str) -> Path:
    path = IDRID / "A. Segmentation" / "1. Original Images" / split / f"IDRiD_{n}.jpg"
    if not path.is_file():
        pytest.skip(f"real IDRiD samples not found at {IDRID}")
    return path


def fundus(h: int, w: int, cx: float, cy: float, r: float, level: float = 170, background: float = 4,
           noise: float = 2.0, seed: int = 0) -> np.ndarray:
    """Synthetic fundus photo (uint8 RGB): anti-aliased vignetted disc with vessels and an optic disc."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    d = np.hypot(xx - cx, yy - cy)
    field = np.clip(r - d + 0.5, 0, 1) * (1 - 0.3 * (d / r) ** 2)
    vessels = np.zeros((h, w), np.float32)
    for angle in rng.uniform(0, 2 * np.pi, 8):
        end = (int(cx + 0.9 * r * np.cos(angle)), int(cy + 0.9 * r * np.sin(angle)))
        cv2.line(vessels, (int(cx + 0.3 * r), int(cy)), end, 0.35, max(1, int(r / 80)), cv2.LINE_AA)
    cv2.circle(vessels, (int(cx + 0.3 * r), int(cy)), int(r / 7), -0.4, -1, cv2.LINE_AA)   # bright optic disc
    red = background + (level - background) * field * (1 - vessels)
    rgb = np.stack([red, 0.5 * red, 0.2 * red], axis=2) + rng.normal(0, noise, (h, w, 1))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def jpeg_bytes(rgb: np.ndarray, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=92, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- real IDRiD images


@pytest.mark.realdata
@pytest.mark.parametrize("split,n", IDRID_CASES)
def test_idrid_fov_matches_reference_mask(split: str, n: str) -> None:
    pre = preprocess(idrid_image(split, n), PreprocessSpec())
    reference = np.array(Image.open(IDRID / "fov-masks" / split / f"IDRiD_{n}_MASK.tif")) == 0   # inverted
    geometry = pre.geometry
    assert geometry.fov.found and geometry.original_size == reference.shape == (2848, 4288)
    assert iou(geometry.fov_mask("original"), reference) >= 0.995
    x0, y0, x1, y1 = geometry.crop
    assert x1 - x0 == y1 - y0 and y0 < 0 and y1 > 2848   # circle cut off at top and bottom: padded
    assert pre.tensor.shape == (3, 512, 512) and pre.tensor.dtype == np.float32
    assert pre.rgb.shape == (512, 512, 3) and pre.rgb.dtype == np.uint8
    assert set(pre.timings) == {"decode", "fov", "resize", "normalise"}


@pytest.mark.realdata
def test_idrid_decode_reduced_and_sources_agree() -> None:
    path = idrid_image("a. Training Set", "01")
    rgb, original_size, factor = decode_image(path, 512)
    assert (factor, original_size, rgb.shape, rgb.dtype) == (4, (2848, 4288), (712, 1072, 3), np.uint8)
    assert decode_image(path, None)[2] == 1 and decode_image(path, 712)[2] == 4 and decode_image(path, 713)[2] == 2
    from_bytes = preprocess(path.read_bytes(), PreprocessSpec())
    assert np.array_equal(from_bytes.tensor, preprocess(path, PreprocessSpec()).tensor)
    full = preprocess_rgb(decode_image(path, None)[0], PreprocessSpec())
    reduced = from_bytes.geometry.fov
    assert abs(full.geometry.fov.cx - reduced.cx) < 3 and abs(full.geometry.fov.cy - reduced.cy) < 3
    assert abs(full.geometry.fov.radius - reduced.radius) < 0.002 * reduced.radius


# ---------------------------------------------------------------- find_fov on synthetic images

FIELDS = {
    "centred": (600, 800, 400, 300, 280, {}),
    "off-centre": (700, 1000, 380, 410, 250, {}),
    "cut-top-bottom": (700, 1070, 530, 352, 430, {}),
    "dim-noisy": (600, 800, 410, 290, 270, {"level": 32, "background": 3, "noise": 5}),
    "small-in-large-frame": (2000, 3000, 1400, 1100, 320, {}),
}


@pytest.mark.parametrize("name", FIELDS)
def test_find_fov_synthetic(name: str) -> None:
    h, w, cx, cy, r, kwargs = FIELDS[name]
    fov = find_fov(fundus(h, w, cx, cy, r, **kwargs))
    assert fov.found
    assert abs(fov.cx - cx) < 0.01 * r and abs(fov.cy - cy) < 0.01 * r
    assert abs(fov.radius - r) < 0.01 * r


def screenshot() -> np.ndarray:
    img = np.full((600, 900, 3), 245, np.uint8)
    cv2.rectangle(img, (0, 0), (899, 40), (40, 60, 120), -1)
    cv2.rectangle(img, (30, 80), (300, 560), (200, 200, 200), -1)
    for i, y in enumerate(range(90, 560, 28)):
        cv2.putText(img, f"Patient record line {i} - lorem ipsum", (330, y), cv2.FONT_HERSHEY_SIMPLEX, 0.7, 0, 2)
    return img


def gradient_photo() -> np.ndarray:
    rng = np.random.default_rng(1)
    h, w = 600, 900
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    sky = 230 - 120 * yy / h
    horizon = 380 + 40 * np.sin(xx / 90) + 15 * np.sin(xx / 23)
    value = np.where(yy < horizon, sky, 60 + 30 * np.sin(xx / 40) * np.cos(yy / 30))
    rgb = np.stack([0.8 * value, 0.9 * value, value], axis=2) + rng.normal(0, 6, (h, w, 3))
    for _ in range(6):
        centre = (int(rng.integers(0, w)), int(rng.integers(300, h)))
        cv2.circle(rgb, centre, int(rng.integers(20, 70)), (20, 50, 20), -1)   # dark bushes
    return np.clip(rgb, 0, 255).astype(np.uint8)


NON_FUNDUS = {
    "grey-card": lambda: np.clip(np.random.default_rng(2).normal(128, 3, (600, 800, 3)), 0, 255).astype(np.uint8),
    "noise": lambda: np.random.default_rng(3).integers(0, 256, (600, 800, 3), dtype=np.uint8),
    "black": lambda: np.zeros((400, 600, 3), np.uint8),
    "screenshot": screenshot,
    "gradient-photo": gradient_photo,
}


@pytest.mark.parametrize("name", NON_FUNDUS)
def test_find_fov_rejects_non_fundus(name: str) -> None:
    rgb = NON_FUNDUS[name]()
    fov = find_fov(rgb)
    h, w = rgb.shape[:2]
    assert fov == FieldOfView.whole(h, w) and not fov.found
    geometry = preprocess_rgb(rgb, PreprocessSpec(size=64)).geometry
    assert geometry.crop == (0, (h - w) // 2, w, (h - w) // 2 + w)   # whole image, padded to a square
    assert geometry.fov_mask("original").all()
    assert geometry.fov_mask("model").sum() == pytest.approx(64 * 64 * h / w, rel=0.05)


# ---------------------------------------------------------------- geometry

IDRID_LIKE = FieldOfView(1990.0, 1420.0, 1710.0, True)


def test_geometry_label_round_trip() -> None:
    geometry = Geometry.from_fov(IDRID_LIKE, (2848, 4288), 512)
    labels = np.zeros((2848, 4288), np.uint8)
    for label, (x, y, r) in enumerate([(1500, 900, 120), (2500, 1800, 200), (1000, 1500, 90), (3000, 700, 160)], 1):
        cv2.circle(labels, (x, y), r, label, -1)
    model = geometry.to_model(labels, "nearest")
    assert model.shape == (512, 512) and model.dtype == np.uint8
    back = geometry.to_original(model, "nearest")
    assert back.shape == labels.shape
    step = (geometry.crop[2] - geometry.crop[0]) / 512   # original pixels per model pixel
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * int(np.ceil(step)) + 1,) * 2)
    for label in range(1, 5):
        truth, found = (labels == label).astype(np.uint8), (back == label).astype(np.uint8)
        assert iou(found > 0, truth > 0) > 0.95
        assert not (found & ~cv2.dilate(truth, disc).astype(bool)).any()   # off by at most one model pixel
        assert not (cv2.erode(truth, disc).astype(bool) & ~found.astype(bool)).any()
    inside = geometry.fov_mask("original")
    assert (back[inside] == labels[inside]).mean() > 0.999
    x0, _, x1, _ = geometry.crop
    assert not back[:, : x0 - 1].any() and not back[:, x1 + 1:].any()


def test_geometry_model_to_original_to_model_is_identity() -> None:
    geometry = Geometry.from_fov(IDRID_LIKE, (2848, 4288), 256)
    model = np.random.default_rng(4).integers(0, 5, (256, 256)).astype(np.uint8)
    back = geometry.to_model(geometry.to_original(model), "nearest")
    inside = geometry.fov_mask("model")
    assert np.array_equal(back[inside], model[inside])


def centroid(img: np.ndarray) -> np.ndarray:
    m = cv2.moments(img.astype(np.float32))
    return np.array([m["m10"] / m["m00"], m["m01"] / m["m00"]])


def test_to_model_same_at_any_scale() -> None:
    full = np.zeros((2848, 4288), np.uint8)
    cv2.circle(full, (2400 * 16, 1000 * 16), 300 * 16, 200, -1, cv2.LINE_AA, 4)
    quarter = cv2.resize(full, (1072, 712), interpolation=cv2.INTER_AREA)
    geometry = Geometry.from_fov(IDRID_LIKE, full.shape, 512)
    expected = (np.array([2400.0, 1000.0]) + 0.5 - geometry.crop[:2]) * 512 / 3420 - 0.5
    for interpolation in ("linear", "area"):
        a, b = geometry.to_model(full, interpolation), geometry.to_model(quarter, interpolation)
        assert np.abs(centroid(a) - expected).max() < 0.05 and np.abs(centroid(b) - expected).max() < 0.05
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.0


def test_to_model_reduced_jpeg_of_odd_size() -> None:
    rgb = np.zeros((2001, 3003, 3), np.uint8)
    cv2.circle(rgb, (1800, 700), 250, (255, 255, 255), -1)
    data = jpeg_bytes(rgb)
    reduced, original_size, factor = decode_image(data, 200)
    assert (factor, original_size, reduced.shape[:2]) == (8, (2001, 3003), (251, 376))   # rounded up
    geometry = Geometry.from_fov(FieldOfView(1501.0, 1000.0, 1000.0, True), original_size, 256)
    a = geometry.to_model(decode_image(data, None)[0][..., 0], "area")
    b = geometry.to_model(reduced[..., 0], "area")
    assert np.abs(centroid(a) - centroid(b)).max() < 0.1


def test_to_model_channels_dtypes_and_padding() -> None:
    geometry = Geometry.from_fov(FieldOfView(49.5, 29.5, 40.0, True), (60, 100), 32)
    assert geometry.crop == (10, -10, 90, 70)
    probs = np.random.default_rng(5).random((60, 100, 5)).astype(np.float32)
    assert geometry.to_model(probs).shape == (32, 32, 5)
    assert geometry.to_model(probs[..., :1]).shape == (32, 32, 1)
    assert geometry.to_original(geometry.to_model(probs)).shape == (60, 100, 5)
    ones = geometry.to_model(np.ones((60, 100), bool), "nearest")
    assert ones.dtype == bool and ones[16].all() and not ones[0].any() and not ones[-1].any()
    assert geometry.to_model(np.ones((60, 100), np.int64), "nearest").dtype == np.int64
    with pytest.raises(ValueError):
        geometry.to_model(np.ones((60, 50)))
    with pytest.raises(ValueError):
        geometry.to_model(probs, "cubic")


def test_fov_mask_and_serialisation() -> None:
    geometry = Geometry.from_fov(IDRID_LIKE, (2848, 4288), 512, margin=0.05)
    model, original = geometry.fov_mask("model"), geometry.fov_mask("original")
    assert model.shape == (512, 512) and original.shape == (2848, 4288) and model.dtype == original.dtype == bool
    assert model[256, 256] and not model[0, 256] and not model[256, 0]
    assert model.mean() == pytest.approx(original.sum() * (512 / 3591) ** 2 / 512**2, rel=0.01)
    assert Geometry.from_dict(json.loads(json.dumps(geometry.to_dict()))) == geometry
    spec = PreprocessSpec(size=384, margin=0.02)
    assert PreprocessSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert FieldOfView.from_dict(IDRID_LIKE.to_dict()) == IDRID_LIKE
    with pytest.raises(ValueError):
        geometry.fov_mask("crop")


def test_spec_from_dict_errors() -> None:
    with pytest.raises(ConfigError, match="sizee"):
        PreprocessSpec.from_dict({"sizee": 512})
    with pytest.raises(ConfigError):
        PreprocessSpec.from_dict({"std": [0.2, 0.2]})
    with pytest.raises(ConfigError):
        PreprocessSpec.from_dict({"interpolation": "cubic"})
    with pytest.raises(ConfigError, match="bogus"):
        Geometry.from_dict({**Geometry.from_fov(IDRID_LIKE, (2848, 4288), 512).to_dict(), "bogus": 1})


# ---------------------------------------------------------------- decode_image


def test_decode_exif_orientation(tmp_path: Path) -> None:
    stored = np.zeros((1000, 1600, 3), np.uint8)   # stored landscape, red block at the top left
    stored[:200, :300] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6   # display rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg_bytes(stored, exif=exif.tobytes()))
    for target, factor in ((None, 1), (200, 4)):
        rgb, original_size, k = decode_image(path, target)
        assert (k, original_size) == (factor, (1600, 1000))
        assert rgb.shape == (1600 // k, 1000 // k, 3)
        assert rgb[10 // k, -10 // k - 1, 0] > 200 and rgb[10 // k, 10 // k, 0] < 50   # block now at the top right


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decode_every_exif_orientation_as_viewers_show_it(orientation: int) -> None:
    stored = np.zeros((64, 96, 3), np.uint8)
    stored[:16, :32] = (255, 0, 0)                 # a red block at the top left, a green one at the bottom left
    stored[-16:, :24] = (0, 255, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = jpeg_bytes(stored, exif=exif.tobytes())
    with Image.open(io.BytesIO(data)) as im:
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    rgb, size, _ = decode_image(data, None)
    assert rgb.shape == upright.shape and size == upright.shape[:2]
    assert np.abs(rgb.astype(int) - upright).max() <= 2


def test_decode_refuses_damaged_jpeg_data() -> None:
    """OpenCV decodes these half grey with only a warning; the fundus checks would misjudge them."""
    data = jpeg_bytes(fundus(600, 800, 400, 300, 280))
    middle = data.find(b"\\xff\\xda") + (len(data) - data.find(b"\\xff\\xda")) // 2
    noise = np.random.default_rng(0).integers(0, 255, 500, dtype=np.uint8).tobytes()
    damaged = {"truncated": data[:middle], "garbage": data[:middle] + noise + data[middle + 500:],
               "zeros": data[:middle] + bytes(2000) + data[middle + 2000:]}
    for kind, bad in damaged.items():
        if kind != "truncated":                        # OpenCV: a picture, with a warning on stderr
            assert cv2.imdecode(np.frombuffer(bad, np.uint8), cv2.IMREAD_COLOR) is not None, kind

        for target in (None, 128):
            with pytest.raises(ImageError, match="copy the file from the camera again") as error:
                decode_image(bad, target)
            assert ("truncated" in str(error.value)) == (kind == "truncated")
    padded = data[:-2] + bytes(10) + data[-2:]         # padding before the end marker: every pixel intact
    np.testing.assert_array_equal(decode_image(padded, None)[0], decode_image(data, None)[0])


def test_decode_jpeg_matches_opencv_at_every_scale() -> None:
    data = jpeg_bytes(fundus(1200, 1600, 800, 600, 560))
    for target, flag in ((None, cv2.IMREAD_COLOR), (600, cv2.IMREAD_REDUCED_COLOR_2),
                         (300, cv2.IMREAD_REDUCED_COLOR_4), (150, cv2.IMREAD_REDUCED_COLOR_8)):
        ours = decode_image(data, target)[0]
        theirs = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), flag), cv2.COLOR_BGR2RGB)
        assert ours.shape == theirs.shape and np.abs(ours.astype(int) - theirs).max() <= 1, target


def test_decode_grey_rgba_16bit(tmp_path: Path) -> None:

    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((40, 60), 90, np.uint8)).save(grey)
    rgb, size, _ = decode_image(grey)
    assert rgb.shape == (40, 60, 3) and size == (40, 60) and (rgb == 90).all()
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[...] = (200, 100, 50, 0)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    rgb, _, _ = decode_image(tmp_path / "rgba.png")
    assert rgb.shape == (40, 60, 3) and (rgb == (200, 100, 50)).all()
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((40, 60, 3), 40000, np.uint16))
    rgb, _, _ = decode_image(tmp_path / "deep.png")
    assert rgb.dtype == np.uint8 and abs(int(rgb[0, 0, 0]) - 40000 // 257) <= 1


def test_decode_errors(tmp_path: Path) -> None:
    jpeg = jpeg_bytes(fundus(300, 400, 200, 150, 140))
    (tmp_path / "notes.jpg").write_text("this is not an image\n")
    (tmp_path / "half.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "huge.png").write_bytes(png_header_only(12000, 9000))
    for name in ("missing.jpg", "notes.jpg", "half.jpg", "huge.png"):
        with pytest.raises(ImageError) as error:
            decode_image(tmp_path / name)
        assert name in str(error.value) and "\n" not in str(error.value)
    assert decode_image(jpeg)[0].shape == (300, 400, 3)


def test_normalise() -> None:
    spec = PreprocessSpec(size=8)
    rgb = np.random.default_rng(6).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    expected = ((rgb / 255 - np.array(spec.mean)) / np.array(spec.std)).transpose(2, 0, 1)
    out = normalise(rgb, spec)
    assert out.shape == (3, 8, 8) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, expected, atol=1e-5)
