"""Property tests: damaged real files either parse to sane values or raise MediaValidationError.

Each test mutates the real files under ``tests/media`` (bit flips, cuts, inserted and deleted
bytes, rewritten size fields of boxes, elements, chunks and segments) and feeds them to the
public functions. A parse that succeeds must give values the rules can be judged on (a finite
duration, a plausible size); a failure must be a ``MediaValidationError`` with a known rule that
a parser raised on purpose, not an exception of another type caught by the last-resort handler.
Runs are derandomized so CI sees the same examples every time.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kling_async import (
    MediaValidationError,
    inspect_image,
    inspect_video,
    validate_image,
    validate_video,
)
from kling_async.media import DURATION_TOLERANCE, MAX_DIMENSION

from .conftest import MEDIA

EXAMPLES = 300
#: Examples run per property; ``pytest --hypothesis-show-statistics`` reports the same counts.
RUNS: Counter[str] = Counter()
RULES = {
    "unreadable",
    "format",
    "structure",
    "truncated",
    "element-budget",
    "no-video-track",
    "duration",
    "bad-duration",
    "bad-dimensions",
    "max-size",
    "min-dimensions",
    "aspect-ratio",
    "min-duration",
    "max-duration",
}
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Field = tuple[int, int]  # offset and width of a size field


# --- where the size fields are, per container ------------------------------------------------

_MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"mvex", b"moof", b"traf", b"edts"}
_MP4_TABLES = {b"stco", b"co64", b"stsc", b"stsz", b"trun"}  # their entry counts drive reads


def mp4_fields(raw: bytes, start: int = 0, end: int | None = None) -> Iterator[Field]:
    """Every box size field, and the entry count of every sample table, of an MP4/MOV file."""
    end = len(raw) if end is None else end
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack(">I4s", raw[offset : offset + 8])
        if size < 8:
            return
        yield offset, 4
        if kind in _MP4_CONTAINERS:
            yield from mp4_fields(raw, offset + 8, offset + size)
        elif kind in _MP4_TABLES:
            yield offset + 12, 4
        offset += size


_EBML_MASTERS = {
    0x1A45DFA3,  # EBML header
    0x18538067,  # Segment
    0x1549A966,  # Info
    0x1654AE6B,  # Tracks
    0xAE,  # TrackEntry
    0xE0,  # Video
    0x1254C367,  # Tags
    0x7373,  # Tag
    0x63C0,  # Targets
    0x67C8,  # SimpleTag
    0x1F43B675,  # Cluster
    0xA0,  # BlockGroup
}


def _vint_length(first: int) -> int:
    return 9 - first.bit_length() if first else 9


def ebml_fields(raw: bytes, start: int = 0, end: int | None = None) -> Iterator[Field]:
    """Every element size field of a Matroska file, inside the master elements we read."""
    end = len(raw) if end is None else end
    offset = start
    while offset < end:
        id_len = _vint_length(raw[offset])
        size_len = _vint_length(raw[offset + id_len])
        if id_len > 4 or size_len > 8:
            return
        element_id = int.from_bytes(raw[offset : offset + id_len], "big")
        size = int.from_bytes(raw[offset + id_len : offset + id_len + size_len], "big")
        size &= (1 << (7 * size_len)) - 1
        yield offset + id_len, size_len
        payload = offset + id_len + size_len
        payload_end = end if size == (1 << (7 * size_len)) - 1 else payload + size
        if element_id in _EBML_MASTERS:
            yield from ebml_fields(raw, payload, min(payload_end, end))
        offset = payload_end


def png_fields(raw: bytes) -> Iterator[Field]:
    """The length field of every PNG chunk."""
    offset = 8
    while offset + 8 <= len(raw):
        yield offset, 4
        offset += 12 + struct.unpack(">I", raw[offset : offset + 4])[0]


def jpeg_fields(raw: bytes) -> Iterator[Field]:
    """The length field of every JPEG segment up to the first scan."""
    offset = 2
    while offset + 4 <= len(raw) and raw[offset] == 0xFF:
        yield offset + 2, 2
        if raw[offset + 1] == 0xDA:
            return
        offset += 2 + struct.unpack(">H", raw[offset + 2 : offset + 4])[0]


def _matroska_variants() -> Iterator[tuple[str, bytes]]:
    for name in ("matroska.mkv", "piped.mkv", "webm.webm"):
        yield name, (MEDIA / name).read_bytes()
    # As a live writer leaves it: no Duration, clusters of unknown size.
    raw = bytearray((MEDIA / "piped.mkv").read_bytes())
    at = raw.find(b"\x44\x89\x88")
    raw[at : at + 11] = b"\xec\x89" + bytes(9)
    at = raw.find(b"\x1f\x43\xb6\x75")
    while at >= 0:
        raw[at + 4 : at + 6] = b"\x7f\xff"
        at = raw.find(b"\x1f\x43\xb6\x75", at + 4)
    yield "live.mkv", bytes(raw)


def _motion_photo() -> tuple[str, bytes]:
    """A JPEG followed by a video its XMP declares, as phones write a Motion Photo."""
    raw = (MEDIA / "portrait.jpg").read_bytes()
    video = (MEDIA / "aac10_frag.mp4").read_bytes()
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<rdf:Description GCamera:MicroVideoOffset="
    xmp += b'"%d"/>' % len(video)
    app1 = b"\xff\xe1" + struct.pack(">H", len(xmp) + 2) + xmp
    return "motion.jpg", raw[:2] + app1 + raw[2:] + video


def _sources(
    files: Iterable[tuple[str, bytes]], find: Callable[[bytes], Iterator[Field]]
) -> dict[str, tuple[bytes, list[Field]]]:
    return {name: (raw, list(find(raw))) for name, raw in files}


def _read(*names: str) -> Iterator[tuple[str, bytes]]:
    return ((name, (MEDIA / name).read_bytes()) for name in names)


SOURCES = {
    "png": _sources(_read("portrait.png", "small.png"), png_fields),
    "jpeg": _sources([*_read("portrait.jpg", "progressive.jpg"), _motion_photo()], jpeg_fields),
    "mp4": _sources(
        _read("d3.0.mp4", "faststart.mp4", "fragmented.mp4", "quicktime.mov", "rotated.mp4"),
        mp4_fields,
    ),
    "matroska": _sources(_matroska_variants(), ebml_fields),
}


# --- mutations -------------------------------------------------------------------------------


Mutation = tuple[str, int, int, bytes]  # kind, where, how much, what to insert


@st.composite
def mutations(draw: st.DrawFn, parser: str) -> tuple[str, list[Mutation]]:
    """A real file of ``parser``'s format and one to four mutations to apply to it."""
    name = draw(st.sampled_from(sorted(SOURCES[parser])))
    kinds = st.sampled_from(["flip", "cut", "insert", "delete", "size", "size"])
    # Where: most of what a parser reads is in the first few KB, or in the size fields.
    where = st.integers(0, 4095) | st.integers(0, 1 << 20)
    amount = (
        st.sampled_from([0, 1, 2, 7, 8, 9, 16, -1, -2, 1 << 31, (1 << 32) - 1])
        | st.integers(-64, 64)
        | st.integers(0, (1 << 32) - 1)
    )
    steps = st.tuples(kinds, where, amount, st.binary(min_size=1, max_size=16))
    return name, draw(st.lists(steps, min_size=1, max_size=4))


def apply(parser: str, name: str, steps: list[Mutation]) -> bytes:
    """The file ``name`` with ``steps`` applied; positions wrap around the current length."""
    raw, fields = SOURCES[parser][name]
    data = bytearray(raw)
    for kind, where, amount, insert in steps:
        if not data:
            break
        pos = where % len(data)
        if kind == "flip":
            data[pos] ^= 1 << (amount % 8)
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = insert
        elif kind == "delete":
            del data[pos : pos + 1 + amount % 64]
        else:  # rewrite a size field: relative to its value when small, else absolute
            offset, width = fields[where % len(fields)]
            if offset + width > len(data):
                continue
            old = int.from_bytes(data[offset : offset + width], "big")
            new = old + amount if -64 <= amount <= 64 else amount
            data[offset : offset + width] = (new % (1 << (8 * width))).to_bytes(width, "big")
    return bytes(data)


# --- the properties --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mutated") / "file"


def check_error(exc: MediaValidationError, path: Path) -> None:
    assert exc.rule in RULES, exc
    assert exc.path == str(path)
    # The last-resort handler names the exception it caught; a parser must not need it.
    assert "unreadable headers" not in exc.detail, exc.__cause__


def check_image(path: Path) -> None:
    try:
        info = inspect_image(path)
    except MediaValidationError as exc:
        check_error(exc, path)
        with pytest.raises(MediaValidationError):
            validate_image(path)
        return
    assert info.format in ("jpeg", "png")
    assert 0 < info.width <= MAX_DIMENSION and 0 < info.height <= MAX_DIMENSION
    try:
        assert validate_image(path) == info
    except MediaValidationError as exc:
        check_error(exc, path)


def check_video(path: Path) -> None:
    try:
        info = inspect_video(path)
    except MediaValidationError as exc:
        check_error(exc, path)
        with pytest.raises(MediaValidationError):
            validate_video(path)
        return
    assert info.container in ("mp4", "mov", "mkv", "webm")
    for seconds in (info.duration_s, info.container_duration_s, info.video_duration_s):
        assert seconds is None or (math.isfinite(seconds) and seconds >= 0)
    assert info.duration_s > 0
    assert 0 < info.width <= MAX_DIMENSION and 0 < info.height <= MAX_DIMENSION
    assert info.rotation in (0, 90, 180, 270)
    try:
        valid = validate_video(path)
    except MediaValidationError as exc:
        check_error(exc, path)
        return
    assert 3.0 - DURATION_TOLERANCE <= valid.duration_s <= 30.0 + DURATION_TOLERANCE


def run(parser: str, path: Path, data: bytes, check: Callable[[Path], Any]) -> None:
    RUNS[parser] += 1
    path.write_bytes(data)
    check(path)


def run_mutated(
    parser: str, path: Path, case: tuple[str, list[Mutation]], check: Callable[[Path], Any]
) -> None:
    run(parser, path, apply(parser, *case), check)


@PROPERTY
@given(case=mutations("png"))
def test_mutated_png(scratch: Path, case: tuple[str, list[Mutation]]) -> None:
    run_mutated("png", scratch, case, check_image)


@PROPERTY
@given(case=mutations("jpeg"))
def test_mutated_jpeg(scratch: Path, case: tuple[str, list[Mutation]]) -> None:
    run_mutated("jpeg", scratch, case, check_image)


@PROPERTY
@given(case=mutations("mp4"))
def test_mutated_mp4(scratch: Path, case: tuple[str, list[Mutation]]) -> None:
    run_mutated("mp4", scratch, case, check_video)


@PROPERTY
@given(case=mutations("matroska"))
def test_mutated_matroska(scratch: Path, case: tuple[str, list[Mutation]]) -> None:
    run_mutated("matroska", scratch, case, check_video)


@PROPERTY
@given(data=st.binary(max_size=256), video=st.booleans())
def test_arbitrary_bytes(scratch: Path, data: bytes, video: bool) -> None:
    run("any", scratch, data, check_video if video else check_image)


# Files whose every strict prefix is a cut file: all sizes known, the index at a known place.
WHOLE = [
    "portrait.png",
    "portrait.jpg",
    "d3.0.mp4",
    "faststart.mp4",
    "quicktime.mov",
    "matroska.mkv",
]


@PROPERTY
@given(name=st.sampled_from(WHOLE), keep=st.floats(0.0, 1.0, exclude_max=True))
def test_every_prefix_of_a_whole_file_is_refused(scratch: Path, name: str, keep: float) -> None:
    raw = (MEDIA / name).read_bytes()
    RUNS["prefix"] += 1
    cut = int(len(raw) * keep)
    scratch.write_bytes(raw[:cut])
    inspect = inspect_image if name.endswith((".png", ".jpg")) else inspect_video
    with pytest.raises(MediaValidationError) as caught:
        inspect(scratch)
    check_error(caught.value, scratch)
    if cut >= 64:  # past the first header, where a cut file still looks like its format
        assert caught.value.rule == "truncated"
