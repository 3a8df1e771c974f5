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
import math
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import attrs

from kling_async import KlingSession, MotionControlInput, PollSchedule, RateLimit
from kling_async.simulator import Simulator, SimulatorConfig

from ._remote import remote_simulator
from ._report import ZERO, Goal, Row, between, judged, text_table

MEDIA = Path(__file__).resolve().parent.parent / "kling_async" / "assets"
CREATE = RateLimit(20, 10.0)
QUERY = RateLimit(10, 1.0)
# A slot frees one window after its answer, and scaling shrinks the window but not the round
# trip, so a scaled rate is lower than the real one (and lower still on a busy machine): the
# full run's 0.99 (create) and 0.93 (query) need the full run's longer steady state too.
CREATE_GOAL = 0.9
SCALED_QUERY_GOAL = 0.8
REAL_QUERY_GOAL = 0.95


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


@attrs.frozen
class PollFigures:
    """What one client did with ``n`` tasks; rates are ratios of the limits, delays nominal s."""

    client: str
    n: int
    ok: int
    create_ratio: float
    query_ratio: float
    too_many: int
    queries_per_task: float
    delays: list[float]

    def table_row(self) -> dict[str, Any]:
        """The figures as the full run's table prints them."""
        return {
            "client": self.client,
            "tasks ok": f"{self.ok}/{self.n}",
            "create rate / limit": f"{self.create_ratio:.3f}",
            "query rate / limit": f"{self.query_ratio:.3f}",
            "429s": self.too_many,
            "queries per task": f"{self.queries_per_task:.1f}",
            "delay median s": f"{statistics.median(self.delays):.1f}" if self.delays else "-",
            "delay p95 s": f"{percentile(self.delays, 0.95):.1f}" if self.delays else "-",
        }


def report(
    name: str,
    stats: dict[str, Any],
    returned: dict[str, float],
    n: int,
    scale: float,
    busy: list[tuple[float, float]] | None = None,
) -> PollFigures:
    rows = stats["requests"]
    creates = [t / scale for e, t, code, _ in rows if e == "createTask" and code == 200]
    queries = [t for e, t, code, _ in rows if e == "recordInfo" and code in (200, 422)]
    too_many = sum(1 for _, _, code, _ in rows if code == 429)
    asked = sum(1 for e, *_ in rows if e == "recordInfo")
    delays = [(at - stats["completed_at"][task_id]) / scale for task_id, at in returned.items()]
    query_ratio = (
        saturated_rate(queries, busy, QUERY.scaled(scale))
        if busy is not None
        else steady_rate([t / scale for t in queries], QUERY)
    )
    ok = len(returned)
    return PollFigures(
        name,
        n,
        ok,
        steady_rate(creates, CREATE),
        query_ratio,
        too_many,
        asked / max(ok, 1),
        delays,
    )


async def run_ours(n: int, scale: float) -> PollFigures:
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


async def run_naive(n: int, scale: float) -> PollFigures:
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


async def run_real_window(seconds: float = 12.0, waits: int = 100) -> tuple[float, int]:
    """The query rate at the service's real 1 s window, with no time scaling at all.

    ``waits`` waits on ids the service does not know (it answers 422, after counting them
    against the limit) keep the query limiter saturated; the rate is measured between the first
    and last query the simulator saw, after the first burst. Returns it, and the 429 answers.
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
    return steady_rate(times, QUERY), sum(1 for _, _, code, _ in rows if code == 429)


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
            in_flight = peak_waits = 0

            async def one(task_id: str) -> None:
                nonlocal in_flight, peak_waits
                in_flight += 1
                peak_waits = max(peak_waits, in_flight)
                await kling.wait_for_task(task_id)
                in_flight -= 1

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


QUICK_TASKS = 200
QUICK_SCALE = 0.05
QUICK_WINDOW_S = 6.0


async def quick() -> list[Row]:
    """200 tasks, ours then a naive loop, and 6 s at the real window: rates against the limits."""
    ours = await run_ours(QUICK_TASKS, QUICK_SCALE)
    naive = await run_naive(QUICK_TASKS, QUICK_SCALE)
    real, real_429s = await run_real_window(QUICK_WINDOW_S)
    name = f"polling ({QUICK_TASKS} tasks, 1/{1 / QUICK_SCALE:.0f} time)"
    create_limit = CREATE.rate
    delays = ours.delays or [math.nan]
    return [
        judged(
            name,
            "create rate after the first burst, vs the create limit",
            value=f"{ours.create_ratio * create_limit:.2f}/s",
            baseline=f"limit {create_limit:g}/s",
            ratio=f"{ours.create_ratio:.3f}",
            goal=between(CREATE_GOAL, 1.0),
            checked=ours.create_ratio,
        ),
        judged(
            name,
            "query rate while queries wait, vs the query limit",
            value=f"{ours.query_ratio * QUERY.rate:.2f}/s",
            baseline=f"limit {QUERY.rate:g}/s",
            ratio=f"{ours.query_ratio:.3f}",
            goal=between(SCALED_QUERY_GOAL, 1.0),
            checked=ours.query_ratio,
        ),
        judged(
            name,
            "tasks returned",
            value=f"{ours.ok}/{ours.n}",
            baseline=f"naive gather loop {naive.ok}/{naive.n}",
            goal=Goal("all", 1.0, 1.0),
            checked=ours.ok / ours.n,
        ),
        judged(
            name,
            "429 answers",
            value=str(ours.too_many),
            baseline=f"naive gather loop {naive.too_many}",
            goal=ZERO,
            checked=ours.too_many,
        ),
        Row(
            name,
            "queries per task; completion-to-return delay median, p95",
            f"{ours.queries_per_task:.1f}; {statistics.median(delays):.1f} s, "
            f"{percentile(delays, 0.95):.1f} s",
        ),
        judged(
            f"polling (real 1 s window, {QUICK_WINDOW_S:g} s)",
            "query rate while queries wait, vs the query limit",
            value=f"{real * QUERY.rate:.2f}/s",
            baseline=f"limit {QUERY.rate:g}/s",
            ratio=f"{real:.3f}",
            goal=between(REAL_QUERY_GOAL, 1.0),
            checked=real,
        ),
        judged(
            f"polling (real 1 s window, {QUICK_WINDOW_S:g} s)",
            "429 answers",
            value=str(real_429s),
            goal=ZERO,
            checked=real_429s,
        ),
    ]


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--scale-waits", type=int, default=10_000)
    parser.add_argument("--real-window", type=int, default=1, help="0 skips the real-time run")
    parser.add_argument("--quick", action="store_true", help="the rows of the quick run")
    args = parser.parse_args(argv)
    if args.quick:
        print(text_table(await quick()))
        return
    if args.real_window:
        seconds, waits = 12.0, 100
        ratio, too_many = await run_real_window(seconds, waits)
        print(
            f"\n== query rate at the real window ({QUERY.max_requests} per {QUERY.window:g} s, "
            f"{waits} waits, {seconds:g} s, no time scaling) ==\n"
            f"rate / limit {ratio:.3f}; 429s {too_many}"
        )
    if args.scale_waits:
        await run_scale(args.scale_waits, 0.002)
    if not args.tasks:
        return
    started = time.monotonic()
    rows = [
        (await run_ours(args.tasks, args.time_scale)).table_row(),
        (await run_naive(args.tasks, args.time_scale)).table_row(),
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
