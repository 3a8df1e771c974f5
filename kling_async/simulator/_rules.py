"""The service's rules as the simulator knows them, written from the API notes, not the client.

The simulator is a test double: it must judge requests its own way, or a bug of the client's
(a media parser that misreads a duration, say) would pass on both sides. Nothing here is imported
from the client library.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from urllib.parse import urlsplit

import attrs

__all__ = [
    "BACKGROUND_SOURCES",
    "BACKGROUND_SOURCE_MODELS",
    "CREDITS_PER_SECOND",
    "DURATION_TOLERANCE",
    "MAX_PROMPT_CHARS",
    "MODEL_3_0",
    "MODEL_NAME",
    "MODES",
    "MOTION_MODELS",
    "ORIENTATIONS",
    "RateWindow",
    "TaskState",
    "is_http_url",
    "sign",
]

#: kie-api.md section 1.1.
MODEL_NAME = "kling-2.6/motion-control"
#: kie-api.md section 9b: the same contract and media rules, plus ``background_source``.
MODEL_3_0 = "kling-3.0/motion-control"
MOTION_MODELS = (MODEL_NAME, MODEL_3_0)
#: kie-api.md section 1.2.
MAX_PROMPT_CHARS = 2500
#: Only the schema's values: ``std``/``pro`` are refused (3.0 is reported to, section 9b).
MODES = ("720p", "1080p")
ORIENTATIONS = ("image", "video")
#: ``background_source`` is a 3.0 input; 2.6's schema has no such field.
BACKGROUND_SOURCES = ("input_video", "input_image")
BACKGROUND_SOURCE_MODELS = (MODEL_3_0,)
#: Credits per second of output, by model and mode (kie-api.md sections 7 and 9b).
CREDITS_PER_SECOND = {
    MODEL_NAME: {"720p": 11.0, "1080p": 18.0},
    MODEL_3_0: {"720p": 20.0, "1080p": 27.0},
}
#: Durations are judged to the nearest 0.05 s, as a container's rounding would be.
DURATION_TOLERANCE = 0.05


class TaskState(enum.Enum):
    """A task's state on the service (kie-api.md section 2.1)."""

    WAITING = "waiting"
    QUEUING = "queuing"
    GENERATING = "generating"
    SUCCESS = "success"
    FAIL = "fail"

    @property
    def is_terminal(self) -> bool:
        """True for ``success`` and ``fail``."""
        return self in (TaskState.SUCCESS, TaskState.FAIL)


@attrs.frozen
class RateWindow:
    """At most ``max_requests`` requests per ``window`` seconds (a client ``RateLimit`` fits)."""

    max_requests: int
    window: float


def is_http_url(url: str) -> bool:
    """True for an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def sign(task_id: str, timestamp: str, key: str) -> str:
    """The callback signature (kie-api.md section 3.2): Base64 HMAC-SHA256 of ``id.timestamp``."""
    digest = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()
