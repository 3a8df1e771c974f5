"""``RedisRateLimiter``: one account's limit kept by every process that uses it, through Redis.

The guarantee is the in-process limiter's (:mod:`kling_async.ratelimit`), across processes: a
slot is held while its request is in flight and for one window after its answer, so the service
never sees more than N requests in any window. Two sorted sets per limit hold the slots: ``flight``
(requests in flight, each with a lease: a process that dies holds nothing longer than that) and
``done`` (answered requests, each until one window after its answer). One Lua script takes a slot
atomically, reading Redis's own clock (``TIME``), so machines with skewed clocks agree.

No library we know of models "held while in flight" (token buckets and sliding-window counters
count a request when it is granted), so the script is our own; it is short.

When Redis cannot be reached, calls neither hang (every Redis call is bounded by ``timeout``) nor
go unlimited: the process keeps to ``fallback_share`` of the limit on its own (its first slot one
window after Redis went away, so slots taken through Redis before have run out), says so once in
the log, asks Redis again every ``recheck`` seconds, and on its return first records there the
slots it took meanwhile.

Bounds: it grants slots; it knows nothing of HTTP or the service.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from typing import Any

from ..errors import ConfigurationError, SessionClosedError
from ..models import RateLimit
from ..ratelimit import Clock, RateLimiter, Sleep
from ._connect import NOW, UNREACHABLE, connect

__all__ = ["RedisRateLimiter"]

log = logging.getLogger("kling_async")

# KEYS: flight, done. ARGV: max requests, lease, member.
# Returns {1, "0"} when the slot is taken, else {0, seconds until the first answered slot frees,
# or "-1" when every slot is in flight (nothing frees before an answer comes back)}.
_ACQUIRE = (
    NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', at(now))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', at(now))
local used = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
if used < tonumber(ARGV[1]) then
  local lease = tonumber(ARGV[2])
  redis.call('ZADD', KEYS[1], at(now + lease), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000) + 1000)
  return {1, '0'}
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then return {0, at(tonumber(first[2]) - now)} end
return {0, '-1'}
"""
)

# KEYS: flight, done. ARGV: window, member, seconds since the answer came back (measured by the
# process up to the moment it sent this, so never more than really passed): the slot frees one
# window after the answer, however late this script runs.
_RELEASE = (
    NOW
    + """
local window = tonumber(ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], at(now - tonumber(ARGV[3]) + window), ARGV[2])
redis.call('PEXPIRE', KEYS[2], math.ceil(window * 1000) + 1000)
return 1
"""
)

# KEYS: flight, done. ARGV: lease, window, n, then n members in flight, then pairs of
# (member, seconds left) of answered slots: the slots a process took while Redis was away.
_ADOPT = (
    NOW
    + """
local lease, window, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 4, 3 + n do redis.call('ZADD', KEYS[1], at(now + lease), ARGV[i]) end
for i = 4 + n, #ARGV, 2 do redis.call('ZADD', KEYS[2], at(now + tonumber(ARGV[i + 1])), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000) + 1000)
redis.call('PEXPIRE', KEYS[2], math.ceil(window * 1000) + 1000)
return 1
"""
)


class _Hold:
    """One slot taken: in Redis (``member``), or of the local fallback (``local``), or both."""

    __slots__ = ("local", "member")

    def __init__(self, member: str | None, local: bool) -> None:
        self.member = member
        self.local = local


class RedisRateLimiter:
    """Grants slots of one limit shared by every process that uses the same Redis and ``name``.

    ``url`` is a ``redis://`` (or ``rediss://``, ``unix://``) URL; ``name`` names the limit (one
    per account and endpoint: ``KlingSession(shared_limits=...)`` uses a hash of the key, never
    the key). ``lease`` bounds how long a slot in flight is held for a process that died: it must
    exceed the longest request plus one window. ``timeout`` bounds each Redis call; when one
    fails, the process keeps to ``fallback_share`` of the limit until Redis answers again (asked
    every ``recheck`` seconds). ``clock`` and ``sleep`` (local waits only) exist for tests.
    """

    def __init__(
        self,
        url: str,
        limit: RateLimit,
        *,
        name: str,
        lease: float = 60.0,
        fallback_share: float = 0.25,
        timeout: float = 0.5,
        recheck: float = 1.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not lease > limit.window:
            raise ConfigurationError(f"lease ({lease!r} s) must be longer than the window")
        if not 0 < fallback_share <= 1:
            raise ConfigurationError(f"fallback_share must be in (0, 1]; got {fallback_share!r}")
        if not recheck > 0:
            raise ConfigurationError(f"recheck must be > 0 seconds; got {recheck!r}")
        self.limit = limit
        self.name = name
        self.lease = float(lease)
        self._timeout = timeout
        self._recheck = recheck
        self._clock = clock
        self._sleep = sleep
        self._redis = connect(url, timeout)
        # One hash tag: both sets live on one cluster node, as a script needs.
        self._keys = [f"{{{name}}}:flight", f"{{{name}}}:done"]
        self._acquire_script = self._redis.register_script(_ACQUIRE)
        self._release_script = self._redis.register_script(_RELEASE)
        self._adopt_script = self._redis.register_script(_ADOPT)
        share = max(1, int(limit.max_requests * fallback_share))
        self._fallback = RateLimiter(RateLimit(share, limit.window), clock=clock, sleep=sleep)
        # While every slot is in flight, nothing tells this process when one is answered: ask.
        self._poll = min(limit.window / 10, 0.05)
        self._member = f"{secrets.token_hex(6)}:"
        self._serial = itertools.count()
        # asyncio.Lock wakes waiters in FIFO order: slots go in arrival order within a process.
        self._turn = asyncio.Lock()
        self._closed = asyncio.Event()
        self._down_since: float | None = None
        self._recheck_at = 0.0
        self._local_holds: set[_Hold] = set()
        self._releases: set[asyncio.Task[None]] = set()
        #: Slots granted so far, callers waiting for one now, and times Redis was found away.
        self.granted = 0
        self.waiting = 0
        self.outages = 0

    def __repr__(self) -> str:
        return f"RedisRateLimiter({self.name!r}, {self.limit!r})"

    @property
    def shared(self) -> bool:
        """True while slots come from Redis (False: the local fallback share)."""
        return self._down_since is None

    async def prepare(self) -> None:
        """Connect and load the scripts now, rather than on the first :meth:`acquire`."""
        try:
            await self._redis.ping()
            for script in (self._acquire_script, self._release_script, self._adopt_script):
                await self._redis.script_load(script.script)
        except UNREACHABLE as exc:
            self._fall_back(exc)

    async def acquire(self) -> object:
        """Wait for a free slot and take it; pass what it returns to :meth:`release`."""
        self.waiting += 1
        try:
            async with self._turn:
                hold = await self._acquire()
        finally:
            self.waiting -= 1
        self.granted += 1
        return hold

    async def _acquire(self) -> _Hold:
        while True:
            if self._closed.is_set():
                raise SessionClosedError("the session closed while waiting for a rate slot")
            if self._down_since is not None and self._clock() < self._recheck_at:
                hold = await self._local()
                if hold is not None:
                    return hold
                continue
            member = f"{self._member}{next(self._serial)}"
            try:
                if self._down_since is not None:
                    await self._adopt()
                granted, wait = await self._ask(member)
            except UNREACHABLE as exc:
                self._fall_back(exc)
                continue
            if self._down_since is not None:
                self._down_since = None
                log.warning(
                    "shared rate limit %s: Redis is back; the limit is shared again", self.name
                )
            if granted:
                return _Hold(member, local=False)
            await self._nap(wait if wait >= 0 else self._poll)

    async def _call(self, script: Any, args: list[Any]) -> Any:
        # The client's own timeouts bound each socket step; this bounds the whole call.
        async with asyncio.timeout(3 * self._timeout):
            return await script(keys=self._keys, args=args)

    async def _ask(self, member: str) -> tuple[bool, float]:
        granted, wait = await self._call(
            self._acquire_script, [self.limit.max_requests, self.lease, member]
        )
        return int(granted) == 1, float(wait)

    async def _adopt(self) -> None:
        """Record in Redis the slots this process took on its own while Redis was away."""
        flight = [hold for hold in self._local_holds if hold.member is None]
        members = [f"{self._member}{next(self._serial)}" for _ in flight]
        _, left = self._fallback.held()
        answered = [f"{self._member}{next(self._serial)}" for _ in left]
        args: list[Any] = [self.lease, self.limit.window, len(members), *members]
        for member, seconds in zip(answered, left, strict=True):
            args += [member, seconds]
        await self._call(self._adopt_script, args)
        # Given back later, these slots are given back in Redis too.
        for hold, member in zip(flight, members, strict=True):
            hold.member = member

    def _fall_back(self, exc: BaseException) -> None:
        now = self._clock()
        self._recheck_at = now + self._recheck
        if self._down_since is None:
            self._down_since = now
            self.outages += 1
            log.warning(
                "shared rate limit %s: Redis cannot be reached (%s: %s); this process keeps to "
                "%d requests per %g s on its own until it is back",
                self.name,
                type(exc).__name__,
                exc,
                self._fallback.limit.max_requests,
                self.limit.window,
            )

    async def _local(self) -> _Hold | None:
        """A slot of the local share; None when it is time to ask Redis again first."""
        assert self._down_since is not None
        now = self._clock()
        # Slots other processes took through Redis before it went away run out within a window.
        start = self._down_since + self.limit.window
        if now < start:
            await self._nap(min(start, self._recheck_at) - now)
            return None
        await self._fallback.acquire()
        hold = _Hold(None, local=True)
        self._local_holds.add(hold)
        return hold

    async def _nap(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if the limiter is closed meanwhile."""
        sleeper = asyncio.ensure_future(self._sleep(max(delay, 0.0)))
        closing = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({sleeper, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            closing.cancel()

    def release(self, hold: object = None) -> None:
        """Give back the slot of ``hold`` (what :meth:`acquire` returned): it frees in a window."""
        if not isinstance(hold, _Hold):
            raise TypeError("release() takes what acquire() returned")
        if hold.local:
            self._local_holds.discard(hold)
            self._fallback.release()
        if hold.member is not None:
            # Written by a task the limiter owns (aclose waits for it): the caller goes on now.
            answered = self._clock()
            task = asyncio.get_running_loop().create_task(self._give_back(hold.member, answered))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

    async def _give_back(self, member: str, answered: float) -> None:
        try:
            ago = max(0.0, self._clock() - answered)
            await self._call(self._release_script, [self.limit.window, member, ago])
        except UNREACHABLE as exc:
            # Safe: the slot stays held until its lease ends, longer than needed, never shorter.
            log.debug("shared rate limit %s: a slot is freed by its lease (%s)", self.name, exc)

    def close(self) -> None:
        """End every wait for a slot, now and later, with ``SessionClosedError``."""
        self._closed.set()
        self._fallback.close()

    async def aclose(self) -> None:
        """:meth:`close`, then write the slots given back and close the connections."""
        self.close()
        while self._releases:
            await asyncio.wait(set(self._releases))
        await self._redis.aclose()
