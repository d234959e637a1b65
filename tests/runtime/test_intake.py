"""Image intake on real photos and their everyday variants, through the runtime (``Predictor``):
every group of ``tests/intake_variants.py`` gets the right outcome, the field of view matches
the true one, the optic disc is found on the real images and the eye follows it. The full set
(all eight IDRiD originals) is ``benchmarks/intake_real.py``; here two of them, the smaller
field (IDRiD_01) and the larger one (IDRiD_57), keep the run short."""

from __future__ import annotations

import intake_variants
import numpy as np
import pytest
from conftest import shared_data

from drtrt.runtime.predictor import Predictor
from drtrt.runtime.quality import CODES

pytest.importorskip("skimage", reason="the ordinary photos and the other camera's retina come from scikit-image")

pytestmark = pytest.mark.realdata
KEEP = ("IDRiD_01", "IDRiD_57")
GROUPS = sorted({*intake_variants.GROUPS.values(), "damaged file", "idrid-seg-512", "other camera", "ordinary photo",
                 "ordinary photo in a circle"})


@pytest.fixture(scope="module")
def screened(tiny_onnx):
    shared_data("idrid-samples")
    shared_data("idrid-seg-512")
    variants = list(intake_variants.everything(originals=KEEP))
    with Predictor(tiny_onnx, batch_size=4) as predictor:
        results = predictor.screen_batch([v.data for v in variants], names=[v.name for v in variants])
    return list(zip(variants, results))


def outcome(result) -> str:
    return "graded" if result.status == "graded" else result.code


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_gets_the_right_outcome(screened, group):
    members = [(v, r) for v, r in screened if v.group == group]
    assert members, group
    wrong = [(v.name, outcome(r), r.reason) for v, r in members if outcome(r) not in v.expected]
    assert not wrong, wrong
    for v, r in members:
        if r.status == "ungradable":
            assert r.code in CODES and r.quality.code == r.code and r.reason and r.grade is None
        if r.status == "error":
            assert r.code == "file_damaged" and "copy the file" in r.reason


def test_field_of_view_matches_the_true_one(screened):
    ious = {}
    for v, r in screened:
        if v.fov is not None and v.kind == "gradable":
            found = r.geometry.fov_mask("original")
            ious[v.name] = (found & v.fov).sum() / (found | v.fov).sum()
    assert len(ious) >= 30 and min(ious.values()) >= 0.98, sorted(ious.items(), key=lambda kv: kv[1])[:3]
    cuts = {v.name.split("/")[1]: r.geometry.fov.cuts for v, r in screened
            if v.name.startswith("IDRiD_57/") and v.kind == "gradable"}
    assert cuts["original-q95"] == ("top", "bottom") and cuts["rotated-90"] == ("left", "right")
    assert set(cuts["cut-sides"]) == {"top", "bottom", "left", "right"} and set(cuts["cut-band"]) >= {"top", "bottom"}


def test_optic_disc_is_found_on_the_real_images(screened):
    real = [(v, r) for v, r in screened if v.group == "idrid-seg-512"]
    assert len(real) == 54
    hits, eyes = 0, []
    for v, r in real:
        assert r.disc is not None, v.name
        hits += bool(v.disc[round(r.disc.y), round(r.disc.x)])
        true_eye = "right" if np.nonzero(v.disc)[1].mean() > 256 else "left"
        if r.disc.eye is not None:
            eyes.append(r.disc.eye == true_eye)
    assert hits >= 0.95 * 54 and len(eyes) >= 50 and all(eyes), (hits, len(eyes), eyes.count(False))
    assert sum(r.disc.centred == "macula" for _, r in real) >= 45      # IDRiD photos are macula-centred


def test_the_eye_follows_the_disc_when_the_photo_is_mirrored_or_turned(screened):
    discs = {v.name: r.disc for v, r in screened if v.name.startswith("IDRiD_57/")}
    original, width = discs["IDRiD_57/original-q95"], 4288
    assert original.eye in ("right", "left") and original.centred == "macula"
    other = "left" if original.eye == "right" else "right"
    assert discs["IDRiD_57/mirrored"].eye == discs["IDRiD_57/rotated-180"].eye == other
    assert abs(discs["IDRiD_57/mirrored"].x - (width - 1 - original.x)) < 2 * original.radius
    assert discs["IDRiD_57/rotated-90"].eye is None                     # the disc above or below: no eye
