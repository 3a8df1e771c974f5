"""Values of the batch layer: a job, its events, its outcome (no I/O here).

Does no I/O; never imports the client, the journal or the batch runner.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .errors import ConfigurationError
from .models import (
    BackgroundSource,
    CharacterOrientation,
    Mode,
    MotionModel,
    Task,
    UploadedFile,
    as_mode,
    check_background_source,
    is_http_url,
    one_of,
    optional_text,
)
from .rules import MAX_PROMPT_CHARS, MODE_SPELLINGS, MODEL_NAME, MOTION_MODELS, ORIENTATIONS

__all__ = [
    "GenerationResult",
    "Job",
    "JobEvent",
    "JobEventKind",
    "JobOutcome",
    "MediaSource",
    "ProgressGate",
]

#: A local file, a file already uploaded, or an http(s) URL used as is.
MediaSource = str | os.PathLike[str] | UploadedFile


def describe_source(source: MediaSource) -> str:
    """A stable text for a media source, used to derive a job's default key."""
    if isinstance(source, UploadedFile):
        return source.url
    text = os.fspath(source)
    return text if is_http_url(text) else str(Path(text).resolve())


def _background_source(inst: Job, _attribute: attrs.Attribute[Any], value: Any) -> None:
    check_background_source(inst.model, value)


def _check_source(name: str, value: object) -> None:
    """A job's image or video must be a path, a URL or an uploaded file, never empty."""
    if isinstance(value, UploadedFile):
        return
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise ConfigurationError(
            f"{name} must be a file path, an http(s) URL or an UploadedFile; got {value!r:.60}"
        )


@attrs.frozen
class Job:
    """One clip to make: a character picture, a motion video and options.

    ``key`` is the caller's stable id for the job; by default a hash of its inputs, so two jobs
    with the same inputs share a key (give them keys of their own to make both). ``model`` and
    ``background_source`` left None take the batch's (``generate_many(model=...)``; by default
    kling-2.6/motion-control). ``mode`` may be spelled ``std``/``pro``; it holds ``720p``/``1080p``.
    """

    image: MediaSource = attrs.field(validator=lambda _i, _a, v: _check_source("image", v))
    video: MediaSource = attrs.field(validator=lambda _i, _a, v: _check_source("video", v))
    prompt: str | None = attrs.field(
        default=None, validator=optional_text("prompt", MAX_PROMPT_CHARS)
    )
    character_orientation: CharacterOrientation = attrs.field(
        default="video", validator=one_of("character_orientation", ORIENTATIONS)
    )
    mode: Mode = attrs.field(
        default="720p", converter=as_mode, validator=one_of("mode", MODE_SPELLINGS)
    )
    key: str | None = attrs.field(default=None, validator=optional_text("key", 1000))
    model: MotionModel | None = attrs.field(
        default=None, validator=attrs.validators.optional(one_of("model", MOTION_MODELS))
    )
    background_source: BackgroundSource | None = attrs.field(
        default=None, validator=_background_source
    )

    @property
    def job_key(self) -> str:
        """``key`` if given, else a hash of the inputs."""
        if self.key is not None:
            return self.key
        fields = [
            describe_source(self.image),
            describe_source(self.video),
            self.prompt,
            self.character_orientation,
            self.mode,
        ]
        # Added only when set: the keys of jobs made before these options existed stay the same.
        if self.model not in (None, MODEL_NAME):
            fields.append(self.model)
        if self.background_source is not None:
            fields.append(self.background_source)
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:20]

    @classmethod
    def from_row(
        cls, row: Mapping[str, Any], *, base_dir: str | os.PathLike[str] | None = None
    ) -> Job:
        """A job from a manifest row (a CSV or JSON Lines record, a dict from a form).

        Its fields are ``Job``'s (``orientation`` is taken for ``character_orientation``);
        empty values count as absent. A relative ``image`` or ``video`` path is taken from
        ``base_dir``. Raises ``ConfigurationError`` naming the field that is missing, unknown
        or wrong, so a typo never makes a clip without its prompt.
        """
        if not isinstance(row, Mapping):
            raise ConfigurationError(f"a row must be a mapping of fields; got {type(row).__name__}")
        values: dict[str, Any] = {}
        for name, value in row.items():
            if not isinstance(name, str):
                # csv.DictReader files the cells of a row longer than its header under None.
                raise ConfigurationError(f"the row has a cell without a column name: {value!r}")
            if value is None or value == "":
                continue
            field = _ROW_ALIASES.get(name, name)
            if field in values:
                raise ConfigurationError(f"{field} is given twice (as {name!r} too)")
            values[field] = value
        known = {field.name for field in attrs.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown field {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(known | set(_ROW_ALIASES)))})"
            )
        for name in ("image", "video"):
            source = values.get(name)
            if source is None:
                raise ConfigurationError(f"{name} is missing")
            if isinstance(source, str | os.PathLike) and base_dir is not None:
                text = os.fspath(source)
                if not is_http_url(text):
                    values[name] = Path(base_dir) / text
        try:
            return cls(**values)
        except TypeError as exc:  # a value of a type attrs cannot take
            raise ConfigurationError(f"cannot build a job from this row: {exc}") from None


# Manifest column names taken for Job's own (the CLI's manifests say ``orientation``).
_ROW_ALIASES = {"orientation": "character_orientation"}


class JobEventKind(enum.Enum):
    """The steps a job reports.

    ``UPLOADING`` and ``DOWNLOADING`` come repeatedly while a file moves (``bytes`` so far of
    ``total``), throttled (about ten a second, 1% steps, the last one always sent, before the
    ``UPLOADED``/``DOWNLOADED``); from 0, or where a shared upload stood when the job joined it,
    and none for a file reused;
    ``STATE_CHANGED`` carries the ``task``.
    """

    VALIDATED = "validated"
    UPLOADING = "uploading"
    UPLOADED = "uploaded"
    CREATED = "created"
    RESUMED = "resumed"
    STATE_CHANGED = "state_changed"
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    SKIPPED = "skipped"
    FAILED = "failed"


@attrs.frozen
class JobEvent:
    """One step of one job, for progress bars and chat bots."""

    kind: JobEventKind
    job_key: str
    task_id: str | None = None
    #: The task as last seen (its ``state`` on ``STATE_CHANGED``).
    task: Task | None = None
    #: Bytes uploaded or downloaded, where the step moved a file (so far, while it moves).
    bytes: int | None = None
    #: The file: the local file uploaded (``detail`` says image or video), or the one written.
    path: Path | None = None
    error: BaseException | None = None
    detail: str | None = None
    #: The size of the file moving, on ``UPLOADING``/``DOWNLOADING``; None if not known (a
    #: download without ``Content-Length``).
    total: int | None = None


#: Progress events of one transfer are at least this many bytes apart (or 1% of the file)...
PROGRESS_MIN_BYTES = 64 * 1024
#: ...and at least this many seconds apart: about 10 a second at most, per file.
PROGRESS_MIN_INTERVAL = 0.1


@attrs.define
class ProgressGate:
    """Which progress reports of one transfer become events: no floods, never the last one lost.

    A report is let through if it is the first, the one that reaches ``total``, a restart (fewer
    bytes than before: a retried transfer starts again from 0), or both ``min_bytes`` (or 1% of
    ``total``) and ``min_interval`` seconds past the last one let through. Pure: the caller
    passes the time.
    """

    min_bytes: int = PROGRESS_MIN_BYTES
    min_interval: float = PROGRESS_MIN_INTERVAL
    _bytes: int | None = attrs.field(default=None, init=False)
    _at: float = attrs.field(default=-math.inf, init=False)
    #: The ``total`` of the last report let through.
    total: int | None = attrs.field(default=None, init=False)

    def admit(self, done: int, total: int | None, now: float) -> bool:
        """True if the report ``done`` of ``total`` bytes at ``now`` is to be an event."""
        last = self._bytes
        if done == last:
            return False
        finished = total is not None and done >= total
        if last is not None and done > last and not finished:
            step = max(self.min_bytes, (total or 0) // 100)
            if done - last < step or now - self._at < self.min_interval:
                return False
        self._bytes, self._at, self.total = done, now, total
        return True

    def settle(self, done: int, now: float) -> bool:
        """True if the transfer ended at ``done`` bytes and no event said so yet."""
        if done == self._bytes:
            return False
        self._bytes, self._at = done, now
        return True


@attrs.frozen
class GenerationResult:
    """A finished clip: the task, its result URLs, and the files downloaded (if asked)."""

    task: Task
    result_urls: tuple[str, ...]
    files: tuple[Path, ...] = ()

    @property
    def credits(self) -> float | None:
        """What the clip cost, as the service reported it (None if it did not say)."""
        return self.task.credits_consumed


def _key_of_job(outcome: JobOutcome) -> str:
    if outcome.job is None:
        raise TypeError("an outcome without a job needs its job_key")
    return outcome.job.job_key


@attrs.frozen
class JobOutcome:
    """How one job of a batch ended: ``result`` on success, ``error`` otherwise."""

    #: The job; None only for a row that could not be made into one (see ``row``).
    job: Job | None
    result: GenerationResult | None = None
    error: BaseException | None = None
    #: The task of the job: None only when no task was created (or its creation is unknown).
    task_id: str | None = None
    #: The job's key; for a row that is no job, its ``key`` field or ``#N``, its place in the batch.
    job_key: str = attrs.field(default=attrs.Factory(_key_of_job, takes_self=True))
    #: The row given to ``generate_many`` when it could not be made into a job.
    row: Mapping[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """True if the job produced its clip."""
        return self.result is not None

    @property
    def credits(self) -> float | None:
        """What the job's clip cost, as the service reported it; None without a clip."""
        return self.result.credits if self.result is not None else None
