"""The public surface is what the docs promise: names in ``__all__``, each documented."""

from __future__ import annotations

import inspect

import kling_async
import kling_async.simulator

EXPECTED = {
    "APIError",
    "AuthenticationError",
    "BatchRun",
    "ConfigurationError",
    "CreditLimitError",
    "DEFAULT_BASE_URL",
    "DEFAULT_UPLOAD_BASE_URL",
    "DownloadError",
    "EdgeBlockedError",
    "FeatureDisabledError",
    "GenerationFailedError",
    "GenerationResult",
    "ImageInfo",
    "Job",
    "JobEvent",
    "JobEventKind",
    "JobOutcome",
    "JournalError",
    "JournalLockedError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "KlingError",
    "KlingSession",
    "MalformedCallbackError",
    "MediaValidationError",
    "MotionControlInput",
    "NotFoundError",
    "PollSchedule",
    "ProtocolError",
    "QuotaExceededError",
    "RateLimit",
    "RateLimitError",
    "Rule",
    "ServerError",
    "ServiceUnavailableError",
    "SessionClosedError",
    "Submission",
    "SubmissionUnknownError",
    "Task",
    "TaskFailedError",
    "TaskNotVisibleError",
    "TaskState",
    "TaskTimeoutError",
    "TransportError",
    "UploadedFile",
    "VideoInfo",
    "WebhookError",
    "WebhookVerificationError",
    "__version__",
    "estimate_credits",
    "inspect_image",
    "inspect_video",
    "validate_image",
    "validate_video",
}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(kling_async.__all__) == EXPECTED
    for name in kling_async.__all__:
        assert hasattr(kling_async, name), name


def test_every_public_name_has_a_docstring() -> None:
    for module in (kling_async, kling_async.simulator):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert (obj.__doc__ or "").strip(), f"{module.__name__}.{name} has no docstring"


def test_error_tree_has_one_root() -> None:
    for name in kling_async.__all__:
        obj = getattr(kling_async, name)
        if inspect.isclass(obj) and issubclass(obj, Exception):
            assert issubclass(obj, kling_async.KlingError), name
    assert issubclass(kling_async.TaskTimeoutError, TimeoutError)
    # Code that retries transport errors must never re-create a paid task.
    assert not issubclass(kling_async.SubmissionUnknownError, kling_async.TransportError)
    assert issubclass(kling_async.ConfigurationError, ValueError)
    assert issubclass(kling_async.JournalLockedError, kling_async.JournalError)
