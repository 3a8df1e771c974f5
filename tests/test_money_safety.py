"""Money-safety under ordinary events: Ctrl-C, outages, cancelled callers, raising callbacks.

Every test talks HTTP to the simulator; the journal is a real SQLite file.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kling_async import (
    ConfigurationError,
    DownloadError,
    Job,
    JobEvent,
    JobOutcome,
    KlingSession,
    PollSchedule,
    SessionClosedError,
    TaskTimeoutError,
    TransportError,
)
from kling_async.batch.landing import Landings
from kling_async.jobs import JobEventKind
from kling_async.journal import CREATED, PENDING, UNKNOWN, Journal, release_jobs
from kling_async.simulator import FaultConfig, Simulator

from .conftest import MEDIA, SimFactory, eventually, serve, session_for

IMAGE = MEDIA / "portrait.png"
VIDEO = MEDIA / "d10.0.mp4"


def jobs_of(count: int, prefix: str = "job") -> list[Job]:
    # A prompt of its own per job tells the simulator's tasks apart.
    return [Job(IMAGE, VIDEO, prompt=f"{prefix}-{i}", key=f"{prefix}-{i}") for i in range(count)]


def tasks_per_prompt(sim: Simulator) -> collections.Counter[str]:
    return collections.Counter(str(t.body["input"].get("prompt")) for t in sim.tasks.values())


async def run_all(kling: KlingSession, jobs: list[Job], **kw: Any) -> list[JobOutcome]:
    async with kling.generate_many(jobs, **kw) as outcomes:
        return [o async for o in outcomes]


async def journal_statuses(path: Path) -> dict[str, str]:
    async with Journal(path) as journal:
        counts = await journal.counts()
        statuses: dict[str, str] = {}
        for status in counts:
            for key in await journal.keys(status):
                statuses[key] = status
        return statuses


# -- Ctrl-C while createTask is on the wire ------------------------------------------------------
async def test_cancel_with_create_on_the_wire_records_the_task_and_rerun_pays_once(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    # Every createTask answer is slow (1 s real): a cancel lands while requests are on the wire.
    sim = await make_sim(
        faults=FaultConfig(slow=1.0, slow_seconds=200.0, endpoints=frozenset({"createTask"}))
    )
    journal = tmp_path / "batch.sqlite"
    jobs = jobs_of(4)
    async with session_for(sim) as kling:
        batch = asyncio.create_task(run_all(kling, jobs, journal=journal))
        await eventually(lambda: sim.count("createTask") >= 2)
        batch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await batch
        # The batch returned only after the requests on the wire landed in the journal.
        statuses = await journal_statuses(journal)
        assert UNKNOWN not in statuses.values()
        assert list(statuses.values()).count(CREATED) == sim.tasks_created[sim.api_key] >= 2
    sim.reconfigure(faults=FaultConfig())
    async with session_for(sim) as kling:
        outcomes = await run_all(kling, jobs, journal=journal)
    assert all(o.ok for o in outcomes)
    assert tasks_per_prompt(sim) == {job.prompt: 1 for job in jobs}


async def test_cancel_before_anything_was_sent_leaves_jobs_pending(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(
        faults=FaultConfig(slow=1.0, slow_seconds=200.0, endpoints=frozenset({"streamUpload"}))
    )
    journal = tmp_path / "batch.sqlite"
    async with session_for(sim) as kling:
        batch = asyncio.create_task(run_all(kling, jobs_of(3), journal=journal))
        await eventually(lambda: sim.count("streamUpload") >= 1)
        batch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await batch
    assert sim.count("createTask") == 0
    assert set((await journal_statuses(journal)).values()) <= {PENDING}


async def test_unknown_jobs_are_never_created_again_until_released(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    # The answer is lost after the task was made: the job is unknown, and stays so on a rerun.
    sim = await make_sim(faults=FaultConfig(drop_after=1.0, endpoints=frozenset({"createTask"})))
    journal = tmp_path / "batch.sqlite"
    jobs = jobs_of(1)
    async with session_for(sim) as kling:
        (first,) = await run_all(kling, jobs, journal=journal)
    assert first.task_id is None and first.error is not None
    assert type(first.error).__name__ == "SubmissionUnknownError"
    sim.reconfigure(faults=FaultConfig())
    async with session_for(sim) as kling:
        (again,) = await run_all(kling, jobs, journal=journal)
    assert not again.ok and sim.tasks_created[sim.api_key] == 1
    # The user checked the console (say it showed nothing) and releases the job.
    assert await release_jobs(journal, "job-0") == ["job-0"]
    async with session_for(sim) as kling:
        (third,) = await run_all(kling, jobs, journal=journal)
    assert third.ok and sim.tasks_created[sim.api_key] == 2


async def test_a_cancelled_journal_write_still_records_the_task_id(tmp_path: Path) -> None:
    async with Journal(tmp_path / "j.sqlite") as journal:
        for attempt in range(10):
            key = f"job-{attempt}"
            write = asyncio.create_task(journal.update(key, status=CREATED, task_id=f"t{attempt}"))
            await asyncio.sleep(0)  # queued for the journal's thread, not yet run
            write.cancel()
            with pytest.raises(asyncio.CancelledError):
                await write
            record = await journal.get(key)
            assert record is not None and record.task_id == f"t{attempt}"


async def test_a_job_cancelled_while_its_task_is_recorded_still_tells_of_it(
    tmp_path: Path,
) -> None:
    # The task exists: a job cancelled between createTask's answer and its CREATED event must
    # still leave the id in the journal and tell on_event (a caller without a journal has
    # nothing else to name it by).
    heard: list[tuple[JobEventKind, str, str | None]] = []

    async def emit(kind: JobEventKind, key: str, **fields: Any) -> None:
        heard.append((kind, key, fields.get("task_id")))

    async with Journal(tmp_path / "j.sqlite") as journal:
        landings = Landings(journal, emit, 30.0)
        for attempt in range(5):
            step = asyncio.create_task(landings.record_created(f"job-{attempt}", f"t{attempt}"))
            await asyncio.sleep(0)  # the job's step awaits its record (not yet run): cancel
            step.cancel()
            with pytest.raises(asyncio.CancelledError):
                await step
        await landings.landed()
        for attempt in range(5):
            record = await journal.get(f"job-{attempt}")
            assert record is not None and record.task_id == f"t{attempt}"
    assert heard == [(JobEventKind.CREATED, f"job-{i}", f"t{i}") for i in range(5)]


# -- outages while tasks render ------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["error_455", "error_500", "drop"])
async def test_waits_outlast_an_outage_longer_than_the_retry_budget(
    make_sim: SimFactory, fault: str
) -> None:
    sim = await make_sim()
    async with session_for(sim, max_retries=1) as kling:
        wait = asyncio.create_task(kling.generate(IMAGE, VIDEO, prompt="outage"))
        await eventually(lambda: sim.count("recordInfo") >= 1)
        sim.reconfigure(
            faults=FaultConfig(**{fault: 1.0}, endpoints=frozenset({"recordInfo"}))  # type: ignore[arg-type]
        )
        # Many more failed queries than the retry budget of any one call.
        await eventually(lambda: sum(1 for r in sim.requests if r.fault) >= 8)
        assert not wait.done()
        sim.reconfigure(faults=FaultConfig())
        result = await wait
    assert result.task.state.value == "success"


async def test_a_stuck_task_ends_with_its_own_timeout_and_id(make_sim: SimFactory) -> None:
    sim = await make_sim(generating_seconds=1e6)
    async with session_for(sim) as kling:
        with pytest.raises(TaskTimeoutError) as caught:
            await kling.generate(IMAGE, VIDEO, timeout=0.2)
        outcomes = await run_all(kling, jobs_of(2), job_timeout=0.2)
    assert caught.value.task_id in sim.tasks
    assert all(isinstance(o.error, TaskTimeoutError) for o in outcomes)
    assert {o.task_id for o in outcomes} <= set(sim.tasks) and None not in {
        o.task_id for o in outcomes
    }


# -- one owner for each piece of work ----------------------------------------------------------
async def test_one_callers_cancel_never_ends_a_shared_upload(make_sim: SimFactory) -> None:
    sim = await make_sim(
        faults=FaultConfig(slow=1.0, slow_seconds=100.0, endpoints=frozenset({"streamUpload"}))
    )
    async with session_for(sim) as kling:
        first = asyncio.create_task(kling.upload_video(VIDEO))
        second = asyncio.create_task(kling.upload_video(VIDEO))
        await eventually(lambda: sim.count("streamUpload") >= 1)
        first.cancel()
        uploaded = await second
        assert first.cancelled()
        assert uploaded.url and kling.uploads_sent == 1


async def test_close_ends_waits_but_never_the_callers_task(make_sim: SimFactory) -> None:
    sim = await make_sim(generating_seconds=1e6)
    closed_errors: list[SessionClosedError] = []
    kling = session_for(sim)
    async with kling:
        task_ids = [await kling.create_task(await _inputs(kling)) for _ in range(3)]

        async def worker() -> str:
            # A worker that catches the close and goes on to its next job.
            for task_id in task_ids:
                try:
                    await kling.wait_for_task(task_id)
                except SessionClosedError as exc:
                    closed_errors.append(exc)
            return "worker finished on its own"

        running = asyncio.create_task(worker())
        await eventually(lambda: sim.count("recordInfo") >= 1)
    # Leaving the block closed the session; the worker was not cancelled, it finished.
    assert await running == "worker finished on its own"
    assert len(closed_errors) == 3
    assert closed_errors[0].task_id == task_ids[0]


async def _inputs(kling: KlingSession) -> Any:
    from kling_async import MotionControlInput

    image = await kling.upload_image(IMAGE)
    video = await kling.upload_video(VIDEO)
    return MotionControlInput(image.url, video.url)


async def test_a_raising_event_handler_is_logged_and_never_hangs_the_batch(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(event: JobEvent) -> None:
        raise RuntimeError(f"handler bug on {event.kind.value}")

    async with session_for(sim) as kling:
        outcomes = await run_all(kling, jobs_of(3), on_event=explode)
        result = await kling.generate(IMAGE, VIDEO, prompt="solo", on_event=explode)
    assert all(o.ok for o in outcomes) and result.task.state.value == "success"
    assert any("on_event raised" in r.getMessage() for r in caplog.records)


async def test_a_raising_on_update_is_logged_and_the_wait_goes_on(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode(task: object) -> None:
        raise RuntimeError("update handler bug")

    async with session_for(sim) as kling:
        task_id = await kling.create_task(await _inputs(kling))
        with caplog.at_level(logging.ERROR, "kling_async"):
            task = await kling.wait_for_task(task_id, on_update=explode)
    assert task.state.value == "success"
    assert any("on_update raised" in r.getMessage() for r in caplog.records)


# -- files are never shared ----------------------------------------------------------------------
async def test_colliding_keys_get_files_of_their_own(sim: Simulator, tmp_path: Path) -> None:
    keys = ["alice/clip1", "bob/clip1", "run?1", "run?2", "Clip", "clip"]
    jobs = [Job(IMAGE, VIDEO, prompt=k, key=k) for k in keys]
    async with session_for(sim) as kling:
        outcomes = await run_all(kling, jobs, download_to=tmp_path)
        again = await run_all(kling, jobs, download_to=tmp_path)
    files = {o.job.key: o.result.files[0] for o in outcomes if o.result}
    assert len(set(files.values())) == len(keys)
    # The same names on a rerun: a name is stable.
    assert {o.job.key: o.result.files[0] for o in again if o.result} == files


async def test_generate_three_times_keeps_three_files(sim: Simulator, tmp_path: Path) -> None:
    async with session_for(sim) as kling:
        results = [await kling.generate(IMAGE, VIDEO, download_to=tmp_path) for _ in range(3)]
    assert len({r.files[0] for r in results}) == 3
    assert all(r.files[0].exists() for r in results)


async def test_a_repeated_key_is_its_own_outcome_and_gets_no_task(sim: Simulator) -> None:
    jobs = [
        Job(IMAGE, VIDEO, prompt="a", key="same"),
        Job(IMAGE, VIDEO, prompt="b", key="same"),
        Job(IMAGE, VIDEO, prompt="c"),
        Job(IMAGE, VIDEO, prompt="c"),
    ]
    async with session_for(sim) as kling:
        outcomes = await run_all(kling, jobs)
    errors = [o.error for o in outcomes if isinstance(o.error, ConfigurationError)]
    assert len(errors) == 2 and "same" in str(errors[0]) + str(errors[1])
    assert sim.tasks_created[sim.api_key] == 2


# -- transfers end -------------------------------------------------------------------------------
async def test_a_trickling_download_is_ended_and_leaves_no_file(tmp_path: Path) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(10_000):
            await response.write(b"x")
            await asyncio.sleep(0.05)
        return response

    app = web.Application()
    app.router.add_get("/clip.mp4", trickle)
    async with (
        serve(app) as base,
        KlingSession("key", request_timeout=0.5, max_retries=0) as kling,
    ):
        with pytest.raises(TransportError, match="slower than"):
            await kling.download(f"{base}/clip.mp4", tmp_path / "clip.mp4")
    assert list(tmp_path.iterdir()) == []


async def test_an_error_page_served_with_200_is_not_saved_as_a_clip(tmp_path: Path) -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text="<html><body>Access denied</body></html>", content_type="text/html"
        )

    app = web.Application()
    app.router.add_get("/clip.mp4", page)
    async with serve(app) as base, KlingSession("key") as kling:
        with pytest.raises(DownloadError, match="not return a video"):
            await kling.download(f"{base}/clip.mp4", tmp_path / "clip.mp4")
    assert list(tmp_path.iterdir()) == []


# -- a dropped createTask (429) waits a full window ------------------------------------------------
async def test_a_429_to_create_waits_a_full_window_before_the_retry(make_sim: SimFactory) -> None:
    sim = await make_sim(
        time_scale=0.05,
        faults=FaultConfig(error_429=0.5, endpoints=frozenset({"createTask"}), seed=3),
    )
    async with session_for(sim, max_retries=8) as kling:
        inp = await _inputs(kling)
        window = kling.create_limit.window
        await kling.create_task(inp)
    creates = [r for r in sim.requests if r.endpoint == "createTask"]
    assert any(r.fault == "429" for r in creates), "the seed must inject at least one 429"
    for before, after in itertools.pairwise(creates):
        if before.fault == "429":
            # Never sooner than a window after the dropped one (a lower bound only).
            assert after.time - before.time >= window * 0.99
    assert sim.tasks_created[sim.api_key] == 1


# -- a lost createTask answer, resolved by the task's callback -----------------------------------
async def test_a_lost_create_answer_is_resolved_by_the_jobs_callback(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    from kling_async.webhooks import WebhookReceiver

    sim = await make_sim(faults=FaultConfig(drop_after=1.0, endpoints=frozenset({"createTask"})))
    receiver = WebhookReceiver(sim.webhook_hmac_key)
    url = await receiver.start()
    journal = tmp_path / "batch.sqlite"
    jobs = jobs_of(3)
    try:
        async with session_for(sim, webhook=receiver, callback_url=url) as kling:
            outcomes = await run_all(kling, jobs, journal=journal, job_timeout=30.0)
    finally:
        await receiver.close()
    # Every answer was lost, yet every job knows its task: the callback carried the job's token.
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert {o.task_id for o in outcomes} == set(sim.tasks)
    assert set((await journal_statuses(journal)).values()) == {"succeeded"}
    assert tasks_per_prompt(sim) == {job.prompt: 1 for job in jobs}


async def test_a_job_cancelled_while_checking_its_callback_names_the_task(
    make_sim: SimFactory, caplog: pytest.LogCaptureFixture
) -> None:
    from kling_async.webhooks import WebhookReceiver

    # The answer is lost; the callback names the task; the check of it (a query) hangs; Ctrl-C.
    sim = await make_sim(faults=FaultConfig(drop_after=1.0, endpoints=frozenset({"createTask"})))
    receiver = WebhookReceiver(sim.webhook_hmac_key)
    url = await receiver.start()
    try:
        async with session_for(sim, webhook=receiver, callback_url=url) as kling:
            batch = asyncio.create_task(run_all(kling, jobs_of(1), job_timeout=60.0))
            await eventually(lambda: sim.count("createTask") == 1, 30)
            # Held about 3 s: long enough to cancel in, short enough for the simulator to stop.
            slow = FaultConfig(slow=1.0, slow_seconds=600, endpoints=frozenset({"recordInfo"}))
            sim.reconfigure(faults=slow)
            await eventually(lambda: sim.count("recordInfo") >= 1, 60)
            batch.cancel()
            with pytest.raises(asyncio.CancelledError):
                await batch
    finally:
        await receiver.close()
    [task_id] = sim.tasks
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(task_id in line and "cancelled" in line for line in said), said


async def test_waits_fall_back_to_polling_when_the_receiver_closes(make_sim: SimFactory) -> None:
    from kling_async.webhooks import WebhookReceiver

    sim = await make_sim(time_scale=0.02, callback_drop_rate=1.0)
    receiver = WebhookReceiver(sim.webhook_hmac_key)
    url = await receiver.start()
    async with session_for(sim, webhook=receiver, callback_url=url) as kling:
        task_id = await kling.create_task(await _inputs(kling))
        wait = asyncio.create_task(kling.wait_for_task(task_id))
        await asyncio.sleep(0)
        await receiver.close()
        task = await wait
    assert task.state.value == "success"
    # The fallback schedule, not a busy loop: a handful of queries for one task.
    assert sim.count("recordInfo") <= 10


# -- answers that reached the service never reset the journal ------------------------------------
@pytest.mark.parametrize(
    "faults",
    [
        FaultConfig(gateway_after=1.0, gateway_status=504, endpoints=frozenset({"createTask"})),
        FaultConfig(gateway_after=1.0, gateway_status=502, endpoints=frozenset({"createTask"})),
        FaultConfig(no_task_id=1.0, endpoints=frozenset({"createTask"})),
        FaultConfig(drop_after=1.0, endpoints=frozenset({"createTask"})),
    ],
    ids=["gateway-504", "gateway-502", "no-task-id", "dropped-after"],
)
async def test_answers_after_the_task_was_made_mark_the_job_unknown(
    make_sim: SimFactory, tmp_path: Path, faults: FaultConfig
) -> None:
    sim = await make_sim(faults=faults)
    journal = tmp_path / "batch.sqlite"
    async with session_for(sim, max_retries=5) as kling:
        (first,) = await run_all(kling, jobs_of(1), journal=journal)
    assert first.error is not None and type(first.error).__name__ == "SubmissionUnknownError"
    assert sim.count("createTask") == 1  # never retried
    assert await journal_statuses(journal) == {"job-0": UNKNOWN}
    sim.reconfigure(faults=FaultConfig())
    async with session_for(sim) as kling:
        await run_all(kling, jobs_of(1), journal=journal)
    assert sim.tasks_created[sim.api_key] == 1  # the rerun paid nothing more


async def test_refusals_that_created_nothing_leave_the_job_pending(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    from kling_async import QuotaExceededError

    sim = await make_sim(faults=FaultConfig(error_433=1.0, endpoints=frozenset({"createTask"})))
    journal = tmp_path / "batch.sqlite"
    async with session_for(sim, max_retries=5) as kling:
        (first,) = await run_all(kling, jobs_of(1), journal=journal)
    assert isinstance(first.error, QuotaExceededError)
    assert sim.count("createTask") == 1  # a used-up quota is not a rate limit: no retry
    assert await journal_statuses(journal) == {"job-0": PENDING}
    sim.reconfigure(faults=FaultConfig())
    async with session_for(sim) as kling:
        (again,) = await run_all(kling, jobs_of(1), journal=journal)
    assert again.ok and sim.tasks_created[sim.api_key] == 1


# -- the real service's edge and its early 404 ---------------------------------------------------
async def test_the_edge_block_is_named_as_such_and_a_real_user_agent_passes(
    make_sim: SimFactory,
) -> None:
    from kling_async import EdgeBlockedError
    from kling_async.simulator import LIBRARY_USER_AGENTS

    sim = await make_sim(edge_block_user_agents=LIBRARY_USER_AGENTS)
    async with session_for(sim, user_agent="Python/3.12 aiohttp/3.9") as kling:
        with pytest.raises(EdgeBlockedError, match="edge") as caught:
            await kling.get_credits()
    assert "key" in str(caught.value)  # says it is not the key's fault
    async with session_for(sim) as kling:
        assert await kling.get_credits() > 0


async def test_404_right_after_creation_means_not_visible_yet(make_sim: SimFactory) -> None:
    sim = await make_sim(invisible_code=404, invisible_seconds=20.0)
    async with session_for(sim) as kling:
        result = await kling.generate(IMAGE, VIDEO)
    assert result.task.state.value == "success"
    assert sim.count("recordInfo", code=404) >= 1


async def test_an_html_page_served_as_the_result_is_never_saved(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(faults=FaultConfig(html_200=1.0, endpoints=frozenset({"result"})))
    async with session_for(sim) as kling:
        with pytest.raises(DownloadError) as caught:
            await kling.generate(IMAGE, VIDEO, download_to=tmp_path)
    assert caught.value.task_id in sim.tasks  # the error names the (paid) task
    assert list(tmp_path.iterdir()) == []


async def test_a_trickling_upload_answer_is_ended(make_sim: SimFactory) -> None:
    sim = await make_sim(
        time_scale=1.0,
        faults=FaultConfig(trickle=1.0, trickle_seconds=0.5, endpoints=frozenset({"streamUpload"})),
    )
    async with session_for(sim, request_timeout=1.0, max_retries=0) as kling:
        with pytest.raises(TransportError):
            await kling.upload_image(IMAGE)


async def test_an_unknown_state_is_not_terminal_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A service that grew a new state: two answers in it, then success.
    states = iter(["rendering-v2", "rendering-v2", "rendering-v2", "success"])

    async def record_info(request: web.Request) -> web.Response:
        data = {"taskId": request.query["taskId"], "state": next(states, "success")}
        return web.json_response({"code": 200, "msg": "success", "data": data})

    app = web.Application()
    app.router.add_get("/api/v1/jobs/recordInfo", record_info)
    fast = PollSchedule(phases=((math.inf, 0.01),), first_delay=0.0)
    async with serve(app) as base, KlingSession("key", base_url=base, poll=fast) as kling:
        with caplog.at_level(logging.WARNING, "kling_async"):
            task = await kling.wait_for_task("t-1")
    assert task.state.value == "success"
    assert sum("does not know" in r.getMessage() for r in caplog.records) == 1


# -- every error is the library's own ------------------------------------------------------------
async def test_file_system_and_option_errors_are_library_errors(tmp_path: Path) -> None:
    from kling_async import JournalError, KlingError, MediaValidationError

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(JournalError):
        async with Journal(blocker / "journal.sqlite"):
            pass
    with pytest.raises(ConfigurationError, match="mode"):
        Job(IMAGE, VIDEO, mode="1080")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="prompt"):
        Job(IMAGE, VIDEO, prompt="x" * 3000)
    async with KlingSession("key") as kling:
        with pytest.raises(MediaValidationError, match="unreadable"):
            await kling.upload_file(tmp_path / "missing.bin")
        with pytest.raises(KlingError):
            await kling.upload_image(tmp_path)


async def test_a_cancelled_create_sends_no_new_attempt() -> None:
    from kling_async import MotionControlInput, RateLimit, Submission

    arrived: list[float] = []

    async def dropped_slowly(request: web.Request) -> web.Response:
        # The request is on the wire a while, then dropped (429): nothing was created.
        arrived.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.3)
        return web.json_response({"code": 429, "msg": "Rate limit exceeded"})

    app = web.Application()
    app.router.add_post("/api/v1/jobs/createTask", dropped_slowly)
    async with serve(app) as base:
        kling = KlingSession(
            "key", base_url=base, create_limit=RateLimit(20, 0.05), max_retries=8, retry_base=0.01
        )
        async with kling:
            sub = Submission()
            inp = MotionControlInput("https://a.example/i.png", "https://a.example/v.mp4")
            create = asyncio.create_task(kling.create_task(inp, submission=sub))
            await eventually(lambda: len(arrived) == 1)
            create.cancel()
            with pytest.raises(asyncio.CancelledError):
                await create
            # The request on the wire lands (429: not created), and no retry leaves after it.
            await sub.settled()
            assert sub.task_id is None and not sub.sent
    assert len(arrived) == 1


# -- found in review: each of these once failed ------------------------------------------------
async def test_a_second_take_never_takes_the_first_takes_callback(make_sim: SimFactory) -> None:
    from kling_async.webhooks import WebhookReceiver

    sim = await make_sim()
    receiver = WebhookReceiver(sim.webhook_hmac_key)
    url = await receiver.start()
    try:
        async with session_for(sim, webhook=receiver, callback_url=url) as kling:
            first = await kling.generate(IMAGE, VIDEO, prompt="same")
            # The second take's answer is lost; its own callback must name its own task.
            sim.reconfigure(faults=FaultConfig(drop_after=1.0, endpoints=frozenset({"createTask"})))
            second = await kling.generate(IMAGE, VIDEO, prompt="same", timeout=60.0)
    finally:
        await receiver.close()
    assert sim.tasks_created[sim.api_key] == 2
    assert first.task.task_id != second.task.task_id
    assert {first.task.task_id, second.task.task_id} == set(sim.tasks)


async def test_closing_the_session_under_a_running_batch_ends_it(make_sim: SimFactory) -> None:
    sim = await make_sim(generating_seconds=1e6)
    kling = session_for(sim)
    outcomes: list[JobOutcome] = []

    async def batch() -> None:
        async with kling.generate_many(jobs_of(4), max_pending=2) as results:
            async for outcome in results:
                outcomes.append(outcome)

    async with kling:
        running = asyncio.create_task(batch())
        await eventually(lambda: sim.tasks_created[sim.api_key] >= 1)
    # Never hangs: every job taken ends, with SessionClosedError; if the session closed before
    # the list was all taken, the batch says so after those outcomes.
    try:
        await running
    except SessionClosedError as exc:
        assert f"any jobs after job-{len(outcomes) - 1} were not taken" in str(exc)
    else:
        assert len(outcomes) == 4
    assert {o.job_key for o in outcomes} == {j.job_key for j in jobs_of(len(outcomes))}
    assert all(isinstance(o.error, SessionClosedError) for o in outcomes)


async def test_a_session_closed_under_an_endless_batch_stops_pulling_and_says_so(
    make_sim: SimFactory,
) -> None:
    sim = await make_sim(generating_seconds=1e6)
    kling = session_for(sim)
    pulled = 0

    def endless() -> Iterator[Job]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield Job(IMAGE, VIDEO, key=f"e{i}")

    outcomes: list[JobOutcome] = []

    async def batch() -> None:
        async with kling.generate_many(endless(), max_pending=2) as results:
            async for outcome in results:
                outcomes.append(outcome)

    async with kling:
        running = asyncio.create_task(batch())
        await eventually(lambda: sim.tasks_created[sim.api_key] >= 1)
    with pytest.raises(SessionClosedError, match="were not taken from the iterable"):
        await running
    # Every job taken from the iterable has its outcome; at most one more was taken after close.
    assert len(outcomes) == pulled and pulled <= 2 + sim.tasks_created[sim.api_key] + 2
    assert all(isinstance(o.error, SessionClosedError) for o in outcomes)


async def test_a_session_closed_while_the_jobs_feed_waits_ends_the_batch(
    make_sim: SimFactory,
) -> None:
    # A bot feeds its batch from a queue: the feed waits for work when the session closes.
    sim = await make_sim(generating_seconds=1e6)
    kling = session_for(sim)
    feed: asyncio.Queue[Job] = asyncio.Queue()
    feed_closed = asyncio.Event()

    async def jobs() -> AsyncIterator[Job]:
        try:
            while True:
                yield await feed.get()
        finally:
            feed_closed.set()

    outcomes: list[JobOutcome] = []

    async def batch() -> None:
        async with kling.generate_many(jobs()) as results:
            async for outcome in results:
                outcomes.append(outcome)

    async with kling:
        running = asyncio.create_task(batch())
        feed.put_nowait(Job(IMAGE, VIDEO, key="only"))
        await eventually(lambda: sim.tasks_created[sim.api_key] == 1)
    with pytest.raises(SessionClosedError, match="any jobs after only were not taken"):
        await asyncio.wait_for(running, 30)  # never hangs on the waiting feed
    assert [(o.job_key, type(o.error)) for o in outcomes] == [("only", SessionClosedError)]
    assert feed_closed.is_set()  # the caller's generator was finished, not left to the GC


async def test_a_caller_joining_an_upload_its_last_caller_left_still_gets_it(
    make_sim: SimFactory,
) -> None:
    sim = await make_sim(
        faults=FaultConfig(slow=1.0, slow_seconds=40.0, endpoints=frozenset({"streamUpload"}))
    )
    async with session_for(sim) as kling:
        first = asyncio.create_task(kling.upload_video(VIDEO))
        await eventually(lambda: sim.count("streamUpload") >= 1)
        first.cancel()
        second = asyncio.create_task(kling.upload_video(VIDEO))
        uploaded = await second
    assert first.cancelled() and uploaded.url


async def test_closing_the_journal_keeps_writes_already_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    await journal.open()
    writes = [
        asyncio.create_task(journal.update(f"k{i}", status=CREATED, task_id=f"t{i}"))
        for i in range(10)
    ]
    await asyncio.sleep(0)
    for write in writes:
        write.cancel()
    await journal.close()
    await asyncio.gather(*writes, return_exceptions=True)
    async with Journal(path) as reopened:
        assert (await reopened.counts()) == {CREATED: 10}


async def test_a_query_queued_when_the_session_closes_gets_a_library_error(
    make_sim: SimFactory,
) -> None:
    from kling_async import KlingError, RateLimit

    sim = await make_sim()
    kling = session_for(sim, query_limit=RateLimit(1, 60.0))
    async with kling:
        await kling.get_credits()  # no limiter on credit; recordInfo below is limited
        first = asyncio.create_task(kling.get_task("t-1"))
        queued = asyncio.create_task(kling.get_task("t-2"))
        await asyncio.wait({first})
    results = await asyncio.gather(queued, return_exceptions=True)
    assert isinstance(results[0], KlingError), results


async def test_closing_the_session_ends_a_job_listening_for_its_callback(
    make_sim: SimFactory,
) -> None:
    from kling_async.webhooks import WebhookReceiver

    # The answer is lost and the callback never comes: the job listens until the session closes.
    sim = await make_sim(
        callback_drop_rate=1.0,
        faults=FaultConfig(drop_after=1.0, endpoints=frozenset({"createTask"})),
    )
    receiver = WebhookReceiver(sim.webhook_hmac_key)
    url = await receiver.start()
    outcomes: list[JobOutcome] = []
    try:
        kling = session_for(sim, webhook=receiver, callback_url=url)

        async def batch() -> None:
            async with kling.generate_many(jobs_of(2)) as results:
                outcomes.extend([o async for o in results])

        async with kling:
            running = asyncio.create_task(batch())
            await eventually(lambda: sim.tasks_created[sim.api_key] == 2)
        await running
    finally:
        await receiver.close()
    assert [type(o.error).__name__ for o in outcomes] == ["SubmissionUnknownError"] * 2


# -- costs -----------------------------------------------------------------------------------
def test_estimate_credits_uses_the_documented_prices() -> None:
    from kling_async import estimate_credits

    assert estimate_credits(10.0, "720p") == 110.0
    assert estimate_credits(10.0, "1080p") == 180.0
    with pytest.raises(ValueError, match="mode"):
        estimate_credits(10.0, "4k")


async def test_max_credits_stops_creation_before_the_budget_is_passed(sim: Simulator) -> None:
    from kling_async import CreditLimitError

    async with session_for(sim) as kling:
        # d10.0.mp4 lasts 10 s: 110 credits a task at 720p; 250 allows two of four.
        outcomes = await run_all(kling, jobs_of(4), max_credits=250, max_pending=1)
    refused = [o for o in outcomes if isinstance(o.error, CreditLimitError)]
    assert len(refused) == 2 and "max_credits" in str(refused[0].error)
    assert sum(o.ok for o in outcomes) == 2 and sim.tasks_created[sim.api_key] == 2
    assert sim.count("streamUpload") == 2  # refused jobs reuse the uploads; nothing more is sent


@pytest.mark.parametrize("when", ["on the wire", "as its task is made"])
async def test_a_job_cancelled_after_its_create_left_keeps_its_cost_counted(
    make_sim: SimFactory, when: str
) -> None:
    from kling_async import CreditLimitError
    from kling_async.batch import JobRunner

    # A runner used directly (a bot cancelling one user's request, say) goes on after a job is
    # cancelled. Its createTask was on the wire (the answer is slow: 1 s real), or its answer
    # came with a task id in the very loop turn of the cancel, before the job resumed: the
    # task may exist, or does, so its 110 credits stay counted and a second job would pass
    # the budget.
    sim = await make_sim(
        faults=FaultConfig(slow=1.0, slow_seconds=200.0, endpoints=frozenset({"createTask"}))
    )
    first, second = jobs_of(2)
    async with session_for(sim) as kling:
        runner = JobRunner(kling, max_credits=150)
        running = asyncio.create_task(runner.run(first))
        calls: list[asyncio.Task[Any]] = []
        await eventually(
            lambda: (
                calls.extend(t for t in asyncio.all_tasks() if t.get_name() == "kling createTask")
                or calls
            )
        )
        if when == "on the wire":
            running.cancel()
        else:
            calls[0].add_done_callback(lambda _: running.cancel())
        with pytest.raises(asyncio.CancelledError):
            await running
        await runner.landed()
        if when != "on the wire":
            assert not calls[0].cancelled() and calls[0].result()  # it ended with a task
        assert sim.tasks_created[sim.api_key] == 1  # it did make one
        sim.reconfigure(faults=FaultConfig())
        with pytest.raises(CreditLimitError, match="max_credits"):
            await runner.run(second)
    assert sim.tasks_created[sim.api_key] == 1


async def test_a_job_cancelled_before_its_create_left_gives_its_cost_back(sim: Simulator) -> None:
    from kling_async import RateLimit
    from kling_async.batch import JobRunner
    from kling_async.ratelimit import RateLimiter

    # One createTask an hour: the second job waits for a slot, and is cancelled there.
    limiter = RateLimiter(RateLimit(1, 3600.0))
    first, second, third = jobs_of(3)
    async with session_for(sim, create_limiter=limiter) as kling:
        runner = JobRunner(kling, max_credits=250)  # two tasks at 110 credits each
        assert (await runner.run(first)).task.task_id
        waiting = asyncio.create_task(runner.run(second))
        await eventually(lambda: limiter.waiting == 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        # Nothing of the second left: its cost is free again, so the third passes the budget
        # (to wait for the slot in turn) instead of being refused.
        after = asyncio.create_task(runner.run(third))
        await eventually(lambda: limiter.waiting == 1 or after.done())
        assert not after.done()
        after.cancel()
        with pytest.raises(asyncio.CancelledError):
            await after
    assert sim.tasks_created[sim.api_key] == 1


async def test_a_create_surely_not_made_gives_its_cost_back(make_sim: SimFactory) -> None:
    from kling_async import QuotaExceededError
    from kling_async.batch import JobRunner

    # Code 433 (a sub-key's quota used up) proves the service made nothing: the next job fits.
    sim = await make_sim(faults=FaultConfig(error_433=1.0, endpoints=frozenset({"createTask"})))
    first, second = jobs_of(2)
    async with session_for(sim) as kling:
        runner = JobRunner(kling, max_credits=150)
        with pytest.raises(QuotaExceededError, match="433"):
            await runner.run(first)
        sim.reconfigure(faults=FaultConfig())
        result = await runner.run(second)
    assert result.task.task_id and sim.tasks_created[sim.api_key] == 1


async def test_a_bad_video_costs_no_upload(sim: Simulator, tmp_path: Path) -> None:
    from kling_async import MediaValidationError

    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all")
    async with session_for(sim) as kling:
        (outcome,) = await run_all(kling, [Job(IMAGE, text, key="bad")])
    assert isinstance(outcome.error, MediaValidationError) and "notes.mp4" in str(outcome.error)
    assert sim.count("streamUpload") == 0


async def test_a_journal_closed_under_a_cancel_is_unlocked_when_close_returns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite"
    for _ in range(20):
        journal = Journal(path)
        await journal.open()
        closing = asyncio.create_task(journal.close())
        await asyncio.sleep(0)  # the close is in the journal's thread now
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        async with Journal(path):  # never "in use by another batch"
            pass
