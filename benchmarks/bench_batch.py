"""1,000 jobs end to end through ``generate_many`` on the time-scaled simulator.

Reports total time as a ratio of the lower bound the create limit sets (the last of N tasks can
be created no sooner than (N/20 - 1) windows after the first, then takes one render time), the
peak memory of the process, and CPU time per job (client and simulator share the process).

    python -m benchmarks.bench_batch [--jobs 1000] [--time-scale 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import resource
import tempfile
import time
from pathlib import Path

from kling_async import Job, RateLimit
from kling_async.simulator import Simulator, SimulatorConfig

ASSETS = Path(__file__).resolve().parent.parent / "kling_async" / "assets"
CREATE = RateLimit(20, 10.0)
QUERY = RateLimit(10, 1.0)


async def run(jobs: int, scale: float, journal: bool) -> None:
    config = SimulatorConfig(time_scale=scale, credits=1e9)
    render = config.waiting_seconds + config.queuing_seconds + config.generating_seconds
    bound = (math.ceil(jobs / CREATE.max_requests) - 1) * CREATE.window + render
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as out:
        async with Simulator(config) as sim:
            async with sim.session() as kling:
                batch = (
                    Job(ASSETS / "character.png", ASSETS / "motion.mp4", key=f"job-{i}")
                    for i in range(jobs)
                )
                started = time.monotonic()
                cpu = time.process_time()
                ok = 0
                book = Path(out) / "journal.sqlite" if journal else None
                async for outcome in kling.generate_many(batch, download_to=out, journal=book):
                    ok += outcome.ok
                elapsed = (time.monotonic() - started) / scale
                cpu = time.process_time() - cpu
            too_many = sum(sim.rate_limited.values())
            uploads = sim.count("streamUpload")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\n== batch: {jobs} jobs end to end, time scale {scale}, "
        f"{'with' if journal else 'without'} a journal =="
    )
    print(
        f"ok {ok}/{jobs}; total {elapsed:.0f} s (service time) vs lower bound {bound:.0f} s: "
        f"ratio {elapsed / bound:.3f} (goal <= 1.05); 429s {too_many}; uploads {uploads}"
    )
    print(
        f"peak RSS {rss:.0f} MB (was {rss_before:.0f} MB before); "
        f"CPU {cpu * 1000 / jobs:.2f} ms per job (client and simulator in one process)"
    )


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--time-scale", type=float, default=0.05)
    args = parser.parse_args(argv)
    for journal in (False, True):
        await run(args.jobs, args.time_scale, journal)


if __name__ == "__main__":
    asyncio.run(main())
