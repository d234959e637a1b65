"""The maculopathy record of a screened photo travels whole: the predictor's record, the session
store (read back from session.db in a fresh store), results.jsonl and the overlay picture."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np

from drtrt.clinic.result_files import FOVEA_COLOUR
from drtrt.clinic.session import screen_images
from drtrt.clinic.store import SessionStore
from drtrt.data.synthetic_fundus import render_picture

KEYS = {"m", "fovea", "disc_diameter", "reason", "exudate_distance_dd"}


def test_the_macula_record_is_kept_and_drawn(tiny_onnx, tmp_path):
    fundus = render_picture(np.random.default_rng(0), 1024, 683, grade=0, exudates_at=((0.0, 0.0),))
    photo, blank = tmp_path / "eye.png", tmp_path / "blank.png"
    cv2.imwrite(str(photo), cv2.cvtColor(fundus.image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(blank), np.zeros((600, 800, 3), np.uint8))
    out = tmp_path / "session"
    rows = screen_images([photo, blank], tiny_onnx, out).rows
    graded, refused = rows
    assert graded.status == "graded" and refused.status != "graded"
    macula = graded.record["macula"]
    assert set(macula) == KEYS and refused.record.get("macula") is None
    truth = fundus.geometry
    assert math.hypot(macula["fovea"][0] - truth.fovea_x, macula["fovea"][1] - truth.fovea_y) < 2 * truth.disc_radius
    assert macula["m"] in ("M0", "M1") and macula["reason"] and macula["disc_diameter"] > 0   # the tiny model's EX

    rows_again = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert rows_again[0]["macula"] == macula
    reopened = SessionStore(out / "session.db")
    try:
        assert reopened.rows([str(photo)])[0].record["macula"] == macula
    finally:
        reopened.close()

    overlay = cv2.cvtColor(cv2.imread(str(out / graded.record["overlay"])), cv2.COLOR_BGR2RGB)
    scale = graded.record["overlay_scale"]
    x, y = round(macula["fovea"][0] / scale), round(macula["fovea"][1] / scale)
    near = overlay[y - 3:y + 4, x - 3:x + 4]
    assert np.all(near == FOVEA_COLOUR, axis=2).any()
