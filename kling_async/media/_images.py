"""Image format sniffing and size reading for JPEG and PNG (and naming of formats we refuse)."""

from __future__ import annotations

import re
import struct

import attrs

from ._reader import BoundedReader, ParseError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# Start-of-frame markers that carry the image size (all but DHT, JPG and DAC).
_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
# How far before the end of a JPEG (or of its declared trailer) its EOI marker may lie.
_EOI_WINDOW = 64 * 1024
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
# A Motion Photo appends a video after the JPEG and says how long it is in XMP: the old
# ``MicroVideoOffset`` or the newer ``Container:Directory`` items (developer.android.com,
# "Motion Photo format 1.0").
_MICRO_VIDEO_OFFSET = re.compile(rb'MicroVideoOffset\s*=\s*"(\d{1,12})"')
_ITEM_LENGTH = re.compile(rb'Item:(?:Length|Padding)\s*=\s*"(\d{1,12})"')


@attrs.frozen
class ImageSize:
    """Displayed width and height of an image (EXIF rotation applied)."""

    width: int
    height: int


def read_png(reader: BoundedReader) -> ImageSize:
    """Width and height from a PNG's IHDR chunk, once the chunk chain is seen to reach IEND."""
    head = reader.read_exact(0, 24)
    if head[12:16] != b"IHDR":
        raise ParseError("structure", "PNG has no IHDR chunk first")
    width, height = struct.unpack(">II", head[16:24])
    # Walk the chunk headers (never the pixel data): a cut file has a chunk that runs past its end
    # or no IEND, though its IHDR reads fine.
    offset = 8
    seen_data = False
    while True:
        reader.count_element()
        if offset + 12 > reader.size:
            raise ParseError("truncated", "PNG ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", reader.read_exact(offset, 8))
        if offset + 12 + length > reader.size:
            raise ParseError(
                "truncated", f"PNG chunk {kind.decode('latin-1')!r} runs past the end of the file"
            )
        if kind == b"IEND":
            break
        seen_data = seen_data or kind == b"IDAT"
        offset += 12 + length
    if not seen_data:
        raise ParseError("structure", "PNG has no image data (IDAT)")
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
    """Width and height from a JPEG's start-of-frame segment, rotated as its EXIF says.

    The segments are walked up to the first scan; the scan data is not decoded, but it must be
    present and the file must end with an EOI marker, which a cut file lacks.
    """
    offset = 2
    orientation = 1
    trailer = 0
    size: ImageSize | None = None
    while True:
        reader.count_element()
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
        if kind == 0xD9:
            raise ParseError("structure", "JPEG has no image data (its end comes before a scan)")
        (length,) = struct.unpack(">H", reader.read_exact(offset + 2, 2))
        if length < 2:
            raise ParseError("structure", "JPEG segment with a bad length")
        if kind == 0xDA:
            break
        if kind == 0xE1:
            app1 = reader.read_exact(offset + 4, length - 2)
            if app1.startswith(_XMP):
                trailer = trailer or _xmp_trailer(app1)
            elif orientation == 1:
                orientation = _exif_orientation(app1)
        if kind in _SOF_MARKERS and size is None:
            height, width = struct.unpack(">HH", reader.read_exact(offset + 5, 4))
            size = ImageSize(width, height)
        offset += 2 + length
    if size is None:
        raise ParseError("structure", "JPEG has no frame header before its image data")
    _check_jpeg_end(reader, offset + 2 + length, trailer)
    if orientation in (5, 6, 7, 8):
        return ImageSize(size.height, size.width)
    return size


def _xmp_trailer(xmp: bytes) -> int:
    """The bytes a Motion Photo's XMP says follow the JPEG (its video), or 0."""
    found = _MICRO_VIDEO_OFFSET.search(xmp)
    if found is not None:
        return int(found.group(1))
    return sum(int(item.group(1)) for item in _ITEM_LENGTH.finditer(xmp))


def _check_jpeg_end(reader: BoundedReader, scan: int, trailer: int) -> None:
    """Require scan data after the first SOS header and an EOI marker in the file's tail.

    Scan data stuffs every 0xFF byte, so FFD9 there can only be the EOI. The tail is the end of
    the file, or the end of the JPEG before a declared trailer; a trailer that was stripped while
    its XMP stayed leaves the EOI at the end of the file, so both places are tried.
    """
    if scan >= reader.size:
        raise ParseError("truncated", "JPEG ends inside its first scan header")
    ends = [reader.size - trailer, reader.size] if 0 < trailer < reader.size else [reader.size]
    for end in ends:
        start = max(scan, end - _EOI_WINDOW)
        eoi = reader.read_at(start, max(0, end - start)).rfind(b"\xff\xd9")
        if eoi >= 0:
            if start + eoi == scan:
                raise ParseError("truncated", "JPEG has no scan data")
            return
    raise ParseError("truncated", "JPEG has no end-of-image marker: the file is cut short")
