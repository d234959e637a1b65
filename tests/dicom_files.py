"""DICOM fundus photos for the tests, made here from RGB arrays with the attributes a camera writes.

:func:`op_image` builds an Ophthalmic Photography 8 Bit Image with every module its IOD makes
mandatory (PS3.3 A.39), so that dcmtk's ``dciodvfy`` finds no error; :func:`vl_image` and
:func:`sc_image` the VL Photographic and Secondary Capture equivalents. :func:`write` saves a
dataset in one of the transfer syntaxes drtrt reads (``explicit``, ``implicit``, ``jpeg``
baseline). :func:`bad_variants` gives the files drtrt must refuse, each with its code.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import (JPEG2000Lossless, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit,
                         generate_uid)

OP = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
VL = "1.2.840.10008.5.1.4.1.1.77.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
SYNTAXES = {"explicit": ExplicitVRLittleEndian, "implicit": ImplicitVRLittleEndian, "jpeg": JPEGBaseline8Bit}


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _base(rgb: np.ndarray, sop_class: str, modality: str, patient: str, study: str | None, series: str | None,
          when: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", patient, "19600101", "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study or generate_uid(), series or generate_uid()
    ds.StudyDate, ds.StudyTime = when[:8], when[8:14]
    ds.ContentDate, ds.ContentTime = when[:8], when[8:14]
    ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "1", ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 1, 1
    ds.Manufacturer = "drtrt tests"
    ds.PatientOrientation = ""
    _pixels(ds, rgb)
    return ds


def _pixels(ds: Dataset, rgb: np.ndarray) -> None:
    grey = rgb.ndim == 2
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel = 1 if grey else 3
    ds.PhotometricInterpretation = "MONOCHROME2" if grey else "RGB"
    if not grey:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = np.ascontiguousarray(rgb, np.uint8).tobytes()


def op_image(rgb: np.ndarray, patient: str = "P-001", laterality: str = "R", study: str | None = None,
             series: str | None = None, when: str = "20240131142530") -> Dataset:
    """An Ophthalmic Photography 8 Bit Image (modality OP) of ``rgb`` (HxWx3, or HxW for MONOCHROME2)."""
    ds = _base(rgb, OP, "OP", patient, study, series, when)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.AcquisitionDateTime = when
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.NumberOfFrames = 1
    ds.FrameIncrementPointer = 0x00181063                    # FrameTime: what a single frame points at
    ds.FrameTime = 0
    if rgb.ndim == 2:
        ds.PresentationLUTShape = "IDENTITY"
    ds.ImageLaterality = laterality
    ds.AnatomicRegionSequence = Sequence([_code("81745001", "SCT", "Eye")])
    ds.PatientEyeMovementCommanded = "NO"
    ds.HorizontalFieldOfView = 45
    ds.EmmetropicMagnification = None
    ds.IntraOcularPressure = None
    ds.PupilDilated = None
    ds.AcquisitionDeviceTypeCodeSequence = Sequence([_code("409898007", "SCT", "Fundus Camera")])
    ds.IlluminationTypeCodeSequence = Sequence()
    ds.LightPathFilterTypeStackCodeSequence = Sequence()
    ds.ImagePathFilterTypeStackCodeSequence = Sequence()
    ds.LensesCodeSequence = Sequence()
    ds.DetectorType = "CCD"
    ds.RefractiveStateSequence = Sequence()
    ds.SynchronizationFrameOfReferenceUID = "1.2.840.10008.15.1.1"   # UTC
    ds.SynchronizationTrigger, ds.AcquisitionTimeSynchronized = "NO TRIGGER", "N"
    return ds


def vl_image(rgb: np.ndarray, patient: str = "P-001", laterality: str = "R") -> Dataset:
    """A VL Photographic Image (modality XC) of ``rgb``."""
    ds = _base(rgb, VL, "XC", patient, None, None, "20240131142530")
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.AcquisitionDateTime = "20240131142530"
    ds.LossyImageCompression = "00"
    ds.ImageLaterality = laterality
    ds.AnatomicRegionSequence = Sequence([_code("81745001", "SCT", "Eye")])
    ds.AcquisitionContextSequence = Sequence()
    return ds


def sc_image(rgb: np.ndarray, patient: str = "P-001", laterality: str | None = "L") -> Dataset:
    """A Secondary Capture Image (modality OT) of ``rgb``; its eye in the series' Laterality."""
    ds = _base(rgb, SC, "OT", patient, None, None, "20240131142530")
    ds.ConversionType = "DI"
    if laterality:
        ds.Laterality = laterality
    return ds


def encode(ds: Dataset, syntax: str = "explicit", colour: str = "RGB", quality: int = 95) -> bytes:
    """The Part 10 file of ``ds`` in ``syntax`` (explicit | implicit | jpeg); colour: the photometric
    interpretation to store uncompressed RGB pixels as (RGB | YBR_FULL)."""
    ds = ds.copy()
    if syntax == "jpeg":
        rgb = np.frombuffer(ds.PixelData, np.uint8).reshape(ds.Rows, ds.Columns, ds.SamplesPerPixel)
        buf = io.BytesIO()
        grey = ds.SamplesPerPixel == 1
        Image.fromarray(rgb[..., 0] if grey else rgb).save(buf, "JPEG", quality=quality,
                                                           **({} if grey else {"subsampling": 1}))   # 4:2:2
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.PhotometricInterpretation = "MONOCHROME2" if grey else "YBR_FULL_422"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.LossyImageCompressionRatio = round(ds.Rows * ds.Columns * ds.SamplesPerPixel / len(buf.getvalue()), 2)
    elif colour == "YBR_FULL":
        rgb = np.frombuffer(ds.PixelData, np.uint8).reshape(ds.Rows, ds.Columns, 3)
        ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
        ds.PhotometricInterpretation = "YBR_FULL"
    return _part10(ds, SYNTAXES[syntax])


def _part10(ds: Dataset, syntax: str) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True, enforce_file_format=True)
    return buf.getvalue()


def write(path: Path, ds: Dataset, syntax: str = "explicit", colour: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(ds, syntax, colour))
    return path


def bad_variants(rgb: np.ndarray) -> dict[str, tuple[bytes, str]]:
    """name → (file bytes, the code drtrt must refuse it with)."""
    out: dict[str, tuple[bytes, str]] = {}
    ds = op_image(rgb)
    del ds.PixelData
    out["no pixels"] = _part10(ds, ExplicitVRLittleEndian), "dicom_no_image"

    ds = op_image(rgb[..., 0])
    ds.PhotometricInterpretation = "PALETTE COLOR"
    out["palette colour"] = _part10(ds, ExplicitVRLittleEndian), "dicom_colour"

    ds = op_image(rgb)
    ds.PhotometricInterpretation = "YBR_ICT"
    out["YBR_ICT uncompressed"] = _part10(ds, ExplicitVRLittleEndian), "dicom_colour"

    ds = op_image(rgb[..., 1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelData = (rgb[..., 1].astype(np.uint16) * 257).tobytes()
    out["16-bit"] = _part10(ds, ExplicitVRLittleEndian), "dicom_bit_depth"

    ds = op_image(np.concatenate([rgb, rgb]))
    ds.Rows, ds.NumberOfFrames = rgb.shape[0], 2
    out["two frames"] = _part10(ds, ExplicitVRLittleEndian), "dicom_multiframe"

    ds = op_image(rgb)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(64)])   # a JPEG 2000 code stream's start
    ds["PixelData"].VR = "OB"
    ds.PhotometricInterpretation = "YBR_ICT"
    out["JPEG 2000"] = _part10(ds, JPEG2000Lossless), "dicom_transfer_syntax"

    ds = op_image(rgb)                                       # a JPEG frame with damaged entropy-coded data
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95, subsampling=1)
    frame = bytearray(buf.getvalue())
    start = frame.find(b"\xff\xda")
    middle, run = start + (len(frame) - start) // 2, (len(frame) - start) // 8
    frame[middle:middle + run] = bytes(run)                  # zeros in the middle, as a copy gone wrong
    ds.PixelData = encapsulate([bytes(frame)])
    ds["PixelData"].VR = "OB"
    ds.PhotometricInterpretation = "YBR_FULL_422"
    out["damaged JPEG"] = _part10(ds, JPEGBaseline8Bit), "file_damaged"

    good = encode(op_image(rgb))
    out["truncated"] = good[: len(good) - rgb.size // 3], "file_damaged"
    jpeg = encode(op_image(rgb), "jpeg")
    out["truncated JPEG"] = jpeg[: len(jpeg) * 2 // 3], "file_damaged"
    out["header only"] = good[:132] + b"\x02\x00", "file_damaged"
    return out


def dciodvfy_errors(path: Path) -> list[str] | None:
    """dcmtk's/dicom3tools' IOD check of ``path``: its lines starting with "Error" (None: not installed)."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        return None
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
