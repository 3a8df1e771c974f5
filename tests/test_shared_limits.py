"""RedisRateLimiter against a real redis-server: the window holds across limiters, leases end,
Redis going away falls back to a local share (no hang, logged once) and its return is noticed."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest
import redis.asyncio as aioredis

from kling_async import ConfigurationError, KlingError, KlingSession, RateLimit, SessionClosedError
from kling_async.ratelimit import Limiter, RateLimiter
from kling_async.redis import RedisRateLimiter

from .conftest import SimFactory, session_for
from .redis_server import RedisServer


def windows_hold(times: list[float], limit: RateLimit) -> bool:
    """True if no window of ``limit.window`` seconds holds more than ``limit.max_requests``."""
    times = sorted(times)
    return all(
        sum(1 for t in times[i:] if t < start + limit.window) <= limit.max_requests
        for i, start in enumerate(times)
    )


async def run_requests(limiters: list[Limiter], count: int, seed: int) -> list[float]:
    """``count`` requests spread over the limiters; each "arrives" while it holds its slot."""
    rng = random.Random(seed)
    arrivals: list[float] = []

    async def request(limiter: Limiter) -> None:
        hold = await limiter.acquire()
        try:
            await asyncio.sleep(rng.uniform(0.0, 0.01))
            arrivals.append(time.monotonic())
            await asyncio.sleep(rng.uniform(0.0, 0.01))
        finally:
            limiter.release(hold)

    await asyncio.gather(*(request(limiters[i % len(limiters)]) for i in range(count)))
    return arrivals


async def test_limiters_sharing_a_name_never_exceed_the_limit_together(
    redis_server: RedisServer,
) -> None:
    limit = RateLimit(5, 0.1)
    limiters = [RedisRateLimiter(redis_server.url, limit, name="t", lease=5.0) for _ in range(4)]
    try:
        arrivals = await run_requests(list(limiters), 80, seed=1)
    finally:
        for limiter in limiters:
            await limiter.aclose()
    assert len(arrivals) == 80
    assert windows_hold(arrivals, limit)
    assert sum(limiter.granted for limiter in limiters) == 80
    assert all(limiter.shared and limiter.outages == 0 for limiter in limiters)


async def test_separate_in_process_limiters_do_exceed_it() -> None:
    # The check above can fail: four limiters that do not share go over the limit together.
    limit = RateLimit(5, 0.1)
    arrivals = await run_requests([RateLimiter(limit) for _ in range(4)], 80, seed=1)
    assert not windows_hold(arrivals, limit)


async def test_a_slot_in_flight_is_held_until_its_lease_ends(redis_server: RedisServer) -> None:
    limit = RateLimit(2, 0.05)
    dead = RedisRateLimiter(redis_server.url, limit, name="lease", lease=2.0)
    alive = RedisRateLimiter(redis_server.url, limit, name="lease", lease=2.0)
    try:
        # A process takes both slots and dies with them in flight (never gives them back).
        await dead.acquire()
        await dead.acquire()
        started = time.monotonic()
        waiting = asyncio.create_task(alive.acquire())
        await asyncio.sleep(0.5)  # ten windows: a slot given back would have freed long ago
        assert not waiting.done()
        hold = await asyncio.wait_for(waiting, timeout=30)
        # A lower bound only (a slow machine makes it longer): the lease began before ``started``.
        assert time.monotonic() - started >= 2.0 - 0.05
        alive.release(hold)
    finally:
        await dead.aclose()
        await alive.aclose()


async def test_redis_going_away_falls_back_logs_once_and_comes_back(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kling_async")
    limit = RateLimit(8, 0.05)
    limiter = RedisRateLimiter(
        redis_server.url, limit, name="away", lease=5.0, fallback_share=0.25, recheck=0.3
    )
    try:
        await run_requests([limiter], 10, seed=2)
        assert limiter.shared
        redis_server.stop()
        arrivals = await asyncio.wait_for(run_requests([limiter], 30, seed=3), timeout=30)
        assert not limiter.shared and limiter.outages == 1
        # Alone, under the fallback, it keeps to its share: 2 of 8.
        assert windows_hold(arrivals, RateLimit(2, limit.window))
        away = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
        assert len(away) == 1, "the outage is logged once, not per call"
        redis_server.start()
        await asyncio.sleep(0.35)  # past the recheck interval: the next call asks Redis again
        hold = await asyncio.wait_for(limiter.acquire(), timeout=30)
        assert limiter.shared
        limiter.release(hold)
        back = [r for r in caplog.records if "Redis is back" in r.getMessage()]
        assert len(back) == 1
        async with aioredis.Redis.from_url(redis_server.url) as check:
            assert await check.zcard("{away}:flight") + await check.zcard("{away}:done") >= 1
    finally:
        await limiter.aclose()


async def test_an_unreachable_redis_never_hangs_a_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kling_async")
    # Nothing listens on port 1: every call fails at once and the local share takes over.
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", RateLimit(4, 0.05), name="x", lease=1.0)
    try:
        arrivals = await asyncio.wait_for(run_requests([limiter], 12, seed=4), timeout=30)
        assert len(arrivals) == 12 and not limiter.shared
        assert windows_hold(arrivals, RateLimit(1, 0.05))
    finally:
        await limiter.aclose()
    assert sum("cannot be reached" in r.getMessage() for r in caplog.records) == 1


async def test_closing_ends_a_wait_for_a_slot(redis_server: RedisServer) -> None:
    limiter = RedisRateLimiter(redis_server.url, RateLimit(1, 60.0), name="c", lease=120.0)
    hold = await limiter.acquire()
    waiting = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.05)
    limiter.close()
    with pytest.raises(SessionClosedError):
        await asyncio.wait_for(waiting, timeout=10)
    limiter.release(hold)
    await limiter.aclose()


async def test_a_session_shares_its_limits_under_a_hash_of_its_key(
    make_sim: SimFactory, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim = await make_sim()
    async with session_for(sim, shared_limits=redis_server.url, limits_prefix="acct") as kling:
        assert isinstance(kling.create_limiter, RedisRateLimiter)
        assert kling.create_limit == kling.create_limiter.limit
        await kling.get_credits()
        with pytest.raises(KlingError):
            await kling.get_task("f" * 32)
        assert kling.query_limiter.granted >= 1  # type: ignore[attr-defined]
    async with aioredis.Redis.from_url(redis_server.url, decode_responses=True) as check:
        names = await check.keys("*")
    assert names and all(name.startswith("{acct:") for name in names)
    assert not any(sim.api_key in name for name in names)
    assert sim.api_key not in caplog.text
    assert sim.api_key not in repr(kling.create_limiter)


async def test_limiters_of_ones_own_are_used_and_left_open(
    make_sim: SimFactory, redis_server: RedisServer
) -> None:
    sim = await make_sim()
    query = RedisRateLimiter(redis_server.url, RateLimit(10, 0.005), name="own", lease=5.0)
    async with session_for(sim, query_limiter=query) as kling:
        with pytest.raises(KlingError):
            await kling.get_task("f" * 32)
    assert query.granted >= 1
    hold = await query.acquire()  # the session did not close it: it is the caller's
    query.release(hold)
    await query.aclose()


def test_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        KlingSession("k", shared_limits="http://example.com")
    with pytest.raises(ConfigurationError):
        KlingSession(
            "k",
            shared_limits="redis://127.0.0.1:1/0",
            create_limiter=RateLimiter(RateLimit(1, 1.0)),
        )
    with pytest.raises(ConfigurationError):
        RedisRateLimiter("redis://127.0.0.1:1/0", RateLimit(1, 10.0), name="n", lease=5.0)
