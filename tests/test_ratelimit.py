"""The limiter's guarantee, checked on an injected clock: no window ever holds more than N."""

from __future__ import annotations

import asyncio
import random

from kling_async import RateLimit
from kling_async.ratelimit import RateLimiter


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


async def test_service_side_windows_never_exceed_the_limit() -> None:
    fake = FakeTime()
    limit = RateLimit(5, 1.0)
    limiter = RateLimiter(limit, clock=fake.clock, sleep=fake.sleep)
    rng = random.Random(1)
    arrivals: list[float] = []

    async def request() -> None:
        await limiter.acquire()
        # The request reaches the service some time after it was sent...
        arrival = fake.now + rng.uniform(0.0, 0.2)
        arrivals.append(arrival)
        # ...and its answer comes back later still.
        fake.now = max(fake.now, arrival + rng.uniform(0.0, 0.2))
        limiter.release()

    await asyncio.gather(*(request() for _ in range(200)))
    arrivals.sort()
    for i, start in enumerate(arrivals):
        in_window = [t for t in arrivals[i:] if t < start + limit.window]
        assert len(in_window) <= limit.max_requests
    assert limiter.granted == 200


async def test_slots_are_granted_in_arrival_order() -> None:
    fake = FakeTime()
    limiter = RateLimiter(RateLimit(2, 1.0), clock=fake.clock, sleep=fake.sleep)
    order: list[int] = []

    async def request(i: int) -> None:
        async with limiter.slot():
            order.append(i)

    await asyncio.gather(*(request(i) for i in range(10)))
    assert order == list(range(10))


async def test_a_slot_is_held_while_in_flight_and_one_window_after() -> None:
    fake = FakeTime()
    limiter = RateLimiter(RateLimit(1, 10.0), clock=fake.clock, sleep=fake.sleep)
    await limiter.acquire()
    assert limiter.in_use == 1
    fake.now = 3.0
    limiter.release()
    fake.now = 12.9
    assert limiter.in_use == 1  # released at 3.0: taken until 13.0
    fake.now = 13.0
    assert limiter.in_use == 0


async def test_a_waiter_behind_in_flight_requests_wakes_on_release() -> None:
    fake = FakeTime()
    limiter = RateLimiter(RateLimit(1, 1.0), clock=fake.clock, sleep=fake.sleep)
    await limiter.acquire()
    second = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    assert not second.done()
    limiter.release()
    await second
    assert fake.now >= 1.0  # it waited one window after the first answer
