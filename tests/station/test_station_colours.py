"""Readable by everyone: the lesion layers' colours stay apart for colour-blind viewers, the optic disc
ring has a colour of its own, and a layer outlines its lesion instead of painting over it.

Colour-vision deficiency is simulated with the matrices of Machado, Oliveira & Fernandes (2009), at full
severity, applied to linear sRGB — 27 published numbers, written here rather than adding a dependency
(colorspacious, which ships them, is not installed and has had no release since 2018). Differences are
CIEDE2000 (scikit-image, the test extra's).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from drtrt.runtime.postprocess import DISC_COLOUR, LESION_COLOURS, LESION_FILL_ALPHA, overlay
from drtrt.task import TaskSpec

color = pytest.importorskip("skimage.color", reason="scikit-image is a test extra")

MACHADO_2009 = {        # severity 1.0: protanopia, deuteranopia, tritanopia
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}
RETINA = (180, 80, 40)          # a fundus photo's orange-red background, where the layers are drawn
MIN_DELTA_E = 20.0              # measured: 25.5 (sky blue vs white, protanopia); the old palette: 6.6


def simulate(rgb: np.ndarray, deficiency: str | None) -> np.ndarray:
    """sRGB (0-255) as a viewer with ``deficiency`` sees it (None: normal vision), sRGB 0-1."""
    srgb = np.asarray(rgb, float) / 255
    if deficiency is None:
        return srgb
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    seen = np.clip(linear @ np.array(MACHADO_2009[deficiency]).T, 0, 1)
    return np.where(seen <= 0.0031308, 12.92 * seen, 1.055 * seen ** (1 / 2.4) - 0.055)


def delta_e(a, b, deficiency: str | None) -> float:
    lab = color.rgb2lab(simulate(np.array([a, b]), deficiency)[None])[0]
    return float(color.deltaE_ciede2000(lab[0], lab[1]))


def closest_pair(colours: dict[str, tuple]) -> tuple[float, str]:
    worst = (np.inf, "")
    for deficiency in (None, *MACHADO_2009):
        for (n1, c1), (n2, c2) in itertools.combinations(colours.items(), 2):
            worst = min(worst, (delta_e(c1, c2, deficiency), f"{n1} vs {n2} ({deficiency or 'normal vision'})"))
    return worst


def test_the_simulation_keeps_greys_and_finds_the_old_collision():
    """The matrices keep white and black (each row sums to 1), and the colours the issue named — the
    old MA cyan and SE white — nearly collide for a protanope."""
    for deficiency in MACHADO_2009:
        assert simulate([255, 255, 255], deficiency) == pytest.approx([1, 1, 1], abs=1e-3)
        assert simulate([0, 0, 0], deficiency) == pytest.approx([0, 0, 0], abs=1e-6)
    assert delta_e((0, 255, 255), (255, 255, 255), "protanopia") < 10
    assert delta_e((0, 255, 255), (255, 255, 255), None) > 20                # apart for normal vision


def test_lesion_colours_and_the_disc_ring_stay_apart_for_colour_blind_viewers():
    task = TaskSpec()
    colours = {code: tuple(LESION_COLOURS[task.label(code)]) for code in task.lesion_codes}
    colours["disc ring"] = DISC_COLOUR
    distance, pair = closest_pair(colours)
    assert distance >= MIN_DELTA_E, f"{pair}: ΔE {distance:.1f}"
    for name, colour in colours.items():                 # each stands out from the retina it is drawn on
        assert min(delta_e(colour, RETINA, d) for d in (None, *MACHADO_2009)) >= 15, name


def test_the_stations_disc_ring_has_its_own_colour():
    from drtrt.station import images

    css = (Path(images.__file__).parent / "static" / "station.css").read_text()
    ring = next(line for line in css.splitlines() if "svg.disc circle" in line)
    assert f"stroke: {images.DISC_CSS};" in ring and images.DISC_CSS not in images.lesion_colours(TaskSpec()).values()


def test_a_layer_outlines_its_lesion_and_leaves_it_visible():
    from drtrt.station.images import layer_bgra

    mask = np.zeros((200, 300), np.uint8)
    mask[90:110, 140:160] = 3                              # an MA, 20 px across
    mask[10:14, 10:14] = 1                                 # a tiny EX: on another layer
    layer = layer_bgra(mask, 3)
    on = mask == 3
    assert (layer[on, 3] <= 0.3 * 255).all()              # a light tint: the lesion shows through
    ring = layer[..., 3] == 255
    ys, xs = np.nonzero(ring)
    assert ring.sum() >= 4 * 20 and not (ring & on).any()  # an opaque outline around it, not over it
    assert ys.min() < 90 and ys.max() >= 110 and xs.min() < 140 and xs.max() >= 160
    b, g, r = (int(v) for v in layer[ys[0], xs[0], :3])
    assert (r, g, b) == tuple(int(v) for v in LESION_COLOURS[3])
    assert (layer[~(on | ring), 3] == 0).all()            # nothing else drawn (the EX is not this layer)


def test_the_overlay_outlines_lesions_with_a_light_fill():
    from drtrt.preprocess import FieldOfView, Geometry

    rgb = np.full((256, 256, 3), (180, 80, 40), np.uint8)
    geometry = Geometry.from_fov(FieldOfView(127.5, 127.5, 120.0, True), (256, 256), 64)
    labels = np.zeros((64, 64), np.int64)
    labels[30:34, 30:34] = 4                               # an HE
    out = overlay(rgb, labels, geometry, TaskSpec())
    changed = (out != rgb).any(axis=2)
    inside = np.zeros_like(changed)
    inside[124:132, 124:132] = True                        # well inside the 16 px lesion at this scale
    tinted = out[inside].astype(float)
    assert LESION_FILL_ALPHA <= 0.3 and np.abs(tinted - rgb[inside]).max() <= 0.3 * 255   # still the retina
    assert (out[changed & ~inside] == LESION_COLOURS[4]).all(axis=1).sum() > 40          # an outline in HE's colour
