"""Matroska / WebM header reading: EBML header, Info, Tracks, Tags, and Cluster timecodes."""

from __future__ import annotations

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
_VIDEO = 0xE0
_PIXEL_WIDTH = 0xB0
_PIXEL_HEIGHT = 0xBA
_DISPLAY_WIDTH = 0x54B0
_DISPLAY_HEIGHT = 0x54BA
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
_MAX_CLUSTERS = 1_000_000


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
    """Yield ``(id, payload_offset, payload_end)``; an unknown size runs to ``end``."""
    offset = start
    while offset < end:
        element_id, id_len = _vint(reader, offset, keep_marker=True)
        if stop_at_level1 and element_id in _LEVEL1:
            return
        size, size_len = _vint(reader, offset + id_len, keep_marker=False)
        payload = offset + id_len + size_len
        if size == _UNKNOWN:
            yield element_id, payload, end
            return
        payload_end = payload + size
        if payload_end > end:
            raise ParseError(
                "truncated", f"element 0x{element_id:X} runs past the end of its parent"
            )
        yield element_id, payload, payload_end
        offset = payload_end


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
    """Parse an ffmpeg ``DURATION`` tag such as ``00:00:10.000000000``."""
    try:
        hours, minutes, seconds = text.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _last_block_end(reader: BoundedReader, start: int, end: int, scale: int) -> float | None:
    """The time of the latest block in one Cluster, in seconds."""
    cluster_time: int | None = None
    latest = 0
    for element_id, payload, payload_end in _elements(reader, start, end, stop_at_level1=True):
        if element_id == _CLUSTER_TIMECODE:
            cluster_time = _uint(reader, payload, payload_end)
        elif element_id in (_SIMPLE_BLOCK, _BLOCK_GROUP):
            block, block_end, duration = payload, payload_end, 0
            if element_id == _BLOCK_GROUP:
                for sub_id, sub, sub_end in _elements(reader, payload, payload_end):
                    if sub_id == _BLOCK:
                        block, block_end = sub, sub_end
                    elif sub_id == _BLOCK_DURATION:
                        duration = _uint(reader, sub, sub_end)
            _track, track_len = _vint(reader, block, keep_marker=False)
            if block + track_len + 2 > block_end:
                raise ParseError("structure", "a block is too short")
            (relative,) = struct.unpack(">h", reader.read_exact(block + track_len, 2))
            latest = max(latest, relative + duration)
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
    tag_durations: dict[int, float] = {}
    last_cluster: tuple[int, int] | None = None
    clusters = 0
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
                if _TRACK_TYPE not in fields or _uint(reader, *fields[_TRACK_TYPE]) != 1:
                    continue
                if video_uid is not None:
                    continue
                video_uid = _uint(reader, *fields[_TRACK_UID]) if _TRACK_UID in fields else 0
                if _VIDEO in fields:
                    video = {i: (p, e) for i, p, e in _elements(reader, *fields[_VIDEO])}
                    width = _uint(reader, *video[_PIXEL_WIDTH]) if _PIXEL_WIDTH in video else 0
                    height = _uint(reader, *video[_PIXEL_HEIGHT]) if _PIXEL_HEIGHT in video else 0
                    if _DISPLAY_WIDTH in video and _DISPLAY_HEIGHT in video:
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
                                seconds = _tag_seconds(text.strip("\x00 "))
                                if seconds is not None:
                                    tag_durations[uid] = seconds
        elif element_id == _CLUSTER:
            clusters += 1
            if clusters > _MAX_CLUSTERS:
                raise ParseError("structure", "implausibly many clusters")
            last_cluster = (payload, payload_end)
            if payload_end == segment[1]:
                # An unknown-size Cluster: it ends where the next level-1 element starts, which
                # only a scan could find; the estimate below reads it up to there.
                break
    if video_uid is None:
        raise ParseError("no-video-track", "the file has no video track")
    container: float | None = None
    if duration_ticks is not None and duration_ticks > 0:
        container = duration_ticks * scale / 1e9
    elif last_cluster is not None:
        container = _last_block_end(reader, *last_cluster, scale)
    return MatroskaInfo(
        doctype=doctype,
        container_duration=container,
        video_duration=tag_durations.get(video_uid),
        width=width,
        height=height,
    )
