"""MP4 / QuickTime header reading: top-level boxes by seeking, then ``moov`` and ``moof`` only."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator

import attrs

from ._reader import BoundedReader, ParseError

# Containers among top-level boxes that tell an ISO-BMFF / QuickTime file.
TOP_LEVEL_TYPES = frozenset(
    {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"}
)
_MAX_FRAGMENTS = 200_000


@attrs.define
class _Track:
    track_id: int = 0
    handler: bytes = b""
    timescale: int = 0
    media_duration: int = 0
    width: float = 0.0
    height: float = 0.0
    rotation: int = 0
    default_sample_duration: int = 0
    fragment_end: int = 0


@attrs.frozen
class Mp4Info:
    """What the headers of an MP4/MOV file say."""

    is_quicktime: bool
    container_duration: float | None
    video_duration: float | None
    width: int
    height: int
    rotation: int
    fragmented: bool


def _boxes(reader: BoundedReader, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """Yield ``(type, payload_offset, box_end)`` of the boxes between ``start`` and ``end``."""
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack(">I4s", reader.read_exact(offset, 8))
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", reader.read_exact(offset + 8, 8))
            header = 16
        elif size == 0:
            size = end - offset
        if size < header:
            raise ParseError("structure", f"box {kind!r} at byte {offset} has a bad size")
        box_end = offset + size
        if box_end > end:
            raise ParseError(
                "truncated", f"box {kind.decode('latin-1')!r} runs past the end of its parent"
            )
        yield kind, offset + header, box_end
        offset = box_end


def _full_box(reader: BoundedReader, offset: int) -> tuple[int, int]:
    (word,) = struct.unpack(">I", reader.read_exact(offset, 4))
    return word >> 24, word & 0xFFFFFF


def _rotation(matrix: tuple[int, ...]) -> int:
    # The angle ffmpeg's ``rotate`` tag and ffprobe report for the same display matrix.
    a, b = matrix[0] / 65536.0, matrix[1] / 65536.0
    angle = round(math.degrees(math.atan2(-b, a))) % 360
    return angle if angle in (0, 90, 180, 270) else 0


def _read_trak(reader: BoundedReader, start: int, end: int) -> _Track:
    track = _Track()
    for kind, payload, box_end in _boxes(reader, start, end):
        if kind == b"tkhd":
            version, _ = _full_box(reader, payload)
            body = reader.read_exact(payload, box_end - payload)
            pos = 4 + (16 if version == 1 else 8)
            (track.track_id,) = struct.unpack(">I", body[pos : pos + 4])
            pos += 4 + 4 + (8 if version == 1 else 4) + 8 + 2 + 2 + 2 + 2
            matrix = struct.unpack(">9i", body[pos : pos + 36])
            width, height = struct.unpack(">II", body[pos + 36 : pos + 44])
            track.width, track.height = width / 65536.0, height / 65536.0
            track.rotation = _rotation(matrix)
        elif kind == b"mdia":
            for sub, sub_payload, sub_end in _boxes(reader, payload, box_end):
                if sub == b"mdhd":
                    version, _ = _full_box(reader, sub_payload)
                    if version == 1:
                        track.timescale, track.media_duration = struct.unpack(
                            ">IQ", reader.read_exact(sub_payload + 20, 12)
                        )
                    else:
                        track.timescale, track.media_duration = struct.unpack(
                            ">II", reader.read_exact(sub_payload + 12, 8)
                        )
                        if track.media_duration == 0xFFFFFFFF:
                            track.media_duration = 0
                elif sub == b"hdlr":
                    # QuickTime fills the component type ('mhlr'); the handler follows either way.
                    track.handler = reader.read_exact(sub_payload + 8, 4)
                del sub_end
    return track


def _fragment_durations(
    reader: BoundedReader, start: int, end: int, tracks: dict[int, _Track]
) -> None:
    """Advance each track's ``fragment_end`` with one ``moof``'s ``tfdt`` + sample durations."""
    for kind, payload, box_end in _boxes(reader, start, end):
        if kind != b"traf":
            continue
        track: _Track | None = None
        default_duration = 0
        base_time: int | None = None
        total = 0
        for sub, sub_payload, sub_end in _boxes(reader, payload, box_end):
            if sub == b"tfhd":
                _, flags = _full_box(reader, sub_payload)
                (track_id,) = struct.unpack(">I", reader.read_exact(sub_payload + 4, 4))
                track = tracks.get(track_id)
                pos = sub_payload + 8 + (8 if flags & 0x01 else 0) + (4 if flags & 0x02 else 0)
                if flags & 0x08:
                    (default_duration,) = struct.unpack(">I", reader.read_exact(pos, 4))
                elif track is not None:
                    default_duration = track.default_sample_duration
            elif sub == b"tfdt":
                version, _ = _full_box(reader, sub_payload)
                fmt, length = (">Q", 8) if version == 1 else (">I", 4)
                (base_time,) = struct.unpack(fmt, reader.read_exact(sub_payload + 4, length))
            elif sub == b"trun":
                _, flags = _full_box(reader, sub_payload)
                (count,) = struct.unpack(">I", reader.read_exact(sub_payload + 4, 4))
                pos = sub_payload + 8 + (4 if flags & 0x01 else 0) + (4 if flags & 0x04 else 0)
                entry = sum(4 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
                if not flags & 0x100:
                    total += count * default_duration
                    continue
                if pos + count * entry > sub_end:
                    raise ParseError("truncated", "a fragment's sample table runs past its box")
                table = reader.read_exact(pos, count * entry)
                total += sum(struct.unpack_from(">I", table, i * entry)[0] for i in range(count))
        if track is not None:
            start_time = base_time if base_time is not None else track.fragment_end
            track.fragment_end = max(track.fragment_end, start_time + total)


def read_mp4(reader: BoundedReader) -> Mp4Info:
    """Read the duration, size and rotation of an MP4/MOV file from its boxes."""
    is_quicktime = False
    moov: tuple[int, int] | None = None
    moofs: list[tuple[int, int]] = []
    for kind, payload, box_end in _boxes(reader, 0, reader.size):
        if kind == b"ftyp":
            is_quicktime = reader.read_exact(payload, 4) == b"qt  "
        elif kind == b"moov":
            moov = (payload, box_end)
        elif kind == b"moof":
            moofs.append((payload, box_end))
            if len(moofs) > _MAX_FRAGMENTS:
                raise ParseError("structure", "implausibly many fragments")
    if moov is None:
        raise ParseError("structure", "no 'moov' index box: the file is incomplete or not a movie")
    timescale = 0
    movie_duration = 0
    fragment_duration = 0
    tracks: dict[int, _Track] = {}
    trex_defaults: dict[int, int] = {}
    for kind, payload, box_end in _boxes(reader, *moov):
        if kind == b"mvhd":
            version, _ = _full_box(reader, payload)
            if version == 1:
                timescale, movie_duration = struct.unpack(
                    ">IQ", reader.read_exact(payload + 20, 12)
                )
            else:
                timescale, movie_duration = struct.unpack(">II", reader.read_exact(payload + 12, 8))
        elif kind == b"trak":
            track = _read_trak(reader, payload, box_end)
            tracks[track.track_id] = track
        elif kind == b"mvex":
            for sub, sub_payload, _sub_end in _boxes(reader, payload, box_end):
                if sub == b"mehd":
                    version, _ = _full_box(reader, sub_payload)
                    fmt, length = (">Q", 8) if version == 1 else (">I", 4)
                    (fragment_duration,) = struct.unpack(
                        fmt, reader.read_exact(sub_payload + 4, length)
                    )
                elif sub == b"trex":
                    track_id, _desc, duration = struct.unpack(
                        ">III", reader.read_exact(sub_payload + 4, 12)
                    )
                    trex_defaults[track_id] = duration
    for track_id, duration in trex_defaults.items():
        if track_id in tracks:
            tracks[track_id].default_sample_duration = duration
    # Only the fragments' end times matter; each needs its own tfdt-less sum in the worst case.
    for start, end in moofs:
        _fragment_durations(reader, start, end, tracks)

    video = next((t for t in tracks.values() if t.handler == b"vide"), None)
    if video is None:
        raise ParseError("no-video-track", "the file has no video track")

    def track_seconds(track: _Track) -> float | None:
        if track.timescale <= 0:
            return None
        ticks = max(track.media_duration, track.fragment_end)
        return ticks / track.timescale if ticks > 0 else None

    container: float | None = None
    if timescale > 0 and movie_duration not in (0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
        container = movie_duration / timescale
    elif timescale > 0 and fragment_duration > 0:
        container = fragment_duration / timescale
    if container is None:
        known = [s for s in (track_seconds(t) for t in tracks.values()) if s is not None]
        container = max(known) if known else None
    width, height = round(video.width), round(video.height)
    if video.rotation in (90, 270):
        width, height = height, width
    return Mp4Info(
        is_quicktime=is_quicktime,
        container_duration=container,
        video_duration=track_seconds(video),
        width=width,
        height=height,
        rotation=video.rotation,
        fragmented=bool(moofs),
    )
