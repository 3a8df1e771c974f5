"""Matroska / WebM header reading: EBML header, Info, Tracks, Tags, and Cluster timecodes."""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterator

import attrs

from ._reader import BoundedReader, ParseError

EBML_MAGIC = b"\x1a\x45\xdf\xa3"

_SEGMENT = 0x18538067
_INFO = 0x1549A966
_TRACKS = 0x1654AE6B
_TAGS = 0x1254C367
_CLUSTER = 0x1F43B675
_DOCTYPE = 0x4282
_TIMECODE_SCALE = 0x2AD7B1
_DURATION = 0x4489
_TRACK_ENTRY = 0xAE
_TRACK_TYPE = 0x83
_TRACK_UID = 0x73C5
_TRACK_NUMBER = 0xD7
_DEFAULT_DURATION = 0x23E383
_VIDEO = 0xE0
_PIXEL_WIDTH = 0xB0
_PIXEL_HEIGHT = 0xBA
_DISPLAY_WIDTH = 0x54B0
_DISPLAY_HEIGHT = 0x54BA
_DISPLAY_UNIT = 0x54B2
_TAG = 0x7373
_TARGETS = 0x63C0
_TAG_TRACK_UID = 0x63C5
_SIMPLE_TAG = 0x67C8
_TAG_NAME = 0x45A3
_TAG_STRING = 0x4487
_CLUSTER_TIMECODE = 0xE7
_SIMPLE_BLOCK = 0xA3
_BLOCK_GROUP = 0xA0
_BLOCK = 0xA1
_BLOCK_DURATION = 0x9B
# Level-1 elements: where an unknown-size Cluster ends.
_LEVEL1 = frozenset(
    {0x114D9B74, _INFO, _TRACKS, _CLUSTER, 0x1C53BB6B, 0x1941A469, 0x1043A770, _TAGS}
)
_UNKNOWN = -1
# Only these may have an unknown size (Matroska spec: ``unknownsizeallowed``); a live or piped
# writer leaves it so.
_UNKNOWN_SIZE_ALLOWED = frozenset({_SEGMENT, _CLUSTER})
# ffmpeg and mkvmerge write ``HH:MM:SS.nnnnnnnnn``; anything else is not trusted as a duration.
# Digits are bounded: int() refuses strings of over 4300 digits with a ValueError.
_TAG_DURATION = re.compile(r"(\d{1,6}):(\d{1,2}):(\d{1,2}(?:\.\d{1,12})?)", re.ASCII)


@attrs.frozen
class MatroskaInfo:
    """What the headers of a Matroska/WebM file say."""

    doctype: str
    container_duration: float | None
    video_duration: float | None
    width: int
    height: int


def _vint(reader: BoundedReader, offset: int, *, keep_marker: bool) -> tuple[int, int]:
    """Read an EBML variable-length integer: ``(value, length)``; unknown sizes give -1."""
    first = reader.read_exact(offset, 1)[0]
    if first == 0:
        raise ParseError("structure", f"invalid EBML number at byte {offset}")
    length = 9 - first.bit_length()
    data = reader.read_exact(offset, length)
    value = int.from_bytes(data, "big")
    if keep_marker:
        return value, length
    value &= (1 << (7 * length)) - 1
    if value == (1 << (7 * length)) - 1:
        return _UNKNOWN, length
    return value, length


def _elements(
    reader: BoundedReader, start: int, end: int, *, stop_at_level1: bool = False
) -> Iterator[tuple[int, int, int]]:
    """Yield ``(id, payload_offset, payload_end)`` of the elements between ``start`` and ``end``.

    An unknown-size Cluster ends where the next level-1 element starts; a Segment at ``end``.
    """
    offset = start
    while offset < end:
        reader.count_element()
        element_id, id_len = _vint(reader, offset, keep_marker=True)
        if stop_at_level1 and element_id in _LEVEL1:
            return
        size, size_len = _vint(reader, offset + id_len, keep_marker=False)
        payload = offset + id_len + size_len
        if size == _UNKNOWN:
            if element_id not in _UNKNOWN_SIZE_ALLOWED:
                raise ParseError("structure", f"element 0x{element_id:X} has an unknown size")
            payload_end = end if element_id == _SEGMENT else _unknown_end(reader, payload, end)
        else:
            payload_end = payload + size
        if payload_end > end:
            raise ParseError(
                "truncated", f"element 0x{element_id:X} runs past the end of its parent"
            )
        yield element_id, payload, payload_end
        offset = payload_end


def _unknown_end(reader: BoundedReader, start: int, end: int) -> int:
    """Where an unknown-size Cluster ends: at the next level-1 element, or at ``end``."""
    offset = start
    while offset < end:
        reader.count_element()
        element_id, id_len = _vint(reader, offset, keep_marker=True)
        if element_id in _LEVEL1 or element_id == 0x1A45DFA3:
            return offset
        size, size_len = _vint(reader, offset + id_len, keep_marker=False)
        if size == _UNKNOWN:
            raise ParseError("structure", f"element 0x{element_id:X} has an unknown size")
        offset += id_len + size_len + size
        if offset > end:
            raise ParseError(
                "truncated", f"element 0x{element_id:X} runs past the end of its parent"
            )
    return end


def _uint(reader: BoundedReader, start: int, end: int) -> int:
    return int.from_bytes(reader.read_exact(start, min(end - start, 8)), "big")


def _float(reader: BoundedReader, start: int, end: int) -> float:
    data = reader.read_exact(start, end - start)
    if len(data) == 4:
        return float(struct.unpack(">f", data)[0])
    if len(data) == 8:
        return float(struct.unpack(">d", data)[0])
    raise ParseError("structure", "a float element has a bad size")


def _tag_seconds(text: str) -> float | None:
    """Parse an ffmpeg ``DURATION`` tag such as ``00:00:10.000000000``; None if it is not one."""
    match = _TAG_DURATION.fullmatch(text)
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _last_block_end(
    reader: BoundedReader, start: int, end: int, scale: int, frame_ns: dict[int, int]
) -> float | None:
    """The time the latest block in one Cluster ends, in seconds.

    A block lasts its BlockDuration, else its track's DefaultDuration (``frame_ns``), as ffprobe
    counts it: a 6 s clip's last frame starts at 5.9 s.
    """
    cluster_time: int | None = None
    latest = 0.0
    for element_id, payload, payload_end in _elements(reader, start, end, stop_at_level1=True):
        if element_id == _CLUSTER_TIMECODE:
            cluster_time = _uint(reader, payload, payload_end)
        elif element_id in (_SIMPLE_BLOCK, _BLOCK_GROUP):
            block, block_end, duration = payload, payload_end, None
            if element_id == _BLOCK_GROUP:
                for sub_id, sub, sub_end in _elements(reader, payload, payload_end):
                    if sub_id == _BLOCK:
                        block, block_end = sub, sub_end
                    elif sub_id == _BLOCK_DURATION:
                        duration = _uint(reader, sub, sub_end)
            track, track_len = _vint(reader, block, keep_marker=False)
            if block + track_len + 2 > block_end:
                raise ParseError("structure", "a block is too short")
            (relative,) = struct.unpack(">h", reader.read_exact(block + track_len, 2))
            lasts = duration if duration is not None else frame_ns.get(track, 0) / scale
            latest = max(latest, relative + lasts)
    if cluster_time is None:
        return None
    return (cluster_time + latest) * scale / 1e9


def read_matroska(reader: BoundedReader) -> MatroskaInfo:
    """Read the duration and size of a Matroska/WebM file from its headers."""
    header = next(_elements(reader, 0, reader.size), None)
    if header is None or header[0] != 0x1A45DFA3:
        raise ParseError("structure", "no EBML header")
    doctype = "matroska"
    for element_id, payload, payload_end in _elements(reader, header[1], header[2]):
        if element_id == _DOCTYPE:
            doctype = reader.read_exact(payload, payload_end - payload).decode("ascii", "replace")
    segment = next(
        ((p, e) for i, p, e in _elements(reader, header[2], reader.size) if i == _SEGMENT), None
    )
    if segment is None:
        raise ParseError("structure", "no Segment element")
    scale = 1_000_000
    duration_ticks: float | None = None
    video_uid: int | None = None
    width = height = 0
    tag_durations: dict[int, str] = {}
    frame_ns: dict[int, int] = {}
    last_cluster: tuple[int, int] | None = None
    for element_id, payload, payload_end in _elements(reader, *segment):
        if element_id == _INFO:
            for sub_id, sub, sub_end in _elements(reader, payload, payload_end):
                if sub_id == _TIMECODE_SCALE:
                    scale = _uint(reader, sub, sub_end) or scale
                elif sub_id == _DURATION:
                    duration_ticks = _float(reader, sub, sub_end)
        elif element_id == _TRACKS:
            for entry_id, entry, entry_end in _elements(reader, payload, payload_end):
                if entry_id != _TRACK_ENTRY:
                    continue
                fields = {i: (p, e) for i, p, e in _elements(reader, entry, entry_end)}
                if _TRACK_NUMBER in fields and _DEFAULT_DURATION in fields:
                    number = _uint(reader, *fields[_TRACK_NUMBER])
                    frame_ns[number] = _uint(reader, *fields[_DEFAULT_DURATION])
                if _TRACK_TYPE not in fields or _uint(reader, *fields[_TRACK_TYPE]) != 1:
                    continue
                if video_uid is not None:
                    continue
                video_uid = _uint(reader, *fields[_TRACK_UID]) if _TRACK_UID in fields else 0
                if _VIDEO in fields:
                    video = {i: (p, e) for i, p, e in _elements(reader, *fields[_VIDEO])}
                    width = _uint(reader, *video[_PIXEL_WIDTH]) if _PIXEL_WIDTH in video else 0
                    height = _uint(reader, *video[_PIXEL_HEIGHT]) if _PIXEL_HEIGHT in video else 0
                    # DisplayUnit 0 is pixels; other units give a ratio, not a size.
                    in_pixels = _DISPLAY_UNIT not in video or not _uint(
                        reader, *video[_DISPLAY_UNIT]
                    )
                    if _DISPLAY_WIDTH in video and _DISPLAY_HEIGHT in video and in_pixels:
                        width = _uint(reader, *video[_DISPLAY_WIDTH])
                        height = _uint(reader, *video[_DISPLAY_HEIGHT])
        elif element_id == _TAGS:
            for tag_id, tag, tag_end in _elements(reader, payload, payload_end):
                if tag_id != _TAG:
                    continue
                uid: int | None = None
                for sub_id, sub, sub_end in _elements(reader, tag, tag_end):
                    if sub_id == _TARGETS:
                        for t_id, t, t_end in _elements(reader, sub, sub_end):
                            if t_id == _TAG_TRACK_UID:
                                uid = _uint(reader, t, t_end)
                    elif sub_id == _SIMPLE_TAG and uid is not None:
                        simple = {i: (p, e) for i, p, e in _elements(reader, sub, sub_end)}
                        if _TAG_NAME in simple and _TAG_STRING in simple:
                            name = reader.read_exact(
                                simple[_TAG_NAME][0], simple[_TAG_NAME][1] - simple[_TAG_NAME][0]
                            )
                            if name.upper() == b"DURATION":
                                start, end = simple[_TAG_STRING]
                                text = reader.read_exact(start, end - start).decode(
                                    "ascii", "replace"
                                )
                                tag_durations[uid] = text.strip("\x00 ")
        elif element_id == _CLUSTER:
            last_cluster = (payload, payload_end)
    if video_uid is None:
        raise ParseError("no-video-track", "the file has no video track")
    if duration_ticks is not None and not (math.isfinite(duration_ticks) and duration_ticks >= 0):
        raise ParseError("bad-duration", f"the Duration element holds {duration_ticks}")
    video_seconds: float | None = None
    if video_uid in tag_durations:
        video_seconds = _tag_seconds(tag_durations[video_uid])
        if video_seconds is None:
            raise ParseError(
                "bad-duration", f"the video track's DURATION tag is {tag_durations[video_uid]!r}"
            )
    container: float | None = None
    if duration_ticks is not None and duration_ticks > 0:
        container = duration_ticks * scale / 1e9
    elif last_cluster is not None:
        container = _last_block_end(reader, *last_cluster, scale, frame_ns)
    return MatroskaInfo(
        doctype=doctype,
        container_duration=container,
        video_duration=video_seconds,
        width=width,
        height=height,
    )
