"""One way to reach Redis: bounded timeouts, no retries of its own, and Redis's clock in scripts.

Bounds: it opens connections and holds shared Lua snippets; it decides nothing.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..errors import ConfigurationError

__all__ = ["NOW", "UNREACHABLE", "connect", "is_redis_url"]

#: Errors that mean "Redis cannot answer now" (refused, reset, timed out, loading, read-only...).
UNREACHABLE: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)

#: Lua: ``now``, Redis's own clock in seconds (counted from 2023, so that a double keeps
#: microseconds), so that machines whose clocks disagree still agree on every window.
NOW = """
local clock = redis.call('TIME')
local now = (tonumber(clock[1]) - 1700000000) + tonumber(clock[2]) / 1000000
local function at(seconds) return string.format('%.6f', seconds) end
"""


def is_redis_url(spec: object) -> bool:
    """True if ``spec`` is a ``redis://``, ``rediss://`` or ``unix://`` URL."""
    return isinstance(spec, str) and spec.startswith(("redis://", "rediss://", "unix://"))


def connect(url: str, timeout: float) -> aioredis.Redis:
    """A client for ``url`` whose every call fails within about ``timeout`` seconds."""
    if not is_redis_url(url):
        raise ConfigurationError("a Redis URL starts with redis://, rediss:// or unix://")
    if not timeout > 0:
        raise ConfigurationError(f"the Redis timeout must be > 0 seconds; got {timeout!r}")
    try:
        client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One retry at once, for a pooled connection Redis closed (a restart, an idle
            # timeout); past that our callers decide what a failure means (fall back, or fail
            # the step). Every script is safe to run twice: at worst a slot is held until its
            # lease ends.
            retry=Retry(NoBackoff(), 1),
            decode_responses=True,
        )
    except ValueError as exc:
        # Never the URL itself: it may hold a password.
        raise ConfigurationError(f"not a usable Redis URL: {exc}") from None
    return client
