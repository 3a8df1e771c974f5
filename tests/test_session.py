"""KlingSession against the simulator over real HTTP: creation, polling, limits, retries, errors."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import pytest

from kling_async import (
    AuthenticationError,
    ConfigurationError,
    InsufficientCreditsError,
    InvalidRequestError,
    KlingSession,
    MotionControlInput,
    PollSchedule,
    RateLimit,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    SessionClosedError,
    SubmissionUnknownError,
    Task,
    TaskFailedError,
    TaskNotVisibleError,
    TaskState,
    TaskTimeoutError,
    TransportError,
)
from kling_async.simulator import FaultConfig, Simulator

from .conftest import SimFactory, eventually, media_urls, session_for


async def inputs(http: aiohttp.ClientSession, sim: Simulator, **kw: object) -> MotionControlInput:
    image, video = await media_urls(http, sim)
    return MotionControlInput(image, video, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "credits"), [("kling-2.6/motion-control", 180.0), ("kling-3.0/motion-control", 270.0)]
)
async def test_create_and_wait_returns_the_finished_task(
    sim: Simulator, http: aiohttp.ClientSession, model: str, credits: float
) -> None:
    inp = await inputs(http, sim, prompt="a fox dancing", mode="1080p", model=model)
    async with session_for(sim) as kling:
        task_id = await kling.create_task(inp)
        task = await kling.wait_for_task(task_id)
        assert (await kling.get_task(task_id)).state is TaskState.SUCCESS
    assert task.task_id == task_id and task.state is TaskState.SUCCESS and task.is_terminal
    assert len(task.result_urls) == 1 and task.result_urls[0].startswith(sim.base_url)
    assert task.input == inp
    assert task.created_at is not None and task.created_at.tzinfo is not None
    assert task.completed_at is not None and task.completed_at > task.created_at
    assert task.cost_time == 100 and task.credits_consumed == pytest.approx(credits)
    assert task.model == model and sim.tasks[task_id].body["model"] == model
    assert sim.tasks_created[sim.api_key] == 1


async def test_on_update_sees_each_state_change_once(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    # Stages of 0.2 s real: wide enough to see each one on a busy machine.
    sim = await make_sim(
        time_scale=0.02,
        invisible_seconds=0.0,
        waiting_seconds=10.0,
        queuing_seconds=10.0,
        generating_seconds=10.0,
    )
    inp = await inputs(http, sim)
    seen: list[TaskState] = []

    async def on_update(task: Task) -> None:
        seen.append(task.state)

    # Poll every 0.5 nominal s: each 2 s+ stage is seen at least once.
    fine = PollSchedule(phases=((float("inf"), 0.5),), first_delay=0.0, jitter=0.0).scaled(0.02)
    async with session_for(sim, poll=fine, query_limit=RateLimit(1000, 1.0)) as kling:
        task = await kling.wait_for_task(await kling.create_task(inp), on_update=on_update)
    assert seen == [TaskState.WAITING, TaskState.QUEUING, TaskState.GENERATING, TaskState.SUCCESS]
    assert task.state is TaskState.SUCCESS


async def test_not_visible_right_after_creation_is_not_a_failure(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(invisible_seconds=60.0)  # 0.3 s real of "recordInfo is null"
    inp = await inputs(http, sim)
    eager = PollSchedule(phases=((float("inf"), 1.0),), first_delay=0.0).scaled(
        sim.config.time_scale
    )
    async with session_for(sim, poll=eager) as kling:
        task = await kling.wait_for_task(await kling.create_task(inp))
    assert task.state is TaskState.SUCCESS
    assert sim.count("recordInfo", code=422) >= 1


async def test_unknown_task_gives_up_after_the_grace(sim: Simulator) -> None:
    async with session_for(sim, not_visible_grace=0.2) as kling:
        with pytest.raises(TaskNotVisibleError):
            await kling.wait_for_task("f" * 32)
        with pytest.raises(TaskNotVisibleError) as caught:
            await kling.get_task("f" * 32)
    assert caught.value.code == 422 and isinstance(caught.value, InvalidRequestError)


async def test_failed_task_raises_with_its_fail_code(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(failure_rate=1.0)
    inp = await inputs(http, sim)
    async with session_for(sim) as kling:
        task_id = await kling.create_task(inp)
        with pytest.raises(TaskFailedError) as caught:
            await kling.wait_for_task(task_id)
    assert caught.value.task.task_id == task_id
    assert (caught.value.fail_code, caught.value.fail_msg) == ("500", "Internal server error")
    assert caught.value.task.credits_consumed == 0


async def test_timeout_is_a_deadline_for_the_whole_wait(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(time_scale=0.1)  # the task takes 10 s real
    inp = await inputs(http, sim)
    async with session_for(sim) as kling:
        task_id = await kling.create_task(inp)
        started = time.monotonic()
        with pytest.raises(TaskTimeoutError) as caught:
            await kling.wait_for_task(task_id, timeout=0.5)
        elapsed = time.monotonic() - started
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.task_id == task_id
    assert 0.5 <= elapsed < 5.0  # well before the task would end


# -- errors in both transports -------------------------------------------------------------------


@pytest.mark.parametrize("http_error_status", [False, True])
async def test_api_errors_map_to_classes_in_both_transports(
    make_sim: SimFactory, http: aiohttp.ClientSession, http_error_status: bool
) -> None:
    sim = await make_sim(http_error_status=http_error_status, credits=50.0)
    inp = await inputs(http, sim)
    async with session_for(sim, max_retries=0) as kling:
        with pytest.raises(InsufficientCreditsError) as credits:
            await kling.create_task(inp)
        assert credits.value.code == 402
        bad = MotionControlInput(inp.image_url, inp.image_url)  # an image as the video
        with pytest.raises(InvalidRequestError) as invalid:
            await kling.create_task(bad)
        assert invalid.value.code == 422 and "video" in invalid.value.message
        for code, cls in (
            (429, RateLimitError),
            (455, ServiceUnavailableError),
            (500, ServerError),
        ):
            sim.reconfigure(faults=FaultConfig(**{f"error_{code}": 1.0}))
            with pytest.raises(cls) as caught:
                await kling.get_credits()
            assert caught.value.code == code
            assert caught.value.http_status == (code if http_error_status else 200)
    sim.reconfigure(faults=FaultConfig())
    async with session_for(sim).__class__(
        "wrong-key", base_url=sim.base_url, upload_base_url=sim.upload_base_url
    ) as stranger:
        with pytest.raises(AuthenticationError) as auth:
            await stranger.get_credits()
    assert auth.value.code == 401


# -- retries -------------------------------------------------------------------------------------


async def test_transient_faults_are_retried_without_duplicate_tasks(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim()
    inp = await inputs(http, sim)
    # createTask meets only answers that prove nothing was created: those are retried.
    sim.reconfigure(
        faults=FaultConfig(
            error_455=0.2, error_429=0.2, seed=3, endpoints=frozenset({"createTask"})
        )
    )
    async with session_for(sim, max_retries=8) as kling:
        ids = [await kling.create_task(inp) for _ in range(20)]
        # Queries meet everything, dropped connections and slow answers included.
        sim.reconfigure(
            faults=FaultConfig(
                error_500=0.1,
                error_455=0.1,
                error_429=0.1,
                drop=0.1,
                slow=0.05,
                seed=4,
                endpoints=frozenset({"recordInfo", "credit"}),
            )
        )
        tasks = await asyncio.gather(*(kling.wait_for_task(i) for i in ids))
        await kling.get_credits()
    assert all(t.state is TaskState.SUCCESS for t in tasks)
    assert len(set(ids)) == 20
    assert sim.tasks_created[sim.api_key] == 20  # no task created twice
    create_faults = [r.fault for r in sim.requests if r.endpoint == "createTask" and r.fault]
    assert create_faults and sim.count("createTask") == 20 + len(create_faults)
    assert {"500", "455", "429", "drop"} <= {
        r.fault for r in sim.requests if r.endpoint == "recordInfo"
    }


async def test_dropped_create_is_never_retried(sim: Simulator, http: aiohttp.ClientSession) -> None:
    inp = await inputs(http, sim)
    sim.reconfigure(faults=FaultConfig(drop=1.0, endpoints=frozenset({"createTask"})))
    async with session_for(sim, max_retries=5) as kling:
        with pytest.raises(SubmissionUnknownError):
            await kling.create_task(inp)
    # Here the service happened to do nothing, but the client cannot know: it asks the caller.
    assert sim.count("createTask") == 1 and sim.tasks_created[sim.api_key] == 0


async def test_lost_create_answer_raises_submission_unknown_and_is_not_retried(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    inp = await inputs(http, sim)
    sim.reconfigure(faults=FaultConfig(drop_after=1.0, endpoints=frozenset({"createTask"})))
    async with session_for(sim, max_retries=5) as kling:
        with pytest.raises(SubmissionUnknownError) as caught:
            await kling.create_task(inp, callback_url="https://me.example/hook")
    assert sim.count("createTask") == 1
    assert sim.tasks_created[sim.api_key] == 1  # it does exist: that is why it was not retried
    assert caught.value.request_body is not None
    assert caught.value.request_body["callBackUrl"] == "https://me.example/hook"
    assert not isinstance(caught.value, TransportError)  # never retried as a transport error


async def test_create_500_may_exist_and_is_not_retried(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    inp = await inputs(http, sim)
    sim.reconfigure(faults=FaultConfig(error_500=1.0, endpoints=frozenset({"createTask"})))
    async with session_for(sim, max_retries=5) as kling:
        with pytest.raises(SubmissionUnknownError) as caught:
            await kling.create_task(inp)
    # A 5xx after the request reached the service says nothing about the task: it may exist.
    assert isinstance(caught.value.__cause__, ServerError)
    assert sim.count("createTask") == 1


async def test_connection_refused_create_is_retried_then_reported(unused_tcp_port: int) -> None:
    async with KlingSession(
        "key", base_url=f"http://127.0.0.1:{unused_tcp_port}", max_retries=2, retry_base=0.01
    ) as kling:
        with pytest.raises(TransportError) as caught:
            await kling.create_task(
                MotionControlInput("https://a.example/i.png", "https://a.example/v.mp4")
            )
    assert caught.value.request_sent is False
    assert not isinstance(caught.value, SubmissionUnknownError)


async def test_retry_after_is_honoured(sim: Simulator) -> None:
    sim.reconfigure(
        faults=FaultConfig(error_455=0.5, retry_after=0.3, seed=1, endpoints=frozenset({"credit"}))
    )
    async with session_for(sim, max_retries=10, retry_base=0.001, retry_cap=0.001) as kling:
        started = time.monotonic()
        for _ in range(4):
            await kling.get_credits()
        elapsed = time.monotonic() - started
    faulted = sum(1 for r in sim.requests if r.fault == "455")
    assert faulted >= 1
    assert elapsed >= 0.3 * faulted  # each Retry-After was waited out in full


async def test_retry_budget_is_bounded(sim: Simulator) -> None:
    sim.reconfigure(faults=FaultConfig(error_500=1.0, endpoints=frozenset({"credit"})))
    async with session_for(sim, max_retries=3) as kling:
        with pytest.raises(ServerError):
            await kling.get_credits()
    assert sim.count("credit") == 4


# -- rate limits at scale -------------------------------------------------------------------------


async def test_500_tasks_in_flight_never_trip_the_service_limits(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(time_scale=0.002)
    inp = await inputs(http, sim)
    async with session_for(sim) as kling:

        async def one() -> Task:
            return await kling.wait_for_task(await kling.create_task(inp))

        tasks = await asyncio.gather(*(one() for _ in range(500)))
    assert len({t.task_id for t in tasks}) == 500
    assert all(t.state is TaskState.SUCCESS for t in tasks)
    assert sim.rate_limited == {"createTask": 0, "recordInfo": 0}
    assert sim.tasks_created[sim.api_key] == 500


# -- cancellation and closing ---------------------------------------------------------------------


async def test_cancelling_a_wait_stops_its_polling(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(time_scale=0.05)
    inp = await inputs(http, sim)
    async with session_for(sim) as kling:
        task_id = await kling.create_task(inp)
        wait = asyncio.create_task(kling.wait_for_task(task_id))
        await eventually(lambda: sim.count("recordInfo") >= 2)
        wait.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wait
        polls = sim.count("recordInfo")
        await asyncio.sleep(0.5)  # a poll every 3 nominal s = 0.15 s: several would have come
        assert sim.count("recordInfo") == polls


async def test_closing_the_session_ends_waits_cleanly(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    inp = await inputs(http, sim)
    kling = session_for(sim, poll=PollSchedule(first_delay=3600.0))
    async with kling:
        task_id = await kling.create_task(inp)
        waits = [asyncio.create_task(kling.wait_for_task(task_id)) for _ in range(50)]
        await asyncio.sleep(0.05)
    results = await asyncio.gather(*waits, return_exceptions=True)
    assert all(isinstance(r, SessionClosedError) for r in results)
    assert kling.closed
    with pytest.raises(SessionClosedError):
        await kling.get_credits()
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not [t for t in others if "wait_for_task" in repr(t)]


# -- configuration and secrets --------------------------------------------------------------------


def test_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIE_API_KEY", "env-secret-key")
    assert "env-secret-key" not in repr(KlingSession())
    monkeypatch.delenv("KIE_API_KEY")
    with pytest.raises(ConfigurationError, match="KIE_API_KEY"):
        KlingSession()


def test_plain_http_is_refused_unless_loopback_or_opted_in() -> None:
    with pytest.raises(ConfigurationError, match="unencrypted"):
        KlingSession("k", base_url="http://api.example.com")
    assert KlingSession("k", base_url="http://api.example.com", allow_insecure_http=True)
    assert KlingSession("k", base_url="http://127.0.0.1:9", upload_base_url="http://localhost:9")
    with pytest.raises(ConfigurationError):
        KlingSession("k", base_url="ftp://x")


def test_defaults_are_the_documented_limits() -> None:
    kling = KlingSession("k")
    assert kling.create_limit == RateLimit(20, 10.0)
    assert kling.query_limit == RateLimit(10, 1.0)
    assert kling.poll == PollSchedule()
    assert kling.base_url == "https://api.kie.ai"
    assert kling.upload_base_url == "https://kieai.redpandaai.co"


async def test_the_key_never_appears_in_repr_errors_or_logs(
    make_sim: SimFactory, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await make_sim()
    secret = "sk-very-secret-key-123"
    sim.add_key(secret, credits=1.0)
    image, video = await media_urls(http, sim)
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    sim.reconfigure(faults=FaultConfig(error_455=0.5, seed=2, endpoints=frozenset({"credit"})))
    async with KlingSession(
        secret, base_url=sim.base_url, upload_base_url=sim.upload_base_url, retry_base=0.01
    ) as kling:
        texts.append(repr(kling))
        for _ in range(6):
            await kling.get_credits()
        for call in (
            kling.create_task(MotionControlInput(image, video)),  # 402
            kling.get_task("nope"),
        ):
            try:
                await call
            except Exception as exc:
                texts.extend([str(exc), repr(exc)])
    texts.extend(record.getMessage() for record in caplog.records)
    assert any("retrying" in t for t in texts)
    assert not [t for t in texts if secret in t]


def test_input_checks_itself() -> None:
    ok = MotionControlInput("https://a.example/i.png", "https://a.example/v.mp4")
    assert (ok.character_orientation, ok.mode, ok.prompt) == ("video", "720p", None)
    for bad in (
        {"image_url": "file:///etc/passwd"},
        {"video_url": "v.mp4"},
        {"character_orientation": "side"},
        {"mode": "standard"},
        {"prompt": "x" * 2501},
        {"background_source": "input_image"},  # a 3.0 input, refused on 2.6
    ):
        args = {
            "image_url": "https://a.example/i.png",
            "video_url": "https://a.example/v.mp4",
            **bad,
        }
        with pytest.raises(ValueError):
            MotionControlInput(**args)  # type: ignore[arg-type]
    assert MotionControlInput(
        "https://a.example/i.png", "https://a.example/v.mp4", prompt="x" * 2500
    )
