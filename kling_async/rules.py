"""The service's rules and prices, as data: one place for what kie.ai accepts and charges.

Pure values, no I/O. The media validator, the models and the cost figures read them from here;
the simulator keeps its own copy on purpose (a test double must not share the code it tests).
Sources: ``shared/kie-api.md`` sections 1.2 (inputs), 6 (limits), 7 and 9b (prices, 3.0).

Touches nothing: no I/O, no clock, no other module of the library.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "BACKGROUND_SOURCES",
    "CREDITS_PER_SECOND",
    "CREDITS_PER_SECOND_BY_MODEL",
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
    "MODELS_WITH_BACKGROUND_SOURCE",
    "MODEL_2_6",
    "MODEL_3_0",
    "MODEL_NAME",
    "MODES",
    "MODE_SPELLINGS",
    "MOTION_MODELS",
    "ORIENTATIONS",
    "Rule",
    "estimate_credits",
    "max_video_seconds",
    "takes_background_source",
    "wire_mode",
]

#: The default model (section 1.1).
MODEL_NAME: Final = "kling-2.6/motion-control"
#: Kling 3.0 motion control: the same contract and media rules, plus ``background_source``
#: (section 9b).
MODEL_3_0: Final = "kling-3.0/motion-control"
#: The default model, by its version.
MODEL_2_6: Final = MODEL_NAME
#: The motion-control models this library validates; others go through the generic,
#: unvalidated ``create_task(model, input)``.
MOTION_MODELS: tuple[str, ...] = (MODEL_NAME, MODEL_3_0)
#: Longest prompt the service accepts (section 1.2).
MAX_PROMPT_CHARS = 2500
ORIENTATIONS: tuple[str, ...] = ("image", "video")
#: The modes as sent on the wire.
MODES: tuple[str, ...] = ("720p", "1080p")
#: Every spelling of a mode a caller may use, and what is sent for it. The docs describe
#: ``std`` (720p) and ``pro`` (1080p) while the schemas take ``720p``/``1080p``, and 3.0 is
#: reported to refuse ``std``/``pro`` (section 9b): this table is the one place to change if
#: the service changes its mind.
MODE_SPELLINGS: dict[str, str] = {"720p": "720p", "1080p": "1080p", "std": "720p", "pro": "1080p"}
#: Where a 3.0 clip's background comes from; the service's default is ``input_video``.
BACKGROUND_SOURCES: tuple[str, ...] = ("input_video", "input_image")
#: The models whose input takes ``background_source`` (2.6's schema has no such field).
MODELS_WITH_BACKGROUND_SOURCE: tuple[str, ...] = (MODEL_3_0,)

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

#: Credits per second of the motion video, by model, then by mode (sections 7 and 9b).
CREDITS_PER_SECOND_BY_MODEL: dict[str, dict[str, float]] = {
    MODEL_NAME: {"720p": 11.0, "1080p": 18.0},
    MODEL_3_0: {"720p": 20.0, "1080p": 27.0},
}
#: Credits per second of the default model (2.6), by mode.
CREDITS_PER_SECOND = CREDITS_PER_SECOND_BY_MODEL[MODEL_NAME]
#: What one credit costs in dollars (section 9b: about $0.005).
DOLLARS_PER_CREDIT = 0.005


def max_video_seconds(character_orientation: str) -> float:
    """Longest reference video allowed: 10 s with the image's orientation, else 30 s."""
    return 10.0 if character_orientation == "image" else 30.0


def wire_mode(mode: str) -> str:
    """The mode as sent for any accepted spelling (``std`` gives ``720p``, ``pro`` ``1080p``).

    A value that is no spelling of a mode comes back unchanged, for the caller's check to refuse.
    """
    return MODE_SPELLINGS.get(mode, mode) if isinstance(mode, str) else mode


def takes_background_source(model: str) -> bool:
    """True for the models whose input has ``background_source`` (3.0, not 2.6)."""
    return model in MODELS_WITH_BACKGROUND_SOURCE


def estimate_credits(video_seconds: float, mode: str = "720p", *, model: str = MODEL_NAME) -> float:
    """Credits a clip is expected to cost: ``model``'s price per second at ``mode``, times seconds.

    ``mode`` may be any spelling (``720p``/``std``, ``1080p``/``pro``). The service's rounding
    is not documented (kie-api.md section 7 marks it unknown); this is the exact product,
    rounded to cents of a credit.
    """
    prices = CREDITS_PER_SECOND_BY_MODEL.get(model)
    if prices is None:
        known = ", ".join(CREDITS_PER_SECOND_BY_MODEL)
        raise ValueError(f"model must be one of {known} (no price is known); got {model!r}")
    sent = wire_mode(mode)
    if sent not in prices:
        spellings = ", ".join(MODE_SPELLINGS)
        raise ValueError(f"mode must be one of {spellings}; got {mode!r}")
    if not video_seconds >= 0:
        raise ValueError(f"video_seconds must be a number of seconds; got {video_seconds!r}")
    return round(prices[sent] * video_seconds, 2)


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
