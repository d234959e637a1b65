"""The screening pipeline (issue 13): the next batch is prepared and the last one written while the
model runs, results are committed in order, callbacks stay on the caller's thread, a writer error
reaches the caller, and the full-resolution lesion masks are valid PNGs that decode to the labels."""

from __future__ import annotations

import io
import struct
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from drtrt.errors import DrtrtError
from drtrt.preprocess import FieldOfView, Geometry
from drtrt.runtime.postprocess import LESION_COLOURS, encode_label_png, lesion_mask_original, lesion_mask_png
from drtrt.runtime.predictor import Predictor
from drtrt.clinic.session import ScreeningSession, SessionConfig
from drtrt.clinic.store import SessionStore


def grading_images(photo_root: Path) -> list[Path]:
    return sorted((photo_root / "B. Disease Grading" / "1. Original Images").glob("*/*.jpg"))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of each chunk, every CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        (length,), kind = struct.unpack(">I", data[at:at + 4]), data[at + 4:at + 8]
        body = data[at + 8:at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length:at + 12 + length])[0] == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        at += 12 + length
    return chunks


def decode_label_png(data: bytes, mask: np.ndarray) -> None:
    """``data`` decodes to ``mask`` exactly, in Pillow (palette indices), in zlib (Adler-32 checked,
    the scanlines unfiltered here) and in OpenCV (the lesion colours)."""
    image = Image.open(io.BytesIO(data))
    assert image.mode == "P" and image.size == (mask.shape[1], mask.shape[0])
    assert np.array_equal(np.array(image), mask)
    assert np.array_equal(np.array(image.getpalette()[:15], np.uint8).reshape(5, 3), LESION_COLOURS)
    chunks = png_chunks(data)
    assert [k for k, _ in chunks] == [b"IHDR", b"PLTE", b"IDAT", b"IEND"]
    raw = np.frombuffer(zlib.decompress(chunks[2][1]), np.uint8).reshape(mask.shape[0], mask.shape[1] + 1)
    rows = raw[:, 1:].copy()
    for y in range(len(rows)):                               # only None (0) and Up (2) filters are used
        assert raw[y, 0] in (0, 2)
        if raw[y, 0] == 2:
            rows[y] += rows[y - 1]
    assert np.array_equal(rows, mask)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(bgr[..., ::-1], LESION_COLOURS[mask])


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (7, 5), (40, 33), (300, 200)])
def test_label_png_round_trips_any_label_map(shape):
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    labels = rng.integers(0, 5, shape, dtype=np.uint8)
    decode_label_png(encode_label_png(labels), labels)
    decode_label_png(encode_label_png(np.zeros(shape, np.uint8)), np.zeros(shape, np.uint8))
    striped = np.repeat(rng.integers(0, 5, (max(1, shape[0] // 3), shape[1]), dtype=np.uint8), 3, axis=0)
    decode_label_png(encode_label_png(striped), striped)
    with pytest.raises(ValueError):
        encode_label_png(np.zeros(shape, np.int32))


def blobs(size: int, seed: int) -> np.ndarray:
    """A size x size label map with round lesions of every type."""
    labels = np.zeros((size, size), np.uint8)
    rng = np.random.default_rng(seed)
    for label in range(1, 5):
        for x, y in rng.integers(size // 5, 4 * size // 5, (25, 2)):
            cv2.circle(labels, (int(x), int(y)), int(rng.integers(1, max(2, size // 70))), label, -1)
    return labels


def test_full_resolution_mask_png_is_small_and_exact():
    """A 4288x2848 mask from a 512-px label map: exact, about the size of the Pillow PNG it replaces,
    and made without the 12-megapixel array; an all-background mask (runs longer than one cached
    deflate segment)."""
    geometry = Geometry.from_fov(FieldOfView(2144, 1424, 1400, True), (2848, 4288), 512)
    labels = blobs(512, 3)
    mask, scale = lesion_mask_original(labels, geometry)
    assert scale == 1 and mask.shape == (2848, 4288) and set(np.unique(mask)) == {0, 1, 2, 3, 4}
    data, scale = lesion_mask_png(labels, geometry)
    assert scale == 1 and data == encode_label_png(mask)
    decode_label_png(data, mask)
    pillow = io.BytesIO()
    image = Image.fromarray(mask, mode="P")
    image.putpalette(np.pad(LESION_COLOURS, ((0, 251), (0, 0))).ravel().tolist())
    image.save(pillow, format="PNG", compress_level=1)
    assert len(data) < 1.15 * len(pillow.getvalue()), (len(data), len(pillow.getvalue()))   # deflate's floor: ~77 KB
    blank = np.zeros((2848, 4288), np.uint8)
    decode_label_png(encode_label_png(blank), blank)


@pytest.mark.parametrize("original, fov, size", [
    ((2848, 4288), FieldOfView(2144.3, 1430.7, 1511.2, True, top=0.0, bottom=2847.0), 512),   # IDRiD: cut top/bottom
    ((9000, 12000), FieldOfView(5999.5, 4499.5, 4400, True), 64),                              # huge: scale 2
    ((1000, 1500), FieldOfView(700, 300, 600, True), 64),                                      # crop off the frame
    ((480, 640), FieldOfView(319.5, 239.5, 300, True, 0.8), 64),                               # squashed field
    ((17, 23), FieldOfView.whole(17, 23), 8)])
def test_mask_pixels_take_the_label_under_their_centre(original, fov, size):
    """Every mask pixel is the model pixel under its centre (zero outside the crop), and the PNG
    made without the full-size array is byte for byte the encoded full-size mask."""
    geometry = Geometry.from_fov(fov, original, size)
    labels = np.random.default_rng(size).integers(0, 5, (size, size), dtype=np.uint8)
    mask, k = lesion_mask_original(labels, geometry)
    assert mask.shape == (-(-original[0] // k), -(-original[1] // k)) and k == (2 if original[0] == 9000 else 1)
    zoom_x, zoom_y = geometry.zooms
    x0, y0 = geometry.crop[:2]
    mx = np.floor((k * (np.arange(mask.shape[1]) + 0.5) - x0) * zoom_x).astype(int)
    my = np.floor((k * (np.arange(mask.shape[0]) + 0.5) - y0) * zoom_y).astype(int)
    inside = ((my >= 0) & (my < size))[:, None] & ((mx >= 0) & (mx < size))[None, :]
    expected = np.where(inside, labels[np.clip(my, 0, size - 1)][:, np.clip(mx, 0, size - 1)], 0)
    assert np.array_equal(mask, expected)
    data, scale = lesion_mask_png(labels, geometry)
    assert scale == k and data == encode_label_png(mask)
    decode_label_png(data, mask)


class Recorder:
    """Wraps a session's predictor and writer to record the pipeline's events; ``gate(name, event)``
    makes the wrapped step wait (at most 60 s) for another event before it returns."""

    def __init__(self, session: ScreeningSession) -> None:
        self.events: list[tuple[str, int]] = []
        self.seen = {}
        self.gates: dict[tuple[str, int], tuple[str, int]] = {}
        self.timed_out: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.calls = {"prepare": 0, "infer": 0, "write": 0}
        predictor, prepare, infer = session.predictor, session.predictor.prepare_batch, session.predictor.infer_batch
        write = session._write_artefacts

        def wrap(name, fn):
            def wrapped(*args, **kwargs):
                with self.lock:
                    n = self.calls[name]
                    self.calls[name] += 1
                self.mark(f"{name} start", n)
                out = fn(*args, **kwargs)
                gate = self.gates.get((name, n))
                if gate is not None and not self.event(*gate).wait(60):
                    self.timed_out.append((name, n))
                self.mark(f"{name} end", n)
                return out
            return wrapped

        predictor.prepare_batch = wrap("prepare", prepare)
        predictor.infer_batch = wrap("infer", infer)
        session._write_artefacts = wrap("write", write)

    def event(self, name: str, n: int) -> threading.Event:
        with self.lock:
            return self.seen.setdefault((name, n), threading.Event())

    def mark(self, name: str, n: int) -> None:
        with self.lock:
            self.events.append((name, n))
        self.event(name, n).set()


def test_next_batch_is_prepared_and_last_written_while_the_model_runs(tiny_onnx, photo_root, tmp_path):
    """Batch 0's inference cannot end before batch 1's decoding has started, nor image 0's writing
    before batch 1's inference has started: a sequential loop would wait out both gates."""
    images = grading_images(photo_root)[:4]
    rows, threads = [], []
    with ScreeningSession(tiny_onnx, tmp_path / "s", SessionConfig(batch_size=1),
                          on_row=lambda row: (rows.append(row), threads.append(threading.get_ident()))) as session:
        recorder = Recorder(session)
        recorder.gates[("infer", 0)] = ("prepare start", 1)
        recorder.gates[("write", 0)] = ("infer start", 1)
        screened = session.screen(images)
        assert session.screened == 4
    assert not recorder.timed_out, recorder.events
    assert [r.status for r in screened] == ["graded"] * 4
    assert [r.path for r in rows] == [str(p.resolve()) for p in images]       # committed and reported in order
    assert set(threads) == {threading.get_ident()}                             # on_row on the caller's thread
    with SessionStore(tmp_path / "s" / "session.db") as store:
        assert store.count("images") == 4 and store.integrity_check() == "ok"
    for row in screened:
        mask = np.array(Image.open(tmp_path / "s" / row.record["mask"]))
        assert mask.shape == tuple(row.record["original_size"]) and row.record["mask_scale"] == 1


def test_a_writer_error_reaches_the_caller_and_the_next_run_finishes(tiny_onnx, photo_root, tmp_path, monkeypatch):
    """Disk trouble writing the second image: screen() raises it, the first image stays committed,
    nothing after the failure is committed, no helper thread is left; the next run screens the
    rest, and nothing is recorded twice."""
    images = grading_images(photo_root)[:5]
    out = tmp_path / "s"
    session = ScreeningSession(tiny_onnx, out, SessionConfig(batch_size=1))
    original = session._write_artefacts
    calls = []

    def failing(result, entry):
        calls.append(entry.path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return original(result, entry)

    monkeypatch.setattr(session, "_write_artefacts", failing)
    with pytest.raises(OSError, match="No space left"):
        with session:
            session.screen(images)
    assert not [t for t in threading.enumerate() if t.name.startswith(("drtrt-prepare", "drtrt-write"))]
    with SessionStore(out / "session.db") as store:
        assert [r.path for r in store.rows() if r.status == "graded"] == [str(images[0].resolve())]
    with ScreeningSession(tiny_onnx, out, SessionConfig(batch_size=2)) as again:
        rows = again.screen(images)
        assert again.screened == 4 and again.already_done == 1
    assert [r.status for r in rows] == ["graded"] * 5
    with SessionStore(out / "session.db") as store:
        assert store.count("images") == 5 and store.count("files") == 5 and store.integrity_check() == "ok"


def test_a_failed_session_takes_no_more_work(tiny_onnx, photo_root, tmp_path, monkeypatch):
    images = grading_images(photo_root)[:3]
    session = ScreeningSession(tiny_onnx, tmp_path / "s", SessionConfig(batch_size=1))

    def failing(*args):
        raise RuntimeError("database gone")

    monkeypatch.setattr(session.store, "record_image", failing)
    with pytest.raises(RuntimeError, match="database gone"):
        session.screen(images[:2])
    with pytest.raises(DrtrtError, match="this session stopped: writing a result failed"):
        session.screen(images[2:])
    with pytest.raises(DrtrtError, match="this session stopped"):
        session.close()
    assert not [t for t in threading.enumerate() if t.name.startswith(("drtrt-prepare", "drtrt-write"))]


def test_a_duplicate_in_flight_is_recorded_once(tiny_onnx, photo_root, tmp_path):
    """The same photo under two names in one batch stream: the copy waits for the first to be
    committed, then is a duplicate of it."""
    image = grading_images(photo_root)[0]
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(image.read_bytes())
    other = grading_images(photo_root)[1]
    with ScreeningSession(tiny_onnx, tmp_path / "s", SessionConfig(batch_size=1)) as session:
        rows = session.screen([image, other, copy])
    assert [r.status for r in rows] == ["graded", "graded", "duplicate"]
    assert rows[2].duplicate_of == str(image.resolve())


def test_prepare_then_infer_is_screen_batch(tiny_onnx, photo_root):
    images = grading_images(photo_root)[:3] + [b"", b"not a photo"]
    with Predictor(tiny_onnx, batch_size=2) as predictor:
        whole = predictor.screen_batch(images)
        prepared = predictor.prepare_batch(images)
        apart = predictor.infer_batch(prepared)
    assert [r.status for r in apart] == [r.status for r in whole] == ["graded"] * 3 + ["error"] * 2
    for a, b in zip(whole, apart):
        assert a.grade == b.grade and a.probabilities == b.probabilities and a.code == b.code


def test_a_session_keeps_opencv_to_its_own_threads_and_gives_the_pool_back(tiny_onnx, photo_root, tmp_path):
    """Issue 26: while a session runs, OpenCV's calls in its helper threads start no pool of their own
    beside ONNX Runtime's; closed, the process has OpenCV's thread count as before."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        seen = []
        with ScreeningSession(tiny_onnx, tmp_path / "s", SessionConfig(batch_size=2),
                              on_row=lambda row: seen.append(cv2.getNumThreads())) as session:
            session.screen(grading_images(photo_root)[:3])
        assert seen == [1, 1, 1]
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)
