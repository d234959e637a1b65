"""The optic disc locator on rendered fundus photos whose disc position is known (real photos:
tests/runtime/test_intake.py), and the eye-mismatch warning."""

from __future__ import annotations

import numpy as np
import pytest

from drtrt.data.synthetic_fundus import render_fundus
from drtrt.data.synthetic_geometry import sample_geometry
from drtrt.preprocess import PreprocessSpec, eye_mismatch, locate_disc, preprocess_rgb
from drtrt.preprocess.disc import classify_position

SEEDS = range(6)


@pytest.fixture(scope="module")
def photos():
    """(seed, rgb, where the renderer put the disc) for a few 1600 x 1200 renders."""
    out = []
    for seed in SEEDS:
        rgb, _ = render_fundus(np.random.default_rng(seed), 1600, 1200, grade=seed % 5)
        out.append((seed, rgb, sample_geometry(np.random.default_rng(seed), 1600, 1200)))   # the same draws first
    return out


def find(rgb: np.ndarray, size: int = 512):
    pre = preprocess_rgb(rgb, PreprocessSpec(size=size))
    return locate_disc(pre.rgb, pre.geometry)


def test_disc_is_found_where_it_was_drawn_and_tells_the_eye(photos):
    for seed, rgb, truth in photos:
        disc = find(rgb)
        assert disc is not None, seed
        assert np.hypot(disc.x - truth.disc_x, disc.y - truth.disc_y) < truth.disc_radius, (seed, disc, truth)
        assert disc.centred == "macula" and disc.eye == ("right" if truth.side > 0 else "left"), (seed, disc)
        assert 0.5 < abs(disc.dx) < 0.8 and abs(disc.dy) < 0.2
        assert disc.radius == pytest.approx(0.12 * truth.radius, rel=0.1)


def test_disc_follows_a_mirrored_photo_and_any_model_side(photos):
    _, rgb, truth = photos[0]
    disc, mirrored = find(rgb), find(np.ascontiguousarray(rgb[:, ::-1]))
    assert mirrored.eye != disc.eye and abs(mirrored.x - (1599 - disc.x)) < 0.5 * truth.disc_radius
    for size in (64, 256):                                 # the model's own input, smaller than the disc view
        other = find(rgb, size)
        assert other.eye == disc.eye and np.hypot(other.x - disc.x, other.y - disc.y) < truth.disc_radius, size


def test_turned_photos_say_nothing_about_the_eye(photos):
    _, rgb, _ = photos[0]
    turned = find(np.ascontiguousarray(np.rot90(rgb)))
    assert turned.eye is None and turned.centred == "other" and abs(turned.dy) > 0.5


@pytest.mark.parametrize("dx, dy, centred, eye", [
    (0.05, 0.02, "disc", None), (-0.1, 0.08, "disc", None), (0.5, 0.1, "macula", "right"),
    (-0.6, -0.2, "macula", "left"), (0.0, -0.5, "other", None), (0.9, -0.3, "other", "right"),
    (0.2, 0.3, "other", None),
])
def test_position_of_the_disc_says_what_the_photo_is_centred_on(dx, dy, centred, eye):
    assert classify_position(dx, dy) == (centred, eye)


def test_no_field_no_disc_and_wrong_shapes_are_refused():
    blank = np.zeros((600, 800, 3), np.uint8)
    pre = preprocess_rgb(blank, PreprocessSpec(size=256))
    assert not pre.geometry.fov.found and locate_disc(pre.rgb, pre.geometry) is None
    rgb, _ = render_fundus(np.random.default_rng(0), 800, 600, grade=0)
    pre = preprocess_rgb(rgb, PreprocessSpec(size=256))
    with pytest.raises(ValueError, match="256x256"):
        locate_disc(rgb, pre.geometry)


def test_eye_mismatch_warns_only_when_both_eyes_are_known_and_differ():
    assert eye_mismatch("left", "right").startswith("eye mismatch: recorded as the left eye")
    assert "optic disc lies on the right" in eye_mismatch("left", "right")
    assert eye_mismatch("right", "right") is None
    assert eye_mismatch(None, "right") is None and eye_mismatch("left", None) is None
