"""Telemetry against the simulator: OpenTelemetry's SDK in memory, logs, and a run without it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import StatusCode

from kling_async import (
    ConfigurationError,
    Job,
    JobEvent,
    JobEventKind,
    JobOutcome,
    TaskFailedError,
    cli,
    telemetry,
)
from kling_async.rules import estimate_credits
from kling_async.settings import IMAGE_UPLOAD_PATH, VIDEO_UPLOAD_PATH
from kling_async.simulator import FaultConfig, Simulator

from .conftest import MEDIA, SimFactory, eventually, session_for

IMAGE = MEDIA / "portrait.png"
VIDEO = MEDIA / "d10.0.mp4"
JOBS = 4
# With these seeds exactly one of the first four tasks fails, and exactly one of the first four
# createTask requests gets an injected 429 (the retry after it does not): asserted below too.
FAILURE_SEED = 1
FAULTS = FaultConfig(error_429=0.25, endpoints=frozenset({"createTask"}), seed=1)
STEPS = ["validate", "upload", "createTask", "wait", "download"]


@attrs.define
class Otel:
    """OpenTelemetry's SDK with in-memory exporters, in use by the library for one test."""

    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracing: TracerProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def data(self) -> dict[str, Any]:
        """Each metric point: sums by (name, labels) and histograms as (count, sum)."""
        found: dict[str, Any] = {}
        data = self.metrics.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        labels = tuple(sorted(point.attributes.items()))
                        value = (point.count, point.sum) if hasattr(point, "count") else point.value
                        found.setdefault(metric.name, {})[labels] = value
        return found

    def total(self, name: str, **labels: str) -> float:
        points = self.data().get(f"kling_async.{name}", {})
        return sum(
            v for k, v in points.items() if all(dict(k).get(a) == b for a, b in labels.items())
        )


@pytest.fixture
def otel() -> Iterator[Otel]:
    yield from in_memory()


def in_memory() -> Iterator[Otel]:
    """OpenTelemetry's SDK, in memory, in use by the library until the generator ends."""
    spans = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    metering = MeterProvider(metric_readers=[reader])
    telemetry.configure(tracer_provider=tracing, meter_provider=metering)
    try:
        yield Otel(spans, reader, tracing)
    finally:
        telemetry.configure()
        tracing.shutdown()
        metering.shutdown()


class Records(logging.Handler):
    """Every log record of every logger, from DEBUG up."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logs() -> Iterator[Records]:
    yield from recording()


def recording() -> Iterator[Records]:
    """Every log record, kept until the generator ends."""
    handler = Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def faulty_sim(make_sim: SimFactory) -> Simulator:
    return await make_sim(failure_rate=0.25, seed=FAILURE_SEED, faults=FAULTS)


async def run_batch(sim: Simulator, out: Path, jobs: int = JOBS) -> list[JobOutcome]:
    batch = [Job(IMAGE, VIDEO, key=f"clip-{i}") for i in range(jobs)]
    async with session_for(sim) as kling:
        return [o async for o in kling.generate_many(batch, download_to=out)]


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return sorted(
        (s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id),
        key=lambda s: s.start_time or 0,
    )


def attr(span: ReadableSpan, name: str) -> Any:
    assert span.attributes is not None
    return span.attributes.get(f"kling_async.{name}")


async def test_each_job_has_its_span_tree(make_sim: SimFactory, otel: Otel, tmp_path: Path) -> None:
    sim = await faulty_sim(make_sim)
    outcomes = await run_batch(sim, tmp_path)
    failed = [o for o in outcomes if not o.ok]
    assert len(failed) == 1 and isinstance(failed[0].error, TaskFailedError)
    assert sim.count("createTask", code=429) == 1
    spans = otel.finished()
    jobs = {attr(s, "job_key"): s for s in spans if s.name == "kling_async.job"}
    assert sorted(jobs) == [f"clip-{i}" for i in range(JOBS)]
    retried = 0
    sources: list[str] = []
    for outcome in outcomes:
        root = jobs[outcome.job_key]
        assert root.parent is None
        assert attr(root, "task_id") == outcome.task_id is not None
        assert attr(root, "mode") == "720p"
        steps = children(spans, root)
        names = [s.name.removeprefix("kling_async.") for s in steps]
        # One span for the upload step, each file an event in it (sent, or another job's).
        upload = next(s for s in steps if s.name == "kling_async.upload")
        files = [dict(e.attributes or {}) for e in upload.events if e.name == "file"]
        assert [f["kling_async.upload_path"] for f in files] == [
            IMAGE_UPLOAD_PATH,
            VIDEO_UPLOAD_PATH,
        ]
        sources += [f["kling_async.source"] for f in files]
        create = next(s for s in steps if s.name == "kling_async.createTask")
        wait = next(s for s in steps if s.name == "kling_async.wait")
        assert attr(create, "task_id") == attr(wait, "task_id") == outcome.task_id
        assert attr(create, "model") == "kling-2.6/motion-control"
        retries = [e for e in create.events if e.name == "retry"]
        retried += len(retries)
        assert all(
            e.attributes == {"kling_async.reason": "RateLimitError"} | {"kling_async.attempt": 1}
            for e in retries
        )
        states = [
            dict(e.attributes or {})["kling_async.state"] for e in wait.events if e.name == "state"
        ]
        assert states[-1] == ("success" if outcome.ok else "fail")
        assert len(states) == len(set(states)) >= 2  # each change once, from a first state
        if outcome.ok:
            assert names == STEPS
            assert root.status.status_code is StatusCode.UNSET
            assert attr(root, "credits") == sim.tasks[outcome.task_id].cost > 0
            assert attr(root, "model") == "kling-2.6/motion-control"
            download = steps[-1]
            assert attr(download, "task_id") == outcome.task_id
            assert attr(download, "bytes") == outcome.result.files[0].stat().st_size  # type: ignore[union-attr]
        else:
            assert names == STEPS[:-1]  # a failed task has nothing to download
            assert root.status.status_code is StatusCode.ERROR
            assert wait.status.status_code is StatusCode.ERROR
    assert retried == 1  # the job whose createTask got the 429 says so on its span
    # Each content was sent once, by the job that came first; the others joined or reused it.
    assert sources.count("sent") == 2
    assert set(sources) <= {"sent", "joined", "reused"} and len(sources) == 2 * JOBS


async def test_the_counters_match_the_simulators_own(
    make_sim: SimFactory, otel: Otel, tmp_path: Path
) -> None:
    sim = await faulty_sim(make_sim)
    outcomes = await run_batch(sim, tmp_path)
    created = sim.tasks_created[sim.api_key]
    assert created == JOBS
    assert otel.total("tasks.created") == created
    assert otel.total("tasks.created", model="kling-2.6/motion-control") == created
    too_many = sum(1 for r in sim.requests if r.code == 429)
    assert too_many == 1
    assert otel.total("http.rate_limited") == too_many
    assert otel.total("http.rate_limited", endpoint="createTask") == too_many
    assert otel.total("retries", reason="RateLimitError") == too_many
    assert otel.total("credits.consumed") == pytest.approx(sim.config.credits - sim.credits())
    assert otel.total("credits.estimated") == JOBS * estimate_credits(10.0, "720p")
    assert otel.total("tasks.finished", state="success") == JOBS - 1
    assert otel.total("tasks.finished", state="fail") == 1
    assert otel.total("submissions.unknown") == 0
    # Each content is uploaded once (the jobs share it); each clip downloaded once.
    assert otel.total("upload.bytes") == IMAGE.stat().st_size + VIDEO.stat().st_size
    files = [f for o in outcomes if o.result is not None for f in o.result.files]
    assert otel.total("download.bytes") == sum(f.stat().st_size for f in files) > 0
    data = otel.data()
    durations = data["kling_async.job.duration"]
    assert durations[(("outcome", "ok"),)][0] == JOBS - 1
    assert durations[(("outcome", "TaskFailedError"),)][0] == 1
    for limiter in ("createTask", "recordInfo"):
        assert otel.total("limiter.granted", limiter=limiter) == sim.count(limiter)
        assert otel.total("limiter.wait", limiter=limiter) >= 0
    # The 429 answer holds its slot a window: the retry waited for one.
    assert otel.total("limiter.wait", limiter="createTask") > 0
    assert data["kling_async.limiter.queue"] == {  # every request that queued got its slot
        (("limiter", "createTask"),): 0,
        (("limiter", "recordInfo"),): 0,
    }


async def test_the_key_is_in_nothing_exported_and_logs_name_the_job(
    make_sim: SimFactory, otel: Otel, logs: Records, tmp_path: Path
) -> None:
    sim = await faulty_sim(make_sim)
    outcomes = await run_batch(sim, tmp_path)
    # Everything exported or logged, as text: spans (attributes, events, status), metrics
    # (names, labels, values), log records (message, every attribute, the exception's text).
    exported = [span.to_json() for span in otel.finished()]
    data = otel.metrics.get_metrics_data()
    assert data is not None
    exported.append(data.to_json())
    exported += [json.dumps(vars(r), default=repr) + r.getMessage() for r in logs.records]
    assert len(exported) > 50
    secret = sim.api_key.removeprefix("sk-sim-")  # the key, or its secret part alone
    assert len(secret) >= 16
    assert not [text for text in exported if sim.api_key in text or secret in text]

    ours = [r for r in logs.records if r.name.startswith("kling_async")]
    assert all(hasattr(r, "task_id") and hasattr(r, "job_key") for r in ours)
    tasks = {o.task_id: o.job_key for o in outcomes}
    for record in ours:
        named = [t for t in tasks if t and t in record.getMessage()]
        if named:  # a record about a task names it, and the job it belongs to, as fields
            assert record.task_id == named[0], record.getMessage()  # type: ignore[attr-defined]
            assert record.job_key == tasks[named[0]], record.getMessage()  # type: ignore[attr-defined]
    lines = Counter(
        r.job_key for r in ours if r.levelno == logging.INFO and r.getMessage().startswith("job ")
    )  # type: ignore[attr-defined]
    assert lines == Counter(o.job_key for o in outcomes)  # one INFO line per job outcome
    requests = [r for r in ours if r.levelno == logging.DEBUG and " ms" in r.getMessage()]
    assert len(requests) >= len(sim.requests) - 1  # a request whose answer was lost has none
    retry = next(r for r in ours if r.getMessage().startswith("retrying createTask"))
    assert retry.job_key in tasks.values()  # type: ignore[attr-defined]


async def test_a_healthy_batch_logs_no_warning(
    make_sim: SimFactory, otel: Otel, logs: Records, tmp_path: Path
) -> None:
    sim = await make_sim()
    outcomes = await run_batch(sim, tmp_path, jobs=3)
    assert all(o.ok for o in outcomes)
    assert [r.getMessage() for r in logs.records if r.levelno >= logging.WARNING] == []
    assert otel.total("tasks.finished", state="success") == 3


async def test_the_cli_json_and_the_metrics_agree(
    make_sim: SimFactory,
    otel: Otel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Tasks take 4 s (real) here: the first run is left (as with Ctrl-C) once two are created.
    sim = await make_sim(failure_rate=0.25, seed=FAILURE_SEED, time_scale=0.04)
    journal = tmp_path / "jobs.sqlite"
    created: set[str] = set()

    def on_event(event: JobEvent) -> None:
        if event.kind is JobEventKind.CREATED:
            created.add(event.job_key)

    async with (
        session_for(sim) as kling,
        kling.generate_many(
            [Job(IMAGE, VIDEO, key=f"clip-{i}") for i in range(2)],
            journal=journal,
            on_event=on_event,
        ) as outcomes,
    ):
        first = asyncio.ensure_future(anext(outcomes))  # the jobs run while it is awaited
        await eventually(lambda: len(created) == 2)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
    earlier = {"finished": otel.total("tasks.finished"), "credits": otel.total("credits.consumed")}
    assert earlier == {"finished": 0, "credits": 0}  # both left unfinished

    manifest = tmp_path / "jobs.csv"
    rows = [f"{IMAGE},{VIDEO},clip-{i}" for i in range(JOBS)]
    manifest.write_text("image,video,key\n" + "\n".join(rows) + "\n")
    monkeypatch.setenv("KIE_API_KEY", sim.api_key)
    args = ["batch", str(manifest), "--json", "--base-url", sim.base_url, "--out", str(tmp_path)]
    args += ["--journal", str(journal)]
    code = await asyncio.to_thread(cli.main, args)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1  # one job failed
    jobs = [e for e in events if "key" in e]
    summary = next(e for e in events if "summary" in e)
    assert len(jobs) == JOBS
    assert otel.total("tasks.created") == len({e["task_id"] for e in jobs if e["task_id"]})
    assert otel.total("tasks.finished", state="success") == summary["summary"]["ok"] == JOBS - 1
    failed = summary["summary"].get("TaskFailedError", 0)
    assert otel.total("tasks.finished", state="fail") == failed == 1
    assert otel.total("tasks.finished", origin="resumed") == 2  # the first run's two tasks
    assert otel.total("tasks.finished", origin="created") == JOBS - 2
    # This run's credits, and those of the tasks earlier runs created, as the CLI tells them.
    assert otel.total("credits.consumed", origin="created") == summary["credits"] > 0
    resumed = otel.total("credits.consumed", origin="resumed")
    assert resumed == summary["credits_earlier_runs"]
    assert otel.total("credits.consumed") == pytest.approx(sim.config.credits - sim.credits())
    assert otel.total("submissions.unknown") == len(summary.get("unknown", [])) == 0
    durations = otel.data()["kling_async.job.duration"]
    assert sum(count for count, _ in durations.values()) == len(jobs) + 2  # with the two left


async def test_aiohttp_trace_configs_reach_the_library_session(
    sim: Simulator, otel: Otel, tmp_path: Path
) -> None:
    # What an HTTP instrumentation sees: each request, inside the library's span of its step.
    seen: list[tuple[str, str]] = []

    async def on_start(_: Any, __: Any, params: aiohttp.TraceRequestStartParams) -> None:
        from opentelemetry import trace

        current = trace.get_current_span()
        name = getattr(current, "name", "")
        seen.append((params.url.path, name))

    tracing = aiohttp.TraceConfig()
    tracing.on_request_start.append(on_start)
    async with session_for(sim, trace_configs=[tracing]) as kling:
        result = await kling.generate(IMAGE, VIDEO, download_to=tmp_path)
    assert result.files
    # generate() is a job too: one root span, naming its task and what it cost.
    (job,) = [s for s in otel.finished() if s.name == "kling_async.job"]
    assert job.parent is None and attr(job, "task_id") == result.task.task_id
    assert attr(job, "credits") == result.credits > 0
    steps = dict(seen)
    assert steps["/api/v1/jobs/createTask"] == "kling_async.createTask"
    assert steps["/api/v1/jobs/recordInfo"] == "kling_async.wait"
    assert steps["/api/file-stream-upload"] == "kling_async.upload.send"
    assert any(name == "kling_async.download" for _, name in seen)
    with pytest.raises(ConfigurationError):
        async with aiohttp.ClientSession() as mine:
            session_for(sim, http_session=mine, trace_configs=[tracing])


async def test_an_upload_alone_is_one_span_naming_its_file(sim: Simulator, otel: Otel) -> None:
    async with session_for(sim) as kling:
        first = await kling.upload_image(IMAGE)
        again = await kling.upload_image(IMAGE)  # the same content: reused, not sent again
    assert again.url == first.url and sim.count("streamUpload") == 1
    spans = otel.finished()
    uploads = [s for s in spans if s.name == "kling_async.upload"]
    assert len(uploads) == 2 and all(s.parent is None for s in uploads)
    files = [[dict(e.attributes or {}) for e in s.events if e.name == "file"] for s in uploads]
    assert [[f["kling_async.source"] for f in one] for one in files] == [["sent"], ["reused"]]
    assert files[0][0]["kling_async.upload_path"] == IMAGE_UPLOAD_PATH
    assert files[0][0]["kling_async.size"] == IMAGE.stat().st_size
    # The send itself is a root span of its own, whoever asked for it.
    (send,) = [s for s in spans if s.name == "kling_async.upload.send"]
    assert send.parent is None


async def test_files_given_as_uploads_are_named_in_the_upload_step(
    sim: Simulator, otel: Otel
) -> None:
    async with session_for(sim) as kling:
        image, video = await kling.upload_image(IMAGE), await kling.upload_video(VIDEO)
        result = await kling.generate(image, video)
    assert result.task.task_id
    spans = otel.finished()
    (job,) = [s for s in spans if s.name == "kling_async.job"]
    (upload,) = [s for s in children(spans, job) if s.name == "kling_async.upload"]
    files = [dict(e.attributes or {}) for e in upload.events if e.name == "file"]
    assert [(f["kling_async.which"], f["kling_async.source"]) for f in files] == [
        ("image", "given"),
        ("video", "given"),
    ]


async def test_a_job_left_in_another_context_still_ends_its_span(otel: Otel) -> None:
    # A job scope in an async generator that the collector closes: its exit runs in another
    # context than its entry. The span must still end, and nothing may be raised.
    problems: list[object] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, c: problems.append(c))

    async def clips() -> AsyncIterator[int]:
        with telemetry.job("left"):
            yield 1
            yield 2

    feed = clips()
    assert await anext(feed) == 1
    del feed
    gc.collect()
    await eventually(lambda: any(s.name == "kling_async.job" for s in otel.finished()), 10)
    assert problems == []


async def test_a_job_started_within_an_upload_step_opens_its_own(otel: Otel) -> None:
    # A job started from another job's upload step (its on_event, say) is a job of its own:
    # its upload step is a span of its own, not the other job's.
    @telemetry.traced("upload", join=True)
    async def upload(then: Callable[[], Awaitable[None]] | None = None) -> None:
        if then is not None:
            await then()

    async def second() -> None:
        with telemetry.job("second"):
            await upload()

    with telemetry.job("first"):
        await upload(second)
    spans = otel.finished()
    jobs = {attr(s, "job_key"): s for s in spans if s.name == "kling_async.job"}
    for key in ("first", "second"):
        assert [s.name for s in children(spans, jobs[key])] == ["kling_async.upload"]


async def last_json_line(script: str, *args: str) -> Any:
    """Run ``script`` in a fresh Python (no ``OTEL_*`` settings); what its last line says."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *args,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=100)
    assert proc.returncode == 0, out.decode()
    return json.loads(out.decode().splitlines()[-1])


CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    if sys.argv[1] == "blocked":
        sys.modules["opentelemetry"] = None  # as if it were not installed
    from kling_async.simulator import Simulator, SimulatorConfig

    async def main():
        async with Simulator(SimulatorConfig(time_scale=0.005)) as sim:
            async with sim.session(retry_base=0.01) as kling:
                result = await kling.generate(sys.argv[2], sys.argv[3])
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry") and sys.modules[m])
        print(json.dumps({"state": result.task.state.value, "loaded": loaded}))

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("how", ["blocked", "api"])
async def test_without_the_sdk_a_job_runs_and_no_sdk_module_is_imported(how: str) -> None:
    report = await last_json_line(CHILD, how, str(IMAGE), str(VIDEO))
    assert report["state"] == "success"
    assert not [m for m in report["loaded"] if m.startswith("opentelemetry.sdk")]
    if how == "blocked":
        assert report["loaded"] == []
    else:  # the API is used (its no-op providers answer), and nothing more
        assert "opentelemetry.trace" in report["loaded"]


LATE_PROVIDER = textwrap.dedent(
    """
    import json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from kling_async import telemetry

    now = [1000.0]
    telemetry._clock = lambda: now[0]  # an injected clock: no waiting in the test
    with telemetry.span("before"):
        pass
    spans = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(tracing)
    with telemetry.span("soon"):  # "no tracing set up" still believed
        pass
    if sys.argv[1] == "configure":
        telemetry.configure()  # the global providers, looked at again now
    else:
        now[0] += telemetry._UNTRACED_RECHECK
    with telemetry.span("later"):
        pass
    print(json.dumps([s.name for s in spans.get_finished_spans()]))
    """
)


@pytest.mark.parametrize("then", ["clock", "configure"])
async def test_a_global_tracer_provider_set_later_is_used_within_the_recheck(then: str) -> None:
    # Untraced code does not ask OpenTelemetry for its provider at every span (it costs a
    # caught KeyError each time), yet a provider the application sets later is not missed:
    # it is taken up once the recheck is due, or at once after ``configure()``.
    assert await last_json_line(LATE_PROVIDER, then) == ["kling_async.later"]


async def test_events_go_to_the_current_span_as_opentelemetry_says(otel: Otel) -> None:
    # The library finds its own span without asking OpenTelemetry's context, but only while
    # that span is the current one: an application's span opened within it, or one opened in
    # a task that outlived the step, takes the events, as OpenTelemetry's rules say.
    from opentelemetry import trace

    tracer = trace.get_tracer("app", tracer_provider=otel.tracing)
    step_over = asyncio.Event()

    async def outliving() -> None:
        await step_over.wait()
        telemetry.event("late, no span")  # the step's span has ended: recorded nowhere
        with tracer.start_as_current_span("in task"):
            telemetry.event("late")

    with tracer.start_as_current_span("app"):
        telemetry.event("outside")
        with telemetry.span("step"):
            telemetry.event("step's")
            with tracer.start_as_current_span("inner"):
                telemetry.event("inside")
            telemetry.annotate(again=1)
            task = asyncio.create_task(outliving())
        step_over.set()
        await task
        telemetry.annotate(after=1)
    spans = {s.name: s for s in otel.finished()}
    assert [e.name for e in spans["app"].events] == ["outside"]
    assert attr(spans["app"], "after") == 1
    assert [e.name for e in spans["kling_async.step"].events] == ["step's"]
    assert attr(spans["kling_async.step"], "again") == 1
    assert [e.name for e in spans["inner"].events] == ["inside"]
    assert [e.name for e in spans["in task"].events] == ["late"]


class _OneJob(Sampler):
    """Samples the job span of one job key; whatever is not a job's root span is dropped."""

    def __init__(self, key: str) -> None:
        self.key = key

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        keep = (attributes or {}).get("kling_async.job_key") == self.key
        # A sampled span gets the attributes the sampler gives back.
        return (
            SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
            if keep
            else SamplingResult(Decision.DROP)
        )

    def get_description(self) -> str:
        return f"OneJob({self.key})"


async def test_a_job_not_sampled_records_nothing_and_is_still_counted(
    sim: Simulator, tmp_path: Path
) -> None:
    exported = InMemorySpanExporter()
    tracing = TracerProvider(sampler=ParentBased(_OneJob("clip-2")))
    tracing.add_span_processor(SimpleSpanProcessor(exported))
    reader = InMemoryMetricReader()
    metering = MeterProvider([reader])
    telemetry.configure(tracer_provider=tracing, meter_provider=metering)
    try:
        outcomes = await run_batch(sim, tmp_path)
        spans = list(exported.get_finished_spans())
        counted = Otel(exported, reader, tracing).total("tasks.created")
    finally:
        telemetry.configure()
        tracing.shutdown()
        metering.shutdown()
    assert all(o.ok for o in outcomes)
    # Only the sampled job's tree is there, whole, its events with it: the other jobs' spans
    # (children follow their job) and the shared uploads' root spans were not sampled.
    (job,) = [s for s in spans if s.name == "kling_async.job"]
    assert attr(job, "job_key") == "clip-2"
    steps = children(spans, job)
    assert [s.name.removeprefix("kling_async.") for s in steps] == STEPS
    assert len(spans) == 1 + len(STEPS)
    (wait,) = [s for s in steps if s.name == "kling_async.wait"]
    assert [e.name for e in wait.events].count("state") >= 1
    # Metrics do not sample: every job's task is counted.
    assert counted == JOBS == sim.tasks_created[sim.api_key]
