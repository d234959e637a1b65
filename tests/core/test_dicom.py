"""DICOM in: a fundus photo as DICOM decodes to the pixels its JPEG gives, says whose eye it is, and
every file drtrt cannot use is refused with its own code and one line, never a crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data

pytest.importorskip("pydicom", reason="DICOM needs the integration extra")

from dicom_files import SC, bad_variants, dciodvfy_errors, encode, op_image, sc_image, vl_image, write  # noqa: E402
from drtrt.errors import ImageError  # noqa: E402
from drtrt.preprocess import decode_image  # noqa: E402
from drtrt.preprocess.dicom import DicomInfo, dicom_info, is_dicom, read_dicom_info, read_patient_and_eye  # noqa: E402
from drtrt.clinic.camera_folder import CameraFolder  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def photos(photo_root: Path) -> list[Path]:
    return sorted((photo_root / "A. Segmentation" / "1. Original Images").glob("*/*.jpg"))


@pytest.fixture(scope="module")
def rgb(photo_root) -> np.ndarray:
    """The first synthetic photo as the JPEG path decodes it, full size (512 x 340)."""
    return decode_image(photos(photo_root)[0], None)[0]


@pytest.mark.parametrize("syntax", ["explicit", "implicit"])
@pytest.mark.parametrize("make", [op_image, vl_image, sc_image])
def test_uncompressed_dicom_decodes_to_the_jpeg_paths_pixels(photo_root, make, syntax):
    for jpeg in photos(photo_root)[:3]:
        expected, size, k = decode_image(jpeg, 512)
        full = decode_image(jpeg, None)[0]
        got, got_size, got_k = decode_image(encode(make(full), syntax), 512)
        assert (got_size, got_k) == (size, k) and got.dtype == np.uint8
        assert np.array_equal(got, expected)


def test_ybr_full_is_converted_to_rgb(rgb):
    data = encode(sc_image(rgb), colour="YBR_FULL")          # Secondary Capture: YBR_FULL is allowed there
    got = decode_image(data, None)[0]
    assert np.abs(got.astype(int) - rgb).max() <= 2          # the 8-bit round trip through YCbCr


@pytest.mark.parametrize("make", [op_image, vl_image])
def test_jpeg_baseline_dicom_is_close_to_the_jpeg_path(rgb, make):
    data = encode(make(rgb), "jpeg")
    assert read_dicom_info(data).sop_class_uid == make(rgb).SOPClassUID
    got, size, k = decode_image(data, None)
    assert size == rgb.shape[:2] and k == 1 and got.shape == rgb.shape
    diff = np.abs(got.astype(int) - rgb)
    assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 8, (diff.mean(), np.percentile(diff, 99))


def test_monochrome_becomes_three_equal_channels(rgb):
    got = decode_image(encode(op_image(rgb[..., 1])), None)[0]
    assert got.shape == rgb.shape and np.array_equal(got[..., 0], rgb[..., 1])
    assert np.array_equal(got[..., 0], got[..., 2])
    jpeg = decode_image(encode(op_image(rgb[..., 1]), "jpeg"), None)[0]
    assert jpeg.shape == rgb.shape and np.abs(jpeg[..., 0].astype(int) - rgb[..., 1]).mean() < 1.5


def test_identifiers_are_read(rgb):
    ds = op_image(rgb, patient="ÖZ-17 ", laterality="L", when="20230704081500")
    info = read_dicom_info(encode(ds))
    assert info == DicomInfo(patient_id="ÖZ-17", eye="left", acquired="2023-07-04T08:15:00", modality="OP",
                             sop_class_uid=ds.SOPClassUID, study_uid=ds.StudyInstanceUID,
                             series_uid=ds.SeriesInstanceUID, sop_instance_uid=ds.SOPInstanceUID)
    assert set(info.to_dict()) == {"patient_id", "eye", "acquired", "modality", "sop_class_uid", "study_uid",
                                   "series_uid", "sop_instance_uid"}

    sc = sc_image(rgb, laterality="R")                       # no ImageLaterality: the series' Laterality
    assert (sc.SOPClassUID, read_dicom_info(encode(sc)).eye) == (SC, "right")
    vl = vl_image(rgb, laterality="B")                        # both eyes in one photo: no eye
    del vl.AcquisitionDateTime
    vl.ContentDate, vl.ContentTime = "20240229", "235959.5"  # no AcquisitionDateTime: ContentDate + ContentTime
    info = read_dicom_info(encode(vl))
    assert info.eye is None and info.acquired == "2024-02-29T23:59:59.500000" and info.modality == "XC"

    with pytest.warns(UserWarning, match="exceeds the maximum length"):    # pydicom warns, and writes it
        unusable = encode(op_image(rgb, patient="x" * 65))
    assert read_dicom_info(unusable).patient_id is None


def test_patient_and_eye_come_from_the_header_only(rgb, tmp_path):
    path = write(tmp_path / "IM0001", op_image(rgb, patient="P-9", laterality="R"))
    assert is_dicom(path) and is_dicom(path.read_bytes()) and not is_dicom(b"\xff\xd8\xff" + bytes(200))
    assert read_patient_and_eye(path) == ("P-9", "right")
    jpeg = tmp_path / "a.jpg"
    jpeg.write_bytes(b"\xff\xd8\xff" + bytes(200))
    assert read_patient_and_eye(jpeg) == (None, None) and dicom_info(jpeg) is None
    assert read_patient_and_eye(tmp_path / "missing.dcm") == (None, None)
    assert dicom_info(bad_variants(rgb)["header only"][0]) is None


@pytest.mark.parametrize("variant", ["no pixels", "palette colour", "YBR_ICT uncompressed", "16-bit", "two frames",
                                     "JPEG 2000", "truncated", "truncated JPEG", "header only", "damaged JPEG"])
def test_a_dicom_drtrt_cannot_use_is_refused_with_its_code(rgb, tmp_path, variant):
    data, code = bad_variants(rgb)[variant]
    path = tmp_path / "IM0042.dcm"
    path.write_bytes(data)
    with pytest.raises(ImageError) as caught:
        decode_image(path)
    error = caught.value
    assert error.code == code, str(error)
    message = str(error)
    assert "\n" not in message and message.startswith(f"{path}: ") and len(message) < 300, message
    assert any(fix in message for fix in ("send", "copy", "set the camera", "export")), message


def test_dicom_without_pydicom_says_what_to_install(rgb, tmp_path):
    """The base install (no integration extra) detects DICOM and names the extra; pydicom made absent."""
    path = write(tmp_path / "a.dcm", op_image(rgb))
    code = ("import sys; sys.modules['pydicom'] = None\n"
            "from drtrt.errors import ImageError\nfrom drtrt.preprocess import decode_image\n"
            "from drtrt.preprocess.dicom import read_patient_and_eye\n"
            f"assert read_patient_and_eye({str(path)!r}) == (None, None)\n"
            "try:\n    decode_image(sys.argv[1])\nexcept ImageError as e:\n    print(e.code, e)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("dicom_needs_pydicom ") and "pip install 'drtrt[integration]'" in proc.stdout


@pytest.mark.parametrize("make, syntax, colour", [(op_image, "explicit", "RGB"), (op_image, "implicit", "RGB"),
                                                  (op_image, "jpeg", "RGB"), (vl_image, "explicit", "RGB"),
                                                  (vl_image, "jpeg", "RGB"), (sc_image, "explicit", "RGB"),
                                                  (sc_image, "explicit", "YBR_FULL")])
def test_test_files_are_valid_dicom(rgb, tmp_path, make, syntax, colour):
    """What the tests feed drtrt is what a conformant camera writes (dicom3tools' dciodvfy)."""
    path = write(tmp_path / "x.dcm", make(rgb), syntax, colour)
    errors = dciodvfy_errors(path)
    if errors is None:
        pytest.skip("dciodvfy is not installed (apt-get install dicom3tools or dcmtk's equivalent)")
    assert errors == []


def test_monochrome_test_file_is_valid_dicom(rgb, tmp_path):
    errors = dciodvfy_errors(write(tmp_path / "grey.dcm", op_image(rgb[..., 1])))
    if errors is None:
        pytest.skip("dciodvfy is not installed")
    assert errors == []


def test_watch_takes_dicom_files_without_a_suffix(rgb, tmp_path):
    """Cameras name DICOM files IM0001 or by their UID; a text file without a suffix is left alone."""
    for name in ("IM0001", "1.2.826.0.1.3680043.8.498.1", "photo.dcm", "photo.DICOM"):
        write(tmp_path / name, op_image(rgb))
    (tmp_path / "README").write_text("not an image")
    (tmp_path / "notes.txt").write_text("not an image")
    write(tmp_path / ".IM0002", op_image(rgb))                      # hidden: still being copied
    write(tmp_path / "IM0003.part", op_image(rgb))
    tracker = CameraFolder(tmp_path, settle_s=0.0, mode="poll")
    assert tracker.ready(0.0) == []
    ready = {p.name for p in tracker.ready(1.0)}
    assert ready == {"IM0001", "1.2.826.0.1.3680043.8.498.1", "photo.dcm", "photo.DICOM"}
    assert tracker.ready(2.0) == []


@pytest.mark.realdata
def test_real_idrid_photo_as_dicom():
    """A 4288 x 2848 IDRiD photo as OP DICOM: decoded at the same 1/4 scale as its JPEG, the same picture."""
    jpeg = sorted((shared_data("idrid-samples") / "A. Segmentation" / "1. Original Images").glob("*/*.jpg"))[0]
    expected, size, k = decode_image(jpeg, 512)
    full = decode_image(jpeg, None)[0]
    assert size == (2848, 4288) and k == 4
    for syntax, tolerance in (("explicit", 0.5), ("jpeg", 1.0)):
        got, got_size, got_k = decode_image(encode(op_image(full), syntax), 512)
        assert (got_size, got_k, got.shape) == (size, k, expected.shape)
        diff = np.abs(got.astype(int) - expected).mean()     # area reduction against DCT scaling
        assert diff < tolerance, (syntax, diff)
