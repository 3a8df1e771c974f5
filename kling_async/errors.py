"""The exception tree of kling_async: every error the library raises derives from ``KlingError``.

::

    KlingError
    ├── TransportError               no answer came (connect failed, connection dropped, timed out)
    │   └── SubmissionUnknownError   a createTask was sent, its answer was lost: it may exist
    ├── APIError(code, message)      the service answered with an error code (body or HTTP status)
    │   ├── AuthenticationError      401
    │   ├── InsufficientCreditsError 402
    │   ├── NotFoundError            404
    │   ├── InvalidRequestError      400, 405, 422
    │   │   └── TaskNotVisibleError  422 "recordInfo is null": unknown task, or not visible yet
    │   ├── RateLimitError           429, 433
    │   ├── ServiceUnavailableError  455
    │   ├── ServerError              500 and other 5xx without a class of their own
    │   ├── GenerationFailedError    501
    │   └── FeatureDisabledError     505
    ├── TaskFailedError(task)        the task ended in state ``fail``
    ├── TaskTimeoutError             a wait passed its deadline (also a ``TimeoutError``)
    ├── MediaValidationError         a local file broke a rule of the service, before any upload
    ├── SessionClosedError           the session closed while an operation was waiting
    ├── JournalLockedError           another batch holds the journal (kling_async.journal)
    ├── WebhookError                 a callback was refused (kling_async.webhooks)
    │   ├── WebhookVerificationError     missing header, malformed timestamp, stale, bad signature
    │   └── MalformedCallbackError       the body is not the documented JSON
    └── ConfigurationError           the session was set up wrongly (no key, unsafe base URL)

An error code found in the body's ``code`` and the same code sent as an HTTP status map to the
same class (see :func:`api_error_for`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import os

    from .models import Task

__all__ = [
    "APIError",
    "AuthenticationError",
    "ConfigurationError",
    "FeatureDisabledError",
    "GenerationFailedError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "KlingError",
    "MediaValidationError",
    "NotFoundError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "SessionClosedError",
    "SubmissionUnknownError",
    "TaskFailedError",
    "TaskNotVisibleError",
    "TaskTimeoutError",
    "TransportError",
    "api_error_for",
]


class KlingError(Exception):
    """Root of every error raised by kling_async."""


class ConfigurationError(KlingError, ValueError):
    """The session or a model was configured in a way that cannot work."""


class SessionClosedError(KlingError):
    """The session was closed while this operation was still waiting."""


class TransportError(KlingError):
    """No answer came from the service: the connection failed, dropped or timed out."""

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        super().__init__(message)
        self.message = message
        #: False only when the request surely never reached the service (connect failed).
        self.request_sent = request_sent


class SubmissionUnknownError(TransportError):
    """A createTask request was sent but its answer was lost: the task may or may not exist.

    It is not retried, because a retry could create (and charge for) a second task.
    """

    def __init__(self, message: str, *, request_body: dict[str, Any] | None = None) -> None:
        super().__init__(message, request_sent=True)
        #: The createTask body that was sent (no secrets in it), to reconcile by hand.
        self.request_body = request_body


class APIError(KlingError):
    """The service answered with an error code."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
        endpoint: str | None = None,
    ) -> None:
        where = f" from {endpoint}" if endpoint else ""
        super().__init__(f"[{code}] {message}{where}")
        self.code = code
        self.message = message
        self.http_status = http_status
        self.retry_after = retry_after
        self.endpoint = endpoint


class AuthenticationError(APIError):
    """401: the API key is missing or invalid."""


class InsufficientCreditsError(APIError):
    """402: the account has too few credits."""


class NotFoundError(APIError):
    """404: the resource or endpoint does not exist."""


class InvalidRequestError(APIError):
    """400, 405 or 422: the request was malformed or failed the service's validation."""


class TaskNotVisibleError(InvalidRequestError):
    """422 ``recordInfo is null``: the task is unknown, or was created too recently to be seen."""


class RateLimitError(APIError):
    """429 (or 433 for a sub-key over its limit): too many requests."""


class ServiceUnavailableError(APIError):
    """455: the service is under maintenance."""


class ServerError(APIError):
    """500 or another 5xx without a class of its own."""


class GenerationFailedError(APIError):
    """501: the generation failed."""


class FeatureDisabledError(APIError):
    """505: the feature is disabled."""


_CLASS_BY_CODE: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    404: NotFoundError,
    405: InvalidRequestError,
    422: InvalidRequestError,
    429: RateLimitError,
    433: RateLimitError,
    455: ServiceUnavailableError,
    500: ServerError,
    501: GenerationFailedError,
    505: FeatureDisabledError,
}

RECORD_INFO_IS_NULL = "recordinfo is null"


def api_error_for(
    code: int,
    message: str,
    *,
    http_status: int | None = None,
    retry_after: float | None = None,
    endpoint: str | None = None,
) -> APIError:
    """Build the ``APIError`` subclass matching an error code (from the body or the HTTP status)."""
    cls = _CLASS_BY_CODE.get(code)
    if cls is None:
        cls = ServerError if 500 <= code <= 599 else APIError
    if code == 422 and message.strip().lower() == RECORD_INFO_IS_NULL:
        cls = TaskNotVisibleError
    return cls(code, message, http_status=http_status, retry_after=retry_after, endpoint=endpoint)


class TaskFailedError(KlingError):
    """The task reached the terminal state ``fail``."""

    def __init__(self, task: Task) -> None:
        super().__init__(
            f"task {task.task_id} failed: "
            f"[{task.fail_code or '?'}] {task.fail_msg or 'no reason given'}"
        )
        self.task = task
        self.fail_code = task.fail_code
        self.fail_msg = task.fail_msg


class TaskTimeoutError(KlingError, TimeoutError):
    """A wait for a task passed its deadline; the task itself may still finish later."""

    def __init__(self, task_id: str, timeout: float, last_task: Task | None = None) -> None:
        state = last_task.state.value if last_task is not None else "unknown"
        super().__init__(f"task {task_id} not finished after {timeout:g} s (last state: {state})")
        self.task_id = task_id
        self.timeout = timeout
        self.last_task = last_task


class MediaValidationError(KlingError, ValueError):
    """A local media file broke one of the service's rules; raised before any upload."""

    def __init__(self, path: str | os.PathLike[str], rule: str, detail: str) -> None:
        super().__init__(f"{path}: {rule}: {detail}")
        self.path = str(path)
        self.rule = rule
        self.detail = detail
