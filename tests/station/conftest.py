"""The station under test: a real worker screening with the tiny model, photos from the synthetic set
(one made blurred), a camera folder the tests write into."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

pytest.importorskip("starlette", reason="the station needs the station extra (pip install 'drtrt[station]')")


@pytest.fixture(scope="session")
def fundus_photos(photo_root, tmp_path_factory) -> dict[str, Path]:
    """Four gradable photos (right eyes), a blurred copy of the first (the gate refuses it as blurred), a left eye."""
    found = sorted(photo_root.rglob("*.jpg"))[:4]
    out = tmp_path_factory.mktemp("fundus")
    photos = {f"good{i}": p for i, p in enumerate(found)}
    picture = cv2.imread(str(found[0]))
    blurred = out / "blurred.jpg"
    cv2.imwrite(str(blurred), cv2.GaussianBlur(picture, (0, 0), 6))
    photos["blurred"] = blurred
    left = out / "left.jpg"                      # the synthetic set draws right eyes (disc on the right): mirrored
    cv2.imwrite(str(left), cv2.flip(cv2.imread(str(found[1])), 1))
    photos["left"] = left
    return photos
