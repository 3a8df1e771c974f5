"""Which failures are retried, and how long to wait between tries (with the ``backoff`` library).

What a failed createTask means for the money is decided here, in :func:`create_outcome`:

=============================================  ==============  ==========================
answer to createTask                           task created?   what the client does
=============================================  ==============  ==========================
no connection (connect or TLS failed)          surely not      retried
429 (dropped, not queued), 455 maintenance     surely not      retried, 429 after a window
400/401/402/403/404/405/422/433/501/505        surely not      raised; a batch job may be
(the service refused the request)                              run again
sent, then no answer (timeout, disconnect)     may exist       ``SubmissionUnknownError``
500 or another 5xx, a gateway's 502/504 page   may exist       ``SubmissionUnknownError``
an answer that cannot be read, or 200 with     may exist       ``SubmissionUnknownError``
no ``taskId``
cancelled after the request left               may exist       a batch lets it finish
=============================================  ==============  ==========================

Does no I/O of its own; never decides anything about a particular request but by its
error.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import backoff

from . import telemetry
from .errors import (
    APIError,
    GenerationFailedError,
    KlingError,
    ProtocolError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
)

__all__ = [
    "create_outcome",
    "create_surely_not_done",
    "is_no_news",
    "is_transient",
    "retry_waits",
    "with_retries",
]

NOT_CREATED = "not created"
MAY_EXIST = "may exist"

log = logging.getLogger("kling_async")


def retry_waits(
    base: float,
    cap: float,
    rng: random.Random,
    floor: Callable[[Exception], float] | None = None,
) -> Any:
    """Backoff wait generator: full-jitter exponential, never shorter than a ``Retry-After``.

    ``floor(error)`` gives a least wait for an error (a full window after a dropped createTask).
    """
    attempt = 0
    error = yield  # backoff primes the generator, then sends each failure in
    while True:
        delay = rng.uniform(0.0, min(cap, base * 2**attempt))
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, retry_after)
        if floor is not None and error is not None:
            delay = max(delay, floor(error))
        attempt += 1
        error = yield delay


def is_transient(exc: BaseException) -> bool:
    """Worth retrying for a safe call: rate limit, maintenance, 5xx (not 501), no answer."""
    if isinstance(exc, GenerationFailedError):
        return False
    return isinstance(exc, RateLimitError | ServiceUnavailableError | ServerError | TransportError)


def is_no_news(exc: BaseException) -> bool:
    """Inside a long wait, a failure that says nothing about the task: poll again later."""
    return is_transient(exc) or isinstance(exc, ProtocolError)


def create_outcome(exc: BaseException) -> str:
    """``NOT_CREATED`` or ``MAY_EXIST`` for a createTask that failed with ``exc`` (table above)."""
    if isinstance(exc, TransportError):
        return MAY_EXIST if exc.request_sent else NOT_CREATED
    if isinstance(exc, ProtocolError | ServerError):
        return MAY_EXIST
    if isinstance(exc, APIError):
        # The service answered with an error of its own: it refused, and created nothing.
        return NOT_CREATED
    return MAY_EXIST


def create_surely_not_done(exc: Exception) -> bool:
    """True only when a retry of a failed createTask cannot double it: 429, 455, no connection."""
    if isinstance(exc, RateLimitError | ServiceUnavailableError):
        return True
    return isinstance(exc, TransportError) and not exc.request_sent


def _log_retry(details: Any) -> None:
    reason = type(details.get("exception")).__name__
    telemetry.count("retries", reason=reason)
    telemetry.event("retry", reason=reason, attempt=details["tries"])
    # Only the endpoint name and our own error text: never the arguments, which hold URLs.
    log.info(
        "retrying %s in %.2f s (attempt %d failed: %s)",
        details["args"][0] if details["args"] else "request",
        details.get("wait", 0.0),
        details["tries"],
        details.get("exception"),
    )


def with_retries(
    target: Callable[..., Awaitable[Any]],
    should_retry: Callable[[Exception], bool],
    *,
    max_tries: int,
    base: float,
    cap: float,
    rng: random.Random,
    floor: Callable[[Exception], float] | None = None,
) -> Callable[..., Awaitable[Any]]:
    """Wrap ``target`` in backoff's retry loop: only ``should_retry`` errors are retried."""
    decorate = backoff.on_exception(
        retry_waits,
        KlingError,
        max_tries=max_tries,
        jitter=None,
        giveup=lambda exc: not should_retry(exc),
        logger=None,
        on_backoff=_log_retry,
        base=base,
        cap=cap,
        rng=rng,
        floor=floor,
    )
    return decorate(target)
