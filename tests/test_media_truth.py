"""Headers that lie or files that are cut: each is refused with a named rule, never believed.

Every damaged file here is built in Python from the real files under ``tests/media`` by cutting or
patching bytes, so the tests need no encoder.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kling_async import (
    MediaValidationError,
    inspect_image,
    inspect_video,
    validate_image,
    validate_video,
)
from kling_async.media import MAX_DIMENSION

from .conftest import MEDIA

CLUSTER_ID = b"\x1f\x43\xb6\x75"
TWO_MB = 2 * 1024 * 1024


def rule_of(path: Path, inspect: Callable[[Path], Any] = inspect_video) -> str:
    with pytest.raises(MediaValidationError) as caught:
        inspect(path)
    assert caught.value.path == str(path)
    return caught.value.rule


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def top_boxes(raw: bytes) -> dict[bytes, tuple[int, int]]:
    """The first ``(start, end)`` of each top-level box type of an MP4."""
    boxes: dict[bytes, tuple[int, int]] = {}
    offset = 0
    while offset + 8 <= len(raw):
        size, kind = struct.unpack(">I4s", raw[offset : offset + 8])
        boxes.setdefault(kind, (offset, offset + size))
        offset += size
    return boxes


def without_duration(raw: bytes) -> bytearray:
    """A Matroska file whose Info/Duration is overwritten by a Void element of the same length."""
    out = bytearray(raw)
    at = out.find(b"\x44\x89")
    length = out[at + 2] & 0x7F
    out[at : at + 3 + length] = b"\xec" + bytes([0x80 | (length + 1)]) + bytes(length + 1)
    return out


def with_unknown_size_clusters(raw: bytes | bytearray) -> bytearray:
    """Every Cluster's size field set to all ones (EBML "unknown"), as a live writer leaves it."""
    out = bytearray(raw)
    at = out.find(CLUSTER_ID)
    while at >= 0:
        length = 9 - out[at + 4].bit_length()
        out[at + 4 : at + 4 + length] = bytes([0xFF >> (length - 1)]) + b"\xff" * (length - 1)
        at = out.find(CLUSTER_ID, at + 4)
    return out


# --- truncation -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["portrait.png", "small.png", "portrait.jpg", "progressive.jpg"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_cut_image_is_truncated(tmp_path: Path, name: str, keep: float) -> None:
    raw = (MEDIA / name).read_bytes()
    cut = write(tmp_path, name, raw[: int(len(raw) * keep)])
    assert rule_of(cut, inspect_image) == "truncated"
    assert rule_of(cut, validate_image) == "truncated"


@pytest.mark.parametrize("name", ["portrait.png", "portrait.jpg"])
def test_image_missing_only_its_last_byte_is_truncated(tmp_path: Path, name: str) -> None:
    raw = (MEDIA / name).read_bytes()
    assert rule_of(write(tmp_path, name, raw[:-1]), inspect_image) == "truncated"


@pytest.mark.parametrize("name", ["portrait.png", "portrait.jpg"])
def test_image_with_a_trailer_after_its_end_is_accepted(tmp_path: Path, name: str) -> None:
    raw = (MEDIA / name).read_bytes()
    info = validate_image(write(tmp_path, name, raw + b"\x00" * 1000))
    assert (info.width, info.height) == (400, 600)


def motion_photo(attributes: bytes, video: bytes) -> bytes:
    """portrait.jpg with a Motion Photo XMP packet, followed by ``video``."""
    raw = (MEDIA / "portrait.jpg").read_bytes()
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><rdf:Description " + attributes
    xmp += b"/></x:xmpmeta>"
    app1 = b"\xff\xe1" + struct.pack(">H", len(xmp) + 2) + xmp
    return raw[:2] + app1 + raw[2:] + video


VIDEO = bytes(100_000)  # longer than the window searched for the EOI; holds no FFD9


@pytest.mark.parametrize(
    "attributes",
    [
        b'GCamera:MicroVideo="1" GCamera:MicroVideoOffset="100000"',
        b'Item:Mime="image/jpeg" Item:Padding="0"/><Container:Item Item:Length="100000"',
    ],
)
def test_motion_photo_with_its_video_after_the_jpeg_is_accepted(
    tmp_path: Path, attributes: bytes
) -> None:
    path = write(tmp_path, "PXL.MP.jpg", motion_photo(attributes, VIDEO))
    info = validate_image(path)
    assert (info.width, info.height) == (400, 600)
    cut = write(tmp_path, "cut.jpg", path.read_bytes()[:20_000])
    assert rule_of(cut, inspect_image) == "truncated"


def test_jpeg_with_a_long_undeclared_trailer_is_taken_for_a_cut_file(tmp_path: Path) -> None:
    # Only the tail is read: an EOI more than 64 KiB before the end, undeclared, is not seen.
    raw = (MEDIA / "portrait.jpg").read_bytes()
    assert rule_of(write(tmp_path, "x.jpg", raw + VIDEO), inspect_image) == "truncated"


def test_jpeg_with_headers_but_no_scan_data_is_truncated(tmp_path: Path) -> None:
    raw = (MEDIA / "portrait.jpg").read_bytes()
    sos = raw.index(b"\xff\xda")
    (length,) = struct.unpack(">H", raw[sos + 2 : sos + 4])
    headers_only = raw[: sos + 2 + length] + b"\xff\xd9"
    assert rule_of(write(tmp_path, "x.jpg", headers_only), inspect_image) == "truncated"


def test_png_without_image_data_is_refused(tmp_path: Path) -> None:
    raw = (MEDIA / "portrait.png").read_bytes()
    header = raw[:33]  # signature and IHDR
    assert rule_of(write(tmp_path, "x.png", header + raw[-12:]), inspect_image) == "structure"


def test_mp4_cut_after_its_index_has_no_media_data(tmp_path: Path) -> None:
    raw = (MEDIA / "faststart.mp4").read_bytes()
    _, moov_end = top_boxes(raw)[b"moov"]
    assert rule_of(write(tmp_path, "x.mp4", raw[:moov_end])) == "truncated"


def test_mp4_cut_before_its_index_is_truncated(tmp_path: Path) -> None:
    raw = (MEDIA / "d10.0.mp4").read_bytes()
    _, mdat_end = top_boxes(raw)[b"mdat"]  # the index (moov) comes after the media data
    assert rule_of(write(tmp_path, "x.mp4", raw[:mdat_end])) == "truncated"


def test_mp4_whose_samples_point_past_the_end_is_truncated(tmp_path: Path) -> None:
    # A cut file whose mdat size was rewritten to fit: every box is whole, the samples are not.
    raw = bytearray((MEDIA / "faststart.mp4").read_bytes())
    start, end = top_boxes(bytes(raw))[b"mdat"]
    cut = raw[: start + (end - start) // 2]
    cut[start : start + 4] = struct.pack(">I", len(cut) - start)
    assert rule_of(write(tmp_path, "x.mp4", bytes(cut))) == "truncated"


def test_fragmented_mp4_cut_after_a_fragment_header_is_truncated(tmp_path: Path) -> None:
    raw = (MEDIA / "fragmented.mp4").read_bytes()
    _, moof_end = top_boxes(raw)[b"moof"]  # the first fragment's header, without its mdat
    assert rule_of(write(tmp_path, "x.mp4", raw[:moof_end])) == "truncated"


def test_fragmented_mp4_cut_between_fragments_reports_what_is_there(tmp_path: Path) -> None:
    raw = (MEDIA / "fragmented.mp4").read_bytes()
    offset, kept = 0, 0
    while offset < len(raw):  # keep ftyp, moov and the first two fragments
        (size,) = struct.unpack(">I", raw[offset : offset + 4])
        kept += raw[offset + 4 : offset + 8] == b"mdat"
        offset += size
        if kept == 2:
            break
    info = inspect_video(write(tmp_path, "x.mp4", raw[:offset]))
    assert 0 < info.duration_s < 6.0  # the whole file is 6 s; never more than what is present


# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -5.0])
def test_matroska_duration_that_is_not_a_length_is_refused(tmp_path: Path, value: float) -> None:
    raw = (MEDIA / "matroska.mkv").read_bytes()
    at = raw.index(b"\x44\x89\x88")  # Duration, 8-byte float
    patched = raw[: at + 3] + struct.pack(">d", value) + raw[at + 11 :]
    path = write(tmp_path, "x.mkv", patched)
    assert rule_of(path) == "bad-duration"
    assert rule_of(path, validate_video) == "bad-duration"


@pytest.mark.parametrize("text", [b"nan", b"00:00:nan", b"00:00:inf", b"-00:00:05", b"5 s"])
def test_matroska_duration_tag_that_is_not_a_length_is_refused(tmp_path: Path, text: bytes) -> None:
    raw = (MEDIA / "matroska.mkv").read_bytes()
    at = raw.index(b"00:00:05.000000000")
    patched = raw[:at] + text.ljust(18, b"\x00") + raw[at + 18 :]
    assert rule_of(write(tmp_path, "x.mkv", patched), validate_video) == "bad-duration"


def test_matroska_duration_tag_is_read(tmp_path: Path) -> None:
    raw = (MEDIA / "matroska.mkv").read_bytes()
    patched = raw.replace(b"00:00:05.000000000", b"00:00:05.500000000")
    assert inspect_video(write(tmp_path, "x.mkv", patched)).duration_s == pytest.approx(5.5)


@pytest.mark.parametrize(
    ("name", "seconds"), [("piped.mkv", 6.0), ("aac10.mkv", 10.128), ("webm.webm", 4.0)]
)
@pytest.mark.parametrize("unknown_sizes", [False, True])
def test_matroska_without_duration_is_measured_from_its_last_cluster(
    tmp_path: Path, name: str, seconds: float, unknown_sizes: bool
) -> None:
    raw = without_duration((MEDIA / name).read_bytes())
    if unknown_sizes:
        raw = with_unknown_size_clusters(raw)
    info = inspect_video(write(tmp_path, name, bytes(raw)))
    assert info.container_duration_s == pytest.approx(seconds, abs=0.05)  # ffprobe's number


def test_matroska_cut_inside_an_unknown_size_cluster_is_truncated(tmp_path: Path) -> None:
    raw = with_unknown_size_clusters(without_duration((MEDIA / "piped.mkv").read_bytes()))
    assert rule_of(write(tmp_path, "x.mkv", bytes(raw[:-100]))) == "truncated"


def test_matroska_without_clusters_or_duration_has_no_duration(tmp_path: Path) -> None:
    raw = without_duration((MEDIA / "piped.mkv").read_bytes())
    first_cluster = raw.index(CLUSTER_ID)
    assert rule_of(write(tmp_path, "x.mkv", bytes(raw[:first_cluster]))) == "duration"


# --- dimensions -----------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(0, 600), (400, 0), (MAX_DIMENSION + 1, 600)])
def test_png_with_an_absurd_size_is_refused(tmp_path: Path, width: int, height: int) -> None:
    raw = (MEDIA / "portrait.png").read_bytes()
    patched = raw[:16] + struct.pack(">II", width, height) + raw[24:]
    path = write(tmp_path, "x.png", patched)
    assert rule_of(path, inspect_image) == "bad-dimensions"
    assert rule_of(path, validate_image) == "bad-dimensions"


def test_jpeg_with_zero_height_is_refused(tmp_path: Path) -> None:
    raw = (MEDIA / "portrait.jpg").read_bytes()
    sof = raw.index(b"\xff\xc0")
    patched = raw[: sof + 5] + b"\x00\x00" + raw[sof + 7 :]
    assert rule_of(write(tmp_path, "x.jpg", patched), inspect_image) == "bad-dimensions"


def _tkhd_size_offset(raw: bytes) -> int:
    tkhd = raw.index(b"tkhd")
    assert raw[tkhd + 4] == 0  # version 0: width and height are the last 8 bytes of 84
    return tkhd + 4 + 76


def test_mp4_with_zero_track_size_falls_back_to_its_sample_entry(tmp_path: Path) -> None:
    raw = (MEDIA / "d3.0.mp4").read_bytes()
    at = _tkhd_size_offset(raw)
    info = inspect_video(write(tmp_path, "x.mp4", raw[:at] + bytes(8) + raw[at + 8 :]))
    assert (info.width, info.height) == (64, 48)


def test_mp4_with_no_size_anywhere_is_refused(tmp_path: Path) -> None:
    raw = bytearray((MEDIA / "d3.0.mp4").read_bytes())
    at = _tkhd_size_offset(bytes(raw))
    raw[at : at + 8] = bytes(8)
    entry = raw.index(b"avc1", raw.index(b"stsd"))  # width and height sit 28 bytes on
    raw[entry + 28 : entry + 32] = bytes(4)
    assert rule_of(write(tmp_path, "x.mp4", bytes(raw))) == "bad-dimensions"


def test_matroska_with_zero_width_is_refused(tmp_path: Path) -> None:
    raw = (MEDIA / "matroska.mkv").read_bytes()
    at = raw.index(b"\xb0\x81\x40")  # PixelWidth = 64
    patched = raw[: at + 2] + b"\x00" + raw[at + 3 :]
    assert rule_of(write(tmp_path, "x.mkv", patched)) == "bad-dimensions"


# --- element budgets: millions of tiny structures are refused by count, not read one by one ---


def _mp4_tiny_top_level() -> bytes:
    ftyp = (MEDIA / "faststart.mp4").read_bytes()[:32]
    return ftyp + b"\x00\x00\x00\x08free" * (TWO_MB // 8)


def _mp4_tiny_in_index() -> bytes:
    raw = (MEDIA / "faststart.mp4").read_bytes()
    tiny = b"\x00\x00\x00\x08free" * (TWO_MB // 8)
    moov = struct.pack(">I", 8 + len(tiny)) + b"moov" + tiny
    return raw[:32] + moov + raw[top_boxes(raw)[b"free"][0] :]


def _matroska_tiny(cluster: bytes) -> bytes:
    raw = (MEDIA / "piped.mkv").read_bytes()
    segment = raw.index(b"\x18\x53\x80\x67")
    void = b"\xec\x80"  # a Void element with no payload: two bytes
    return raw[: segment + 12] + cluster + void * (TWO_MB // 2)


def _png_tiny() -> bytes:
    raw = (MEDIA / "portrait.png").read_bytes()
    return raw[:33] + b"\x00\x00\x00\x00tEXt\x00\x00\x00\x00" * (TWO_MB // 12) + raw[-12:]


def _jpeg_tiny(segment: bytes) -> bytes:
    raw = (MEDIA / "portrait.jpg").read_bytes()
    return raw[:2] + segment * (TWO_MB // len(segment)) + raw[2:]


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("top.mp4", _mp4_tiny_top_level),
        ("index.mp4", _mp4_tiny_in_index),
        ("segment.mkv", lambda: _matroska_tiny(b"")),
        ("cluster.mkv", lambda: _matroska_tiny(CLUSTER_ID + b"\x01" + b"\xff" * 7)),
        ("chunks.png", _png_tiny),
        ("comments.jpg", lambda: _jpeg_tiny(b"\xff\xfe\x00\x02")),
        ("fill.jpg", lambda: _jpeg_tiny(b"\xff")),
    ],
)
def test_a_file_of_tiny_elements_exhausts_the_element_budget(
    tmp_path: Path, name: str, build: Callable[[], bytes]
) -> None:
    data = build()
    assert len(data) >= TWO_MB
    inspect = inspect_image if name.endswith((".png", ".jpg")) else inspect_video
    assert rule_of(write(tmp_path, name, data), inspect) == "element-budget"


# --- unreadable paths ---------------------------------------------------------------------

PUBLIC = [inspect_image, inspect_video, validate_image, validate_video]


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "absent.mp4"


def _directory(tmp_path: Path) -> Path:
    return tmp_path


def _broken_symlink(tmp_path: Path) -> Path:
    link = tmp_path / "link.mp4"
    link.symlink_to(tmp_path / "gone.mp4")
    return link


def _fifo(tmp_path: Path) -> Path:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)  # opening it for reading must not wait for a writer
    return fifo


@pytest.mark.parametrize("make", [_missing, _directory, _broken_symlink, _fifo])
@pytest.mark.parametrize("check", PUBLIC)
def test_unreadable_path_is_a_media_validation_error(
    tmp_path: Path, make: Callable[[Path], Path], check: Callable[[Path], Any]
) -> None:
    path = make(tmp_path)
    assert rule_of(path, check) == "unreadable"
    with pytest.raises(MediaValidationError, match=str(path)):
        check(path)


@pytest.mark.parametrize("check", PUBLIC)
def test_path_with_a_nul_byte_is_unreadable(check: Callable[[str], Any]) -> None:
    with pytest.raises(MediaValidationError) as caught:
        check("clip\x00.mp4")
    assert caught.value.rule == "unreadable"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
@pytest.mark.parametrize("check", PUBLIC)
def test_file_without_read_permission_is_unreadable(
    tmp_path: Path, check: Callable[[Path], Any]
) -> None:
    path = write(tmp_path, "locked.mp4", (MEDIA / "d3.0.mp4").read_bytes())
    path.chmod(0)
    assert rule_of(path, check) == "unreadable"


@pytest.mark.parametrize("check", PUBLIC)
def test_permission_denied_is_unreadable(
    monkeypatch: pytest.MonkeyPatch, check: Callable[[Path], Any]
) -> None:
    # Runs as root too, where chmod cannot deny a read: the open itself is made to refuse.
    def refuse(*_args: object, **_kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(MediaValidationError, match="Permission denied") as caught:
        check(MEDIA / "d3.0.mp4")
    assert caught.value.rule == "unreadable"
