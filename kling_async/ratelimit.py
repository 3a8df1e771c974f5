"""A client-side rate limiter that never lets the service see more than N requests per window.

The service counts a request when it *arrives*; the client only knows when it *sent* it and when
the answer *came back*. A request therefore holds its slot while in flight, and once its answer is
back the slot stays taken for one full window counted from that moment. Since the answer comes
back after the request arrived, any request sent later than one window after it arrives more than
one window later too: the service's window never holds more than N. Sleepers hold no slot.

:class:`Limiter` is what the session asks of any limiter; :class:`RateLimiter` is the one for a
single process, and ``kling_async.redis.RedisRateLimiter`` gives the same guarantee to several
processes sharing one account.

Bounds: it knows nothing of HTTP or the API: it only grants slots.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from .errors import SessionClosedError
from .models import RateLimit

__all__ = ["Limiter", "RateLimiter"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class Limiter(Protocol):
    """What the session asks of a rate limiter: a slot per request, held while it is in flight.

    ``acquire()`` waits for a slot and returns a hold; ``release(hold)`` gives it back once the
    answer (or the failure) is in, and the slot stays taken for one window from then.
    ``close()`` ends every wait with ``SessionClosedError``; ``aclose()`` does that too, then
    frees what the limiter holds (slots given back after ``close()`` still count).
    """

    @property
    def limit(self) -> RateLimit:
        """The limit the limiter keeps."""
        ...

    @property
    def waiting(self) -> int:
        """Callers of this process waiting for a slot now."""
        ...

    async def acquire(self) -> object:
        """Wait for a free slot and take it; pass what it returns to :meth:`release`."""
        ...

    def release(self, hold: object = None) -> None:
        """Give back the slot of ``hold``: it frees one window from now."""
        ...

    def close(self) -> None:
        """End every wait for a slot, now and later, with ``SessionClosedError``."""
        ...

    async def aclose(self) -> None:
        """:meth:`close`, then free what the limiter holds (connections, pending writes)."""
        ...


class RateLimiter:
    """Grants slots first come, first served, under a :class:`RateLimit`."""

    def __init__(
        self,
        limit: RateLimit,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self._clock = clock
        self._sleep = sleep
        self._released: collections.deque[float] = collections.deque()
        self._in_flight = 0
        # asyncio.Lock wakes waiters in FIFO order: that is what makes the limiter fair.
        self._turn = asyncio.Lock()
        self._release_event = asyncio.Event()
        self._closed = asyncio.Event()
        #: Slots granted so far, and callers waiting for one now (for benchmarks and tests).
        self.granted = 0
        self.waiting = 0

    def _prune(self, now: float) -> None:
        window = self.limit.window
        while self._released and self._released[0] + window <= now:
            self._released.popleft()

    @property
    def in_use(self) -> int:
        """Slots taken now: requests in flight plus answers back within the last window."""
        self._prune(self._clock())
        return self._in_flight + len(self._released)

    async def acquire(self) -> None:
        """Wait for a free slot and take it; pair with :meth:`release` (slots are all alike)."""
        self.waiting += 1
        try:
            await self._acquire()
        finally:
            self.waiting -= 1

    def close(self) -> None:
        """End every wait for a slot, now and later, with ``SessionClosedError``."""
        self._closed.set()
        self._release_event.set()

    async def aclose(self) -> None:
        """The same as :meth:`close` (nothing else to free): the :class:`Limiter` form."""
        self.close()

    def held(self) -> tuple[int, list[float]]:
        """Slots in flight now, and the seconds left before each answered slot frees."""
        now = self._clock()
        self._prune(now)
        return self._in_flight, [t + self.limit.window - now for t in self._released]

    async def _nap(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if the limiter is closed meanwhile."""
        sleeper = asyncio.ensure_future(self._sleep(delay))
        closing = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({sleeper, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            closing.cancel()

    async def _acquire(self) -> None:
        async with self._turn:
            while True:
                if self._closed.is_set():
                    raise SessionClosedError("the session closed while waiting for a rate slot")
                now = self._clock()
                self._prune(now)
                if self._in_flight + len(self._released) < self.limit.max_requests:
                    self._in_flight += 1
                    self.granted += 1
                    return
                if self._released:
                    await self._nap(self._released[0] + self.limit.window - now)
                else:
                    # Every slot is in flight: nothing can free up before one of them answers.
                    self._release_event.clear()
                    await self._release_event.wait()

    def release(self, hold: object = None) -> None:
        """Give back a slot once the answer (or the failure) is in: it frees one window later."""
        self._in_flight -= 1
        self._released.append(self._clock())
        self._release_event.set()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the duration of one request."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()
