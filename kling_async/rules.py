"""The service's rules and prices, as data: one place for what kie.ai accepts and charges.

Pure values, no I/O. The media validator, the models and the cost figures read them from here;
the simulator keeps its own copy on purpose (a test double must not share the code it tests).
Sources: ``shared/kie-api.md`` sections 1.2 (inputs), 6 (limits) and 7 (prices).

Touches nothing: no I/O, no clock, no other module of the library.
"""

from __future__ import annotations

import enum

__all__ = [
    "CREDITS_PER_SECOND",
    "DOLLARS_PER_CREDIT",
    "DURATION_TOLERANCE",
    "MAX_ASPECT",
    "MAX_DIMENSION",
    "MAX_IMAGE_BYTES",
    "MAX_PROMPT_CHARS",
    "MAX_VIDEO_BYTES",
    "MIN_ASPECT",
    "MIN_IMAGE_SIDE",
    "MIN_VIDEO_SECONDS",
    "MODEL_NAME",
    "MODES",
    "ORIENTATIONS",
    "Rule",
    "estimate_credits",
    "max_video_seconds",
]

#: The only model this library speaks to (section 1.1).
MODEL_NAME = "kling-2.6/motion-control"
#: Longest prompt the service accepts (section 1.2).
MAX_PROMPT_CHARS = 2500
ORIENTATIONS: tuple[str, ...] = ("image", "video")
MODES: tuple[str, ...] = ("720p", "1080p")

#: Image: JPEG or PNG, at most 10 MB, each side over 300 px, aspect 2:5 to 5:2 (width/height).
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MIN_IMAGE_SIDE = 300  # each side must be strictly greater
MIN_ASPECT, MAX_ASPECT = 0.4, 2.5
#: Video: MP4, MOV or MKV, at most 100 MB, 3 s to 30 s (10 s when the orientation is the image's).
MAX_VIDEO_BYTES = 100 * 1024 * 1024
MIN_VIDEO_SECONDS = 3.0
#: Sides beyond this are a damaged header, not a picture (larger than any 16K frame).
MAX_DIMENSION = 16384
#: Encoders pad audio (AAC priming makes a "10.0 s" clip 10.023 s); judge durations this loosely.
DURATION_TOLERANCE = 0.05

#: Credits per second of the motion video, by mode (section 7).
CREDITS_PER_SECOND = {"720p": 11.0, "1080p": 18.0}
#: What one credit costs in dollars (section 9b: about $0.005).
DOLLARS_PER_CREDIT = 0.005


def max_video_seconds(character_orientation: str) -> float:
    """Longest reference video allowed: 10 s with the image's orientation, else 30 s."""
    return 10.0 if character_orientation == "image" else 30.0


def estimate_credits(video_seconds: float, mode: str = "720p") -> float:
    """Credits a clip is expected to cost: the per-second price of ``mode`` times its length.

    The service's rounding is not documented (kie-api.md section 7 marks it unknown); this is the
    exact product, rounded to cents of a credit.
    """
    if mode not in CREDITS_PER_SECOND:
        raise ValueError(f"mode must be one of {', '.join(CREDITS_PER_SECOND)}; got {mode!r}")
    if not video_seconds >= 0:
        raise ValueError(f"video_seconds must be a number of seconds; got {video_seconds!r}")
    return round(CREDITS_PER_SECOND[mode] * video_seconds, 2)


class Rule(enum.StrEnum):
    """The rules a local file can break (``MediaValidationError.rule``); each equals its text."""

    UNREADABLE = "unreadable"
    FORMAT = "format"
    STRUCTURE = "structure"
    TRUNCATED = "truncated"
    NO_VIDEO_TRACK = "no-video-track"
    NO_DURATION = "duration"
    BAD_DURATION = "bad-duration"
    BAD_DIMENSIONS = "bad-dimensions"
    ELEMENT_BUDGET = "element-budget"
    MAX_SIZE = "max-size"
    MIN_DIMENSIONS = "min-dimensions"
    ASPECT_RATIO = "aspect-ratio"
    MIN_DURATION = "min-duration"
    MAX_DURATION = "max-duration"
