"""What tracing costs: 1,000 jobs through ``generate_many`` with telemetry off and on.

The simulator runs in a thread of its own, so that the CPU time of the client's event loop thread
is measured apart from the simulator's. Three variants:

- ``none``: opentelemetry not importable at all (``sys.modules["opentelemetry"] = None``), in a
  process of its own;
- ``off``: the API installed but no SDK set up (what an application that does not trace gets);
- ``on``: the SDK with every span exported at its end in the job's thread (``SimpleSpanProcessor``
  and an exporter that counts spans and drops them, as one does once they are sent) and metrics
  kept by an ``InMemoryMetricReader``, given to the library with ``telemetry.configure``.

``off`` and ``on`` alternate in one process, after a warm-up batch, so that the load of a shared
machine strikes both alike. Reports the median CPU per job of the client's thread and of the
whole process, the ratio on/off (goal: under 1.10) and the wall time (service time: divided by
the time scale).

    python -m benchmarks.bench_telemetry [--jobs 1000] [--time-scale 0.05] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ._report import Goal, Row, at_most, judged, text_table

ASSETS = Path(__file__).resolve().parent.parent / "kling_async" / "assets"
FULL_JOBS = 1000
FULL_SCALE = 0.05
QUICK_JOBS = 200
#: Client CPU per job with tracing on, as a ratio of off.
GOAL = 1.10


class SimThread:
    """The simulator on an event loop of its own, in a thread of its own."""

    def __init__(self, scale: float) -> None:
        from kling_async.simulator import Simulator, SimulatorConfig

        self.sim = Simulator(SimulatorConfig(time_scale=scale, credits=1e9, request_log_limit=100))
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="simulator", daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.sim.start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.sim.close())
        self._loop.close()

    def __enter__(self) -> SimThread:
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


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


def _providers() -> tuple[Any, Any, Any, Any]:
    """The SDK exporting every span at its end, in the job's thread, and an in-memory reader."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    spans = _CountingExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(spans))  # type: ignore[arg-type]
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
            cpu = time.process_time()
            thread_cpu = time.thread_time()
            ok = 0
            async for outcome in kling.generate_many(batch, download_to=out):
                ok += outcome.ok
            return {
                "ok": ok,
                "wall": time.monotonic() - started,
                "cpu": time.process_time() - cpu,
                "thread_cpu": time.thread_time() - thread_cpu,
            }


async def child(mode: str, jobs: int, scale: float, rounds: int) -> None:
    """Batches in this process (on its main thread's loop); prints one JSON line.

    ``none``: one batch without opentelemetry. ``alternate``: a warm-up batch, then ``rounds``
    pairs of batches with tracing off and on, in alternating order, so that a slow moment of a
    shared machine strikes both alike.
    """
    if mode == "none":
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]
    from kling_async import telemetry

    runs: dict[str, list[dict[str, float]]] = {"none": [], "off": [], "on": []}
    with SimThread(scale) as served:
        if mode == "none":
            gc.collect()
            runs["none"].append(await _batch(served.sim, jobs))
        else:
            await _batch(served.sim, min(jobs, 100))  # warm-up: imports, caches, connections
            gc.collect()
            for round_ in range(rounds):
                for variant in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                    exported = reader = None
                    if variant == "on":
                        tracing, metering, exported, reader = _providers()
                        telemetry.configure(tracer_provider=tracing, meter_provider=metering)
                    else:
                        telemetry.configure()  # the global providers: none set up
                    result = await _batch(served.sim, jobs)
                    result["spans"] = len(exported.get_finished_spans()) if exported else 0
                    result["created"] = _created(reader) if reader else 0
                    runs[variant].append(result)
                    # What a batch kept (spans in memory) must not burden the next one.
                    telemetry.configure()
                    exported = reader = tracing = metering = None
                    gc.collect()
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


def _median(runs: list[dict[str, float]], what: str) -> float:
    return statistics.median(run[what] for run in runs)


async def measure(jobs: int, scale: float, rounds: int) -> dict[str, list[dict[str, float]]]:
    """Every variant's batches (each child process in a thread: this loop stays free)."""
    runs = await asyncio.to_thread(_run_child, "alternate", jobs, scale, rounds)
    runs["none"] = (await asyncio.to_thread(_run_child, "none", jobs, scale, 1))["none"]
    return runs


def rows(runs: dict[str, list[dict[str, float]]], name: str) -> list[Row]:
    """The figures as table rows: the CPU ratio is judged, the rest shown."""
    on, off = runs["on"], runs["off"]
    jobs = on[0]["ok"] or 1
    per_job = {v: _median(runs[v], "thread_cpu") * 1e3 / jobs for v in runs}
    delivered = min(r["ok"] for v in runs for r in runs[v])
    return [
        judged(
            name,
            "client CPU per job, tracing on (SDK, each span exported) vs off",
            value=f"{per_job['on']:.2f} ms",
            baseline=f"off {per_job['off']:.2f} ms",
            ratio=f"{per_job['on'] / per_job['off']:.3f}",
            goal=at_most(GOAL),
            checked=per_job["on"] / per_job["off"],
        ),
        Row(
            name,
            "process CPU per job (client and simulator), on vs off (wall time's ratio)",
            f"{_median(on, 'cpu') * 1e3 / jobs:.2f} ms",
            f"off {_median(off, 'cpu') * 1e3 / jobs:.2f} ms",
            f"{_median(on, 'cpu') / _median(off, 'cpu'):.3f} "
            f"({_median(on, 'wall') / _median(off, 'wall'):.3f})",
        ),
        judged(
            name,
            "jobs delivered; spans per job; client CPU per job without opentelemetry",
            value=f"{delivered:.0f}/{jobs:.0f}; {max(r['spans'] for r in on) / jobs:.0f}; "
            f"{per_job['none']:.2f} ms",
            goal=Goal("all; 7", 0.0, 0.0),
            checked=(jobs - delivered) + abs(max(r["spans"] for r in on) - 7 * jobs),
        ),
    ]


async def quick() -> list[Row]:
    """200 jobs a batch, two pairs of batches off and on."""
    runs = await measure(QUICK_JOBS, FULL_SCALE, 2)
    return rows(runs, f"telemetry ({QUICK_JOBS} jobs, 1/{1 / FULL_SCALE:.0f} time)")


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=FULL_JOBS)
    parser.add_argument("--time-scale", type=float, default=FULL_SCALE)
    parser.add_argument("--rounds", type=int, default=2, help="pairs of batches off and on")
    parser.add_argument("--quick", action="store_true", help="the rows of the quick run")
    parser.add_argument("--child", choices=("none", "alternate"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    jobs, scale, rounds = args.jobs, args.time_scale, args.rounds
    if args.child:
        await child(args.child, jobs, scale, rounds)
        return
    if args.quick:
        print(text_table(await quick()))
        return
    runs = await measure(jobs, scale, rounds)
    print(f"\n== telemetry: {jobs} jobs end to end, time scale {scale}, median of {rounds} ==")
    for variant, label in (
        ("none", "opentelemetry not installed"),
        ("off", "API, no SDK set up"),
        ("on", "SDK, each span exported"),
    ):
        done = runs[variant]
        print(
            f"{label:28}: ok {min(r['ok'] for r in done):.0f}/{jobs}; client thread CPU "
            f"{_median(done, 'thread_cpu') * 1e3 / jobs:.2f} ms per job, process CPU "
            f"{_median(done, 'cpu') * 1e3 / jobs:.2f} ms per job (with the simulator); wall "
            f"{_median(done, 'wall') / scale:.0f} s service time; spans "
            f"{max(r.get('spans', 0) for r in done):.0f}, tasks.created "
            f"{max(r.get('created', 0) for r in done):.0f}"
        )
    on, off = runs["on"], runs["off"]
    print(
        f"tracing on/off: client CPU ratio "
        f"{_median(on, 'thread_cpu') / _median(off, 'thread_cpu'):.3f} (goal < {GOAL}), "
        f"process CPU ratio {_median(on, 'cpu') / _median(off, 'cpu'):.3f}, wall ratio "
        f"{_median(on, 'wall') / _median(off, 'wall'):.3f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
