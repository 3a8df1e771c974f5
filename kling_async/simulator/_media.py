"""How the simulator tells what a hosted file is: its own small readers, not the client's.

Only what the service needs to judge: the kind of file from its first bytes, and a video's
duration from the MP4/QuickTime ``mvhd`` box or the Matroska ``Duration``. Anything it cannot read
has no duration, and createTask then refuses it, as the real service refuses what it cannot read.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import BinaryIO

__all__ = ["MIME_TYPES", "sniff", "video_seconds"]

MIME_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "matroska": "video/x-matroska",
    "webm": "video/webm",
}
_MP4_TOP = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"moof"}
_BOX_LIMIT = 10_000
_EBML_LIMIT = 10_000


def sniff(head: bytes) -> str | None:
    """The kind of file, from its first 32 bytes."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] in _MP4_TOP:
        return "mov" if head[8:12] == b"qt  " else "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in head else "matroska"
    return None


def video_seconds(path: Path, kind: str) -> float | None:
    """A video's duration in seconds, or None when it cannot be read."""
    try:
        with path.open("rb") as fh:
            size = path.stat().st_size
            seconds = _mp4(fh, 0, size) if kind in ("mp4", "mov") else _matroska(fh, size)
    except (OSError, struct.error, ValueError):
        return None
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        return None
    return seconds


def _mp4(fh: BinaryIO, start: int, end: int) -> float | None:
    """Walk boxes from ``start`` to ``end``; descend into ``moov`` to read ``mvhd``."""
    offset = start
    for _ in range(_BOX_LIMIT):
        if offset + 8 > end:
            return None
        fh.seek(offset)
        size, kind = struct.unpack(">I4s", fh.read(8))
        header = 8
        if size == 1:
            size = struct.unpack(">Q", fh.read(8))[0]
            header = 16
        elif size == 0:
            size = end - offset
        if size < header:
            return None
        if kind == b"moov":
            return _mp4(fh, offset + header, min(offset + size, end))
        if kind == b"mvhd":
            version = fh.read(1)[0]
            fh.read(3)
            if version == 1:
                _, _, timescale, duration = struct.unpack(">QQIQ", fh.read(28))
            else:
                _, _, timescale, duration = struct.unpack(">IIII", fh.read(16))
            return duration / timescale if timescale else None
        offset += size
    return None


def _vint(fh: BinaryIO, keep_marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer: (value, length in bytes)."""
    first = fh.read(1)
    if not first:
        raise ValueError("end of file")
    byte = first[0]
    length = 1
    while length <= 8 and not byte & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        raise ValueError("bad EBML length")
    value = byte if keep_marker else byte & (0xFF >> length)
    for extra in fh.read(length - 1):
        value = (value << 8) | extra
    return value, length


def _matroska(fh: BinaryIO, end: int) -> float | None:
    """``Duration`` times ``TimecodeScale`` from the Segment's Info, in seconds."""
    scale = 1_000_000
    duration: float | None = None
    offset = 0
    stack_end = end
    for _ in range(_EBML_LIMIT):
        if offset >= stack_end:
            break
        fh.seek(offset)
        element, id_len = _vint(fh, keep_marker=True)
        size, size_len = _vint(fh, keep_marker=False)
        body = offset + id_len + size_len
        unknown = size == (1 << (7 * size_len)) - 1
        if element in (0x18538067, 0x1549A966):  # Segment, Info: look inside
            stack_end = end if unknown else min(body + size, end)
            offset = body
            continue
        if element == 0x2AD7B1:  # TimecodeScale
            scale = int.from_bytes(fh.read(size), "big")
        elif element == 0x4489:  # Duration
            raw = fh.read(size)
            duration = struct.unpack(">f" if size == 4 else ">d", raw)[0]
        elif element == 0x1F43B675:  # Cluster: the Info is behind us
            break
        if unknown:
            break
        offset = body + size
    return None if duration is None else duration * scale / 1e9
