"""The faster intake of issue 26 says what the intake said before, on real and synthetic photos.

Reference: ``intake_reference.json`` (:mod:`intake_reference`), written by the code before the change.
Exact: every verdict code, the field of view and the crop (so the model's input is the same). Within a
measured tolerance (docs/benchmarks.md): the quality measures, and the optic disc's position.
"""

from __future__ import annotations

import json
import math

import intake_reference
import pytest

DISC_PX = 1.0        # the optic disc's centre, original pixels (of 4288 x 2848: the view's pixel is ~7)
MEASURE_REL = 1e-4   # relative change of any quality measure


def reference(kind: str) -> dict[str, dict]:
    return json.loads(intake_reference.REFERENCE.read_text())[kind]


def check(name: str, now: dict, before: dict) -> None:
    assert now["code"] == before["code"], name
    assert now.get("fov") == before.get("fov") and now.get("crop") == before.get("crop"), name
    assert set(now.get("measures", {})) == set(before.get("measures", {})), name
    for key, value in before.get("measures", {}).items():
        assert now["measures"][key] == pytest.approx(value, rel=MEASURE_REL, abs=1e-9), f"{name}: {key}"
    assert (now.get("disc") is None) == (before.get("disc") is None), name
    if before.get("disc"):
        (x, y, radius, score, eye), (x0, y0, radius0, score0, eye0) = now["disc"], before["disc"]
        assert math.hypot(x - x0, y - y0) <= DISC_PX and eye == eye0, name
        assert radius == pytest.approx(radius0) and score == pytest.approx(score0, rel=1e-3), name


def test_synthetic_photos_get_the_same_intake():
    before = reference("synthetic")
    now = intake_reference.outputs(intake_reference.synthetic_photos())
    assert set(now) == set(before)
    for name in before:
        check(name, now[name], before[name])


@pytest.mark.realdata
def test_real_photos_get_the_same_intake():
    photos = intake_reference.real_photos()
    if not photos:
        pytest.skip("needs ../shared/data (beside the developers' checkout) and scikit-image")
    before = reference("real")
    now = intake_reference.outputs(photos)
    assert set(now) == set(before)
    for name in before:
        check(name, now[name], before[name])
