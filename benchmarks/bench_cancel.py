"""Cancel-and-rerun runs: Ctrl-C a journaled batch at many moments, rerun it, count the tasks.

For each run: cancel after a drawn delay (some createTask answers slow, so requests are on the
wire at the cancel), check that nothing is left unknown, rerun without faults, and check that
every job has exactly one task. ``tests/test_cancel_property.py`` draws the runs with Hypothesis.

    python -m benchmarks.bench_cancel [--runs 100] [--seed 1] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import random
import tempfile
from pathlib import Path

from kling_async import Job
from kling_async.journal import Journal
from kling_async.simulator import FaultConfig, Simulator, SimulatorConfig

from ._report import NONE, Row, judged, text_table

ASSETS = Path(__file__).resolve().parent.parent / "kling_async" / "assets"
JOBS = 8
TIME_SCALE = 0.005


async def cancel_then_rerun(
    workdir: Path, cancel_after: float, slow_share: float, tally: collections.Counter[str]
) -> None:
    """One run; raises ``AssertionError`` if a job is left unknown or gets other than one task."""
    faults = FaultConfig(slow=slow_share, slow_seconds=100.0, endpoints=frozenset({"createTask"}))
    jobs = [
        Job(ASSETS / "character.png", ASSETS / "motion.mp4", prompt=f"p{i}", key=f"k{i}")
        for i in range(JOBS)
    ]
    journal = workdir / "batch.sqlite"
    async with Simulator(SimulatorConfig(time_scale=TIME_SCALE, faults=faults)) as sim:
        async with sim.session(retry_base=0.01, retry_cap=0.1) as kling:

            async def first_run() -> None:
                async with kling.generate_many(jobs, journal=journal) as outcomes:
                    async for _ in outcomes:
                        pass

            batch = asyncio.create_task(first_run())
            await asyncio.sleep(cancel_after)
            sent = sim.count("createTask")
            created = sim.tasks_created[sim.api_key]
            if batch.cancel():
                tally["cancelled mid-batch"] += 1
                # Requests that had arrived but not been answered: on the wire at the cancel.
                tally["createTask on the wire at the cancel"] += sum(
                    1 for r in sim.requests if r.endpoint == "createTask" and r.code is None
                )
            else:
                tally["finished before the cancel"] += 1
            with contextlib.suppress(asyncio.CancelledError):
                await batch
            tally["tasks created before the cancel"] += created
            tally["createTask sent before the cancel"] += sent
        async with Journal(journal) as book:
            # "creating" left behind would be reported unknown on the rerun, just the same.
            unknown = await book.unresolved()
        tally["jobs left unknown"] += len(unknown)
        assert unknown == [], unknown
        sim.reconfigure(faults=FaultConfig())
        async with (
            sim.session(retry_base=0.01, retry_cap=0.1) as kling,
            kling.generate_many(jobs, journal=journal) as outcomes,
        ):
            results = [o async for o in outcomes]
        assert all(o.ok for o in results), [o.error for o in results]
        per_job = collections.Counter(str(t.body["input"]["prompt"]) for t in sim.tasks.values())
        tally["duplicate tasks"] += sum(n - 1 for n in per_job.values() if n > 1)
        assert per_job == {f"p{i}": 1 for i in range(JOBS)}, per_job


async def runs(count: int, seed: int, *, keep_going: bool = False) -> collections.Counter[str]:
    """``count`` drawn runs; with ``keep_going`` a broken run is counted, not raised."""
    rng = random.Random(seed)
    tally: collections.Counter[str] = collections.Counter()
    for _ in range(count):
        with tempfile.TemporaryDirectory() as workdir:
            try:
                await cancel_then_rerun(
                    Path(workdir), rng.uniform(0.0, 1.2), rng.choice([0.0, 0.5, 1.0]), tally
                )
            except AssertionError:
                if not keep_going:
                    raise
                tally["broken runs"] += 1
        tally["runs"] += 1
    return tally


QUICK_RUNS = 12


async def quick() -> list[Row]:
    """12 runs: jobs left unknown and duplicate tasks, both 0."""
    tally = await runs(QUICK_RUNS, seed=1, keep_going=True)
    name = f"cancel and rerun ({QUICK_RUNS} runs of {JOBS} jobs)"
    context = (
        f"{tally['cancelled mid-batch']} cancelled mid-batch, "
        f"{tally['createTask on the wire at the cancel']} createTask on the wire"
    )
    return [
        judged(
            name,
            "jobs left unknown or creating after the cancel",
            value=str(tally["jobs left unknown"]),
            baseline=context,
            goal=NONE,
            checked=tally["jobs left unknown"],
            critical=True,
        ),
        judged(
            name,
            "duplicate tasks after the rerun; runs broken",
            value=f"{tally['duplicate tasks']}; {tally['broken runs']}",
            baseline=f"{tally['tasks created before the cancel']} tasks created before the cancel",
            goal=NONE,
            checked=tally["duplicate tasks"] + tally["broken runs"],
            critical=True,
        ),
    ]


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="the rows of the quick run")
    args = parser.parse_args(argv)
    if args.quick:
        print(text_table(await quick()))
        return
    tally = await runs(args.runs, args.seed)
    print(f"\n== cancel and rerun: {args.runs} runs of {JOBS} jobs ==")
    for name, value in sorted(tally.items()):
        print(f"{name}: {value}")


if __name__ == "__main__":
    asyncio.run(main())
