"""The exception tree of kling_async: every error the library raises derives from ``KlingError``.

::

    KlingError                       (``task_id``: the task an error is about, when one is known)
    ├── TransportError               no answer came (connect failed, connection dropped, timed out)
    ├── SubmissionUnknownError       a createTask left, its answer was lost or unreadable: the task
    │                                may exist (never a TransportError: it must not be retried)
    ├── APIError(code, message)      the service answered with an error code (body or HTTP status)
    │   ├── AuthenticationError      401
    │   ├── InsufficientCreditsError 402
    │   ├── EdgeBlockedError         403 ``error code: 1010``: the service's edge refused the client
    │   ├── NotFoundError            404
    │   ├── InvalidRequestError      400, 405, 422
    │   │   └── TaskNotVisibleError  422 "recordInfo is null": unknown task, or not visible yet
    │   ├── RateLimitError           429: the request was dropped, retry after a window
    │   ├── QuotaExceededError       433: a sub-key's quota is used up (not retried)
    │   ├── ServiceUnavailableError  455
    │   ├── ServerError              500 and other 5xx without a class of their own
    │   ├── GenerationFailedError    501
    │   ├── FeatureDisabledError     505
    │   └── ProtocolError            an answer that cannot be read (not JSON, missing fields);
    │                                also a ``ValueError``
    ├── TaskFailedError(task)        the task ended in state ``fail``
    ├── TaskTimeoutError             a wait passed its deadline (also a ``TimeoutError``)
    ├── CreditLimitError             a batch's ``max_credits`` would be passed: not created
    ├── DownloadError                a result is not a video (an error page), or cannot be saved
    ├── MediaValidationError         a local file broke a rule of the service, or cannot be read
    ├── SessionClosedError           the session closed while an operation was waiting
    ├── JournalError                 the batch journal cannot be read or written (SQLite)
    │   └── JournalLockedError       another batch holds the journal
    ├── WebhookError                 a callback was refused
    │   ├── WebhookVerificationError     missing header, malformed timestamp, stale, bad signature
    │   └── MalformedCallbackError       the body is not the documented JSON
    └── ConfigurationError           bad arguments: no key, unsafe base URL, an invalid option
                                     (also a ``ValueError``)

An error code found in the body's ``code`` and the same code sent as an HTTP status map to the
same class (see :func:`api_error_for`).

Bounds: it imports nothing of the library but a model's type; every other module raises from
here.
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
    "CreditLimitError",
    "DownloadError",
    "EdgeBlockedError",
    "FeatureDisabledError",
    "GenerationFailedError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "JournalError",
    "JournalLockedError",
    "KlingError",
    "MalformedCallbackError",
    "MediaValidationError",
    "NotFoundError",
    "ProtocolError",
    "QuotaExceededError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "SessionClosedError",
    "SubmissionUnknownError",
    "TaskFailedError",
    "TaskNotVisibleError",
    "TaskTimeoutError",
    "TransportError",
    "WebhookError",
    "WebhookVerificationError",
    "api_error_for",
]


class KlingError(Exception):
    """Root of every error raised by kling_async."""

    #: The task this error is about, when one is known (set on errors of waits and downloads).
    task_id: str | None = None


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


class SubmissionUnknownError(KlingError):
    """A createTask request left but its answer was lost or unreadable: the task may exist.

    It is not retried, because a retry could create (and charge for) a second task. It is not a
    ``TransportError``, so code that retries transport errors never re-creates a paid task.
    """

    def __init__(
        self,
        message: str,
        *,
        request_body: dict[str, Any] | None = None,
        job_key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        #: The createTask body that was sent (no secrets in it), to reconcile by hand.
        self.request_body = request_body
        #: The batch job whose submission is unknown, if it came from a batch.
        self.job_key = job_key


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


class EdgeBlockedError(APIError):
    """403 ``error code: 1010``: the service's edge (not the API) refused this client.

    The key is not at fault: the edge judged the request's ``User-Agent`` or origin. Send an
    ordinary ``user_agent`` or ask the service's support to allow the caller's address.
    """


class RateLimitError(APIError):
    """429: too many requests; the request was dropped, not queued."""


class QuotaExceededError(APIError):
    """433: a sub-key's quota is used up; waiting a window does not help, so it is not retried."""


class ProtocolError(APIError, ValueError):
    """An answer arrived but cannot be read: not JSON, not UTF-8, or missing what it must hold."""


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
    433: QuotaExceededError,
    455: ServiceUnavailableError,
    500: ServerError,
    501: GenerationFailedError,
    505: FeatureDisabledError,
}

RECORD_INFO_IS_NULL = "recordinfo is null"
#: The text of the edge's refusal (kie-api.md section 9b).
EDGE_BLOCK_TEXT = "error code: 1010"


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
    if code == 403 and EDGE_BLOCK_TEXT in message.lower():
        cls = EdgeBlockedError
        message = (
            "the request was blocked by the service's edge (error code: 1010), not refused for "
            "the key: send an ordinary User-Agent (KlingSession(user_agent=...))"
        )
    return cls(code, message, http_status=http_status, retry_after=retry_after, endpoint=endpoint)


class TaskFailedError(KlingError):
    """The task reached the terminal state ``fail``."""

    def __init__(self, task: Task) -> None:
        super().__init__(
            f"task {task.task_id} failed: "
            f"[{task.fail_code or '?'}] {task.fail_msg or 'no reason given'}"
        )
        self.task = task
        self.task_id = task.task_id
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


class CreditLimitError(KlingError):
    """Creating this job's task would take the batch's estimated spend over ``max_credits``."""


class DownloadError(KlingError):
    """A result cannot be saved: what arrived is not a video, or the file cannot be written."""


class MediaValidationError(KlingError, ValueError):
    """A local media file broke one of the service's rules; raised before any upload."""

    def __init__(self, path: str | os.PathLike[str], rule: str, detail: str) -> None:
        super().__init__(f"{path}: {rule}: {detail}")
        self.path = str(path)
        #: One of :class:`kling_async.rules.Rule` (a string equal to the rule's text).
        self.rule = rule
        self.detail = detail
        #: ``"image"`` or ``"video"``: which input broke the rule (None if not known).
        self.medium: str | None = None


class JournalError(KlingError):
    """The batch journal cannot be opened, read or written."""


class JournalLockedError(JournalError):
    """Another batch has this journal open."""


class WebhookError(KlingError):
    """A callback could not be accepted."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        #: A short machine-readable reason, such as ``bad-signature``.
        self.reason = reason
        self.detail = detail


class WebhookVerificationError(WebhookError):
    """A callback's signature headers are missing, malformed, stale or wrong."""


class MalformedCallbackError(WebhookError):
    """A callback's body is not the documented JSON."""
