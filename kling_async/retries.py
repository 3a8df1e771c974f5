"""Which failures are retried, and how long to wait between tries (with the ``backoff`` library)."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import backoff

from .errors import (
    GenerationFailedError,
    KlingError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
)

__all__ = ["create_surely_not_done", "is_transient", "retry_waits", "with_retries"]

log = logging.getLogger("kling_async")


def retry_waits(base: float, cap: float, rng: random.Random) -> Any:
    """Backoff wait generator: full-jitter exponential, never shorter than a ``Retry-After``."""
    attempt = 0
    error = yield  # backoff primes the generator, then sends each failure in
    while True:
        delay = rng.uniform(0.0, min(cap, base * 2**attempt))
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, retry_after)
        attempt += 1
        error = yield delay


def is_transient(exc: Exception) -> bool:
    """Worth retrying for a safe call: rate limit, maintenance, 5xx (not 501), no answer."""
    if isinstance(exc, GenerationFailedError):
        return False
    return isinstance(exc, RateLimitError | ServiceUnavailableError | ServerError | TransportError)


def create_surely_not_done(exc: Exception) -> bool:
    """True only when a failed createTask surely created nothing, so a retry cannot double it."""
    if isinstance(exc, RateLimitError | ServiceUnavailableError):
        return True
    return isinstance(exc, TransportError) and not exc.request_sent


def _log_retry(details: Any) -> None:
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
    )
    return decorate(target)
