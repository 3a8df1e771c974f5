"""Local media checks, judged by content and read from headers only (kie-api.md section 1.2).

Nothing here decodes a frame or reads a whole file: MP4/MOV boxes are walked by seeking, Matroska
elements likewise, and images are read up to their frame header. Every failure to parse becomes a
:class:`~kling_async.errors.MediaValidationError` naming the file and the rule.

The reader is our own (about 600 lines, no dependency) rather than pymediainfo, PyAV, hachoir,
mutagen or pymp4: measured on this project's files, those either hang on damaged input, decode
frames, miss fragmented MP4 or QuickTime, or are GPL; this one matches ffprobe to 0.05 s on every
container, reads a few KB of a 100 MB file and is over 1000x faster than one ffprobe run
(``benchmarks/bench_upload.py``).

Sizes are read as binary megabytes (10 MB = 10 * 1024**2 bytes, 100 MB = 100 * 1024**2
bytes), the common
server-side reading; the service's docs do not say which they mean.
"""

from __future__ import annotations

import functools
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs

from ..errors import MediaValidationError
from ..rules import (
    DURATION_TOLERANCE,
    MAX_ASPECT,
    MAX_DIMENSION,
    MAX_IMAGE_BYTES,
    MAX_VIDEO_BYTES,
    MIN_ASPECT,
    MIN_IMAGE_SIDE,
    MIN_VIDEO_SECONDS,
    max_video_seconds,
)
from ._images import JPEG_MAGIC, PNG_MAGIC, read_jpeg, read_png
from ._matroska import EBML_MAGIC, read_matroska
from ._mp4 import TOP_LEVEL_TYPES, read_mp4
from ._reader import BoundedReader, ParseError

_F = TypeVar("_F", bound=Callable[..., Any])

__all__ = [
    "DURATION_TOLERANCE",
    "MAX_IMAGE_BYTES",
    "MAX_VIDEO_BYTES",
    "ImageInfo",
    "VideoInfo",
    "inspect_image",
    "inspect_video",
    "sniff_format",
    "validate_image",
    "validate_video",
]


ImageFormat = Literal["jpeg", "png"]
VideoContainer = Literal["mp4", "mov", "mkv", "webm"]

MIME_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
    "webm": "video/webm",
}


@attrs.frozen
class ImageInfo:
    """What an image's headers say: format, displayed size, file size."""

    format: ImageFormat
    width: int
    height: int
    size_bytes: int

    @property
    def mime_type(self) -> str:
        """The MIME type of the format."""
        return MIME_TYPES[self.format]


@attrs.frozen
class VideoInfo:
    """What a video's headers say; ``duration_s`` is the one the rules are judged on."""

    container: VideoContainer
    #: The video track's duration where the headers give it, else the container's.
    duration_s: float
    width: int
    height: int
    #: Clockwise rotation from the track matrix; ``width``/``height`` are as displayed.
    rotation: int
    size_bytes: int
    container_duration_s: float | None = None
    video_duration_s: float | None = None

    @property
    def mime_type(self) -> str:
        """The MIME type of the container."""
        return MIME_TYPES[self.container]


def sniff_format(head: bytes) -> str | None:
    """Name the format of a file from its first bytes (32 suffice): ``jpeg``, ``gif``, ``mp4``..."""
    if head.startswith(JPEG_MAGIC):
        return "jpeg"
    if head.startswith(PNG_MAGIC):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM":
        return "bmp"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypavif", b"ftypmif1"):
        return "heif"
    if head[4:8] in TOP_LEVEL_TYPES:
        return "mp4"
    if head.startswith(EBML_MAGIC):
        return "matroska"
    return None


def _open(path: Path) -> tuple[BoundedReader, str | None]:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below as not a file.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise MediaValidationError(path, "unreadable", "no such file") from exc
    except IsADirectoryError as exc:
        raise MediaValidationError(path, "unreadable", "is a directory, not a file") from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise MediaValidationError(path, "unreadable", detail) from exc
    _require_file(path, fd)
    reader = BoundedReader(os.fdopen(fd, "rb"))
    if reader.size == 0:
        reader.close()
        raise MediaValidationError(path, "format", "the file is empty")
    try:
        head = reader.read_at(0, 32)
    except ParseError as exc:
        reader.close()
        raise MediaValidationError(path, exc.rule, exc.detail) from exc
    return reader, sniff_format(head)


def _require_file(path: Path, fd: int) -> None:
    """Refuse (and close) ``fd`` unless it is a regular file: not a directory, FIFO or device."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        raise MediaValidationError(path, "unreadable", exc.strerror or str(exc)) from exc
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "is a directory" if stat.S_ISDIR(mode) else "is a device, FIFO or socket"
        raise MediaValidationError(path, "unreadable", f"{kind}, not a file")


def _check_size(path: Path, width: int, height: int) -> None:
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise MediaValidationError(
            path,
            "bad-dimensions",
            f"the headers say {width}x{height}; each side must be 1 to {MAX_DIMENSION} px",
        )


def _failure(path: Path, exc: BaseException) -> MediaValidationError:
    if isinstance(exc, ParseError):
        return MediaValidationError(path, exc.rule, exc.detail)
    return MediaValidationError(path, "structure", f"unreadable headers ({type(exc).__name__})")


def _judges(medium: str) -> Callable[[_F], _F]:
    """Mark the ``MediaValidationError`` a function raises with the input it judged."""

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def judged(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except MediaValidationError as exc:
                exc.medium = exc.medium or medium
                raise

        return judged  # type: ignore[return-value]

    return wrap


@_judges("image")
def inspect_image(path: str | os.PathLike[str]) -> ImageInfo:
    """Read an image's format and size from its headers; ``MediaValidationError`` if unreadable."""
    path = Path(path)
    reader, kind = _open(path)
    try:
        fmt: ImageFormat
        if kind == "png":
            fmt, size = "png", read_png(reader)
        elif kind == "jpeg":
            fmt, size = "jpeg", read_jpeg(reader)
        else:
            found = f"the content is {kind.upper()}" if kind else "the content is not an image"
            raise MediaValidationError(path, "format", f"{found}; only JPEG and PNG are accepted")
        _check_size(path, size.width, size.height)
        return ImageInfo(format=fmt, width=size.width, height=size.height, size_bytes=reader.size)
    except MediaValidationError:
        raise
    except Exception as exc:  # any parse failure is the file's fault, never a crash
        raise _failure(path, exc) from exc
    finally:
        reader.close()


@_judges("video")
def inspect_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Read a video's container, duration and size from its headers only."""
    path = Path(path)
    reader, kind = _open(path)
    try:
        container: VideoContainer
        if kind == "mp4":
            mp4 = read_mp4(reader)
            container = "mov" if mp4.is_quicktime else "mp4"
            video_s, container_s = mp4.video_duration, mp4.container_duration
            width, height, rotation = mp4.width, mp4.height, mp4.rotation
        elif kind == "matroska":
            mkv = read_matroska(reader)
            container = "webm" if mkv.doctype == "webm" else "mkv"
            video_s, container_s = mkv.video_duration, mkv.container_duration
            width, height, rotation = mkv.width, mkv.height, 0
        else:
            found = f"the content is {kind.upper()}" if kind else "the content is not a video"
            raise MediaValidationError(
                path, "format", f"{found}; only MP4, MOV and MKV videos are accepted"
            )
        for seconds in (video_s, container_s):
            # NaN passes every comparison with a limit; it and inf must never reach the rules.
            if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
                raise MediaValidationError(
                    path, "bad-duration", f"the headers give a duration of {seconds} s"
                )
        _check_size(path, width, height)
        duration = video_s if video_s else container_s
        if not duration:
            raise MediaValidationError(
                path,
                "duration",
                "the headers give no duration; remux the file (ffmpeg -i in -c copy out.mp4)",
            )
        return VideoInfo(
            container=container,
            duration_s=duration,
            width=width,
            height=height,
            rotation=rotation,
            size_bytes=reader.size,
            container_duration_s=container_s,
            video_duration_s=video_s,
        )
    except MediaValidationError:
        raise
    except Exception as exc:  # any parse failure is the file's fault, never a crash
        raise _failure(path, exc) from exc
    finally:
        reader.close()


@_judges("image")
def validate_image(path: str | os.PathLike[str]) -> ImageInfo:
    """Check an image against the service's rules; return its info or raise."""
    info = inspect_image(path)
    if info.size_bytes > MAX_IMAGE_BYTES:
        raise MediaValidationError(
            path, "max-size", f"{info.size_bytes / 1024**2:.1f} MB is over the 10 MB limit"
        )
    if min(info.width, info.height) <= MIN_IMAGE_SIDE:
        raise MediaValidationError(
            path,
            "min-dimensions",
            f"{info.width}x{info.height}: each side must be over {MIN_IMAGE_SIDE} px",
        )
    aspect = info.width / info.height
    if not MIN_ASPECT <= aspect <= MAX_ASPECT:
        raise MediaValidationError(
            path,
            "aspect-ratio",
            f"{info.width}x{info.height} (ratio {aspect:.2f}) is outside 2:5 to 5:2",
        )
    return info


@_judges("video")
def validate_video(
    path: str | os.PathLike[str], character_orientation: Literal["image", "video"] = "video"
) -> VideoInfo:
    """Check a video against the service's rules for ``character_orientation``."""
    info = inspect_video(path)
    if info.container == "webm":
        raise MediaValidationError(
            path,
            "format",
            "WebM is Matroska, but the service only lists MP4, MOV and MKV and is unlikely to "
            "take it; remux it to .mkv or .mp4",
        )
    if info.size_bytes > MAX_VIDEO_BYTES:
        raise MediaValidationError(
            path, "max-size", f"{info.size_bytes / 1024**2:.1f} MB is over the 100 MB limit"
        )
    longest = max_video_seconds(character_orientation)
    if info.duration_s < MIN_VIDEO_SECONDS - DURATION_TOLERANCE:
        raise MediaValidationError(
            path, "min-duration", f"{info.duration_s:.2f} s is shorter than 3 s"
        )
    if info.duration_s > longest + DURATION_TOLERANCE:
        raise MediaValidationError(
            path,
            "max-duration",
            f"{info.duration_s:.2f} s is longer than {longest:g} s, the limit when "
            f"character_orientation={character_orientation!r}",
        )
    return info
