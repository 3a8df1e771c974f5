"""RedisRateLimiter against a real redis-server: the window holds across limiters, leases end,
Redis going away falls back to a local share (no hang, logged once) and its return is noticed."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from kling_async import ConfigurationError, KlingError, KlingSession, RateLimit, SessionClosedError
from kling_async.ratelimit import Limiter, RateLimiter
from kling_async.redis import RedisRateLimiter
from kling_async.redis._connect import UNREACHABLE
from kling_async.redis._limiter import _ACQUIRE

from .conftest import SimFactory, eventually, session_for
from .redis_server import Blackhole, RedisServer


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


async def until(read: Callable[[], Awaitable[object]], value: object, timeout: float = 20) -> None:
    """Wait until ``await read()`` gives ``value``; fail (never hang) after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while await read() != value:
            await asyncio.sleep(0.02)


async def until_shared(limiter: RedisRateLimiter) -> None:
    """Take and give back slots until one comes from Redis again."""
    while True:
        hold = await limiter.acquire()
        limiter.release(hold)
        if limiter.shared:
            return
        await asyncio.sleep(0.02)


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
        # Its own task asks Redis every recheck; callers keep to the share until it answers.
        await asyncio.wait_for(until_shared(limiter), timeout=30)
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
    # The URL may carry the fallback share (the limit is 20 creations: 5 % is one).
    shared = f"{redis_server.url}?fallback_share=0.05"
    async with session_for(sim, shared_limits=shared) as kling:
        assert isinstance(kling.create_limiter, RedisRateLimiter)
        assert kling.create_limiter.fallback_limit.max_requests == 1
        await kling.get_credits()


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


async def test_a_shorter_lease_never_shortens_the_slots_of_another(
    redis_server: RedisServer,
) -> None:
    limit = RateLimit(2, 0.1)
    long = RedisRateLimiter(redis_server.url, limit, name="ttl", lease=30.0)
    short = RedisRateLimiter(redis_server.url, limit, name="ttl", lease=1.0)
    try:
        await long.acquire()  # in flight for up to 30 s
        short.release(await short.acquire())
        async with aioredis.Redis.from_url(redis_server.url) as check:
            # The set lives as long as its longest slot, whoever wrote last.
            assert await check.pttl("{ttl}:flight") > 20_000
    finally:
        await long.aclose()
        await short.aclose()


async def test_a_slot_given_back_while_redis_was_cut_off_is_given_back_when_it_answers(
    redis_server: RedisServer, blackhole: Blackhole
) -> None:
    # A lease far longer than the test: only the give-back sent again can free these slots.
    limiter = RedisRateLimiter(
        blackhole.url, RateLimit(2, 0.1), name="blip", lease=60.0, timeout=0.1, recheck=0.1
    )
    try:
        first, second = await limiter.acquire(), await limiter.acquire()
        blackhole.cut()
        limiter.release(first)
        limiter.release(second)
        async with aioredis.Redis.from_url(redis_server.url) as check:
            await asyncio.sleep(0.5)  # both give-backs have timed out by now
            assert await check.zcard("{blip}:flight") == 2
            blackhole.heal()
            await until(lambda: check.zcard("{blip}:flight"), 0)
        hold = await asyncio.wait_for(limiter.acquire(), timeout=20)
        assert limiter.shared and limiter.outages == 0
        limiter.release(hold)
    finally:
        await limiter.aclose()


#: Lua that keeps Redis busy for 1.5 s: every other client's call waits meanwhile.
BUSY = (
    "local s, u = unpack(redis.call('TIME')) "
    "repeat local n, v = unpack(redis.call('TIME')) "
    "until (n - s) * 1000000 + (v - u) > 1500000 return 1"
)


async def test_a_slot_whose_caller_gave_up_is_not_kept_in_redis(redis_server: RedisServer) -> None:
    limiter = RedisRateLimiter(
        redis_server.url, RateLimit(2, 0.1), name="gave", lease=60.0, timeout=0.1, recheck=0.1
    )
    await limiter.prepare()
    url = redis_server.url
    async with (
        aioredis.Redis.from_url(url, decode_responses=True) as check,
        aioredis.Redis.from_url(url, decode_responses=True) as busy,
        aioredis.Redis.from_url(url, socket_timeout=0.05) as probe,
    ):
        # Run twice for one member (a retry after a lost answer), the script takes one slot.
        keys = ["{twice}:flight", "{twice}:done", "{twice}:forgot"]
        for _ in range(2):
            assert await check.eval(_ACQUIRE, 3, *keys, 2, 60, "m") == [1, "0"]
        assert await check.zcard("{twice}:flight") == 1
        stall = asyncio.create_task(busy.eval(BUSY, 0))
        with pytest.raises(UNREACHABLE):  # Redis is busy from now on
            while True:
                await probe.ping()
        # The ask times out (Redis runs the script later all the same): a local slot instead.
        hold = await asyncio.wait_for(limiter.acquire(), timeout=20)
        assert not limiter.shared
        limiter.release(hold)
        await stall
        # The slot the script took for nobody is given up as soon as Redis answers.
        await until(lambda: check.zcard("{gave}:flight"), 0, timeout=10)
        assert await check.zcard("{gave}:forgot") == 1
    await limiter.aclose()


async def test_processes_back_from_an_outage_at_different_times_keep_the_limit(
    redis_server: RedisServer,
) -> None:
    # Two processes with half the limit each; the second hears of Redis's return 0.25 s after
    # the first (less than a window), and both may take up to an ask (0.9 s) to notice.
    limit = RateLimit(4, 0.6)
    proxies = [Blackhole(redis_server.port) for _ in range(2)]
    limiters = []
    for proxy in proxies:
        url = await proxy.start()
        limiters.append(
            RedisRateLimiter(
                url, limit, name="back", lease=10.0, fallback_share=0.5, timeout=0.3, recheck=0.05
            )
        )
    arrivals: list[float] = []
    stop = asyncio.Event()

    async def work(limiter: RedisRateLimiter) -> None:
        while not stop.is_set():
            hold = await limiter.acquire()
            arrivals.append(time.monotonic())
            await asyncio.sleep(0.005)
            limiter.release(hold)

    async def more(count: int) -> None:
        await eventually(lambda: len(arrivals) >= count, timeout=30)

    workers = [asyncio.create_task(work(limiter)) for limiter in limiters]
    try:
        await more(8)
        for proxy in proxies:
            proxy.cut()
        await eventually(lambda: not any(limiter.shared for limiter in limiters), timeout=30)
        await more(len(arrivals) + 8)  # both on their own shares
        proxies[0].heal()
        await eventually(lambda: limiters[0].shared, timeout=30)
        await asyncio.sleep(0.25)  # the scenario: the second one's network heals later
        proxies[1].heal()
        await eventually(lambda: limiters[1].shared, timeout=30)
        await more(len(arrivals) + 12)
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        for limiter in limiters:
            await limiter.aclose()
        for proxy in proxies:
            await proxy.close()
    # Every window of the whole run: before, during and after the outage.
    assert windows_hold(arrivals, limit)


async def test_a_process_cut_off_alone_adds_no_more_than_its_share(
    redis_server: RedisServer,
) -> None:
    limit = RateLimit(4, 0.2)
    cut_off = RedisRateLimiter(
        "redis://127.0.0.1:1/0", limit, name="part", lease=5.0, fallback_share=0.5
    )
    fine = RedisRateLimiter(redis_server.url, limit, name="part", lease=5.0, fallback_share=0.5)
    try:
        arrivals = await asyncio.wait_for(run_requests([cut_off, fine], 24, seed=5), timeout=60)
    finally:
        await cut_off.aclose()
        await fine.aclose()
    # What the README says: the others cannot see it, so the limit plus its share, no more.
    assert windows_hold(arrivals, RateLimit(limit.max_requests + 2, limit.window))


async def test_a_cut_off_redis_never_holds_callers_up_once_they_fell_back(
    blackhole: Blackhole,
) -> None:
    limiter = RedisRateLimiter(
        blackhole.url,
        RateLimit(8, 0.1),
        name="bh",
        lease=5.0,
        fallback_share=0.5,
        timeout=0.5,
        recheck=0.05,
    )
    await limiter.prepare()
    blackhole.cut()
    try:
        await asyncio.wait_for(limiter.acquire(), timeout=30)  # finds Redis gone (up to 1.5 s)
        assert not limiter.shared
        waits = []
        for _ in range(40):
            started = time.monotonic()
            limiter.release(await asyncio.wait_for(limiter.acquire(), timeout=30))
            waits.append(time.monotonic() - started)
        # Redis is asked again from the limiter's own task, every 0.05 s: no caller waits for
        # an ask (1.5 s each), only for its share (4 per 0.1 s).
        assert max(waits) < 1.0
        assert not limiter.shared
    finally:
        blackhole.heal()
        await limiter.aclose()
