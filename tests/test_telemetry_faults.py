"""Telemetry that fails, is shared or is resumed: the jobs never pay for it (simulator, SDK)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from kling_async import Job, KlingSession, telemetry
from kling_async.journal import SUCCEEDED
from kling_async.ratelimit import RateLimiter
from kling_async.settings import DEFAULT_CREATE_LIMIT, IMAGE_UPLOAD_PATH
from kling_async.simulator import FaultConfig

from .conftest import MEDIA, SimFactory, eventually, serve, session_for
from .test_money_safety import journal_statuses, run_all
from .test_telemetry import Otel, Records, in_memory, recording

IMAGE = MEDIA / "portrait.png"
VIDEO = MEDIA / "d10.0.mp4"


@pytest.fixture
def otel() -> Iterator[Otel]:
    yield from in_memory()


@pytest.fixture
def logs() -> Iterator[Records]:
    yield from recording()


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
            assert len(telemetry._metrics._gauges["limiter.queue"]) == 2
        shared.waiting = 0
    finally:
        telemetry.configure()
        metering.shutdown()


async def test_an_upload_shared_by_jobs_claims_none_of_them(
    make_sim: SimFactory, otel: Otel, logs: Records
) -> None:
    # Every upload fails: each content is tried (and retried) once, for the three jobs at once.
    faults = FaultConfig(error_500=1.0, endpoints=frozenset({"streamUpload"}), seed=1)
    sim = await make_sim(faults=faults)
    jobs = [Job(IMAGE, VIDEO, key=f"clip-{i}") for i in range(3)]
    async with session_for(sim, retry_cap=0.02, max_retries=2) as kling:
        outcomes = await run_all(kling, jobs)
    assert all(o.error is not None for o in outcomes)
    retries = [r for r in logs.records if r.getMessage().startswith("retrying")]
    assert retries and all(r.job_key is None for r in retries)  # type: ignore[attr-defined]
    spans = otel.finished()
    sends = [s for s in spans if s.name == "kling_async.upload.send"]
    assert sends and all(s.parent is None for s in sends)  # no one job's child
    assert sum(1 for s in sends for e in s.events if e.name == "retry") == len(retries)
    uploads = [s for s in spans if s.name == "kling_async.upload"]
    assert uploads and not [e for s in uploads for e in s.events if e.name == "retry"]
    files = [dict(e.attributes or {}) for s in uploads for e in s.events if e.name == "file"]
    # Each job's step names the image (the video never comes: the image failed), sent by one
    # job and joined by the others.
    assert {f["kling_async.upload_path"] for f in files} == {IMAGE_UPLOAD_PATH}
    assert sorted(f["kling_async.source"] for f in files) == ["joined", "joined", "sent"]


async def test_downloads_answered_429_are_counted(otel: Otel, tmp_path: Path) -> None:
    # A file host (not the API) that answers its first request HTTP 429, then the clip.
    answered: list[int] = []

    async def clip(request: web.Request) -> web.StreamResponse:
        if not answered:
            answered.append(429)
            return web.Response(status=429, text="slow down")
        answered.append(200)
        return web.FileResponse(VIDEO)

    app = web.Application()
    app.router.add_get("/clip.mp4", clip)
    async with serve(app) as base, KlingSession("key", retry_base=0.01, retry_cap=0.05) as kling:
        saved = await kling.download(f"{base}/clip.mp4", tmp_path / "clip.mp4")
    assert saved.stat().st_size == VIDEO.stat().st_size
    assert answered == [429, 200]
    assert otel.total("http.rate_limited", endpoint="download") == 1


async def test_a_cancelled_job_says_so_on_its_span(sim: Any, otel: Otel) -> None:
    async with session_for(sim) as kling:
        running = asyncio.ensure_future(kling.generate(IMAGE, VIDEO))
        # Cancelled once it is surely waiting: its task was created and has been asked about.
        await eventually(
            lambda: sim.tasks_created.get(sim.api_key, 0) == 1 and sim.count("recordInfo") >= 1
        )
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    (job,) = [s for s in otel.finished() if s.name == "kling_async.job"]
    assert job.attributes is not None
    assert job.attributes.get("kling_async.outcome") == "cancelled"
    assert [e.name for e in job.events] == ["cancelled"]
    wait = next(s for s in otel.finished() if s.name == "kling_async.wait")
    assert wait.attributes is not None
    assert wait.attributes.get("kling_async.outcome") == "cancelled"


def test_every_library_logger_gives_the_job_fields(logs: Records) -> None:
    # Records of child loggers (the simulator's) carry the fields too, as a formatter needs.
    logging.getLogger("kling_async.simulator").warning("from the simulator")
    (record,) = [r for r in logs.records if r.getMessage() == "from the simulator"]
    formatter = logging.Formatter("%(job_key)s %(task_id)s %(message)s")
    assert formatter.format(record) == "None None from the simulator"
