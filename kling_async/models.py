"""Plain, frozen value objects of the library; each checks itself when built (no I/O here).

Does no I/O, no clock; knows the rules (rules.py), not the wire format or the network.
"""

from __future__ import annotations

import enum
import math
import operator
import reprlib
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

from .errors import ConfigurationError
from .rules import (
    BACKGROUND_SOURCES,
    MAX_PROMPT_CHARS,
    MODE_SPELLINGS,
    MODEL_NAME,
    MOTION_MODELS,
    ORIENTATIONS,
    max_video_seconds,
    takes_background_source,
    wire_mode,
)

__all__ = [
    "MAX_PROMPT_CHARS",
    "MODEL_NAME",
    "BackgroundSource",
    "CharacterOrientation",
    "Mode",
    "ModeSpelling",
    "MotionControlInput",
    "MotionModel",
    "PollSchedule",
    "RateLimit",
    "Task",
    "TaskState",
    "UploadedFile",
    "Validator",
    "as_mode",
    "check_background_source",
    "http_url",
    "is_http_url",
    "one_of",
    "optional_text",
]


CharacterOrientation = Literal["image", "video"]
#: A mode as sent on the wire.
Mode = Literal["720p", "1080p"]
#: A mode as a caller may spell it: ``std`` is 720p and ``pro`` 1080p (``rules.MODE_SPELLINGS``).
ModeSpelling = Literal["720p", "1080p", "std", "pro"]
#: The motion-control models validated here (any other goes through ``create_task(model, input)``).
MotionModel = Literal["kling-2.6/motion-control", "kling-3.0/motion-control"]
#: Where a 3.0 clip's background comes from (the service's default: ``input_video``).
BackgroundSource = Literal["input_video", "input_image"]


#: An attrs validator: ``validator(instance, attribute, value)`` raises or returns None.
Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

# Values quoted in error messages are cut short: a wrong 10 MB prompt must not fill a log.
_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60


def is_http_url(url: str) -> bool:
    """Tell whether ``url`` is an absolute http(s) URL with a host."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def one_of(name: str, allowed: Iterable[str]) -> Validator:
    """A validator raising ``ConfigurationError`` unless the value is one of ``allowed``."""
    choices = tuple(allowed)
    listed = ", ".join(repr(c) for c in choices)

    def check(_inst: object, _attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, str) or value not in choices:
            raise ConfigurationError(f"{name} must be one of {listed}; got {_short.repr(value)}")

    return check


def http_url(name: str) -> Validator:
    """A validator raising ``ConfigurationError`` unless the value is an absolute http(s) URL."""

    def check(_inst: object, _attribute: attrs.Attribute[Any], value: Any) -> None:
        if not is_http_url(value):
            raise ConfigurationError(
                f"{name} must be an absolute http(s) URL; got {_short.repr(value)}"
            )

    return check


def optional_text(name: str, max_chars: int) -> Validator:
    """A validator raising ``ConfigurationError`` unless the value is None or a short string."""

    def check(_inst: object, _attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, str):
            raise ConfigurationError(f"{name} must be a string or None; got {type(value).__name__}")
        if len(value) > max_chars:
            raise ConfigurationError(
                f"{name} has {len(value)} characters; at most {max_chars} are allowed"
            )

    return check


def _bounded(
    name: str,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
) -> Validator:
    """A validator raising ``ConfigurationError`` unless a number lies within the bounds."""
    rules: list[tuple[float | None, Callable[[Any, Any], Any], str]] = [
        (above, operator.gt, "greater than"),
        (at_least, operator.ge, "at least"),
        (below, operator.lt, "less than"),
        (at_most, operator.le, "at most"),
    ]

    def check(_inst: object, _attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise ConfigurationError(f"{name} must be a number; got {_short.repr(value)}")
        for bound, holds, words in rules:
            if bound is not None and not holds(value, bound):
                raise ConfigurationError(f"{name} must be {words} {bound:g}; got {value!r}")

    return check


def check_background_source(model: str | None, value: Any) -> None:
    """Raise ``ConfigurationError`` unless ``value`` is a ``background_source`` ``model`` takes.

    With ``model`` None (a job that leaves the model to its batch), only the value is judged.
    """
    if value is None:
        return
    if not isinstance(value, str) or value not in BACKGROUND_SOURCES:
        listed = ", ".join(repr(c) for c in BACKGROUND_SOURCES)
        raise ConfigurationError(
            f"background_source must be one of {listed} or None; got {_short.repr(value)}"
        )
    if model is not None and not takes_background_source(model):
        raise ConfigurationError(
            f"background_source is an input of kling-3.0/motion-control; {model} does not take "
            "it (pass model='kling-3.0/motion-control', or leave background_source out)"
        )


def as_mode(value: ModeSpelling) -> Mode:
    """A converter: the mode sent for a spelling (``rules.wire_mode``); others pass unchanged."""
    sent: Mode = wire_mode(value)  # type: ignore[assignment]
    return sent


def _background_source(inst: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
    check_background_source(inst.model, value)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigurationError(message)


@attrs.frozen
class MotionControlInput:
    """The ``input`` of a motion-control task: one hosted image, one hosted video, and options.

    ``model`` is ``kling-2.6/motion-control`` (the default) or ``kling-3.0/motion-control``;
    ``background_source`` (``input_video`` or ``input_image``) is a 3.0 input, refused on 2.6.
    ``mode`` may be spelled ``std``/``pro``: it holds (and sends) ``720p``/``1080p``. An invalid
    value raises ``ConfigurationError`` naming the field and what it allows.
    """

    image_url: str = attrs.field(validator=http_url("image_url"))
    video_url: str = attrs.field(validator=http_url("video_url"))
    prompt: str | None = attrs.field(
        default=None, validator=optional_text("prompt", MAX_PROMPT_CHARS)
    )
    character_orientation: CharacterOrientation = attrs.field(
        default="video", validator=one_of("character_orientation", ORIENTATIONS)
    )
    mode: Mode = attrs.field(
        default="720p", converter=as_mode, validator=one_of("mode", MODE_SPELLINGS)
    )
    model: MotionModel = attrs.field(default=MODEL_NAME, validator=one_of("model", MOTION_MODELS))
    background_source: BackgroundSource | None = attrs.field(
        default=None, validator=_background_source
    )

    @property
    def max_video_seconds(self) -> float:
        """Longest reference video this orientation allows (10 s for image, 30 s for video)."""
        return max_video_seconds(self.character_orientation)


class TaskState(enum.Enum):
    """Where a task is in its life: ``waiting → queuing → generating → success | fail``."""

    WAITING = "waiting"
    QUEUING = "queuing"
    GENERATING = "generating"
    SUCCESS = "success"
    FAIL = "fail"

    @property
    def is_terminal(self) -> bool:
        """True for ``success`` and ``fail``: the task will not change again."""
        return self in (TaskState.SUCCESS, TaskState.FAIL)


@attrs.frozen
class Task:
    """A task as the service reports it (recordInfo or a callback)."""

    task_id: str
    state: TaskState
    model: str = MODEL_NAME
    result_urls: tuple[str, ...] = ()
    fail_code: str | None = None
    fail_msg: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    #: Processing time in seconds (the service's ``costTime``; older docs said milliseconds).
    cost_time: float | None = None
    credits_consumed: float | None = None
    #: The input the task was created with, parsed from ``param`` when the service sent it
    #: (None for a model other than motion control: see ``create_task(model, input)``).
    input: MotionControlInput | None = None
    callback_url: str | None = None
    #: The service's state text when it is none of the five documented ones; ``state`` then
    #: reads ``GENERATING`` (not terminal), so a wait goes on instead of failing. None otherwise.
    raw_state: str | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the task succeeded or failed."""
        return self.state.is_terminal


@attrs.frozen
class RateLimit:
    """At most ``max_requests`` requests in any window of ``window`` seconds."""

    max_requests: int = attrs.field(validator=_bounded("max_requests", above=0))
    window: float = attrs.field(converter=float, validator=_bounded("window", above=0.0))

    def scaled(self, factor: float) -> RateLimit:
        """The same limit with its window multiplied by ``factor`` (for a time-scaled simulator)."""
        return RateLimit(self.max_requests, self.window * factor)

    @property
    def rate(self) -> float:
        """Requests per second this limit allows on average."""
        return self.max_requests / self.window


def _check_phases(
    _inst: object,
    _attribute: attrs.Attribute[tuple[tuple[float, float], ...]],
    value: tuple[tuple[float, float], ...],
) -> None:
    _require(bool(value), "phases must not be empty")
    previous = 0.0
    for until, interval in value:
        _require(interval > 0, f"phases: each poll interval must be positive; got {interval!r}")
        _require(until > previous, "phases: the phase ends must increase")
        previous = until
    _require(math.isinf(value[-1][0]), "phases: the last phase must last forever (math.inf)")


@attrs.frozen
class PollSchedule:
    """When to ask for a task's state: often at first, then less and less (kie-api.md section 2.1).

    ``phases`` is a tuple of ``(until_seconds, interval_seconds)``: while the time since creation
    is below ``until_seconds``, poll every ``interval_seconds``. The default follows the service's
    guidance: every 3 s for the first 30 s, every 8 s until 2 min, then every 15 s. Each interval
    is spread by ``±jitter`` (a fraction) so that many waits do not poll in step. When the query
    limit is the bottleneck, the session skips early polls of new tasks until ``expected_lead``
    of the render time it has observed, spending its queries on tasks likely to be done.
    """

    phases: tuple[tuple[float, float], ...] = attrs.field(
        default=((30.0, 3.0), (120.0, 8.0), (math.inf, 15.0)), validator=_check_phases
    )
    first_delay: float = attrs.field(default=2.0, validator=_bounded("first_delay", at_least=0.0))
    jitter: float = attrs.field(default=0.1, validator=_bounded("jitter", at_least=0.0, below=1.0))
    #: When queries are scarce, a new task is first polled at this fraction of the render time
    #: seen on earlier tasks of the session (0 turns learning off).
    expected_lead: float = attrs.field(
        default=0.8, validator=_bounded("expected_lead", at_least=0.0, at_most=1.0)
    )

    def interval_at(self, elapsed: float) -> float:
        """Nominal interval between polls once ``elapsed`` seconds have passed since creation."""
        for until, interval in self.phases:
            if elapsed < until:
                return interval
        return self.phases[-1][1]

    def next_delay(
        self, elapsed: float, polls_done: int, spread: float, expected: float | None = None
    ) -> float:
        """Seconds to sleep before the next poll; ``spread`` in [0, 1) picks within the jitter.

        ``expected`` is a render time learned from earlier tasks: when given, polls before
        ``expected_lead`` of it are skipped, which saves queries when they are scarce.
        """
        base = self.first_delay if polls_done == 0 else self.interval_at(elapsed)
        delay = base * (1.0 + self.jitter * (2.0 * spread - 1.0))
        if expected is not None:
            delay = max(delay, expected * self.expected_lead * (1.0 + 0.1 * spread) - elapsed)
        return delay

    def scaled(self, factor: float) -> PollSchedule:
        """The same schedule with every duration multiplied by ``factor``."""
        return PollSchedule(
            phases=tuple((until * factor, interval * factor) for until, interval in self.phases),
            first_delay=self.first_delay * factor,
            jitter=self.jitter,
            expected_lead=self.expected_lead,
        )


#: How long an uploaded file is taken to live: the shortest the docs state (kie-api.md section 4).
UPLOAD_LIFETIME = timedelta(hours=24)


@attrs.frozen
class UploadedFile:
    """A file hosted by the File Upload API; pass ``url`` to a task."""

    url: str
    file_name: str
    file_path: str
    size_bytes: int
    mime_type: str
    uploaded_at: datetime
    expires_at: datetime

    def is_usable_at(self, when: datetime, margin: timedelta = timedelta(minutes=30)) -> bool:
        """True if the file is still hosted at ``when`` with ``margin`` to spare."""
        return when + margin < self.expires_at
