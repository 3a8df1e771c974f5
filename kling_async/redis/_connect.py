"""One way to reach Redis: bounded timeouts, no retries of its own, and Redis's clock in scripts.

Bounds: it opens connections and holds shared Lua snippets; it decides nothing.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..errors import ConfigurationError

__all__ = ["ATTEMPTS", "NOW", "UNREACHABLE", "connect", "is_redis_url", "split_url"]

#: Errors that mean "Redis cannot answer now" (refused, reset, timed out, loading, read-only...).
UNREACHABLE: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)

#: How many times the client sends one call at most (the first, and one retry at once).
ATTEMPTS = 2

#: Lua: ``now``, Redis's own clock in seconds (counted from 2023, so that a double keeps
#: microseconds), so that machines whose clocks disagree still agree on every window. The
#: windows follow Redis's wall clock: a step of that clock (a manual change, not NTP's slewing)
#: lengthens or shortens the windows open at that moment.
NOW = """
local clock = redis.call('TIME')
local now = (tonumber(clock[1]) - 1700000000) + tonumber(clock[2]) / 1000000
local function at(seconds) return string.format('%.6f', seconds) end
"""


def is_redis_url(spec: object) -> bool:
    """True if ``spec`` is a ``redis://``, ``rediss://`` or ``unix://`` URL."""
    return isinstance(spec, str) and spec.startswith(("redis://", "rediss://", "unix://"))


def split_url(url: str, ours: frozenset[str]) -> tuple[str, dict[str, str]]:
    """The URL without our own query settings (names in ``ours``), and those settings."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    rest = urlencode([(k, v) for k, v in query if k not in ours])
    return urlunsplit(parts._replace(query=rest)), {k: v for k, v in query if k in ours}


def connect(url: str, timeout: float) -> aioredis.Redis:
    """A client for ``url`` whose every call fails within about ``ATTEMPTS * timeout`` seconds."""
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
            # the step). Every script is safe to run twice: each is idempotent for its caller.
            retry=Retry(NoBackoff(), ATTEMPTS - 1),
            decode_responses=True,
        )
    except ValueError as exc:
        # Never the URL itself: it may hold a password.
        raise ConfigurationError(f"not a usable Redis URL: {exc}") from None
    return client
