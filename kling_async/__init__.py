"""kling_async: an asyncio client for kie.ai's kling-2.6/motion-control video model."""

from __future__ import annotations

from .errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    FeatureDisabledError,
    GenerationFailedError,
    InsufficientCreditsError,
    InvalidRequestError,
    KlingError,
    MediaValidationError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    SessionClosedError,
    SubmissionUnknownError,
    TaskFailedError,
    TaskNotVisibleError,
    TaskTimeoutError,
    TransportError,
)
from .jobs import GenerationResult, Job, JobEvent, JobEventKind, JobOutcome
from .journal import JournalLockedError
from .media import (
    ImageInfo,
    VideoInfo,
    inspect_image,
    inspect_video,
    validate_image,
    validate_video,
)
from .models import (
    MotionControlInput,
    PollSchedule,
    RateLimit,
    Task,
    TaskState,
    UploadedFile,
)
from .session import DEFAULT_BASE_URL, DEFAULT_UPLOAD_BASE_URL, KlingSession

__version__ = "0.1.0.dev0"

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_UPLOAD_BASE_URL",
    "APIError",
    "AuthenticationError",
    "ConfigurationError",
    "FeatureDisabledError",
    "GenerationFailedError",
    "GenerationResult",
    "ImageInfo",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "Job",
    "JobEvent",
    "JobEventKind",
    "JobOutcome",
    "JournalLockedError",
    "KlingError",
    "KlingSession",
    "MediaValidationError",
    "MotionControlInput",
    "NotFoundError",
    "PollSchedule",
    "RateLimit",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "SessionClosedError",
    "SubmissionUnknownError",
    "Task",
    "TaskFailedError",
    "TaskNotVisibleError",
    "TaskState",
    "TaskTimeoutError",
    "TransportError",
    "UploadedFile",
    "VideoInfo",
    "__version__",
    "inspect_image",
    "inspect_video",
    "validate_image",
    "validate_video",
]
