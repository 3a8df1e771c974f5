"""Where tracing's cost goes: the time spent inside OpenTelemetry's calls, and in the library's
own telemetry code around them, per job.

A diagnostic next to ``bench_telemetry`` (which judges the whole cost): one batch with the SDK
set up as in production (``BatchSpanProcessor``, an exporter that lets spans go), the SDK's
span, context and histogram calls timed where they are made (CPU time of the thread making
them), and so are the library's telemetry entry points (a step's span opening and closing, the
job's scope, events, annotations). It tells the direct cost of each kind of call, per call and
per job, as a share of the client's CPU per job in the same batch, and how much of it is the
library's own: each call's time less the timed calls made within it (an SDK call within
another is counted once) and less the timing's own cost (measured here, per timed call). Not
counted: the few lines of ``telemetry.traced`` before a step's span starts (a look-up and a
dict, a few µs per step). What it cannot show is the indirect cost (caches, allocation) that
the whole-batch comparison catches.

    python -m benchmarks.bench_telemetry_calls [--jobs 300] [--time-scale 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import importlib
import time
from collections.abc import Callable
from typing import Any

from .bench_telemetry import FULL_SCALE, simulator
from .bench_telemetry import _batch as batch

#: The SDK's calls timed: (module, class or None, function), all looked up by the library when
#: called.
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
#: The library's telemetry entry points timed, as :data:`CALLS` (looked up when called too).
LIBRARY_CALLS = (
    ("kling_async.telemetry", "_Active", "__enter__"),
    ("kling_async.telemetry", "_Active", "__exit__"),
    ("kling_async.telemetry", "JobScope", "__enter__"),
    ("kling_async.telemetry", "JobScope", "__exit__"),
    ("kling_async.telemetry", "JobScope", "finished"),
    ("kling_async.telemetry", None, "event"),
    ("kling_async.telemetry", None, "annotate"),
    ("kling_async.telemetry", None, "note_task"),
)


class _Timing:
    """CPU time of the timed calls: each label's, all included (an SDK call made within
    another is in both), and each call's own, less the timed calls made within it and the
    timing's cost, summed by label and for the SDK's calls and the library's apart."""

    def __init__(self, inside: float = 0.0, outside: float = 0.0) -> None:
        # What timing one call adds: within its own measure, and outside it (to its caller's).
        self.inside, self.outside = inside, outside
        self.spent: dict[str, float] = collections.defaultdict(float)
        self.made: collections.Counter[str] = collections.Counter()
        self.own: dict[str, float] = collections.defaultdict(float)
        self.sdk = 0.0  # the SDK's calls, each counted once
        self.library = 0.0  # the library's telemetry code, the SDK's calls within it left out
        # For each timed call open now (the loop's thread makes them all), what the timed
        # calls made within it took, with the timing's cost.
        self._open: list[float] = []

    def wrap(self, fn: Callable[..., Any], label: str, *, library: bool) -> Callable[..., Any]:
        """``fn``, timed under ``label``."""

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            self._open.append(0.0)
            started = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - started
                own = spent - self._open.pop() - self.inside
                self.spent[label] += spent
                self.made[label] += 1
                self.own[label] += own
                if library:
                    self.library += own
                else:
                    self.sdk += own
                if self._open:
                    self._open[-1] += spent + self.outside

        return call

    def install(self) -> None:
        """Wrap each call of :data:`CALLS` and :data:`LIBRARY_CALLS`."""
        for calls, library in ((CALLS, False), (LIBRARY_CALLS, True)):
            for module_name, owner_name, name in calls:
                module = importlib.import_module(module_name)
                owner = module if owner_name is None else getattr(module, owner_name)
                label = f"{owner_name or module_name.rsplit('.', 1)[-1]}.{name}"
                if library:
                    label = "kling " + label
                setattr(owner, name, self.wrap(getattr(owner, name), label, library=library))


def timing_cost(calls: int = 20_000) -> tuple[float, float]:
    """CPU seconds timing one call adds within its own measure and outside it (measured on a
    call that does nothing, timed and not; the least disturbed of a few tries)."""

    def nothing() -> None:
        return None

    best = (float("inf"), 0.0)
    for _ in range(5):
        timing = _Timing()
        timed = timing.wrap(nothing, "nothing", library=False)
        started = time.thread_time()
        for _ in range(calls):
            nothing()
        bare = time.thread_time() - started
        started = time.thread_time()
        for _ in range(calls):
            timed()
        added = (time.thread_time() - started - bare) / calls
        inside = timing.spent["nothing"] / calls - bare / calls
        best = min(best, (max(added, 0.0), max(inside, 0.0)))
    added, inside = best
    return inside, max(added - inside, 0.0)


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

    inside, outside = timing_cost()
    timing = _Timing(inside, outside)
    async with simulator(args.time_scale) as sim:
        await _batch(sim, min(args.jobs, 100))  # warm-up
        tracing = TracerProvider()
        tracing.add_span_processor(BatchSpanProcessor(_CountingExporter()))  # type: ignore[arg-type]
        metering = MeterProvider(metric_readers=[InMemoryMetricReader()])
        telemetry.configure(tracer_provider=tracing, meter_provider=metering)
        timing.install()
        try:
            cpu = await _batch(sim, args.jobs)
        finally:
            telemetry.configure()
            tracing.shutdown()
    jobs = args.jobs
    sdk, own = timing.sdk, timing.library
    print(f"\n== telemetry calls: {jobs} jobs, time scale {args.time_scale} ==")
    print(
        f"client process CPU {cpu * 1e3 / jobs:.2f} ms per job; inside OpenTelemetry's calls "
        f"{sdk * 1e6 / jobs:.0f} us per job ({sdk / cpu:.1%} of it); the library's own "
        f"telemetry code {own * 1e6 / jobs:.0f} us per job ({own / cpu:.1%}); timing a call "
        f"costs {(inside + outside) * 1e6:.1f} us, taken off"
    )
    for label, seconds in sorted(timing.spent.items(), key=lambda item: -item[1]):
        made = timing.made[label]
        print(
            f"  {label:26} {made / jobs:4.1f} per job, {seconds / made * 1e6:5.1f} us each, "
            f"{seconds * 1e6 / jobs:4.0f} us per job (own {timing.own[label] * 1e6 / jobs:3.0f})"
        )
    print("  (all included: the timed calls made within; own: less those and the timing)")


if __name__ == "__main__":
    asyncio.run(main())
