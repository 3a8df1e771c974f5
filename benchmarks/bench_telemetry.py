"""What tracing costs: 1,000 jobs through ``generate_many`` with telemetry off and on.

The simulator runs as a process of its own (``python -m kling_async.simulator``), so that the
client's process CPU is all the client's: its event loop thread, the file threads, and a span
processor's export thread. Four variants:

- ``none``: opentelemetry not importable at all (``sys.modules["opentelemetry"] = None``), in a
  process of its own;
- ``off``: the API installed but no SDK set up (what an application that does not trace gets);
- ``batch``: the SDK as production runs it (``BatchSpanProcessor``: spans queued at their end and
  exported from its own thread) with an exporter that counts spans and drops them, as one does
  once they are sent; metrics kept by an ``InMemoryMetricReader``;
- ``simple``: the same with ``SimpleSpanProcessor`` (each span exported at its end, in the job's
  thread).

``off``, ``batch`` and ``simple`` take turns in one process, after a warm-up batch, in an order
that changes each round, so that the load of a shared machine strikes them alike. Reports the
median CPU per job of the client process and of its event loop thread, the medians of each
round's ratio to that round's ``off`` (goal: under 1.10 for the process, with either processor)
with the interval the median lies in (distribution-free, from the order statistics of the
rounds), and the wall time (service time: divided by the time scale).

    python -m benchmarks.bench_telemetry [--jobs 1000] [--time-scale 0.05] [--rounds 9]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ._remote import remote_simulator
from ._report import Goal, Row, at_most, judged, median_interval, text_table

ASSETS = Path(__file__).resolve().parent.parent / "kling_async" / "assets"
FULL_JOBS = 1000
FULL_SCALE = 0.05
QUICK_JOBS = 200
#: Client CPU per job with tracing on, as a ratio of off.
GOAL = 1.10
#: Spans of each job: itself, validate, upload (both files), createTask, wait, download.
SPANS_PER_JOB = 6
#: The variants timed in one process, and what each is called in the report.
TRACED = {"batch": "SDK, BatchSpanProcessor", "simple": "SDK, SimpleSpanProcessor"}
#: Enough for every batch of a run (a job costs tens of credits).
CREDITS = 1e9


@contextlib.asynccontextmanager
async def simulator(scale: float) -> AsyncIterator[Any]:
    """The simulator in a process of its own, connected to: a ``RemoteSimulator`` whose
    ``session()`` is time-scaled."""
    from kling_async.simulator import Simulator

    async with (
        remote_simulator(scale, credits=CREDITS) as served,
        Simulator.connect(served.base_url, api_key=served.api_key) as remote,
    ):
        yield remote


class _CountingExporter:
    """Exports each span by counting it and letting it go, as a production exporter does once
    it has sent it: nothing is kept, so the figure is the SDK's per-span work, not the cost of
    holding thousands of spans in memory (which only tests do)."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered."""
        return True

    def get_finished_spans(self) -> list[None]:
        """As many placeholders as spans were exported (the count is what is checked)."""
        return [None] * self.count


def _providers(processor: str) -> tuple[Any, Any, Any, Any]:
    """The SDK with spans exported by ``processor`` ("batch" or "simple"), and metrics kept."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    spans = _CountingExporter()
    tracing = TracerProvider()
    kind = BatchSpanProcessor if processor == "batch" else SimpleSpanProcessor
    tracing.add_span_processor(kind(spans))  # type: ignore[arg-type]
    reader = InMemoryMetricReader()
    return tracing, MeterProvider(metric_readers=[reader]), spans, reader


async def _batch(sim: Any, jobs: int) -> dict[str, float]:
    from kling_async import Job

    with tempfile.TemporaryDirectory() as out:
        async with sim.session() as kling:
            batch = (
                Job(ASSETS / "character.png", ASSETS / "motion.mp4", key=f"job-{i}")
                for i in range(jobs)
            )
            started = time.monotonic()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu = time.process_time()
            thread_cpu = time.thread_time()
            ok = 0
            async for outcome in kling.generate_many(batch, download_to=out):
                ok += outcome.ok
            used = resource.getrusage(resource.RUSAGE_SELF)
            return {
                "ok": ok,
                "user": used.ru_utime - usage.ru_utime,
                "system": used.ru_stime - usage.ru_stime,
                "wall": time.monotonic() - started,
                "cpu": time.process_time() - cpu,
                "thread_cpu": time.thread_time() - thread_cpu,
            }


async def _timed(sim: Any, variant: str, jobs: int) -> dict[str, float]:
    """One batch of ``variant``; with the SDK, the spans it exported and tasks it counted."""
    from kling_async import telemetry

    tracing = exported = reader = None
    if variant in TRACED:
        tracing, metering, exported, reader = _providers(variant)
        telemetry.configure(tracer_provider=tracing, meter_provider=metering)
    else:
        telemetry.configure()  # the global providers: none set up
    try:
        result = await _batch(sim, jobs)
        if tracing is not None:
            # After the timed part: what a batch processor still holds is exported, then counted.
            cpu = time.process_time()
            tracing.force_flush()
            result["cpu"] += time.process_time() - cpu
        result["spans"] = len(exported.get_finished_spans()) if exported else 0
        result["created"] = _created(reader) if reader else 0
        return result
    finally:
        # What a batch kept must not burden the next one.
        telemetry.configure()
        if tracing is not None:
            tracing.shutdown()
        gc.collect()


async def child(mode: str, jobs: int, scale: float, rounds: int) -> None:
    """Batches in this process (on its main thread's loop); prints one JSON line.

    ``none``: a warm-up batch, then ``rounds`` batches without opentelemetry. ``alternate``: a
    warm-up batch, then ``rounds`` rounds of a batch each with tracing off, batch-exported and
    simple-exported, in an order that turns each round, so that a slow moment of a shared
    machine strikes them alike.
    """
    if mode == "none":
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]
    variants = ["off", *TRACED]
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in ("none", *variants)}
    async with simulator(scale) as sim:
        await _batch(sim, min(jobs, 100))  # warm-up: imports, caches, connections
        gc.collect()
        if mode == "none":
            for _ in range(rounds):
                runs["none"].append(await _batch(sim, jobs))
                gc.collect()
        else:
            for round_ in range(rounds):
                turn = round_ % len(variants)
                for variant in variants[turn:] + variants[:turn]:
                    runs[variant].append(await _timed(sim, variant, jobs))
    print(json.dumps(runs))


def _created(reader: Any) -> float:
    """The ``kling_async.tasks.created`` metric, as collected (after the timed batch)."""
    return float(
        sum(
            point.value
            for rm in reader.get_metrics_data().resource_metrics
            for scope in rm.scope_metrics
            for metric in scope.metrics
            if metric.name == "kling_async.tasks.created"
            for point in metric.data.data_points
        )
    )


def _run_child(mode: str, jobs: int, scale: float, rounds: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.bench_telemetry", "--child", mode]
    command += ["--jobs", str(jobs), "--time-scale", str(scale), "--rounds", str(rounds)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _pooled(saved: list[dict[str, Any]]) -> tuple[dict[str, list[dict[str, float]]], int, float]:
    """Runs saved with ``--save`` as one: their rounds one after the other (each round's pairs
    stay together, so the paired ratios are the runs' own); with their batch size and scale."""
    if len({(run["jobs"], run["scale"], tuple(sorted(run["runs"]))) for run in saved}) != 1:
        raise ValueError("only runs of the same variants, batch size and time scale pool")
    runs = {v: [batch for run in saved for batch in run["runs"][v]] for v in saved[0]["runs"]}
    return runs, saved[0]["jobs"], saved[0]["scale"]


def _median(runs: list[dict[str, float]], what: str) -> float:
    return statistics.median(run[what] for run in runs)


async def measure(
    jobs: int, scale: float, rounds: int, alone: int = 2
) -> dict[str, list[dict[str, float]]]:
    """Every variant's batches, ``alone`` of them without opentelemetry (each child process in
    a thread: this loop stays free)."""
    runs = await asyncio.to_thread(_run_child, "alternate", jobs, scale, rounds)
    # Shown, not judged (it is another process), after the same warm-up.
    runs["none"] = (await asyncio.to_thread(_run_child, "none", jobs, scale, alone))["none"]
    return runs


def _ratios(runs: dict[str, list[dict[str, float]]], variant: str, what: str) -> list[float]:
    """Each round's ``variant`` figure over ``off``'s in the same round.

    Paired: a round's batches ran back to back in one process, so what slows a shared machine
    for a while (or a process as a whole) strikes both sides of each ratio alike.
    """
    pairs = zip(runs[variant], runs["off"], strict=True)
    return [mine[what] / off[what] for mine, off in pairs]


def _ratio(runs: dict[str, list[dict[str, float]]], variant: str, what: str) -> float:
    """The median over rounds of :func:`_ratios`."""
    return statistics.median(_ratios(runs, variant, what))


def _interval(runs: dict[str, list[dict[str, float]]], variant: str) -> str:
    """Where the median CPU ratio lies, from the rounds' spread: ``[low, high] at 96%``."""
    low, high, coverage = median_interval(_ratios(runs, variant, "cpu"))
    return f"[{low:.3f}, {high:.3f}] at {coverage:.0%}"


def rows(runs: dict[str, list[dict[str, float]]], name: str, *, judge: bool = True) -> list[Row]:
    """The figures as table rows; the CPU ratios judged only if ``judge`` (the full run: a
    quick run's few small batches are too noisy to hold against a 10 % goal)."""
    jobs = runs["off"][0]["ok"] or 1
    per_job = {v: _median(runs[v], "cpu") * 1e3 / jobs for v in runs}
    loop = {v: _median(runs[v], "thread_cpu") * 1e3 / jobs for v in runs}
    delivered = min(r["ok"] for v in runs for r in runs[v])
    spans = max(r["spans"] for v in TRACED for r in runs[v])
    # Six per job, and an ``upload.send`` for each of the two files the jobs share.
    expected = SPANS_PER_JOB * jobs + 2
    cpu_rows = []
    for variant, label in TRACED.items():
        figure = f"client process CPU per job, tracing on ({label}) vs off"
        ratio = _ratio(runs, variant, "cpu")
        value, baseline = f"{per_job[variant]:.2f} ms", f"off {per_job['off']:.2f} ms"
        shown = f"{ratio:.3f} {_interval(runs, variant)}"
        if judge:
            cpu_rows.append(
                judged(
                    name,
                    figure,
                    value=value,
                    baseline=baseline,
                    ratio=shown,
                    goal=at_most(GOAL),
                    checked=ratio,
                )
            )
        else:
            cpu_rows.append(Row(name, figure + " (judged by the full run)", value, baseline, shown))
    return [
        *cpu_rows,
        Row(
            name,
            "event loop thread CPU per job, batch/simple vs off (wall time's ratios)",
            f"{loop['batch']:.2f}/{loop['simple']:.2f} ms",
            f"off {loop['off']:.2f} ms",
            f"{_ratio(runs, 'batch', 'thread_cpu'):.3f}/{_ratio(runs, 'simple', 'thread_cpu'):.3f}"
            f" ({_ratio(runs, 'batch', 'wall'):.3f}/{_ratio(runs, 'simple', 'wall'):.3f})",
        ),
        judged(
            name,
            "jobs delivered; spans exported; client CPU per job without opentelemetry",
            value=f"{delivered:.0f}/{jobs:.0f}; {spans:.0f}; {per_job['none']:.2f} ms",
            goal=Goal(f"all; {expected}", 0.0, 0.0),
            checked=(jobs - delivered) + abs(spans - expected),
        ),
    ]


async def quick() -> list[Row]:
    """200 jobs a batch, two rounds of each variant; shown, not judged."""
    runs = await measure(QUICK_JOBS, FULL_SCALE, 2, alone=1)
    return rows(runs, f"telemetry ({QUICK_JOBS} jobs, 1/{1 / FULL_SCALE:.0f} time)", judge=False)


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=FULL_JOBS)
    parser.add_argument("--time-scale", type=float, default=FULL_SCALE)
    # Nine: a batch's CPU varies by a few per cent on a shared machine, as much as the margin
    # judged; nine paired rounds put the median within an interval of 96 % coverage.
    parser.add_argument("--rounds", type=int, default=9, help="batches of each variant")
    parser.add_argument("--quick", action="store_true", help="the rows of the quick run")
    parser.add_argument("--save", type=Path, help="write every batch's figures here (JSON)")
    parser.add_argument(
        "--load",
        type=Path,
        nargs="+",
        help="report on the rounds of runs saved with --save, pooled, instead of measuring",
    )
    parser.add_argument("--child", choices=("none", "alternate"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    jobs, scale, rounds = args.jobs, args.time_scale, args.rounds
    if args.child:
        await child(args.child, jobs, scale, rounds)
        return
    if args.quick:
        print(text_table(await quick()))
        return
    if args.load:
        runs, jobs, scale = _pooled([json.loads(path.read_text()) for path in args.load])
        rounds = len(runs["off"])
    else:
        runs = await measure(jobs, scale, rounds)
    if args.save:
        args.save.write_text(json.dumps({"jobs": jobs, "scale": scale, "runs": runs}))
    print(f"\n== telemetry: {jobs} jobs end to end, time scale {scale}, median of {rounds} ==")
    labels = {"none": "opentelemetry not installed", "off": "API, no SDK set up", **TRACED}
    for variant, label in labels.items():
        done = runs[variant]
        print(
            f"{label:28}: ok {min(r['ok'] for r in done):.0f}/{jobs}; client process CPU "
            f"{_median(done, 'cpu') * 1e3 / jobs:.2f} ms per job (loop thread "
            f"{_median(done, 'thread_cpu') * 1e3 / jobs:.2f}); wall "
            f"{_median(done, 'wall') / scale:.0f} s service time; spans "
            f"{max(r.get('spans', 0) for r in done):.0f}, tasks.created "
            f"{max(r.get('created', 0) for r in done):.0f}"
        )
    for variant, label in TRACED.items():
        rounds_ = ", ".join(f"{r:.3f}" for r in _ratios(runs, variant, "cpu"))
        print(
            f"{label} vs off: client process CPU ratio {_ratio(runs, variant, 'cpu'):.3f} "
            f"(goal < {GOAL}; median of the rounds {rounds_}; the median lies in "
            f"{_interval(runs, variant)}; user {_ratio(runs, variant, 'user'):.3f}, system "
            f"{_ratio(runs, variant, 'system'):.3f}), loop thread "
            f"{_ratio(runs, variant, 'thread_cpu'):.3f}, wall "
            f"{_ratio(runs, variant, 'wall'):.3f}"
        )
    print(text_table(rows(runs, f"telemetry ({jobs} jobs, time scale {scale:g})")))


if __name__ == "__main__":
    asyncio.run(main())
