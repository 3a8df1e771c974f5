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
    """A video's duration in seconds, or None when it cannot be read (never an error)."""
    try:
        with path.open("rb") as fh:
            size = path.stat().st_size
            seconds = _mp4(fh, size) if kind in ("mp4", "mov") else _matroska(fh, size)
    except Exception:  # a file the reader cannot follow has no duration, whatever broke
        return None
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        return None
    return seconds


class _Movie:
    """What the MP4 walk has found: the video track, its clock, and its fragments."""

    def __init__(self) -> None:
        self.boxes = 0
        self.movie: tuple[int, int] | None = None  # (timescale, duration) of mvhd
        self.video_id: int | None = None
        self.video: tuple[int, int] | None = None  # (timescale, duration) of the video's mdhd
        self.defaults: dict[int, int] = {}  # track id -> default sample duration (trex)
        self.fragments: dict[int, int] = {}  # track id -> summed sample durations (moof)


_CONTAINERS = {b"moov", b"trak", b"mdia", b"mvex", b"moof", b"traf"}
_LEAF_READ = 4 * 1024 * 1024


def _boxes(fh: BinaryIO, start: int, end: int, movie: _Movie) -> list[tuple[bytes, int, int]]:
    """The boxes between ``start`` and ``end``: (type, body start, body end)."""
    found = []
    offset = start
    while offset + 8 <= end:
        movie.boxes += 1
        if movie.boxes > _BOX_LIMIT:
            raise ValueError("too many boxes")
        fh.seek(offset)
        size, kind = struct.unpack(">I4s", fh.read(8))
        header = 8
        if size == 1:
            size = struct.unpack(">Q", fh.read(8))[0]
            header = 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            break
        found.append((kind, offset + header, offset + size))
        offset += size
    return found


def _walk(fh: BinaryIO, start: int, end: int, movie: _Movie, depth: int) -> None:
    if depth > 6:
        raise ValueError("boxes nested too deeply")
    track: dict[str, int | bytes] = {}
    for kind, body, stop in _boxes(fh, start, end, movie):
        if kind in _CONTAINERS:
            if kind == b"trak":
                _track(fh, body, stop, movie, depth + 1)
            elif kind == b"traf":
                _fragment(fh, body, stop, movie, depth + 1)
            else:
                _walk(fh, body, stop, movie, depth + 1)
            continue
        fh.seek(body)
        data = fh.read(min(stop - body, _LEAF_READ))
        if kind == b"mvhd":
            movie.movie = _clock(data)
        elif kind == b"trex" and len(data) >= 16:
            track_id, _, duration = struct.unpack(">III", data[4:16])
            movie.defaults[track_id] = duration
        track[kind.decode("latin-1")] = data


def _clock(data: bytes) -> tuple[int, int]:
    """(timescale, duration) of an ``mvhd`` or ``mdhd`` body."""
    if data[0] == 1:
        timescale, duration = struct.unpack(">IQ", data[20:32])
    else:
        timescale, duration = struct.unpack(">II", data[12:20])
    return timescale, duration


def _track(fh: BinaryIO, start: int, end: int, movie: _Movie, depth: int) -> None:
    """A ``trak``: if its handler is video, remember its id and its ``mdhd`` clock."""
    track_id = None
    handler = b""
    clock = None
    stack = [(start, end, depth)]
    while stack:
        a, b, level = stack.pop()
        if level > 8:
            raise ValueError("boxes nested too deeply")
        for kind, body, stop in _boxes(fh, a, b, movie):
            if kind in (b"mdia", b"minf"):
                stack.append((body, stop, level + 1))
                continue
            fh.seek(body)
            data = fh.read(min(stop - body, 64))
            if kind == b"tkhd":
                track_id = struct.unpack(">I", data[20:24] if data[0] == 1 else data[12:16])[0]
            elif kind == b"hdlr":
                handler = data[8:12]
            elif kind == b"mdhd":
                clock = _clock(data)
    if handler == b"vide" and movie.video_id is None:
        movie.video_id = track_id
        movie.video = clock


def _fragment(fh: BinaryIO, start: int, end: int, movie: _Movie, depth: int) -> None:
    """A ``traf``: add its samples' durations to its track's total."""
    track_id = None
    default = None
    for kind, body, stop in _boxes(fh, start, end, movie):
        fh.seek(body)
        if kind == b"tfhd":
            data = fh.read(min(stop - body, 64))
            flags = int.from_bytes(data[1:4], "big")
            track_id = struct.unpack(">I", data[4:8])[0]
            at = 8 + (8 if flags & 0x01 else 0) + (4 if flags & 0x02 else 0)
            if flags & 0x08:
                default = struct.unpack(">I", data[at : at + 4])[0]
        elif kind == b"trun" and track_id is not None:
            data = fh.read(min(stop - body, _LEAF_READ))
            flags = int.from_bytes(data[1:4], "big")
            count = struct.unpack(">I", data[4:8])[0]
            at = 8 + (4 if flags & 0x01 else 0) + (4 if flags & 0x04 else 0)
            each = sum(4 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
            if flags & 0x100:
                total = 0
                for index in range(min(count, len(data) // max(each, 1))):
                    total += struct.unpack(">I", data[at + index * each : at + index * each + 4])[0]
            else:
                total = count * (
                    default if default is not None else movie.defaults.get(track_id, 0)
                )
            movie.fragments[track_id] = movie.fragments.get(track_id, 0) + total


def _mp4(fh: BinaryIO, end: int) -> float | None:
    """The video track's duration (its ``mdhd``, or its fragments), else the movie's."""
    movie = _Movie()
    _walk(fh, 0, end, movie, 0)
    if movie.video is not None:
        timescale, duration = movie.video
        if movie.video_id in movie.fragments and timescale:
            duration += movie.fragments[movie.video_id]
        if duration and timescale:
            return duration / timescale
    if movie.movie is not None and movie.movie[0]:
        return movie.movie[1] / movie.movie[0]
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
        if element == 0x2AD7B1 and size <= 8:  # TimecodeScale
            scale = int.from_bytes(fh.read(size), "big")
        elif element == 0x4489 and size in (4, 8):  # Duration
            raw = fh.read(size)
            duration = struct.unpack(">f" if size == 4 else ">d", raw)[0]
        elif element == 0x1F43B675:  # Cluster: the Info is behind us
            break
        if unknown:
            break
        offset = body + size
    return None if duration is None else duration * scale / 1e9
