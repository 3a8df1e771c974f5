"""MP4 / QuickTime header reading: top-level boxes by seeking, then ``moov`` and ``moof`` only."""

from __future__ import annotations

import array
import math
import struct
import sys
from collections.abc import Iterator

import attrs

from ._reader import BoundedReader, ParseError

# Containers among top-level boxes that tell an ISO-BMFF / QuickTime file.
TOP_LEVEL_TYPES = frozenset(
    {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"}
)
# The array type code of an unsigned 32-bit integer ("I" on every CPython platform we know).
_U32 = next(code for code in "IL" if array.array(code).itemsize == 4)


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
    default_sample_size: int = 0
    fragment_end: int = 0
    #: Width and height of the first sample description, for a ``tkhd`` that leaves them at 0.
    coded_size: tuple[int, int] = (0, 0)
    #: Where the media data of the track ends, by its sample table (0: no samples).
    data_end: int = 0


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
        reader.count_element()
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


def _u32_table(data: bytes, code: str = _U32) -> array.array[int]:
    """Big-endian unsigned integers (32-bit, or as ``code`` says), unpacked in C, not one by one."""
    table = array.array(code, data)
    if sys.byteorder == "little":
        table.byteswap()
    return table


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
            if len(body) < (96 if version == 1 else 84):
                raise ParseError("structure", "a 'tkhd' box is too short")
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
                elif sub == b"minf":
                    for stbl, stbl_payload, stbl_end in _boxes(reader, sub_payload, sub_end):
                        if stbl == b"stbl":
                            _read_stbl(reader, stbl_payload, stbl_end, track)
    return track


def _read_stbl(reader: BoundedReader, start: int, end: int, track: _Track) -> None:
    """Read the first sample description's size and where the track's media data ends."""
    offsets: array.array[int] | None = None
    stsc = array.array(_U32)
    stsz: tuple[int, int] | None = None
    for kind, payload, box_end in _boxes(reader, start, end):
        if kind == b"stsd" and payload + 44 <= box_end:
            # Visual sample entries (ISO and QuickTime alike) hold width and height at +32.
            track.coded_size = struct.unpack(">HH", reader.read_exact(payload + 8 + 32, 4))
        elif kind in (b"stco", b"co64"):
            wide = kind == b"co64"
            code = "Q" if wide else _U32
            offsets = _sample_table(reader, payload, box_end, 2 if wide else 1, code)
        elif kind == b"stsc":
            stsc = _sample_table(reader, payload, box_end, 3)
        elif kind == b"stsz":
            stsz = (payload, box_end)
    if offsets:
        last = max(offsets)
        track.data_end = last + 1  # the start at least; the video track's chunk size is added
        # hdlr precedes minf in mdia (ISO 14496-12 order), so the handler is known here.
        if stsz is not None and track.handler == b"vide":
            chunk = offsets.index(last) + 1
            track.data_end = last + _chunk_bytes(reader, chunk, stsc, *stsz)


def _sample_table(
    reader: BoundedReader, payload: int, end: int, words: int, code: str = _U32
) -> array.array[int]:
    """The entries of a full box holding a 32-bit count and ``words`` 32-bit words per entry."""
    (count,) = struct.unpack(">I", reader.read_exact(payload + 4, 4))
    if payload + 8 + 4 * words * count > end:
        raise ParseError("structure", "a sample table is longer than its box")
    return _u32_table(reader.read_exact(payload + 8, 4 * words * count), code)


def _chunk_bytes(
    reader: BoundedReader, chunk: int, stsc: array.array[int], stsz: int, end: int
) -> int:
    """The byte size of chunk number ``chunk`` (1-based), from ``stsc`` runs and ``stsz`` sizes."""
    first_sample = per_chunk = 0
    for i in range(0, len(stsc) - 2, 3):
        reader.count_element()
        first, count = stsc[i], stsc[i + 1]
        following = stsc[i + 3] if i + 3 < len(stsc) else chunk + 1
        if not first <= chunk or following <= first:
            raise ParseError("structure", "the sample-to-chunk table is out of order")
        if following > chunk:
            first_sample += (chunk - first) * count
            per_chunk = count
            break
        first_sample += (following - first) * count
    size, sample_count = struct.unpack(">II", reader.read_exact(stsz + 4, 8))
    if first_sample + per_chunk > sample_count:
        raise ParseError("structure", "the sample tables disagree on the number of samples")
    if size:
        return int(size) * per_chunk
    entries = stsz + 12 + 4 * first_sample
    if entries + 4 * per_chunk > end:
        raise ParseError("structure", "a sample table is longer than its box")
    return int(sum(_u32_table(reader.read_exact(entries, 4 * per_chunk))))


def _fragment_durations(
    reader: BoundedReader, moof: int, start: int, end: int, tracks: dict[int, _Track]
) -> None:
    """Advance each track's ``fragment_end`` with one ``moof``'s ``tfdt`` + sample durations.

    Also check that the media data the fragment points at lies inside the file: a file cut just
    after a ``moof`` keeps every box whole, yet its samples are gone.
    """
    data_end = moof
    for kind, payload, box_end in _boxes(reader, start, end):
        if kind != b"traf":
            continue
        track: _Track | None = None
        default_duration = default_size = 0
        base = data_end
        base_time: int | None = None
        total = 0
        for sub, sub_payload, sub_end in _boxes(reader, payload, box_end):
            if sub == b"tfhd":
                _, flags = _full_box(reader, sub_payload)
                (track_id,) = struct.unpack(">I", reader.read_exact(sub_payload + 4, 4))
                track = tracks.get(track_id)
                if track is not None:
                    default_duration = track.default_sample_duration
                    default_size = track.default_sample_size
                pos = sub_payload + 8
                if flags & 0x01:
                    (base,) = struct.unpack(">Q", reader.read_exact(pos, 8))
                    pos += 8
                elif flags & 0x020000:  # default-base-is-moof
                    base = moof
                pos += 4 if flags & 0x02 else 0
                if flags & 0x08:
                    (default_duration,) = struct.unpack(">I", reader.read_exact(pos, 4))
                    pos += 4
                if flags & 0x10:
                    (default_size,) = struct.unpack(">I", reader.read_exact(pos, 4))
                data_end = base
            elif sub == b"tfdt":
                version, _ = _full_box(reader, sub_payload)
                fmt, length = (">Q", 8) if version == 1 else (">I", 4)
                (base_time,) = struct.unpack(fmt, reader.read_exact(sub_payload + 4, length))
            elif sub == b"trun":
                _, flags = _full_box(reader, sub_payload)
                (count,) = struct.unpack(">I", reader.read_exact(sub_payload + 4, 4))
                pos = sub_payload + 8
                if flags & 0x01:
                    (data_offset,) = struct.unpack(">i", reader.read_exact(pos, 4))
                    data_end = base + data_offset
                    pos += 4
                pos += 4 if flags & 0x04 else 0
                words = sum(1 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
                if pos + 4 * words * count > sub_end:
                    raise ParseError("truncated", "a fragment's sample table runs past its box")
                table = _u32_table(reader.read_exact(pos, 4 * words * count))
                if flags & 0x100:
                    total += sum(table[0::words])
                else:
                    total += count * default_duration
                if flags & 0x200:
                    data_end += sum(table[(1 if flags & 0x100 else 0) :: words])
                else:
                    data_end += count * default_size
                if data_end > reader.size:
                    raise ParseError(
                        "truncated", "a fragment's media data runs past the end of the file"
                    )
        if track is not None:
            start_time = base_time if base_time is not None else track.fragment_end
            track.fragment_end = max(track.fragment_end, start_time + total)


def read_mp4(reader: BoundedReader) -> Mp4Info:
    """Read the duration, size and rotation of an MP4/MOV file from its boxes."""
    is_quicktime = False
    moov: tuple[int, int] | None = None
    moofs: list[tuple[int, int, int]] = []
    has_media_data = False
    box_start = 0
    for kind, payload, box_end in _boxes(reader, 0, reader.size):
        if kind == b"ftyp":
            is_quicktime = reader.read_exact(payload, 4) == b"qt  "
        elif kind == b"moov":
            moov = (payload, box_end)
        elif kind == b"moof":
            moofs.append((box_start, payload, box_end))
        elif kind == b"mdat":
            has_media_data = True
        box_start = box_end
    if moov is None:
        # Recorders write the index last: media data without one is a cut recording.
        raise ParseError(
            "truncated" if has_media_data else "structure",
            "no 'moov' index box: the file is incomplete or not a movie",
        )
    if not has_media_data:
        raise ParseError("truncated", "no 'mdat' box: the file holds no media data")
    timescale = 0
    movie_duration = 0
    fragment_duration = 0
    tracks: dict[int, _Track] = {}
    trex_defaults: dict[int, tuple[int, int]] = {}
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
                    track_id, _desc, duration, size = struct.unpack(
                        ">IIII", reader.read_exact(sub_payload + 4, 16)
                    )
                    trex_defaults[track_id] = (duration, size)
    for track_id, (duration, size) in trex_defaults.items():
        if track_id in tracks:
            tracks[track_id].default_sample_duration = duration
            tracks[track_id].default_sample_size = size
    for track in tracks.values():
        if track.data_end > reader.size:
            raise ParseError("truncated", "the sample table points past the end of the file")
    # Only the fragments' end times matter; each needs its own tfdt-less sum in the worst case.
    for moof, start, end in moofs:
        _fragment_durations(reader, moof, start, end, tracks)

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
    if not (width and height):  # some muxers leave tkhd's size at 0; the sample entry has it
        width, height = video.coded_size
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
