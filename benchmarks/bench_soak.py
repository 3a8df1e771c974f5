"""Fault soak: a journaled batch under ~10 % injected faults, then a rerun without faults.

Checks the money promise and prints the figures: faults injected by kind, outcomes by kind in
each run, tasks created per job (a duplicate is a job paid twice: must be 0), and paid results
lost (a task that succeeded on the simulator whose job was neither delivered nor reported
unknown: must be 0). ``tests/test_soak.py`` runs a quick version in the suite.

    python -m benchmarks.bench_soak [--jobs 500] [--fault-rate 0.10] [--seed 7] [--webhook]
    python -m benchmarks.bench_soak --quick  # what ``python -m benchmarks`` runs
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import tempfile
from pathlib import Path
from typing import Any

import attrs

from kling_async import Job, JobOutcome
from kling_async.journal import UNKNOWN, Journal
from kling_async.simulator import FaultConfig, Simulator, SimulatorConfig
from kling_async.webhooks import WebhookReceiver

from ._report import NONE, Row, judged, text_table

ASSETS = Path(__file__).resolve().parent.parent / "kling_async" / "assets"
#: The kinds of fault injected, each a share of the whole fault rate.
FAULT_KINDS = ("error_500", "error_455", "error_429", "drop", "drop_after", "slow")


@attrs.define
class SoakReport:
    """What a soak saw."""

    jobs: int
    requests: int = 0
    faults: collections.Counter[str] = attrs.field(factory=collections.Counter)
    first_run: collections.Counter[str] = attrs.field(factory=collections.Counter)
    rerun: collections.Counter[str] = attrs.field(factory=collections.Counter)
    tasks_created: int = 0
    duplicate_tasks: int = 0
    succeeded_on_service: int = 0
    delivered: int = 0
    reported_unknown: int = 0
    paid_results_lost: int = 0

    def lines(self) -> list[str]:
        """The figures, one per line."""
        return [
            f"jobs {self.jobs}; requests {self.requests}; faults injected "
            f"{sum(self.faults.values())} ({_counts(self.faults)})",
            f"first run outcomes: {_counts(self.first_run)}",
            f"rerun outcomes:     {_counts(self.rerun)}",
            f"tasks created {self.tasks_created}; "
            f"duplicate tasks {self.duplicate_tasks} (must be 0)",
            f"succeeded on the service {self.succeeded_on_service}: delivered {self.delivered}, "
            f"reported unknown {self.reported_unknown}; paid results lost "
            f"{self.paid_results_lost} (must be 0)",
        ]


def _counts(counter: collections.Counter[str]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counter.items())) or "none"


def _kind(outcome: JobOutcome) -> str:
    return "ok" if outcome.ok else type(outcome.error).__name__


async def soak(
    jobs: int,
    workdir: Path,
    *,
    fault_rate: float = 0.10,
    seed: int = 7,
    webhook: bool = False,
    time_scale: float = 0.005,
) -> SoakReport:
    """Run the soak in ``workdir`` and return its figures."""
    share = fault_rate / len(FAULT_KINDS)
    shares: dict[str, Any] = dict.fromkeys(FAULT_KINDS, share)
    faults = FaultConfig(**shares, slow_seconds=20.0, seed=seed)
    config = SimulatorConfig(time_scale=time_scale, credits=1e9, seed=seed, faults=faults)
    batch = [
        Job(ASSETS / "character.png", ASSETS / "motion.mp4", prompt=f"soak-{i}", key=f"soak-{i}")
        for i in range(jobs)
    ]
    journal = workdir / "soak.sqlite"
    report = SoakReport(jobs)
    delivered: set[str] = set()
    async with Simulator(config) as sim:
        receiver = WebhookReceiver(sim.webhook_hmac_key) if webhook else None
        hook = {"webhook": receiver, "callback_url": await receiver.start()} if receiver else {}
        try:
            for run, tally in ((1, report.first_run), (2, report.rerun)):
                if run == 2:
                    sim.reconfigure(faults=FaultConfig())
                kling = sim.session(retry_base=0.01, retry_cap=0.1, **hook)
                async with (
                    kling,
                    kling.generate_many(
                        batch, journal=journal, job_timeout=600 * time_scale
                    ) as outcomes,
                ):
                    async for outcome in outcomes:
                        tally[_kind(outcome)] += 1
                        if outcome.ok:
                            delivered.add(outcome.job_key)
        finally:
            if receiver is not None:
                await receiver.close()
        report.requests = len(sim.requests)
        report.faults.update(r.fault for r in sim.requests if r.fault)
        per_job = collections.Counter(
            str(t.body["input"].get("prompt")) for t in sim.tasks.values()
        )
        report.tasks_created = sum(per_job.values())
        report.duplicate_tasks = sum(n - 1 for n in per_job.values() if n > 1)
        # Tasks still rendering count too: each will succeed and be charged.
        succeeded = {
            str(t.body["input"].get("prompt"))
            for t in sim.tasks.values()
            if t.state_at(math.inf).value == "success"
        }
    async with Journal(journal) as book:
        unknown = set(await book.keys(UNKNOWN))
    report.succeeded_on_service = len(succeeded)
    report.delivered = len(succeeded & delivered)
    report.reported_unknown = len(succeeded & unknown)
    report.paid_results_lost = len(succeeded - delivered - unknown)
    return report


QUICK_JOBS = 150


def rows(report: SoakReport, name: str) -> list[Row]:
    """The money promise as table rows: no job paid twice, no paid result lost."""
    injected = f"{sum(report.faults.values())} faults in {report.requests} requests"
    return [
        judged(
            name,
            "duplicate tasks (a job paid twice)",
            value=str(report.duplicate_tasks),
            baseline=injected,
            goal=NONE,
            checked=report.duplicate_tasks,
            critical=True,
        ),
        judged(
            name,
            "paid results lost (neither delivered nor reported unknown)",
            value=str(report.paid_results_lost),
            baseline=f"{report.succeeded_on_service} succeeded on the service, "
            f"{report.delivered} delivered, {report.reported_unknown} reported unknown",
            goal=NONE,
            checked=report.paid_results_lost,
            critical=True,
        ),
    ]


async def quick() -> list[Row]:
    """150 jobs, 10 % faults, by polling and by webhook."""
    result = []
    for webhook in (False, True):
        with tempfile.TemporaryDirectory() as workdir:
            report = await soak(QUICK_JOBS, Path(workdir), webhook=webhook)
        mode = "webhook" if webhook else "polling"
        result += rows(report, f"soak ({QUICK_JOBS} jobs, 10 % faults, {mode})")
    return result


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="the rows of the quick run")
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--fault-rate", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--webhook", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        print(text_table(await quick()))
        return
    with tempfile.TemporaryDirectory() as workdir:
        report = await soak(
            args.jobs,
            Path(workdir),
            fault_rate=args.fault_rate,
            seed=args.seed,
            webhook=args.webhook,
        )
    mode = "webhook" if args.webhook else "polling"
    print(f"\n== fault soak: {args.jobs} jobs, {args.fault_rate:.0%} faults, {mode} ==")
    for line in report.lines():
        print(line)
    if report.duplicate_tasks or report.paid_results_lost:
        raise SystemExit("money promise broken")


if __name__ == "__main__":
    asyncio.run(main())
