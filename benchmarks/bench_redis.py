"""Limits shared through Redis: four worker processes, one key, one simulator, one redis-server.

Reports the combined createTask rate of 4 workers as a ratio of the account's limit (goal >= 0.95
with zero 429s), the same for recordInfo queries, and the latency a RedisRateLimiter adds to each
limited call against the in-process limiter (goal: under 1 ms median on loopback). Needs
``redis-server`` (``make test`` installs it).

    python -m benchmarks.bench_redis [--creates 200] [--queries 200] [--time-scale 0.1]
        [--query-time-scale 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
from pathlib import Path

from kling_async import KlingSession, MotionControlInput, PollSchedule, RateLimit
from kling_async.ratelimit import Limiter, RateLimiter
from kling_async.redis import RedisRateLimiter
from kling_async.simulator import Simulator, SimulatorConfig
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "kling_async" / "assets"
CREATE = RateLimit(20, 10.0)
QUERY = RateLimit(10, 1.0)
WORKERS = 4


async def worker(args: argparse.Namespace) -> None:
    """One worker process: ``count`` createTask calls, or ``count`` queries of one task."""
    share = args.share  # without Redis: this process's part of the limit
    async with KlingSession(
        args.key,
        base_url=args.base,
        upload_base_url=args.base,
        create_limit=RateLimit(CREATE.max_requests // share, CREATE.window * args.scale),
        query_limit=RateLimit(QUERY.max_requests // share, QUERY.window * args.scale),
        poll=PollSchedule().scaled(args.scale),
        shared_limits=args.redis or None,
        limits_prefix="bench",
    ) as kling:
        inp = MotionControlInput(args.image_url, args.video_url)
        for limiter in (kling.create_limiter, kling.query_limiter):
            if isinstance(limiter, RedisRateLimiter):
                await limiter.prepare()  # the steady state is measured, not the first connect
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if args.worker == "create":
            await asyncio.gather(*(kling.create_task(inp) for _ in range(args.count)))
        else:
            await asyncio.gather(*(kling.get_task(args.task) for _ in range(args.count)))


async def run_workers(sim: Simulator, redis: str, workers: int, what: str, count: int,
                      scale: float, urls: tuple[str, str], task: str) -> list[float]:  # fmt: skip
    """Run ``workers`` processes of ``count`` calls each; the arrival times of those calls."""
    started = len(sim.requests)
    procs = []
    for _ in range(workers):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.bench_redis", "--worker", what,
            "--base", sim.base_url, "--key", sim.api_key, "--redis", redis,
            "--count", str(count), "--time-scale", str(scale),
            "--share", str(1 if redis else workers),
            "--image-url", urls[0], "--video-url", urls[1], "--task", task,
            cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        procs.append(proc)
    for proc in procs:
        assert proc.stdout is not None
        assert (await proc.stdout.readline()).strip() == b"ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
    codes = await asyncio.gather(*(proc.wait() for proc in procs))
    assert codes == [0] * workers, codes
    endpoint = "createTask" if what == "create" else "recordInfo"
    return [r.time for r in sim.requests[started:] if r.endpoint == endpoint]


def rate_ratio(times: list[float], limit: RateLimit) -> float:
    """How close N requests came to the fastest the limit allows: (N/max - 1) windows."""
    times = sorted(times)
    bound = (math.ceil(len(times) / limit.max_requests) - 1) * limit.window
    return bound / (times[-1] - times[0])


async def shared_rates(creates: int, queries: int, scales: tuple[float, float]) -> None:
    redis = RedisServer()
    redis.start()
    try:
        for what, count, scale, limit in (
            ("create", creates, scales[0], CREATE),
            ("query", queries, scales[1], QUERY),
        ):
            window = limit.scaled(scale)
            print(f"\n== {what}: {count} calls at time scale {scale} (window {window.window} s) ==")
            # Four processes sharing the limit through Redis; then, with in-process limiters, four
            # processes each with a quarter of it, and one process alone: what holding a slot
            # while in flight costs on this machine anyway.
            for workers, url in ((WORKERS, redis.url), (WORKERS, ""), (1, "")):
                # Visible at once: the queries ask about a task created just before.
                config = SimulatorConfig(time_scale=scale, credits=1e9, invisible_seconds=0.0)
                async with Simulator(config) as sim:
                    async with sim.session() as kling:
                        image = await kling.upload_image(ASSETS / "character.png")
                        video = await kling.upload_video(ASSETS / "motion.mp4")
                        # Only the queries need a task: a create here would share a window with
                        # the workers' creates.
                        inp = MotionControlInput(image.url, video.url)
                        task = await kling.create_task(inp) if what == "query" else "-"
                    times = await run_workers(
                        sim, url, workers, what, count // workers, scale, (image.url, video.url),
                        task,
                    )  # fmt: skip
                    too_many = sum(sim.rate_limited.values())
                how = (
                    f"{workers} processes sharing it through Redis"
                    if url
                    else f"{workers} process(es), in-process limiters, each 1/{workers} of it"
                )
                goal = " (goal >= 0.95, no 429)" if url else ""
                print(
                    f"{how}: rate {rate_ratio(times, window):.3f} of the limit{goal}; "
                    f"429s {too_many}"
                )
    finally:
        redis.close()


async def latency(calls: int) -> None:
    redis = RedisServer()
    redis.start()
    roomy = RateLimit(1_000_000, 1.0)
    shared = RedisRateLimiter(redis.url, roomy, name="latency", lease=5.0)
    local = RateLimiter(roomy)

    async def measure(limiter: Limiter) -> list[float]:
        took = []
        for _ in range(calls):
            started = time.perf_counter()
            hold = await limiter.acquire()
            took.append(time.perf_counter() - started)
            limiter.release(hold)
        return took

    try:
        await measure(shared)  # warm: the connection and the scripts are loaded once
        remote, here = await measure(shared), await measure(local)
    finally:
        await shared.aclose()
        redis.close()
    added = [1000 * (a - b) for a, b in zip(sorted(remote), sorted(here), strict=True)]
    print(f"\n== latency a shared limiter adds per limited call ({calls} calls, loopback) ==")
    print(
        f"median {statistics.median(added):.3f} ms (goal < 1 ms), "
        f"p99 {added[int(0.99 * len(added))]:.3f} ms; in-process alone: median "
        f"{1e6 * statistics.median(here):.1f} us"
    )


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--creates", type=int, default=200)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--time-scale", dest="scale", type=float, default=0.1)
    parser.add_argument("--query-time-scale", dest="query_scale", type=float, default=1.0)
    # A worker process of the benchmark (internal).
    parser.add_argument("--worker", choices=("create", "query"))
    for name in ("--base", "--key", "--redis", "--image-url", "--video-url", "--task"):
        parser.add_argument(name)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--share", type=int, default=1)
    args = parser.parse_args(argv)
    if args.worker:
        await worker(args)
        return
    await latency(args.calls)
    await shared_rates(args.creates, args.queries, (args.scale, args.query_scale))


if __name__ == "__main__":
    asyncio.run(main())
