"""Telemetry that fails, is shared or is resumed: the jobs never pay for it (simulator, SDK)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from kling_async import Job, KlingSession, telemetry
from kling_async.journal import SUCCEEDED
from kling_async.ratelimit import RateLimiter
from kling_async.settings import DEFAULT_CREATE_LIMIT

from .conftest import MEDIA, SimFactory, session_for
from .test_money_safety import journal_statuses, run_all

IMAGE = MEDIA / "portrait.png"
VIDEO = MEDIA / "d10.0.mp4"


class Raising(SpanProcessor):
    """A span processor (as an exporter's could be) that raises on every span start and end."""

    def __init__(self) -> None:
        self.calls = 0

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        self.calls += 1
        raise RuntimeError("processor bug on start")

    def on_end(self, span: ReadableSpan) -> None:
        self.calls += 1
        raise RuntimeError("processor bug on end")


class _Broken:
    """An instrument, or a meter, or a meter provider, every method of which raises."""

    def __init__(self) -> None:
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        def fail(*_: Any, **__: Any) -> Any:
            self.calls += 1
            raise RuntimeError(f"meter bug in {name}")

        return fail


@pytest.fixture
def broken() -> Iterator[tuple[Raising, _Broken]]:
    processor, meters = Raising(), _Broken()
    tracing = TracerProvider()
    tracing.add_span_processor(processor)
    telemetry.configure(tracer_provider=tracing, meter_provider=meters)
    try:
        yield processor, meters
    finally:
        telemetry.configure()
        tracing.shutdown()


async def test_telemetry_that_raises_costs_no_job_and_no_second_task(
    make_sim: SimFactory, broken: tuple[Raising, _Broken], tmp_path: Path
) -> None:
    processor, meters = broken
    sim = await make_sim()
    journal = tmp_path / "batch.sqlite"
    jobs = [Job(IMAGE, VIDEO, key=f"clip-{i}") for i in range(3)]
    async with session_for(sim) as kling:
        outcomes = await run_all(kling, jobs, journal=journal)
        assert [o.error for o in outcomes] == [None] * 3
        assert len({o.task_id for o in outcomes}) == 3
        single = await kling.generate(IMAGE, VIDEO)
        assert single.task.task_id
    assert processor.calls > 0 and meters.calls > 0  # both were used, and both raised
    assert sim.tasks_created[sim.api_key] == 4  # exactly one task per job
    assert await journal_statuses(journal) == {f"clip-{i}": SUCCEEDED for i in range(3)}
    # A rerun finds every job done: nothing is sent again.
    async with session_for(sim) as kling:
        again = await run_all(kling, jobs, journal=journal)
    assert {o.job_key: o.task_id for o in again} == {o.job_key: o.task_id for o in outcomes}
    assert sim.tasks_created[sim.api_key] == 4


async def test_a_limiter_shared_by_many_sessions_is_counted_once() -> None:
    reader = InMemoryMetricReader()
    metering = MeterProvider(metric_readers=[reader])
    telemetry.configure(meter_provider=metering)
    try:
        shared = RateLimiter(DEFAULT_CREATE_LIMIT)
        for _ in range(50):  # e.g. a bot opening a session per command, sharing its limiter
            async with KlingSession("sk-abcdefabcdefabcdef", create_limiter=shared):
                pass
        shared.waiting = 1  # one request queued right now
        gc.collect()  # the sessions' own (recordInfo) limiters are gone
        async with KlingSession("sk-abcdefabcdefabcdef", create_limiter=shared):
            queued = {}
            data = reader.get_metrics_data()
            assert data is not None
            for resource in data.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        if metric.name == "kling_async.limiter.queue":
                            for p in metric.data.data_points:
                                queued[p.attributes["limiter"]] = p.value
            assert queued == {"createTask": 1, "recordInfo": 0}
            # The registry holds what is alive: the shared limiter and this session's own.
            assert len(telemetry._gauges["limiter.queue"]) == 2
        shared.waiting = 0
    finally:
        telemetry.configure()
        metering.shutdown()
