"""DICOM fundus photos in: detection, decoding to the 8-bit RGB the JPEG path gives, and the identifiers.

Read: Ophthalmic Photography 8 Bit, VL Photographic and Secondary Capture images (any SOP class
whose pixels are a single 8-bit colour or grey frame), uncompressed (implicit or explicit VR
little endian) or JPEG baseline. Colour models: RGB, YBR_FULL, YBR_FULL_422 (converted to RGB)
and MONOCHROME1/2 (three equal channels: the quality gate refuses greyscale with its own code).
Everything else is an :class:`ImageError` with a stable ``code`` and the fix:

=======================  ===============================================================================
code                     the file
=======================  ===============================================================================
dicom_needs_pydicom      is DICOM, but pydicom (the ``integration`` extra) is not installed
dicom_no_image           has no pixel data (a report, a structured document, a header alone)
dicom_transfer_syntax    is compressed in a transfer syntax drtrt does not decode (JPEG 2000, JPEG-LS, RLE ...)
dicom_multiframe         holds more than one frame (a video, a stereo pair, a series in one object)
dicom_bit_depth          stores more than 8 bits per sample, or signed values
dicom_colour             uses a colour model drtrt cannot use (PALETTE COLOR, YBR_ICT, ...)
file_damaged             is not parseable, or its pixel data is truncated or damaged
file_too_large           has more pixels than :data:`~drtrt.preprocess.jpeg.MAX_DECODED_PIXELS`
=======================  ===============================================================================

pydicom is imported inside the functions: the base install (no ``integration`` extra) imports
this module, detects DICOM and says what to install.
"""

from __future__ import annotations

import io
import os
import unicodedata
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from drtrt.errors import ImageError
from drtrt.preprocess.jpeg import MAX_DECODED_PIXELS, decode_jpeg

DICOM_SUFFIXES = {".dcm", ".dicom"}
EXPLICIT_LE, IMPLICIT_LE, JPEG_BASELINE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50"
TRANSFER_SYNTAXES = (EXPLICIT_LE, IMPLICIT_LE, JPEG_BASELINE)
SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.77.1.5.1": "Ophthalmic Photography 8 Bit Image",
               "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image",
               "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image"}
"""The storage SOP classes a fundus camera sends its photos as (what the receiver accepts)."""
_COLOUR = {"RGB", "YBR_FULL", "YBR_FULL_422"}
_GREY = {"MONOCHROME1", "MONOCHROME2"}
_MAX_ID = 64                    # DICOM's LO length, and drtrt's patient-ID limit
_INSTALL = "pip install 'drtrt[integration]'"


def is_dicom(source: str | os.PathLike | bytes | bytearray | memoryview) -> bool:
    """A DICOM Part 10 file: "DICM" after the 128-byte preamble (a path that cannot be read: False)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[128:132]) == b"DICM"
    try:
        with open(source, "rb") as fh:
            return fh.read(132)[128:] == b"DICM"
    except OSError:
        return False


@dataclass(frozen=True)
class DicomInfo:
    """What a DICOM photo says about itself. eye: right | left (ImageLaterality, else the series'
    Laterality); acquired: ISO 8601 (AcquisitionDateTime, else ContentDate + ContentTime)."""

    patient_id: str | None = None
    eye: str | None = None
    acquired: str | None = None
    modality: str | None = None
    sop_class_uid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_instance_uid: str | None = None

    def to_dict(self) -> dict:
        """The identifiers for the screening record (the ones present)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def _pydicom(name: str):
    try:
        import pydicom
    except ModuleNotFoundError:
        raise ImageError(f"{name}: a DICOM file, and reading DICOM needs pydicom, which is not installed; "
                         f"{_INSTALL}", "dicom_needs_pydicom") from None
    return pydicom


def _parse(pydicom, source: str | os.PathLike | bytes, name: str, header_only: bool):
    """The dataset (pixel data still encoded); ImageError when the file is cut short or not parseable."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else source,
                                 stop_before_pixels=header_only)
    except OSError as exc:
        raise ImageError(f"cannot read image {name}: {exc.strerror or exc}; check the path",
                         "file_unreadable") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds (InvalidDicomError, struct.error, ...)
        raise ImageError(f"{name}: damaged DICOM file ({type(exc).__name__}: {str(exc)[:120]}); "
                         "send or copy it from the camera again") from None
    # pydicom only warns when the file ends inside an element, and returns what it read (often nothing)
    if any("End of file" in str(w.message) for w in caught):
        raise ImageError(f"{name}: truncated DICOM file (the copy stopped early); send or copy it from the camera "
                         "again")
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta or "SOPClassUID" not in ds:
        raise ImageError(f"{name}: damaged DICOM file (no transfer syntax or SOP class); send or copy it from the "
                         "camera again")
    return ds


def _text(ds, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def _side(code: str | None) -> str | None:
    return {"R": "right", "L": "left"}.get((code or "").upper())


def _acquired(ds) -> str | None:
    from pydicom.valuerep import DT

    stamp = _text(ds, "AcquisitionDateTime") or ((_text(ds, "ContentDate") or "") + (_text(ds, "ContentTime") or ""))
    try:
        return DT(stamp).isoformat() if stamp else None
    except (ValueError, TypeError):
        return None


def _patient_id(value: str | None) -> str | None:
    """PatientID usable as drtrt's patient ID (NFC, at most 64 printable characters), else None."""
    if value is None:
        return None
    pid = unicodedata.normalize("NFC", value.strip())
    if not pid or len(pid) > _MAX_ID or any(unicodedata.category(c).startswith("C") for c in pid):
        return None
    return pid


def _info(ds) -> DicomInfo:
    meta = getattr(ds, "file_meta", None)
    return DicomInfo(
        patient_id=_patient_id(_text(ds, "PatientID")),
        eye=_side(_text(ds, "ImageLaterality")) or _side(_text(ds, "Laterality")),
        acquired=_acquired(ds), modality=_text(ds, "Modality"),
        sop_class_uid=_text(ds, "SOPClassUID") or (_text(meta, "MediaStorageSOPClassUID") if meta else None),
        study_uid=_text(ds, "StudyInstanceUID"), series_uid=_text(ds, "SeriesInstanceUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"))


def read_dicom_info(source: str | os.PathLike | bytes, name: str | None = None) -> DicomInfo:
    """The identifiers of a DICOM file (its header only). Raises ImageError (no pydicom, damaged)."""
    name = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    pydicom = _pydicom(name)
    ds = _parse(pydicom, source, name, header_only=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                    # pydicom warns on odd values as it reads them
            return _info(ds)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed element raises when it is first read
        raise ImageError(f"{name}: damaged DICOM header ({type(exc).__name__}); send or copy it again") from None


def dicom_info(source: str | os.PathLike | bytes) -> DicomInfo | None:
    """:func:`read_dicom_info` of a DICOM file; None for any other file, or one it cannot read."""
    if not is_dicom(source):
        return None
    try:
        return read_dicom_info(source)
    except ImageError:
        return None


def _check(ds, name: str) -> tuple[str, str, int, int]:
    """(transfer syntax, photometric interpretation, rows, columns) of a photo drtrt can decode, else ImageError."""
    syntax = str(ds.file_meta.TransferSyntaxUID)
    if syntax not in TRANSFER_SYNTAXES:
        from pydicom.uid import UID

        raise ImageError(f"{name}: DICOM image encoded as {UID(syntax).name} ({syntax}), which drtrt does not "
                         "decode; set the camera's DICOM export to uncompressed or JPEG baseline",
                         "dicom_transfer_syntax")
    if "PixelData" not in ds:
        what = SOP_CLASSES.get(_text(ds, "SOPClassUID") or "", f"modality {_text(ds, 'Modality') or 'unknown'}")
        raise ImageError(f"{name}: DICOM file without an image (no pixel data in this {what} object); send the "
                         "photo itself", "dicom_no_image")
    frames = ds.get("NumberOfFrames") or 1
    if int(frames) > 1:
        raise ImageError(f"{name}: DICOM object with {int(frames)} frames (a video or a series in one file); export "
                         "each photo as a single-frame image", "dicom_multiframe")
    bits, signed = int(ds.get("BitsAllocated") or 0), int(ds.get("PixelRepresentation") or 0)
    if bits != 8 or signed:
        found = f"{bits}-bit" + (" signed" if signed else "")
        raise ImageError(f"{name}: {found} DICOM image; drtrt reads 8-bit photos — set the camera's DICOM export "
                         "to 8-bit colour", "dicom_bit_depth")
    colour = (_text(ds, "PhotometricInterpretation") or "").upper()
    samples = int(ds.get("SamplesPerPixel") or 0)
    if colour not in _COLOUR | _GREY:
        raise ImageError(f"{name}: DICOM colour model {colour or 'missing'} is not supported (RGB, YBR_FULL, "
                         "YBR_FULL_422 or MONOCHROME2 are); change the camera's DICOM export", "dicom_colour")
    if samples != (3 if colour in _COLOUR else 1):
        raise ImageError(f"{name}: damaged DICOM header ({samples} samples per pixel for {colour}); "
                         "send or copy it from the camera again")
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows < 1 or cols < 1:
        raise ImageError(f"{name}: damaged DICOM header ({rows}x{cols} pixels); send or copy it from the camera again")
    return syntax, colour, rows, cols


def decode_dicom(data: bytes, name: str = "<bytes>",
                 target_size: int | None = 512) -> tuple[np.ndarray, tuple[int, int], int]:
    """A DICOM file's bytes → (rgb, original (height, width), reduction factor k), as
    :func:`~drtrt.preprocess.decode.decode_image` returns for a JPEG: HxWx3 uint8 at scale k.

    JPEG baseline frames in YBR go through the JPEG path's own strict decoder (libjpeg-turbo,
    reduced by DCT scaling), not pydicom's Pillow plugin: Pillow decodes damaged entropy-coded
    data into a half-grey image without a word, which the quality gate would misjudge; the same
    photo as JPEG and as DICOM then also gives the same pixels. Everything else: pydicom's pixel
    decoding (its YBR → RGB conversion), then an area reduction by k.
    """
    pydicom = _pydicom(name)
    ds = _parse(pydicom, data, name, header_only=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                    # pydicom warns on odd values as it reads them
            return _decode(ds, name, target_size)
    except (ImageError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom's decoders raise ValueError, RuntimeError, ...
        raise ImageError(f"{name}: damaged DICOM image data ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                         "send or copy it from the camera again") from None


def _decode(ds, name: str, target_size: int | None) -> tuple[np.ndarray, tuple[int, int], int]:
    """:func:`decode_dicom` of a parsed dataset (warnings off, errors turned into ImageError by the caller)."""
    syntax, colour, h, w = _check(ds, name)
    k = max((f for f in (8, 4, 2) if target_size and min(h, w) // f >= target_size), default=1)
    reduced = (-(-h // k), -(-w // k))
    pixels = reduced[0] * reduced[1] if syntax == JPEG_BASELINE else h * w
    if pixels > MAX_DECODED_PIXELS:
        raise ImageError(f"{name}: {w}x{h} image too large to decode (limit {MAX_DECODED_PIXELS // 10**6} MP)",
                         "file_too_large")
    if syntax == JPEG_BASELINE and colour in ("YBR_FULL", "YBR_FULL_422"):
        from pydicom.encaps import generate_frames

        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        rgb = decode_jpeg(frame, name, *reduced)
        if rgb is not None:
            if rgb.shape[:2] != reduced:
                raise ImageError(f"{name}: damaged DICOM image (its JPEG frame is {rgb.shape[1]}x{rgb.shape[0]} "
                                 f"at 1/{k} scale, the header says {w}x{h}); send or copy it again")
            return rgb, (h, w), k
    per_pixel = 2 if colour == "YBR_FULL_422" else 3 if colour in _COLOUR else 1   # 4:2:2 stores 2 bytes a pixel
    if syntax != JPEG_BASELINE and len(ds.PixelData) < h * w * per_pixel:
        raise ImageError(f"{name}: truncated DICOM image (less pixel data than its {w}x{h} header says); send or "
                         "copy it from the camera again")
    array = ds.pixel_array                                   # pydicom converts YBR to RGB
    if array.dtype != np.uint8 or array.shape[:2] != (h, w):
        raise ImageError(f"{name}: damaged DICOM image data ({array.dtype} {array.shape}); send or copy it again")
    if colour in _GREY:
        grey = 255 - array if colour == "MONOCHROME1" else array
        array = np.repeat(grey.reshape(h, w, 1), 3, axis=2)
    if k > 1:
        array = cv2.resize(array, (reduced[1], reduced[0]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(array), (h, w), k


def read_patient_and_eye(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """(PatientID, eye) a DICOM file names, each None when absent or unusable; (None, None) for
    any other file, one that cannot be read, or without pydicom. Reads the header only."""
    info = dicom_info(Path(path))
    return (info.patient_id, info.eye) if info else (None, None)
