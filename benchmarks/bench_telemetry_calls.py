"""Where tracing's cost goes: the time spent inside OpenTelemetry's calls, and in the library's
own telemetry code around them, per job.

A diagnostic next to ``bench_telemetry`` (which judges the whole cost): one batch with the SDK
set up as in production (``BatchSpanProcessor``, an exporter that lets spans go), the SDK's
span, context and histogram calls timed where they are made (CPU time of the thread making
them), and so are the library's telemetry entry points (a step's span opening and closing, the
job's scope, events, annotations). It tells the direct cost of each kind of call, per call and
per job, as a share of the client's CPU per job in the same batch, and how much of it is the
library's own: the entry points' time less the SDK's calls made within them and less the
timing's own cost (measured here, per timed call). Not counted: the few lines of
``telemetry.traced`` before a step's span starts (a look-up and a dict, a few µs per step).
What it cannot show is the indirect cost (caches, allocation) that the whole-batch comparison
catches.

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
    """CPU time of the timed calls by label; of the SDK's, also how much was spent within the
    library's (outermost) entry points, and how many timed calls were made within them."""

    def __init__(self, cost: float = 0.0) -> None:
        self.cost = cost  # what timing one call adds to the call timing it
        self.spent: dict[str, float] = collections.defaultdict(float)
        self.made: collections.Counter[str] = collections.Counter()
        self.library = 0.0  # in the library's outermost entry points, all included
        self.own: dict[str, float] = collections.defaultdict(float)  # the same, less SDK calls
        self.sdk_within = 0.0  # in the SDK's calls made from those
        self.timed_within = 0  # timed calls made from those (each adds the timing's cost)
        self._depth = 0  # library entry points open now (the loop's thread makes them all)

    def wrap(self, fn: Callable[..., Any], label: str, *, library: bool) -> Callable[..., Any]:
        """``fn``, timed under ``label``."""

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            outer = self._depth
            self._depth += library
            before = (self.sdk_within, self.timed_within)
            started = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - started
                self._depth = outer
                self.spent[label] += spent
                self.made[label] += 1
                if outer:
                    self.timed_within += 1
                    if not library:
                        self.sdk_within += spent
                elif library:
                    self.library += spent
                    self.own[label] += spent - (self.sdk_within - before[0])
                    self.own[label] -= (self.timed_within - before[1]) * self.cost

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


def timing_cost(calls: int = 20_000) -> float:
    """CPU seconds one timed call adds to the call timing it (measured on a call that does
    nothing, timed and not)."""

    def nothing() -> None:
        return None

    timed = _Timing().wrap(nothing, "nothing", library=False)
    best = float("inf")
    for _ in range(5):  # the least disturbed of a few tries
        started = time.thread_time()
        for _ in range(calls):
            nothing()
        bare = time.thread_time() - started
        started = time.thread_time()
        for _ in range(calls):
            timed()
        best = min(best, (time.thread_time() - started - bare) / calls)
    return max(best, 0.0)


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

    cost = timing_cost()
    timing = _Timing(cost)
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
    sdk = sum(s for label, s in timing.spent.items() if not label.startswith("kling "))
    own = timing.library - timing.sdk_within - timing.timed_within * cost
    print(f"\n== telemetry calls: {jobs} jobs, time scale {args.time_scale} ==")
    print(
        f"client process CPU {cpu * 1e3 / jobs:.2f} ms per job; inside OpenTelemetry's calls "
        f"{sdk * 1e6 / jobs:.0f} us per job ({sdk / cpu:.1%} of it); the library's own "
        f"telemetry code {own * 1e6 / jobs:.0f} us per job ({own / cpu:.1%}; timing costs "
        f"{cost * 1e6:.1f} us a call, taken off)"
    )
    for label, seconds in sorted(timing.spent.items(), key=lambda item: -item[1]):
        made = timing.made[label]
        mine = f" (own {timing.own[label] * 1e6 / jobs:3.0f})" if label in timing.own else ""
        print(
            f"  {label:26} {made / jobs:4.1f} per job, "
            f"{seconds / made * 1e6:5.1f} us each, {seconds * 1e6 / jobs:4.0f} us per job{mine}"
        )
    print("  (a library entry point: all included; own: less the SDK's calls and the timing)")


if __name__ == "__main__":
    asyncio.run(main())
