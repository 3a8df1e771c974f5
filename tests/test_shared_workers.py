"""Worker processes sharing one key through a real redis-server, against one simulator.

Four workers run 200 jobs: with shared limits the service sees no 429 and every window of its
request log holds at most the limit; with limiters of their own it does see 429s. Redis stopped
mid-run: the workers go on under their fallback share and come back when it does. A batch fed to
four workers through a Redis journal: each job gets one task, even when a worker is killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import attrs
import redis.asyncio as aioredis

from kling_async import RateLimit
from kling_async.simulator import Simulator

from .conftest import SimFactory, eventually
from .redis_server import RedisServer
from .test_shared_limits import windows_hold

ROOT = Path(__file__).resolve().parent.parent
# A create window of 0.2 s and a render of 2 s: 200 jobs in a few seconds, far above jitter.
SCALE = 0.02
CREATE = RateLimit(20, 10.0).scaled(SCALE)
QUERY = RateLimit(10, 1.0).scaled(SCALE)


@attrs.define
class Worker:
    """One worker process and the lines it printed."""

    proc: asyncio.subprocess.Process
    lines: list[list[str]] = attrs.Factory(list)
    reader: asyncio.Task[None] | None = None

    def saw(self, *words: str) -> list[list[str]]:
        return [line for line in self.lines if line[: len(words)] == list(words)]

    def outcomes(self) -> dict[str, str]:
        return {line[1]: line[2] for line in self.saw("outcome")}


async def start_workers(
    sim: Simulator, ranges: list[tuple[int, int]], *extra: str, each: list[list[str]] | None = None
) -> list[Worker]:
    """Start one worker per range of jobs, and let them go together once all are ready."""
    workers = []
    for n, (first, last) in enumerate(ranges):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.redis_child",
            sim.base_url,
            sim.api_key,
            str(SCALE),
            str(first),
            str(last),
            *extra,
            *(each[n] if each else []),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        workers.append(Worker(proc))

    async def read(worker: Worker) -> None:
        assert worker.proc.stdout is not None
        async for raw in worker.proc.stdout:
            # A worker killed in the midst of a line leaves it cut, without its newline.
            if raw.endswith(b"\n"):
                worker.lines.append(raw.decode().split())

    for worker in workers:
        worker.reader = asyncio.create_task(read(worker))
    await eventually(lambda: all(w.saw("ready") for w in workers))
    for worker in workers:
        assert worker.proc.stdin is not None
        worker.proc.stdin.write(b"go\n")
        await worker.proc.stdin.drain()
    return workers


async def finish(workers: list[Worker], timeout: float = 90.0) -> None:
    """Wait for every worker to exit (a hang fails the test, never stalls it)."""
    try:
        await asyncio.wait_for(asyncio.gather(*(w.proc.wait() for w in workers)), timeout)
        await asyncio.gather(*(w.reader for w in workers if w.reader is not None))
    finally:
        for worker in workers:
            if worker.proc.returncode is None:
                worker.proc.kill()
                await worker.proc.wait()


def arrivals(sim: Simulator, endpoint: str, since: float = 0.0) -> list[float]:
    return [r.time for r in sim.requests if r.endpoint == endpoint and r.time >= since]


QUARTERS = [(0, 49), (50, 99), (100, 149), (150, 199)]


async def test_four_workers_sharing_limits_never_trip_the_service(
    make_sim: SimFactory, redis_server: RedisServer
) -> None:
    sim = await make_sim(time_scale=SCALE)
    workers = await start_workers(sim, QUARTERS, "--shared", redis_server.url)
    await finish(workers)
    assert all(w.proc.returncode == 0 and w.saw("finished") for w in workers)
    outcomes = {k: v for w in workers for k, v in w.outcomes().items()}
    assert len(outcomes) == 200 and set(outcomes.values()) == {"ok"}
    assert sim.tasks_created[sim.api_key] == 200
    assert sim.rate_limited == {"createTask": 0, "recordInfo": 0}
    assert windows_hold(arrivals(sim, "createTask"), CREATE)
    assert windows_hold(arrivals(sim, "recordInfo"), QUERY)


async def test_four_workers_with_limiters_of_their_own_do_trip_it(make_sim: SimFactory) -> None:
    sim = await make_sim(time_scale=SCALE)
    workers = await start_workers(sim, QUARTERS)
    await finish(workers)
    assert len({k for w in workers for k in w.outcomes()}) == 200
    assert sim.rate_limited["createTask"] > 0
    assert not windows_hold(arrivals(sim, "createTask"), CREATE)


async def test_redis_stopped_mid_run_the_workers_fall_back_and_come_back(
    make_sim: SimFactory, redis_server: RedisServer
) -> None:
    sim = await make_sim(time_scale=SCALE)
    workers = await start_workers(sim, QUARTERS, "--shared", redis_server.url, "--recheck", "0.1")
    await eventually(lambda: sim.count("createTask") >= 40)
    redis_server.stop()
    # Every worker notices, and they go on creating on their own shares meanwhile.
    await eventually(lambda: all(w.saw("log") and _said(w, "cannot be reached") for w in workers))
    away = sim.count("createTask")
    await eventually(lambda: sim.count("createTask") >= away + 20)
    redis_server.start()
    await eventually(lambda: all(_said(w, "Redis is back") for w in workers))
    await finish(workers)
    assert all(w.proc.returncode == 0 and w.saw("finished") for w in workers)
    outcomes = {k: v for w in workers for k, v in w.outcomes().items()}
    assert len(outcomes) == 200 and set(outcomes.values()) == {"ok"}  # no job lost
    assert sim.tasks_created[sim.api_key] == 200
    # Shared limiting resumed: the slots are in the new Redis. Through the whole run (before
    # the outage, during it on four shares of a tenth, and while the workers came back one by
    # one), the service saw no more than the limit in any window.
    async with aioredis.Redis.from_url(redis_server.url, decode_responses=True) as check:
        assert await check.keys("{test:create}:*") and await check.keys("{test:query}:*")
    assert windows_hold(arrivals(sim, "createTask"), CREATE)
    assert sim.rate_limited["createTask"] == 0
    # Queries too, but for the moment Redis went away: a worker cannot see the requests other
    # workers had in flight then, and guesses how long they take from its own. With a window
    # of 20 ms (the documented 1 s, time-scaled), a busy machine's delays outlast that guess.
    lost = [_said(w, "test:query: Redis cannot be reached")[0] for w in workers]
    gap = (min(lost) - QUERY.window, max(lost) + 5 * QUERY.window)
    queries = arrivals(sim, "recordInfo")
    assert windows_hold([t for t in queries if not gap[0] <= t <= gap[1]], QUERY)
    assert all(gap[0] <= r.time <= gap[1] for r in sim.requests if r.code == 429)


def _said(worker: Worker, text: str) -> list[float]:
    """When (monotonic) the worker logged ``text``, in order."""
    return [float(line[1]) for line in worker.saw("log") if text in " ".join(line[2:])]


async def test_workers_split_one_manifest_through_a_redis_journal_even_when_one_is_killed(
    make_sim: SimFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    sim = await make_sim(time_scale=SCALE)
    # A lease of 5 s: each journal call ends within 1.25 s, so only the killed worker, not a
    # survivor slowed down by a busy machine, loses its jobs.
    journal = f"{redis_server.url}?journal=manifest&lease=5"
    outs = [["--out", str(tmp_path / f"out{n}")] for n in range(4)]
    workers = await start_workers(
        sim, [(0, 79)] * 4, "--shared", redis_server.url, "--journal", journal, each=outs
    )
    victim, survivors = workers[0], workers[1:]
    await eventually(lambda: len(victim.saw("created")) >= 5)
    victim.proc.send_signal(signal.SIGKILL)
    await finish(survivors)
    await finish([victim])
    assert victim.proc.returncode == -signal.SIGKILL
    assert all(w.proc.returncode == 0 and w.saw("finished") for w in survivors)
    # None created twice, from the service's own records.
    per_job = Counter(task.body["input"]["prompt"] for task in sim.tasks.values())
    assert per_job and max(per_job.values()) == 1
    reported: dict[str, list[str]] = {}
    for worker in survivors:
        for key, what in worker.outcomes().items():
            reported.setdefault(key, []).append(what)
    # Each job's outcome is given by one survivor, never two (or by the victim before it died).
    assert all(len(whats) == 1 for whats in reported.values())
    by_victim = victim.outcomes()
    for i in range(80):
        key = f"job-{i}"
        whats = reported.get(key, []) + ([by_victim[key]] if key in by_victim else [])
        assert whats, f"{key} was lost"
        if "ok" in whats:
            assert per_job[key] == 1
        else:
            assert whats == ["SubmissionUnknownError"], (key, whats)
    # The victim's jobs in progress were taken over: created there, finished elsewhere.
    orphans = {line[1] for line in victim.saw("created")} - set(by_victim)
    assert orphans and all(key in reported for key in orphans)
    assert os.listdir(tmp_path / "out1")
