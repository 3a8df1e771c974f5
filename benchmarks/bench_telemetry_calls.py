"""Where tracing's cost goes: the time spent inside OpenTelemetry's calls, per job.

A diagnostic next to ``bench_telemetry`` (which judges the whole cost): one batch with the SDK
set up as in production (``BatchSpanProcessor``, an exporter that lets spans go), the SDK's
span, context and histogram calls timed where they are made (CPU time of the thread making
them). It tells the direct cost of each kind of call, per call and per job, as a share of the
client's CPU per job in the same batch. What it cannot show is the indirect cost (caches,
allocation) that the whole-batch comparison catches.

    python -m benchmarks.bench_telemetry_calls [--jobs 300] [--time-scale 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import time
from collections.abc import Callable
from typing import Any

from .bench_telemetry import FULL_SCALE, simulator
from .bench_telemetry import _batch as batch

#: The calls timed: (module, class or None, function), all looked up by the library when called.
CALLS = (
    ("opentelemetry.sdk.trace", "Tracer", "start_span"),
    ("opentelemetry.sdk.trace", "Span", "end"),
    ("opentelemetry.sdk.trace", "Span", "add_event"),
    ("opentelemetry.sdk.trace", "Span", "set_attributes"),
    ("opentelemetry.sdk.trace", "Span", "set_attribute"),
    ("opentelemetry.sdk.metrics._internal.instrument", "_Histogram", "record"),
    ("opentelemetry.context", None, "attach"),
    ("opentelemetry.context", None, "detach"),
    ("opentelemetry.trace", None, "set_span_in_context"),
    ("opentelemetry.trace", None, "get_current_span"),
)


def _timing(spent: dict[str, float], made: collections.Counter[str]) -> None:
    """Wrap each call of :data:`CALLS` to add its time to ``spent`` and count it."""
    import importlib

    for module_name, owner_name, name in CALLS:
        module = importlib.import_module(module_name)
        owner = module if owner_name is None else getattr(module, owner_name)
        original = getattr(owner, name)
        label = f"{owner_name or module_name.rsplit('.', 1)[-1]}.{name}"

        def timed(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
            @functools.wraps(fn)
            def call(*args: Any, **kwargs: Any) -> Any:
                started = time.thread_time()
                try:
                    return fn(*args, **kwargs)
                finally:
                    spent[label] += time.thread_time() - started
                    made[label] += 1

            return call

        setattr(owner, name, timed(original, label))


async def _batch(sim: Any, jobs: int) -> float:
    """Client CPU of one batch of ``jobs`` (``bench_telemetry``'s); every job must succeed."""
    done = await batch(sim, jobs)
    if done["ok"] != jobs:
        raise RuntimeError(f"only {done['ok']:.0f} of {jobs} jobs succeeded: figures would mislead")
    return done["cpu"]


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--time-scale", type=float, default=FULL_SCALE)
    args = parser.parse_args(argv)
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from kling_async import telemetry

    from .bench_telemetry import _CountingExporter

    spent: dict[str, float] = collections.defaultdict(float)
    made: collections.Counter[str] = collections.Counter()
    async with simulator(args.time_scale) as sim:
        await _batch(sim, min(args.jobs, 100))  # warm-up
        tracing = TracerProvider()
        tracing.add_span_processor(BatchSpanProcessor(_CountingExporter()))  # type: ignore[arg-type]
        metering = MeterProvider(metric_readers=[InMemoryMetricReader()])
        telemetry.configure(tracer_provider=tracing, meter_provider=metering)
        _timing(spent, made)
        try:
            cpu = await _batch(sim, args.jobs)
        finally:
            telemetry.configure()
            tracing.shutdown()
    jobs = args.jobs
    total = sum(spent.values())
    print(f"\n== telemetry calls: {jobs} jobs, time scale {args.time_scale} ==")
    print(
        f"client process CPU {cpu * 1e3 / jobs:.2f} ms per job; inside OpenTelemetry's calls "
        f"{total * 1e6 / jobs:.0f} us per job ({total / cpu:.1%} of it)"
    )
    for label, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        print(
            f"  {label:20} {made[label] / jobs:4.1f} per job, "
            f"{seconds / made[label] * 1e6:5.1f} us each, {seconds * 1e6 / jobs:4.0f} us per job"
        )


if __name__ == "__main__":
    asyncio.run(main())
