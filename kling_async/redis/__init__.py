"""Limits and batch journals shared by many processes, on one machine or several, through Redis.

Needs the ``redis`` extra (``pip install 'kling_async[redis]'``); nothing imports this package
unless asked for (``shared_limits=``, a ``redis://`` journal, or an import of your own).

- :class:`RedisRateLimiter` keeps one account's limit for every process that uses it, with the
  same guarantee as the in-process limiter, and falls back to a share of the limit of its own
  when Redis cannot be reached.
- :class:`RedisJournal` is a batch journal several workers fed the same jobs split between them:
  each job is claimed by one worker, and a dead worker's jobs are taken over after a lease.

Bounds: it knows nothing of HTTP or the service: it grants slots and records what it is told.
"""

from __future__ import annotations

try:
    import redis.asyncio  # noqa: F401  (checked here, so a missing extra says how to get it)
except ImportError as exc:  # pragma: no cover - the dev install has it
    raise ImportError(
        "shared limits and journals need the redis package: pip install 'kling_async[redis]'"
    ) from exc

from ._connect import is_redis_url
from ._journal import RedisJournal
from ._limiter import RedisRateLimiter

__all__ = ["RedisJournal", "RedisRateLimiter", "is_redis_url"]
