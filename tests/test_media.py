"""Header-only media inspection on real encoder output, against ffprobe's numbers."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from kling_async import (
    MediaValidationError,
    inspect_image,
    inspect_video,
    validate_image,
    validate_video,
)
from kling_async.media import MAX_IMAGE_BYTES, MAX_VIDEO_BYTES

from .conftest import MEDIA

MANIFEST: dict[str, dict[str, float | int | None]] = json.loads(
    (MEDIA / "manifest.json").read_text()
)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_duration_and_size_agree_with_ffprobe(name: str) -> None:
    truth = MANIFEST[name]
    info = inspect_video(MEDIA / name)
    assert info.container_duration_s == pytest.approx(truth["format_duration"], abs=0.05)
    if truth["video_duration"] is not None:
        assert info.duration_s == pytest.approx(truth["video_duration"], abs=0.05)
    assert info.rotation == truth["rotation"]
    swapped = truth["rotation"] in (90, 270)
    assert (info.width, info.height) == (
        (truth["height"], truth["width"]) if swapped else (truth["width"], truth["height"])
    )
    assert info.size_bytes == (MEDIA / name).stat().st_size


@pytest.mark.parametrize(
    ("name", "container"),
    [
        ("faststart.mp4", "mp4"),
        ("d10.0.mp4", "mp4"),  # moov at the end
        ("fragmented.mp4", "mp4"),
        ("quicktime.mov", "mov"),
        ("matroska.mkv", "mkv"),
        ("piped.mkv", "mkv"),  # written to a pipe (test_media_truth builds one without Duration)
        ("webm.webm", "webm"),
    ],
)
def test_container_is_judged_by_content(tmp_path: Path, name: str, container: str) -> None:
    renamed = tmp_path / "clip.dat"
    shutil.copy(MEDIA / name, renamed)
    assert inspect_video(renamed).container == container


@pytest.mark.parametrize(
    ("name", "orientation", "rule"),
    [
        ("d2.9.mp4", "video", "min-duration"),
        ("d3.0.mp4", "video", None),
        ("d10.0.mp4", "image", None),
        ("aac10.mkv", "image", "max-duration"),  # 10.128 s: over 10 s even with tolerance
        ("d10.5.mp4", "image", "max-duration"),
        ("d10.5.mp4", "video", None),
        ("audio_longer.mp4", "image", None),  # video 10.0 s, audio 10.5 s: judged on the video
        ("d30.0.mp4", "video", None),
        ("d30.2.mp4", "video", "max-duration"),
        ("webm.webm", "video", "format"),
    ],
)
def test_video_rules_at_each_boundary(name: str, orientation: str, rule: str | None) -> None:
    if rule is None:
        assert validate_video(MEDIA / name, orientation).duration_s > 0  # type: ignore[arg-type]
    else:
        with pytest.raises(MediaValidationError) as caught:
            validate_video(MEDIA / name, orientation)  # type: ignore[arg-type]
        assert caught.value.rule == rule
        assert caught.value.path == str(MEDIA / name)
        assert name in str(caught.value)


def test_webm_error_says_the_service_is_unlikely_to_take_it() -> None:
    with pytest.raises(MediaValidationError, match="unlikely to take it"):
        validate_video(MEDIA / "webm.webm")


@pytest.mark.parametrize(
    ("name", "fmt", "size"),
    [
        ("portrait.png", "png", (400, 600)),
        ("portrait.jpg", "jpeg", (400, 600)),
        ("progressive.jpg", "jpeg", (640, 480)),
    ],
)
def test_image_format_and_size(name: str, fmt: str, size: tuple[int, int]) -> None:
    info = validate_image(MEDIA / name)
    assert (info.format, info.width, info.height) == (fmt, *size)


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("small.png", "min-dimensions"),  # 300 px is not over 300
        ("wide.png", "aspect-ratio"),  # 2.6:1
        ("animated.gif", "format"),
        ("photo.webp", "format"),
    ],
)
def test_image_rules(name: str, rule: str) -> None:
    with pytest.raises(MediaValidationError) as caught:
        validate_image(MEDIA / name)
    assert caught.value.rule == rule


def test_gif_renamed_png_is_caught_by_content(tmp_path: Path) -> None:
    fake = tmp_path / "character.png"
    shutil.copy(MEDIA / "animated.gif", fake)
    with pytest.raises(MediaValidationError, match="GIF"):
        validate_image(fake)


def test_exif_rotation_swaps_displayed_size(tmp_path: Path) -> None:
    raw = (MEDIA / "portrait.jpg").read_bytes()
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + b"\x00\x00\x00\x00"
    app1 = b"Exif\x00\x00" + tiff
    rotated = tmp_path / "rotated.jpg"
    rotated.write_bytes(raw[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + raw[2:])
    info = inspect_image(rotated)
    assert (info.width, info.height) == (600, 400)


def test_oversized_files_are_refused_without_reading_them(tmp_path: Path) -> None:
    image = tmp_path / "big.png"
    image.write_bytes((MEDIA / "portrait.png").read_bytes())
    with image.open("r+b") as fh:
        fh.truncate(MAX_IMAGE_BYTES + 1)  # sparse: no data written
    with pytest.raises(MediaValidationError) as caught:
        validate_image(image)
    assert caught.value.rule == "max-size"
    video = tmp_path / "big.mkv"
    video.write_bytes((MEDIA / "matroska.mkv").read_bytes())
    with video.open("r+b") as fh:
        fh.truncate(MAX_VIDEO_BYTES + 1)
    with pytest.raises(MediaValidationError) as caught:
        validate_video(video)
    assert caught.value.rule == "max-size"


@pytest.mark.parametrize("name", ["d10.0.mp4", "faststart.mp4", "fragmented.mp4", "quicktime.mov"])
def test_truncated_mp4_is_caught(tmp_path: Path, name: str) -> None:
    raw = (MEDIA / name).read_bytes()
    cut = tmp_path / name
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(MediaValidationError) as caught:
        inspect_video(cut)
    assert caught.value.rule in ("truncated", "structure")


def test_truncated_matroska_is_caught(tmp_path: Path) -> None:
    raw = (MEDIA / "matroska.mkv").read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MediaValidationError, match="truncated"):
        inspect_video(cut)


@pytest.mark.parametrize(
    ("content", "rule"),
    [
        (b"", "format"),
        (b"hello world, not a video at all", "format"),
        (b"\x00\x00\x00\x08ftyp", "truncated"),
    ],
)
def test_empty_and_mislabelled_files(tmp_path: Path, content: bytes, rule: str) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    with pytest.raises(MediaValidationError) as caught:
        inspect_video(path)
    assert caught.value.rule == rule


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(MediaValidationError, match="no such file"):
        inspect_video(tmp_path / "absent.mp4")
    with pytest.raises(MediaValidationError, match="directory"):
        inspect_image(tmp_path)


def test_image_given_as_video_names_the_rule() -> None:
    with pytest.raises(MediaValidationError) as caught:
        validate_video(MEDIA / "portrait.png")
    assert caught.value.rule == "format" and "PNG" in caught.value.detail


@pytest.mark.parametrize(
    "name", ["d10.0.mp4", "fragmented.mp4", "matroska.mkv", "piped.mkv", "portrait.jpg"]
)
def test_mutated_files_raise_only_media_validation_errors(tmp_path: Path, name: str) -> None:
    import random

    raw = bytearray((MEDIA / name).read_bytes())
    rng = random.Random(name)
    target = tmp_path / name
    for _ in range(300):
        mutated = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            # Hit the header region hardest: that is what the parsers read.
            pos = (
                rng.randrange(min(len(mutated), 4096))
                if rng.random() < 0.7
                else rng.randrange(len(mutated))
            )
            mutated[pos] = rng.randrange(256)
        target.write_bytes(
            bytes(mutated[: rng.choice([len(mutated), rng.randrange(1, len(mutated))])])
        )
        try:
            if name.endswith(".jpg"):
                inspect_image(target)
            else:
                inspect_video(target)
        except MediaValidationError:
            pass


def test_every_rule_a_file_can_break_is_a_public_rule_and_names_its_input(tmp_path: Path) -> None:
    import re

    from kling_async import MediaValidationError, Rule, validate_image, validate_video

    media = Path(__file__).resolve().parent.parent / "kling_async" / "media"
    source = "".join(p.read_text() for p in media.glob("*.py"))
    raised = set(
        re.findall(r'(?:MediaValidationError\([^,]+|ParseError\()\s*,?\s*"([a-z-]+)"', source)
    )
    assert raised and raised <= {rule.value for rule in Rule}, raised - {r.value for r in Rule}
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    for check, medium in ((validate_image, "image"), (validate_video, "video")):
        with pytest.raises(MediaValidationError) as caught:
            check(bad)
        assert caught.value.medium == medium and caught.value.rule in set(Rule)
