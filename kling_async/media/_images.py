"""Image format sniffing and size reading for JPEG and PNG (and naming of formats we refuse)."""

from __future__ import annotations

import struct

import attrs

from ._reader import BoundedReader, ParseError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# Start-of-frame markers that carry the image size (all but DHT, JPG and DAC).
_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_MAX_SEGMENTS = 10_000


@attrs.frozen
class ImageSize:
    """Displayed width and height of an image (EXIF rotation applied)."""

    width: int
    height: int


def read_png(reader: BoundedReader) -> ImageSize:
    """Width and height from a PNG's IHDR chunk."""
    head = reader.read_exact(0, 24)
    if head[12:16] != b"IHDR":
        raise ParseError("structure", "PNG has no IHDR chunk first")
    width, height = struct.unpack(">II", head[16:24])
    return ImageSize(width, height)


def _exif_orientation(segment: bytes) -> int:
    """The EXIF orientation tag (1-8) of an APP1 segment, or 1."""
    if not segment.startswith(b"Exif\x00\x00") or len(segment) < 14:
        return 1
    tiff = segment[6:]
    endian = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if endian is None:
        return 1
    (ifd,) = struct.unpack(endian + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(endian + "H", tiff[ifd : ifd + 2])
    for i in range(min(count, 512)):
        entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        if len(entry) < 12:
            break
        tag, _type, _n = struct.unpack(endian + "HHI", entry[:8])
        if tag == 0x0112:
            (value,) = struct.unpack(endian + "H", entry[8:10])
            return value if 1 <= value <= 8 else 1
    return 1


def read_jpeg(reader: BoundedReader) -> ImageSize:
    """Width and height from a JPEG's start-of-frame segment, rotated as its EXIF says."""
    offset = 2
    orientation = 1
    for _ in range(_MAX_SEGMENTS):
        marker = reader.read_exact(offset, 2)
        if marker[0] != 0xFF:
            raise ParseError("structure", f"JPEG marker expected at byte {offset}")
        kind = marker[1]
        if kind == 0xFF:  # fill byte
            offset += 1
            continue
        if kind in (0x01,) or 0xD0 <= kind <= 0xD7:
            offset += 2
            continue
        if kind in (0xD9, 0xDA):
            break
        (length,) = struct.unpack(">H", reader.read_exact(offset + 2, 2))
        if length < 2:
            raise ParseError("structure", "JPEG segment with a bad length")
        if kind == 0xE1 and orientation == 1:
            orientation = _exif_orientation(reader.read_exact(offset + 4, min(length - 2, 65533)))
        if kind in _SOF_MARKERS:
            height, width = struct.unpack(">HH", reader.read_exact(offset + 5, 4))
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            return ImageSize(width, height)
        offset += 2 + length
    raise ParseError("structure", "JPEG has no frame header before its image data")
