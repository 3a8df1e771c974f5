"""N tasks created and awaited on the time-scaled simulator: kling_async vs a naive gather loop.

Reports, for each: achieved create and query rates as ratios of the configured limits (steady
state, after the first burst), 429 answers, queries per task, and the delay from a task's
completion on the simulator to the client returning it (median and p95, in nominal seconds).
The simulator runs in its own process (the machine's monotonic clock is shared), so the client's
figures are not skewed by serving the simulator from the same event loop.

    python -m benchmarks.bench_polling [--tasks 1000] [--time-scale 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp

from kling_async import KlingSession, MotionControlInput, PollSchedule, RateLimit
from kling_async.simulator import Simulator, SimulatorConfig

from ._remote import remote_simulator

MEDIA = Path(__file__).resolve().parent.parent / "kling_async" / "assets"
CREATE = RateLimit(20, 10.0)
QUERY = RateLimit(10, 1.0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def steady_rate(times: list[float], limit: RateLimit) -> float:
    """Achieved rate after the first burst, as a ratio of the limit's rate."""
    times = sorted(times)
    if len(times) <= limit.max_requests + 1:
        return float("nan")
    span = times[-1] - times[0]
    return ((len(times) - limit.max_requests) / span) / limit.rate if span > 0 else float("nan")


async def inputs(sim: Any, http: aiohttp.ClientSession) -> MotionControlInput:
    urls = []
    for name, folder in (("character.png", "i"), ("motion.mp4", "v")):
        form = aiohttp.FormData()
        form.add_field("file", (MEDIA / name).read_bytes(), filename=name)
        form.add_field("uploadPath", folder)
        async with http.post(
            f"{sim.upload_base_url}/api/file-stream-upload",
            data=form,
            headers={"Authorization": f"Bearer {sim.api_key}"},
        ) as r:
            urls.append((await r.json())["data"]["downloadUrl"])
    return MotionControlInput(urls[0], urls[1])


def saturated_rate(times: list[float], busy: list[tuple[float, float]], limit: RateLimit) -> float:
    """Rate achieved while the client had queries waiting, as a ratio of the limit's rate."""
    total = sum(end - start for start, end in busy)
    if total <= 0:
        return float("nan")
    inside = sum(1 for t in times if any(start <= t < end for start, end in busy))
    return (inside / total) / limit.rate


def report(
    name: str,
    stats: dict[str, Any],
    returned: dict[str, float],
    n: int,
    scale: float,
    busy: list[tuple[float, float]] | None = None,
) -> dict[str, Any]:
    rows = stats["requests"]
    creates = [t / scale for e, t, code, _ in rows if e == "createTask" and code == 200]
    queries = [t for e, t, code, _ in rows if e == "recordInfo" and code in (200, 422)]
    too_many = sum(1 for _, _, code, _ in rows if code == 429)
    asked = sum(1 for e, *_ in rows if e == "recordInfo")
    delays = [at - stats["completed_at"][task_id] for task_id, at in returned.items()]
    query_ratio = (
        saturated_rate(queries, busy, QUERY.scaled(scale))
        if busy is not None
        else steady_rate([t / scale for t in queries], QUERY)
    )
    ok = len(returned)
    return {
        "client": name,
        "tasks ok": f"{ok}/{n}",
        "create rate / limit": f"{steady_rate(creates, CREATE):.3f}",
        "query rate / limit": f"{query_ratio:.3f}",
        "429s": too_many,
        "queries per task": f"{asked / max(ok, 1):.1f}",
        "delay median s": f"{statistics.median(delays) / scale:.1f}" if delays else "-",
        "delay p95 s": f"{percentile(delays, 0.95) / scale:.1f}" if delays else "-",
    }


async def run_ours(n: int, scale: float) -> dict[str, Any]:
    async with remote_simulator(scale) as sim, aiohttp.ClientSession() as http:
        inp = await inputs(sim, http)
        returned: dict[str, float] = {}
        async with KlingSession(
            sim.api_key,
            base_url=sim.base_url,
            upload_base_url=sim.upload_base_url,
            create_limit=CREATE.scaled(scale),
            query_limit=QUERY.scaled(scale),
            poll=PollSchedule().scaled(scale),
        ) as kling:

            async def one() -> None:
                task_id = await kling.create_task(inp)
                await kling.wait_for_task(task_id)
                returned[task_id] = time.monotonic()

            busy: list[tuple[float, float]] = []
            step = QUERY.window * scale / 4

            async def watch() -> None:
                # Sample whether queries are queued: the limit can only be reached while they are.
                while True:
                    before = time.monotonic()
                    queued = kling.query_limiter.waiting > 0
                    await asyncio.sleep(step)
                    if queued and kling.query_limiter.waiting > 0:
                        busy.append((before, time.monotonic()))

            watcher = asyncio.create_task(watch())
            await asyncio.gather(*(one() for _ in range(n)))
            watcher.cancel()
        return report("kling_async", await sim.stats(http), returned, n, scale, busy)


async def run_naive(n: int, scale: float) -> dict[str, Any]:
    """What a hand-written loop does: gather everything, poll at a fixed interval, no limiter."""
    async with remote_simulator(scale) as sim, aiohttp.ClientSession() as http:
        inp = await inputs(sim, http)
        headers = {"Authorization": f"Bearer {sim.api_key}"}
        body = {
            "model": "kling-2.6/motion-control",
            "input": {
                "input_urls": [inp.image_url],
                "video_urls": [inp.video_url],
                "character_orientation": "video",
                "mode": "720p",
            },
        }
        returned: dict[str, float] = {}

        async def one() -> None:
            async with http.post(
                f"{sim.base_url}/api/v1/jobs/createTask", json=body, headers=headers
            ) as r:
                answer = await r.json()
            if answer["code"] != 200:
                return  # a naive loop loses the job
            task_id = answer["data"]["taskId"]
            while True:
                await asyncio.sleep(5.0 * scale)
                async with http.get(
                    f"{sim.base_url}/api/v1/jobs/recordInfo",
                    params={"taskId": task_id},
                    headers=headers,
                ) as r:
                    answer = await r.json()
                if answer["code"] == 200 and answer["data"]["state"] in ("success", "fail"):
                    returned[task_id] = time.monotonic()
                    return

        await asyncio.gather(*(one() for _ in range(n)))
        return report("naive gather loop", await sim.stats(http), returned, n, scale)


async def run_real_window(seconds: float = 12.0, waits: int = 100) -> None:
    """The query rate at the service's real 1 s window, with no time scaling at all.

    ``waits`` waits on ids the service does not know (it answers 422, after counting them
    against the limit) keep the query limiter saturated; the rate is measured between the first
    and last query the simulator saw, after the first burst.
    """
    async with remote_simulator(1.0) as sim, aiohttp.ClientSession() as http:
        async with KlingSession(
            sim.api_key,
            base_url=sim.base_url,
            upload_base_url=sim.upload_base_url,
            not_visible_grace=1e9,
            poll=PollSchedule(first_delay=0.0),
        ) as kling:
            pending = [asyncio.create_task(kling.wait_for_task(f"{i:032x}")) for i in range(waits)]
            await asyncio.sleep(seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        stats = await sim.stats(http)
    rows = stats["requests"]
    times = [t for e, t, code, _ in rows if e == "recordInfo" and code == 422]
    print(
        f"\n== query rate at the real window ({QUERY.max_requests} per {QUERY.window:g} s, "
        f"{waits} waits, {seconds:g} s, no time scaling) ==\n"
        f"rate / limit {steady_rate(times, QUERY):.3f}; 429s "
        f"{sum(1 for _, _, code, _ in rows if code == 429)}"
    )


async def run_scale(n: int, scale: float) -> None:
    """Create ``n`` tasks, then wait for all of them at once in one session."""
    config = SimulatorConfig(time_scale=scale, generating_seconds=6000.0, credits=1e9)
    async with Simulator(config) as sim, aiohttp.ClientSession() as http:
        inp = await inputs(sim, http)
        async with sim.session() as kling:
            started = time.monotonic()
            cpu = time.process_time()
            ids = await asyncio.gather(*(kling.create_task(inp) for _ in range(n)))
            created = time.monotonic()
            peak_waits = 0

            async def one(task_id: str) -> None:
                nonlocal peak_waits
                peak_waits = max(peak_waits, len(kling._waits))
                await kling.wait_for_task(task_id)

            await asyncio.gather(*(one(i) for i in ids))
            done = time.monotonic()
            cpu = time.process_time() - cpu
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\n== scale: {n} tasks created, then {peak_waits} waits in flight at once "
        f"(time scale {scale}) ==\n"
        f"created in {created - started:.1f} s, all waits done {done - created:.1f} s later; "
        f"429s {sum(sim.rate_limited.values())}; queries per task "
        f"{sim.count('recordInfo') / n:.1f}; CPU {cpu * 1e6 / n:.0f} us per task "
        f"(client and simulator in one process); peak RSS {rss:.0f} MB"
    )


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--scale-waits", type=int, default=10_000)
    parser.add_argument("--real-window", type=int, default=1, help="0 skips the real-time run")
    args = parser.parse_args(argv)
    if args.real_window:
        await run_real_window()
    if args.scale_waits:
        await run_scale(args.scale_waits, 0.002)
    if not args.tasks:
        return
    started = time.monotonic()
    rows = [
        await run_ours(args.tasks, args.time_scale),
        await run_naive(args.tasks, args.time_scale),
    ]
    print(
        f"\n== polling: {args.tasks} tasks, time scale {args.time_scale} "
        f"(create {CREATE.max_requests}/{CREATE.window:g}s, "
        f"query {QUERY.max_requests}/{QUERY.window:g}s) =="
    )
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[k]).ljust(w) for k, w in zip(keys, widths, strict=True)))
    print(f"(ran in {time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    asyncio.run(main())
