"""A batch run in its own process, for the crash tests: prints a line per job event.

python -m tests.batch_child BASE_URL API_KEY JOURNAL OUTDIR JOBS TIME_SCALE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from kling_async import Job, JobEvent, KlingSession, PollSchedule, RateLimit

MEDIA = Path(__file__).parent / "media"


async def main(base: str, key: str, journal: str, out: str, jobs: int, scale: float) -> None:
    def report(event: JobEvent) -> None:
        print(event.kind.value, event.job_key, event.task_id or "-", flush=True)

    async with KlingSession(
        key,
        base_url=base,
        upload_base_url=base,
        create_limit=RateLimit(20, 10.0).scaled(scale),
        query_limit=RateLimit(10, 1.0).scaled(scale),
        poll=PollSchedule().scaled(scale),
        retry_base=0.01,
    ) as kling:
        batch = [
            Job(MEDIA / "portrait.png", MEDIA / "d10.0.mp4", key=f"job-{i}") for i in range(jobs)
        ]
        async for outcome in kling.generate_many(
            batch, journal=journal, download_to=out, on_event=report
        ):
            print("outcome", outcome.job_key, "ok" if outcome.ok else "error", flush=True)
    print("finished", flush=True)


if __name__ == "__main__":
    base, key, journal, out, jobs, scale = sys.argv[1:7]
    asyncio.run(main(base, key, journal, out, int(jobs), float(scale)))
