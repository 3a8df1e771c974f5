"""``RedisRateLimiter``: one account's limit kept by every process that uses it, through Redis.

The guarantee is the in-process limiter's (:mod:`kling_async.ratelimit`), across processes: a
slot is held while its request is in flight and for one window after its answer, so the service
never sees more than N requests in any window. Two sorted sets per limit hold the slots: ``flight``
(requests in flight, each with a lease: a process that dies holds nothing longer than that) and
``done`` (answered requests, each until one window after its answer); a third, ``forgot``, names
the slots whose caller gave up before Redis answered. One Lua script takes a slot atomically,
reading Redis's own clock (``TIME``), so machines with skewed clocks agree. Each key lives as long
as its longest-lived member, whichever process added it.

No library we know of models "held while in flight" (token buckets and sliding-window counters
count a request when it is granted), so the script is our own; it is short.

When Redis cannot be reached, calls neither hang (every Redis call is bounded by ``timeout``) nor
go unlimited: the process keeps to ``fallback_share`` of the limit on its own (its first slot one
window after Redis went away and the requests then in flight were answered, as far as it can tell
from how long its own took lately, so slots taken through Redis before have run out), says so once
in the log, and a task of its own asks Redis again every ``recheck`` seconds (callers keep to the
share meanwhile, never waiting on Redis). When Redis answers, that task records there the slots
taken meanwhile and those given back while Redis could not hear it; the process then keeps to its
share for one window, one ``recheck`` and one ask more, while other processes that lost Redis come
back and record theirs. Each process's share is invisible to the others, so ``fallback_share``
times the number of processes must stay ≤ 1 for the limit to hold through an outage; and a process
cut off while the others still reach Redis is not seen by them: the service may then see the limit
plus that process's share in a window (the session retries the 429s).

Bounds: it grants slots; it knows nothing of HTTP or the service.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import secrets
import time
from typing import Any

from ..errors import ConfigurationError, SessionClosedError
from ..models import RateLimit
from ..ratelimit import Clock, RateLimiter, Sleep
from ._connect import NOW, UNREACHABLE, connect, split_url

__all__ = ["DEFAULT_FALLBACK_SHARE", "RedisRateLimiter"]

log = logging.getLogger("kling_async")

#: The local share of a process cut off from Redis: safe for up to 10 processes per limit.
DEFAULT_FALLBACK_SHARE = 0.1

# Lua: a sorted set of slots lives as long as its longest-lived member (plus a second), so a
# process with a shorter lease never shortens another's slots.
_KEEP = """
local function keep(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] and tonumber(last[2]) > now then
    redis.call('PEXPIRE', key, math.ceil((tonumber(last[2]) - now) * 1000) + 1000)
  end
end
"""

# KEYS: flight, done, forgot. ARGV: max requests, lease, member.
# Returns {1, "0"} when the slot is taken, else {0, seconds until the first answered slot frees,
# or "-1" when every slot is in flight (nothing frees before an answer comes back)}. Run twice
# for one member (a retry after a lost answer), it answers what it did the first time; for a
# member whose caller gave up before it ran, it takes nothing.
_ACQUIRE = (
    NOW
    + _KEEP
    + """
for i = 1, 3 do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', at(now)) end
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return {1, '0'} end
if redis.call('ZSCORE', KEYS[3], ARGV[3]) then return {0, '-1'} end
local used = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
if used < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], at(now + tonumber(ARGV[2])), ARGV[3])
  keep(KEYS[1])
  return {1, '0'}
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then return {0, at(tonumber(first[2]) - now)} end
return {0, '-1'}
"""
)

# KEYS: flight, done, forgot. ARGV: window, lease, n, then n members whose caller gave up (a
# timeout, a cancel), then pairs of (member, seconds since its answer came back, measured by the
# process up to the moment it sent this, so never more than really passed): an answered slot
# frees one window after the answer, however late this script runs.
_GIVE_BACK = (
    NOW
    + _KEEP
    + """
local window, lease, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 4, 3 + n do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('ZADD', KEYS[3], at(now + lease), ARGV[i])
end
for i = 4 + n, #ARGV, 2 do
  redis.call('ZREM', KEYS[1], ARGV[i])
  local free = now - tonumber(ARGV[i + 1]) + window
  if free > now then redis.call('ZADD', KEYS[2], at(free), ARGV[i]) end
end
keep(KEYS[2])
keep(KEYS[3])
return 1
"""
)

# KEYS: flight, done. ARGV: lease, n, then n members in flight, then pairs of (member, seconds
# left) of answered slots: the slots a process took while Redis was away.
_ADOPT = (
    NOW
    + _KEEP
    + """
local lease, n = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, 2 + n do redis.call('ZADD', KEYS[1], at(now + lease), ARGV[i]) end
for i = 3 + n, #ARGV, 2 do redis.call('ZADD', KEYS[2], at(now + tonumber(ARGV[i + 1])), ARGV[i]) end
keep(KEYS[1])
keep(KEYS[2])
return 1
"""
)


class _Hold:
    """One slot taken: in Redis (``member``), or of the local share (``local``), or both."""

    __slots__ = ("local", "member", "since")

    def __init__(self, member: str | None, local: bool, since: float = 0.0) -> None:
        self.member = member
        self.local = local
        self.since = since


class RedisRateLimiter:
    """Grants slots of one limit shared by every process that uses the same Redis and ``name``.

    ``url`` is a ``redis://`` (or ``rediss://``, ``unix://``) URL; ``name`` names the limit (one
    per account and endpoint: ``KlingSession(shared_limits=...)`` uses a hash of the key, never
    the key). ``lease`` bounds how long a slot in flight is held for a process that died: it must
    exceed the longest request plus one window. ``timeout`` bounds each Redis call; when one
    fails, the process keeps to ``fallback_share`` of the limit (at least one slot) until Redis
    answers again (asked every ``recheck`` seconds, the same in every process). The share times
    the number of processes sharing the limit must be ≤ 1 (the URL may carry it, as
    ``?fallback_share=0.05``). ``clock`` and ``sleep`` (local waits only) exist for tests.
    """

    def __init__(
        self,
        url: str,
        limit: RateLimit,
        *,
        name: str,
        lease: float = 60.0,
        fallback_share: float | None = None,
        timeout: float = 0.5,
        recheck: float = 1.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        url, ours = split_url(url, frozenset({"fallback_share"}))
        if fallback_share is None:
            try:
                fallback_share = float(ours.get("fallback_share", DEFAULT_FALLBACK_SHARE))
            except ValueError:
                raise ConfigurationError("fallback_share must be a number in (0, 1]") from None
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
        # One hash tag: every set lives on one cluster node, as a script needs.
        self._keys = [f"{{{name}}}:flight", f"{{{name}}}:done", f"{{{name}}}:forgot"]
        self._acquire_script = self._redis.register_script(_ACQUIRE)
        self._give_back_script = self._redis.register_script(_GIVE_BACK)
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
        #: Set when slots come from Redis again after an outage (wakes callers waiting then).
        self._back = asyncio.Event()
        #: The call recording in Redis the slots taken on the local share (given-back waits).
        self._adopting: asyncio.Future[Any] | None = None
        #: Until then (after Redis came back), slots need the local share as well as Redis.
        self._calm_until = 0.0
        self._local_holds: set[_Hold] = set()
        # Slots of this process taken through Redis alone: in flight now, the last answer, and
        # how long the latest ones were held (other processes' requests take about as long).
        self._in_redis = 0
        self._answered_at = 0.0
        self._took: collections.deque[float] = collections.deque(maxlen=64)
        # What Redis did not hear: members given up, and slots answered (when), to send again.
        self._unsent_forgets: list[str] = []
        self._unsent: list[tuple[str, float]] = []
        self._replaying = asyncio.Lock()
        self._mender: asyncio.Task[None] | None = None
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

    @property
    def fallback_limit(self) -> RateLimit:
        """What this process keeps to on its own while Redis cannot be reached."""
        return self._fallback.limit

    async def prepare(self) -> None:
        """Connect and load the scripts now, rather than on the first :meth:`acquire`."""
        try:
            async with asyncio.timeout(3 * self._timeout):
                await self._redis.ping()
                for script in (self._acquire_script, self._give_back_script, self._adopt_script):
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
        local = False  # a slot of the local share, taken for this caller
        try:
            while True:
                if self._closed.is_set():
                    raise SessionClosedError("the session closed while waiting for a rate slot")
                if self._down_since is not None:
                    if local:  # Redis went away again: its slot waits a window like any other
                        local = False
                        self._fallback.release()
                    # Slots taken through Redis before it went away run out a window after their
                    # answer: its own, once answered; others', which it cannot see, once their
                    # requests of the moment (as long as its own lately) could be answered.
                    others = self._down_since + max(self._took, default=0.0)
                    start = max(others, self._answered_at) + self.limit.window
                    if self._clock() < start or self._in_redis:
                        await self._nap(max(start - self._clock(), self._poll))
                        continue
                    await self._fallback.acquire()
                    local = True
                    if self._down_since is not None:  # still on its own: that slot is the hold
                        hold = _Hold(None, local=True)
                        self._local_holds.add(hold)
                        local = False
                        return hold
                    continue  # Redis came back meanwhile: that slot needs Redis's too
                if not local and self._clock() < self._calm_until:
                    await self._fallback.acquire()
                    local = True
                    continue  # that wait may have been long: look at Redis's state again
                member = f"{self._member}{next(self._serial)}"
                try:
                    granted, wait = await self._ask(member)
                except UNREACHABLE as exc:
                    self._fall_back(exc)
                    continue
                if granted:
                    hold = _Hold(member, local=local, since=self._clock())
                    if local:
                        self._local_holds.add(hold)
                        local = False
                    else:
                        self._in_redis += 1
                    return hold
                await self._nap(wait if wait >= 0 else self._poll)
        finally:
            if local:  # cancelled or closed while holding it
                self._fallback.release()

    async def _call(self, script: Any, args: list[Any]) -> Any:
        # The client's own timeouts bound each socket step; this bounds the whole call.
        async with asyncio.timeout(3 * self._timeout):
            return await script(keys=self._keys, args=args)

    async def _ask(self, member: str) -> tuple[bool, float]:
        try:
            granted, wait = await self._call(
                self._acquire_script, [self.limit.max_requests, self.lease, member]
            )
        except BaseException:
            # Timed out or cancelled, the script may still run in Redis (or have run): tell
            # Redis this member is given up, so no slot is kept for a caller that has none.
            self._send([member], [])
            raise
        return int(granted) == 1, float(wait)

    async def _come_back(self) -> None:
        """Redis answers again: record there what it missed, and share the limit again."""
        await self._replay()
        # From the same moment (no wait in between): the slots taken on the local share are
        # given Redis members, and no caller takes one of that share alone any more.
        flight = [hold for hold in self._local_holds if hold.member is None]
        _, left = self._fallback.held()
        args: list[Any] = [self.lease, len(flight)]
        for hold in flight:
            hold.member = f"{self._member}{next(self._serial)}"
            args.append(hold.member)
        for seconds in left:
            args += [f"{self._member}{next(self._serial)}", seconds]
        self._down_since = None
        # Other processes that lost Redis too may still be on their share, unseen: keep to ours
        # until they are back (they ask every ``recheck``, each ask bounded by three timeouts)
        # and one window has passed over what they took on their own.
        calm = self.limit.window + self._recheck + 3 * self._timeout
        self._calm_until = self._clock() + calm
        self._back.set()
        log.warning(
            "shared rate limit %s: Redis is back; the limit is shared again (this process keeps "
            "to its own share %g s more)",
            self.name,
            calm,
        )
        self._adopting = asyncio.ensure_future(self._call(self._adopt_script, args))
        try:
            await self._adopting
        except UNREACHABLE as exc:
            self._fall_back(exc)

    def _fall_back(self, exc: BaseException) -> None:
        self._back.clear()
        if self._down_since is None:
            self._down_since = self._clock()
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
        self._mend()

    async def _nap(self, delay: float, *, hearing: bool = True) -> None:
        """Sleep ``delay`` seconds, or less if the limiter closes (or Redis is back) meanwhile."""
        sleeper = asyncio.ensure_future(self._sleep(max(delay, 0.0)))
        closing = asyncio.ensure_future(self._closed.wait())
        waking = {sleeper, closing}
        if hearing and self._down_since is not None:
            waking.add(asyncio.ensure_future(self._back.wait()))
        try:
            await asyncio.wait(waking, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in waking:
                future.cancel()

    def release(self, hold: object = None) -> None:
        """Give back the slot of ``hold`` (what :meth:`acquire` returned): it frees in a window."""
        if not isinstance(hold, _Hold):
            raise TypeError("release() takes what acquire() returned")
        if hold.local:
            self._local_holds.discard(hold)
            self._fallback.release()
        elif hold.member is not None:
            self._in_redis -= 1
            self._answered_at = self._clock()
            self._took.append(self._answered_at - hold.since)
        if hold.member is not None:
            self._send([], [(hold.member, self._clock())])

    def _send(self, forgets: list[str], answered: list[tuple[str, float]]) -> None:
        """Tell Redis, from a task the limiter owns (aclose waits for it): the caller goes on."""
        task = asyncio.get_running_loop().create_task(self._give_back(forgets, answered))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _give_back(self, forgets: list[str], answered: list[tuple[str, float]]) -> None:
        if self._adopting is not None:  # a slot recorded there is given back after, not before
            await asyncio.wait({self._adopting})
        try:
            await self._tell(forgets, answered)
        except UNREACHABLE as exc:
            # Kept and sent again when Redis answers: until then the slot stays held in Redis,
            # longer than needed, never shorter.
            log.debug("shared rate limit %s: a slot is given back later (%s)", self.name, exc)
            self._unsent_forgets += forgets
            self._unsent += answered
            self._mend()

    async def _tell(self, forgets: list[str], answered: list[tuple[str, float]]) -> None:
        now = self._clock()
        args: list[Any] = [self.limit.window, self.lease, len(forgets), *forgets]
        for member, when in answered:
            args += [member, max(0.0, now - when)]
        await self._call(self._give_back_script, args)

    async def _replay(self) -> None:
        """Send Redis the slots given back (or up) that it did not hear of."""
        async with self._replaying:
            # A slot answered longer than a lease ago is gone from Redis by now anyway.
            oldest = self._clock() - self.lease
            self._unsent = [(member, when) for member, when in self._unsent if when > oldest]
            forgets, answered = list(self._unsent_forgets), list(self._unsent)
            if forgets or answered:
                await self._tell(forgets, answered)
                del self._unsent_forgets[: len(forgets)]
                del self._unsent[: len(answered)]

    def _mend(self) -> None:
        """Start the task that asks Redis again, off the callers' path (if not running)."""
        if self._closed.is_set() or (self._mender is not None and not self._mender.done()):
            return
        self._mender = asyncio.get_running_loop().create_task(
            self._mending(), name=f"kling rate limit {self.name}: asking Redis"
        )

    async def _mending(self) -> None:
        while not self._closed.is_set():
            await self._nap(self._recheck, hearing=False)
            if self._closed.is_set():
                return
            try:
                if self._down_since is not None:
                    async with asyncio.timeout(3 * self._timeout):
                        await self._redis.ping()
                    await self._come_back()
                else:
                    await self._replay()
            except UNREACHABLE:
                continue
            if self._down_since is None and not (self._unsent or self._unsent_forgets):
                return

    def close(self) -> None:
        """End every wait for a slot, now and later, with ``SessionClosedError``."""
        self._closed.set()
        self._fallback.close()

    async def aclose(self) -> None:
        """:meth:`close`, then write the slots given back and close the connections."""
        self.close()
        while self._releases:
            await asyncio.wait(set(self._releases))
        if self._mender is not None:
            await asyncio.wait({self._mender})
        if self._down_since is None:
            try:
                await self._replay()  # a last try: else those slots end with their lease
            except UNREACHABLE as exc:
                log.debug("shared rate limit %s: %s", self.name, exc)
        await self._redis.aclose()
