"""Whether a photo file has all its bytes: the end each format declares, checked without decoding.

A camera that writes half a file, closes it and appends the rest later (or one that pauses longer
than any quiet time) leaves a file that looks finished to the file system. Each format says where it
ends: JPEG with its EOI marker after the last scan (segments walked, so an EXIF thumbnail's own EOI
does not count; bytes after EOI are allowed), PNG with its IEND chunk, BMP with the file size in its
header, TIFF with the strips or tiles its IFDs point at, DICOM with the pixel data its header sizes
(native) or the sequence delimiter (encapsulated). :func:`missing_end` reads only bytes; the camera
watch waits for a file it names incomplete, and the screen refuses one (``drtrt.preprocess.jpeg``).
"""

from __future__ import annotations

import io
import re
import struct
import warnings

# every reason missing_end gives (the station translates them)
REASONS = ("a file too short for a photo", "a JPEG without its end marker", "a JPEG cut inside a segment",
           "a PNG without its IEND chunk", "a BMP shorter than its header", "a BMP shorter than its header says",
           "a TIFF shorter than its image data", "a DICOM file cut inside its header",
           "a DICOM file cut inside its pixel data", "a DICOM file without pixel data yet")
_MAGIC = (b"\xff\xd8", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*")
_ENTROPY_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")      # a marker after entropy-coded data (FF00 is a stuffed FF)


def missing_end(data: bytes) -> str | None:
    """Why ``data`` is not a whole photo file ("a JPEG without its end marker"), or None when it is whole
    or when its format is not one of these (the screen then judges it)."""
    if len(data) < 132 and (not data.strip(b"\0") or any(m.startswith(data[:len(m)]) for m in _MAGIC)):
        return "a file too short for a photo"       # a photo's first bytes; a DICOM file's magic is at byte 128
    if data[:2] == b"\xff\xd8":
        return _jpeg(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png(data)
    if data[:2] == b"BM":
        return _bmp(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff(data)
    if data[128:132] == b"DICM":
        return _dicom(data)
    return None


def _jpeg(data: bytes) -> str | None:
    end, i = len(data), 2
    while True:
        if i >= end:
            return "a JPEG without its end marker"
        if data[i] != 0xFF:
            return None                                    # damaged, not short: the decoder refuses it
        while i < end and data[i] == 0xFF:                 # fill bytes before a marker
            i += 1
        if i >= end:
            return "a JPEG without its end marker"
        marker, i = data[i], i + 1
        if marker == 0xD9:
            return None
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:       # no length
            continue
        if i + 2 > end or i + int.from_bytes(data[i:i + 2], "big") > end:
            return "a JPEG cut inside a segment"
        i += int.from_bytes(data[i:i + 2], "big")
        if marker == 0xDA:                                 # a scan: its coded data runs to the next marker
            found = _ENTROPY_END.search(data, i)
            if found is None:
                return "a JPEG without its end marker"
            i = found.start()


def _png(data: bytes) -> str | None:
    i = 8
    while i + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[i:i + 8])
        i += 12 + length
        if i > len(data):
            break
        if kind == b"IEND":
            return None
    return "a PNG without its IEND chunk"


def _bmp(data: bytes) -> str | None:
    if len(data) < 14:
        return "a BMP shorter than its header"
    size = int.from_bytes(data[2:6], "little")
    return "a BMP shorter than its header says" if size > len(data) else None


def _tiff(data: bytes) -> str | None:
    order = "<" if data[:2] == b"II" else ">"
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8}
    short = "a TIFF shorter than its image data"

    def values(entry: int) -> list[int]:
        kind, count, field = struct.unpack(order + "HI4s", data[entry + 2:entry + 12])
        width = {3: "H", 4: "I", 16: "Q"}.get(kind)
        if width is None:
            return []
        raw = field if count * sizes[kind] <= 4 else data[struct.unpack(order + "I", field)[0]:][:count * sizes[kind]]
        if len(raw) < count * sizes[kind]:
            raise ValueError
        return list(struct.unpack(f"{order}{count}{width}", raw[:count * sizes[kind]]))

    ifd, seen, need = struct.unpack(order + "I", data[4:8])[0], set(), 0
    try:
        while ifd and ifd not in seen and len(seen) < 64:
            seen.add(ifd)
            if ifd + 2 > len(data):
                return short
            count = struct.unpack(order + "H", data[ifd:ifd + 2])[0]
            if ifd + 2 + 12 * count + 4 > len(data):
                return short
            tags = {struct.unpack(order + "H", data[e:e + 2])[0]: e for e in range(ifd + 2, ifd + 2 + 12 * count, 12)}
            for entry in tags.values():                                     # values kept outside the IFD
                kind, n, field = struct.unpack(order + "HI4s", data[entry + 2:entry + 12])
                if n * sizes.get(kind, 1) > 4:
                    need = max(need, struct.unpack(order + "I", field)[0] + n * sizes.get(kind, 1))
            for offsets, counts in ((273, 279), (324, 325)):              # strips, tiles
                if offsets in tags and counts in tags:
                    need = max([need] + [o + c for o, c in zip(values(tags[offsets]), values(tags[counts]))])
            ifd = struct.unpack(order + "I", data[ifd + 2 + 12 * count:ifd + 6 + 12 * count])[0]
    except (ValueError, struct.error):
        return short
    return short if need > len(data) else None


def _dicom(data: bytes) -> str | None:
    try:
        import pydicom
    except ImportError:
        return None                      # without pydicom the screen refuses every DICOM file, with the reason
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
            pixels = ds.get("PixelData")
        except Exception:  # noqa: BLE001 - pydicom raises many kinds on a cut header
            return "a DICOM file cut inside its header"
    if any("before delimiter" in str(w.message) for w in caught):
        return "a DICOM file cut inside its pixel data"
    if pixels is None:
        return "a DICOM file without pixel data yet"
    if not ds.file_meta.get("TransferSyntaxUID", pydicom.uid.ExplicitVRLittleEndian).is_encapsulated:
        if ds.get("BitsAllocated", 8) % 8:
            return None                                    # bit-packed: not a camera's photo; the screen judges it
        try:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            expected = ds.Rows * ds.Columns * ds.SamplesPerPixel * ((ds.BitsAllocated + 7) // 8) * frames
        except (AttributeError, TypeError, ValueError):
            return None
        if len(pixels) < expected:
            return "a DICOM file cut inside its pixel data"
    return None
