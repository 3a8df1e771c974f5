"""One worker of a batch several processes share, for the Redis tests: prints a line per event.

python -m tests.redis_child BASE_URL API_KEY TIME_SCALE FIRST LAST [--shared URL] [--journal URL]
    [--recheck SECONDS] [--out DIR]

Jobs ``job-FIRST`` to ``job-LAST`` (inclusive; each job's prompt is its key). It prints
``ready``, waits for a line on stdin (so that workers start together), then one line per job
event and outcome, ``log TIME MESSAGE`` for each warning of kling_async (TIME on the machine's
monotonic clock, as the simulator's request log), and ``finished``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

from kling_async import Job, JobEvent, KlingSession, PollSchedule, RateLimit
from kling_async.ratelimit import Limiter

MEDIA = Path(__file__).parent / "media"


def say(*words: object) -> None:
    """One line, written whole: records logged from other threads never cut into it."""
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


class _Printer(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        say("log", f"{time.monotonic():.6f}", record.getMessage())


async def main(args: argparse.Namespace) -> None:
    scale = args.scale
    create, query = RateLimit(20, 10.0).scaled(scale), RateLimit(10, 1.0).scaled(scale)
    settings: dict[str, object] = {}
    if args.shared and args.recheck is not None:
        from kling_async.redis import RedisRateLimiter

        limiters: list[Limiter] = [
            RedisRateLimiter(
                args.shared,
                limit,
                name=f"test:{name}",
                lease=30.0,
                recheck=args.recheck,
            )
            for name, limit in (("create", create), ("query", query))
        ]
        settings.update(create_limiter=limiters[0], query_limiter=limiters[1])
    elif args.shared:
        settings.update(shared_limits=args.shared, limits_prefix="test")
    batch = [
        Job(MEDIA / "portrait.png", MEDIA / "d10.0.mp4", prompt=f"job-{i}", key=f"job-{i}")
        for i in range(args.first, args.last + 1)
    ]

    def report(event: JobEvent) -> None:
        say(event.kind.value, event.job_key, event.task_id or "-")

    say("ready")
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    kling = KlingSession(
        args.key,
        base_url=args.base,
        upload_base_url=args.base,
        create_limit=create,
        query_limit=query,
        poll=PollSchedule().scaled(scale),
        retry_base=0.01,
        retry_cap=0.1,
        **settings,  # type: ignore[arg-type]
    )
    async with (
        kling,
        kling.generate_many(
            batch, journal=args.journal, download_to=args.out, on_event=report
        ) as outcomes,
    ):
        async for outcome in outcomes:
            what = "ok" if outcome.ok else type(outcome.error).__name__
            say("outcome", outcome.job.job_key, what, outcome.task_id or "-")
    if args.shared and args.recheck is not None:
        for limiter in limiters:
            await limiter.aclose()
    say("finished")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("key")
    parser.add_argument("scale", type=float)
    parser.add_argument("first", type=int)
    parser.add_argument("last", type=int)
    parser.add_argument("--shared")
    parser.add_argument("--journal")
    parser.add_argument("--recheck", type=float)
    parser.add_argument("--out")
    handler = _Printer(logging.WARNING)
    logging.getLogger("kling_async").addHandler(handler)
    asyncio.run(main(parser.parse_args()))
