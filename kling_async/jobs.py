"""Values of the batch layer: a job, its events, its outcome (no I/O here).

Does no I/O; never imports the client, the journal or the batch runner.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import attrs

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


@attrs.frozen
class Job:
    """One clip to make: a character picture, a motion video and options.

    ``key`` is the caller's stable id for the job; by default a hash of its inputs, so two jobs
    with the same inputs share a key (give them keys of their own to make both). ``model`` and
    ``background_source`` left None take the batch's (``generate_many(model=...)``; by default
    kling-2.6/motion-control). ``mode`` may be spelled ``std``/``pro``; it holds ``720p``/``1080p``.
    """

    image: MediaSource
    video: MediaSource
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


class JobEventKind(enum.Enum):
    """The steps a job reports."""

    VALIDATED = "validated"
    UPLOADED = "uploaded"
    CREATED = "created"
    RESUMED = "resumed"
    STATE_CHANGED = "state_changed"
    DOWNLOADED = "downloaded"
    SKIPPED = "skipped"
    FAILED = "failed"


@attrs.frozen
class JobEvent:
    """One step of one job, for progress bars and chat bots."""

    kind: JobEventKind
    job_key: str
    task_id: str | None = None
    task: Task | None = None
    #: Bytes uploaded or downloaded, where the step moved a file.
    bytes: int | None = None
    path: Path | None = None
    error: BaseException | None = None
    detail: str | None = None


@attrs.frozen
class GenerationResult:
    """A finished clip: the task, its result URLs, and the files downloaded (if asked)."""

    task: Task
    result_urls: tuple[str, ...]
    files: tuple[Path, ...] = ()


@attrs.frozen
class JobOutcome:
    """How one job of a batch ended: ``result`` on success, ``error`` otherwise."""

    job: Job
    result: GenerationResult | None = None
    error: BaseException | None = None
    #: The task of the job: None only when no task was created (or its creation is unknown).
    task_id: str | None = None

    @property
    def ok(self) -> bool:
        """True if the job produced its clip."""
        return self.result is not None
