"""The image quality gate: real fundus photos pass, generated bad cases fail with the right reason."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import shared_data

from drtrt.preprocess import PreprocessSpec, decode_image, preprocess_rgb
from drtrt.runtime.quality import QualityConfig, assess_quality, blur_effect
from drtrt.data.fundus import render_fundus

SPEC = PreprocessSpec(size=512)


def judge(rgb: np.ndarray, spec: PreprocessSpec = SPEC, original_size=None):
    return assess_quality(rgb, preprocess_rgb(rgb, spec, original_size or rgb.shape[:2]))


def real_samples() -> list:
    root = shared_data("idrid-samples")
    files = sorted(root.glob("A. Segmentation/1. Original Images/*/*.jpg"))
    assert len(files) == 8, files
    return files


@pytest.fixture(scope="module")
def real_decoded():
    return [(f.name, *decode_image(f, SPEC.size)[:2]) for f in real_samples()]


@pytest.fixture(scope="module")
def synthetic() -> np.ndarray:
    image, _ = render_fundus(np.random.default_rng(3), 1200, 800, grade=2)
    return image


@pytest.mark.realdata
def test_every_real_idrid_sample_is_gradable(real_decoded):
    for name, rgb, size in real_decoded:
        verdict = judge(rgb, original_size=size)
        assert verdict.gradable, (name, verdict)
        m = verdict.measures
        # keep a margin to each threshold, so a small change in decoding cannot flip a real photo
        assert m["blur"] < QualityConfig().max_blur - 0.1, (name, m)
        assert m["mean_brightness"] > 2 * QualityConfig().dark_mean, (name, m)
        assert m["overexposed_fraction"] < QualityConfig().overexposed_fraction / 5, (name, m)


def test_synthetic_fundus_is_gradable(synthetic):
    verdict = judge(synthetic)
    assert verdict.gradable, verdict


def degrade(rgb: np.ndarray, case: str) -> np.ndarray:
    """Generated bad cases from a good fundus photo (sigma as a share of the image height)."""
    h, w = rgb.shape[:2]
    if case == "blurred":
        return cv2.GaussianBlur(rgb, (0, 0), 0.01 * h)
    if case == "slightly_blurred":
        return cv2.GaussianBlur(rgb, (0, 0), 0.006 * h)
    if case == "too_dark":
        return (rgb * 0.2).astype(np.uint8)
    if case == "black":
        return (rgb * 0.04).astype(np.uint8)
    if case == "overexposed":
        return np.clip(rgb.astype(np.float32) * 2.5, 0, 255).astype(np.uint8)
    if case == "greyscale":
        return cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    if case == "too_small":
        return cv2.resize(rgb, (w * 180 // h, 180), interpolation=cv2.INTER_AREA)
    raise ValueError(case)


EXPECTED = {"blurred": "blurred", "slightly_blurred": "blurred", "too_dark": "too_dark", "black": "too_dark",
            "overexposed": "overexposed", "greyscale": "greyscale", "too_small": "too_small"}
WORDS = {"blurred": "blurred", "too_dark": "too dark", "overexposed": "overexposed", "greyscale": "colour",
         "too_small": "too small"}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_degraded_synthetic_fails(synthetic, case):
    verdict = judge(degrade(synthetic, case))
    assert not verdict.gradable and verdict.code == EXPECTED[case], verdict
    assert WORDS[verdict.code] in verdict.reason and "retake" in verdict.reason


@pytest.mark.realdata
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_degraded_real_samples_fail(real_decoded, case):
    for name, rgb, size in real_decoded[::3]:        # three of the eight: IDRiD_01, 04, 57
        bad = degrade(rgb, case)
        verdict = judge(bad, original_size=size if bad.shape[:2] == rgb.shape[:2] else None)
        assert not verdict.gradable and verdict.code == EXPECTED[case], (name, verdict)


def _screenshot(h: int = 768, w: int = 1024) -> np.ndarray:
    shot = np.full((h, w, 3), 245, np.uint8)
    cv2.rectangle(shot, (0, 0), (w, 40), (40, 90, 200), -1)
    for i in range(18):
        cv2.putText(shot, f"Patient {i:04d}   screening list   done", (20, 80 + 36 * i), cv2.FONT_HERSHEY_SIMPLEX,
                    0.8, (20, 20, 20), 2)
    return shot


def _photo(h: int = 768, w: int = 1024) -> np.ndarray:
    photo = np.zeros((h, w, 3), np.uint8)
    photo[: h // 2], photo[h // 2:] = (120, 170, 230), (70, 120, 50)
    cv2.rectangle(photo, (w // 5, h // 3), (w // 2, 4 * h // 5), (180, 90, 60), -1)
    cv2.circle(photo, (3 * w // 4, h // 5), h // 10, (250, 240, 200), -1)
    return np.clip(photo + np.random.default_rng(0).normal(0, 8, photo.shape), 0, 255).astype(np.uint8)


def _disc(colour, noise: int = 0, h: int = 768, w: int = 1024) -> np.ndarray:
    disc = np.zeros((h, w, 3), np.uint8)
    cv2.circle(disc, (w // 2, h // 2), int(h * 0.46), colour, -1)
    if noise:
        disc = cv2.add(disc, np.random.default_rng(1).integers(0, noise, disc.shape, dtype=np.uint8) * (disc > 0))
    return disc


@pytest.mark.parametrize("case, code", [
    ("grey_card", "blank"), ("white", "overexposed"), ("black", "too_dark"), ("screenshot", "no_fov"),
    ("ordinary_photo", "no_fov"), ("moon", "greyscale"), ("blue_disc", "not_fundus"), ("flat_orange_disc", "no_detail"),
])
def test_not_a_fundus_photo_fails(case, code):
    images = {"grey_card": lambda: np.full((768, 1024, 3), 128, np.uint8),
              "white": lambda: np.full((768, 1024, 3), 255, np.uint8),
              "black": lambda: np.zeros((768, 1024, 3), np.uint8),
              "screenshot": _screenshot, "ordinary_photo": _photo,
              "moon": lambda: _disc((190, 190, 185), noise=30),
              "blue_disc": lambda: _disc((60, 110, 200), noise=40),
              "flat_orange_disc": lambda: _disc((200, 90, 30))}
    verdict = judge(images[case]())
    assert not verdict.gradable and verdict.code == code, verdict
    assert "retake" in verdict.reason


def test_blur_effect_is_monotonic_and_contrast_invariant(synthetic):
    grey = cv2.cvtColor(synthetic, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mask = np.ones(grey.shape, bool)
    scores = [blur_effect(cv2.GaussianBlur(grey, (0, 0), s) if s else grey, mask) for s in (0, 1, 2, 4, 8)]
    assert scores == sorted(scores) and scores[0] < 0.5 < scores[-1], scores
    assert blur_effect(grey * 0.5, mask) == pytest.approx(scores[0], abs=1e-3)
    assert blur_effect(np.zeros((64, 64), np.float32), np.ones((64, 64), bool)) == 1.0


def test_thresholds_are_configurable(synthetic):
    strict = QualityConfig(max_blur=0.05)
    verdict = assess_quality(synthetic, preprocess_rgb(synthetic, SPEC), strict)
    assert verdict.code == "blurred"
    assert verdict.to_dict()["measures"]["blur"] > 0.05
