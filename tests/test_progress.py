"""Byte progress of transfers as JobEvents: the gate, then runs against the simulator."""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from kling_async import Job, JobEvent, JobEventKind, TaskState
from kling_async.batch import JobRunner
from kling_async.jobs import PROGRESS_MIN_BYTES, PROGRESS_MIN_INTERVAL, ProgressGate
from kling_async.journal import Journal
from kling_async.simulator import FaultConfig, Simulator

from .conftest import MEDIA, eventually, serve, session_for

ROOT = Path(__file__).parent.parent
RESULT = ROOT / "kling_async" / "assets" / "result.mp4"
MIB = 1024 * 1024


def big_video(folder: Path, padding: int = 3 * MIB) -> Path:
    """A valid 10 s MP4 of a few MiB: a real clip with a trailing ``free`` box."""
    path = folder / "big-dance.mp4"
    pad = struct.pack(">I4s", 8 + padding, b"free") + bytes(padding)
    path.write_bytes((MEDIA / "d10.0.mp4").read_bytes() + pad)
    return path


def moves(events: list[JobEvent], kind: JobEventKind, path: Path) -> list[JobEvent]:
    return [e for e in events if e.kind is kind and e.path == path]


def assert_climbs_to(events: list[JobEvent], size: int, total: int | None) -> None:
    """Progress of one transfer: from 0, never backwards, ending at the file's size."""
    done = [e.bytes for e in events]
    assert done and done[0] == 0 and done[-1] == size, done
    assert done == sorted(done)  # type: ignore[type-var]
    assert {e.total for e in events} == {total}


# -- the gate (pure) -----------------------------------------------------------------------------


def test_the_gate_lets_through_the_first_the_last_and_a_restart() -> None:
    gate = ProgressGate()
    total = 10 * MIB
    assert gate.admit(0, total, now=0.0)
    assert not gate.admit(MIB, total, now=0.01)  # too soon
    assert gate.admit(MIB, total, now=5.0)  # far enough, in bytes and in time
    assert not gate.admit(MIB + 2, total, now=10.0)  # too few bytes since
    assert gate.admit(total, total, now=10.0)  # the end, however soon
    assert not gate.admit(total, total, now=20.0)  # said already
    assert gate.admit(0, total, now=20.0)  # a retried transfer starts again
    assert not gate.settle(0, now=21.0)
    assert gate.settle(5, now=21.0) and gate.total == total


@given(
    total=st.one_of(st.none(), st.integers(1, 50 * MIB)),
    steps=st.lists(st.tuples(st.integers(1, 3 * MIB), st.floats(0, 0.3)), max_size=300),
)
def test_the_gate_never_floods_and_keeps_the_end(
    total: int | None, steps: list[tuple[int, float]]
) -> None:
    gate = ProgressGate()
    reports = [(0, 0.0)]
    for size, pause in steps:
        done, now = reports[-1]
        reports.append((done + size if total is None else min(total, done + size), now + pause))
    if total is not None:
        reports.append((total, reports[-1][1]))
    admitted = [(done, now) for done, now in reports if gate.admit(done, total, now)]
    assert admitted[0] == (0, 0.0)
    if total is not None:
        assert admitted[-1][0] == total
    step = max(PROGRESS_MIN_BYTES, (total or 0) // 100)
    for (a, at), (b, bt) in itertools.pairwise(admitted):
        assert b > a
        if b != total:  # apart from the end, events are spaced in bytes and in time
            assert b - a >= step and bt - at >= PROGRESS_MIN_INTERVAL
    if total is None:
        end = reports[-1][0]
        assert gate.settle(end, now=99.0) == (admitted[-1][0] != end)


# -- against the simulator -----------------------------------------------------------------------


async def test_uploads_and_the_download_report_bytes_up_to_each_files_size(
    sim: Simulator, tmp_path: Path
) -> None:
    video = big_video(tmp_path)
    events: list[JobEvent] = []
    async with session_for(sim) as kling:
        result = await kling.generate(
            MEDIA / "portrait.png", video, download_to=tmp_path / "out", on_event=events.append
        )
    image_size, video_size = (MEDIA / "portrait.png").stat().st_size, video.stat().st_size
    [clip] = result.files
    clip_size = clip.stat().st_size
    assert clip_size == RESULT.stat().st_size
    assert_climbs_to(
        moves(events, JobEventKind.UPLOADING, MEDIA / "portrait.png"), *[image_size] * 2
    )
    assert_climbs_to(moves(events, JobEventKind.UPLOADING, video), video_size, video_size)
    # The simulator sends a Content-Length with the clip: it is the total.
    downloading = moves(events, JobEventKind.DOWNLOADING, clip)
    assert_climbs_to(downloading, clip_size, clip_size)
    assert {e.task_id for e in downloading} == {result.task.task_id}
    kinds = [e.kind for e in events]
    assert kinds.index(JobEventKind.UPLOADING) < kinds.index(JobEventKind.UPLOADED)
    assert max(i for i, k in enumerate(kinds) if k is JobEventKind.DOWNLOADING) < kinds.index(
        JobEventKind.DOWNLOADED
    )
    assert {e.detail for e in events if e.kind is JobEventKind.UPLOADING} == {"image", "video"}
    # Every change of state carries the task, in that state.
    changes = [e for e in events if e.kind is JobEventKind.STATE_CHANGED]
    assert changes and all(e.task is not None and e.task.task_id == e.task_id for e in changes)
    assert changes[-1].task is not None and changes[-1].task.state is TaskState.SUCCESS


async def test_progress_is_throttled_by_the_clock_it_is_given(
    sim: Simulator, tmp_path: Path
) -> None:
    video = big_video(tmp_path)
    size = video.stat().st_size
    seen: dict[str, list[int | None]] = {}
    ticks = itertools.count()
    clocks = {"frozen": lambda: 0.0, "a second a look": lambda: float(next(ticks))}
    for name, clock in clocks.items():
        events: list[JobEvent] = []
        async with session_for(sim) as kling:  # a new session: the video is sent again
            runner = JobRunner(kling, on_event=events.append, clock=clock)
            await runner.run(Job(MEDIA / "portrait.png", video, key=name))
        seen[name] = [e.bytes for e in moves(events, JobEventKind.UPLOADING, video)]
    # The file goes in 1 MiB chunks: with time passing each is an event; with none, the ends.
    assert seen["a second a look"] == [0, MIB, 2 * MIB, 3 * MIB, size]
    assert seen["frozen"] == [0, size]


async def test_every_job_sharing_an_upload_hears_its_progress(
    sim: Simulator, tmp_path: Path
) -> None:
    video = big_video(tmp_path)
    size = video.stat().st_size
    events: list[JobEvent] = []
    jobs = [Job(MEDIA / "portrait.png", video, key=f"clip{n}") for n in range(3)]
    async with session_for(sim) as kling:
        outcomes = [o async for o in kling.generate_many(jobs, on_event=events.append)]
    assert all(o.ok for o in outcomes)
    assert sim.count("streamUpload") == 2  # one picture, one video, for the three jobs
    for job in jobs:
        mine = [e for e in events if e.job_key == job.key]
        heard = moves(mine, JobEventKind.UPLOADING, video)
        # A job that joined late hears where the upload stood first; each ends at the size.
        assert heard and heard[-1].bytes == heard[-1].total == size
        assert [e.bytes for e in heard] == sorted(e.bytes or 0 for e in heard)


async def test_a_caller_joining_an_upload_late_first_hears_where_it_stands(
    sim: Simulator, tmp_path: Path
) -> None:
    video = big_video(tmp_path)
    size = video.stat().st_size
    # Every byte is sent, then the answer comes slowly (a byte every 5 ms): time to join.
    faults = FaultConfig(trickle=1.0, trickle_seconds=1.0, endpoints=frozenset({"streamUpload"}))
    sim.reconfigure(faults=faults)
    first: list[int] = []
    late: list[tuple[int, int | None]] = []
    async with session_for(sim) as kling:
        one = asyncio.create_task(
            kling.upload_video(video, on_progress=lambda d, t: first.append(d))
        )
        await eventually(lambda: bool(first) and first[-1] == size)
        two = await kling.upload_video(video, on_progress=lambda d, t: late.append((d, t)))
        assert (await one).url == two.url
    assert late == [(size, size)] and sim.count("streamUpload") == 1


async def test_an_on_event_that_raises_never_breaks_a_transfer(
    sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    video = big_video(tmp_path)
    heard: list[JobEventKind] = []

    async def on_event(event: JobEvent) -> None:
        heard.append(event.kind)
        raise RuntimeError("the bot's handler broke")

    caplog.set_level(logging.WARNING, logger="kling_async")
    async with session_for(sim) as kling:
        result = await kling.generate(
            MEDIA / "portrait.png", video, download_to=tmp_path / "out", on_event=on_event
        )
        raw = await kling.upload_file(MEDIA / "d3.0.mp4", on_progress=lambda done, total: 1 / 0)
    assert result.files[0].read_bytes() == RESULT.read_bytes()
    assert raw.size_bytes == (MEDIA / "d3.0.mp4").stat().st_size
    assert sim.count("streamUpload") == 3  # nothing was sent twice
    assert JobEventKind.UPLOADING in heard and JobEventKind.DOWNLOADING in heard
    logged = [r.getMessage() for r in caplog.records]
    assert any("on_event raised" in m and "uploading" in m for m in logged)
    assert any("on_event raised" in m and "downloading" in m for m in logged)
    assert any("on_progress raised" in m for m in logged)


@pytest.fixture
async def chunked_clip() -> AsyncIterator[str]:
    """The result clip served without a Content-Length (chunked), as some CDNs do."""

    async def clip(request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        answer.enable_chunked_encoding()
        await answer.prepare(request)
        body = RESULT.read_bytes()
        for start in range(0, len(body), 1000):
            await answer.write(body[start : start + 1000])
        await answer.write_eof()
        return answer

    app = web.Application()
    app.router.add_get("/clip.mp4", clip)
    async with serve(app) as base:
        yield f"{base}/clip.mp4"


async def test_a_download_of_unknown_length_ends_with_its_size(
    sim: Simulator, tmp_path: Path, chunked_clip: str
) -> None:
    journal = tmp_path / "batch.sqlite"
    async with Journal(journal) as book:  # a job done before, whose file is not here any more
        await book.update("done", status="succeeded", task_id="t1", result_urls=[chunked_clip])
    events: list[JobEvent] = []
    job = Job(MEDIA / "portrait.png", MEDIA / "d3.0.mp4", key="done")
    async with session_for(sim) as kling:
        [outcome] = [
            o
            async for o in kling.generate_many(
                [job], journal=journal, download_to=tmp_path / "out", on_event=events.append
            )
        ]
    assert outcome.ok and outcome.result is not None
    [clip] = outcome.result.files
    assert clip.read_bytes() == RESULT.read_bytes()
    assert_climbs_to(moves(events, JobEventKind.DOWNLOADING, clip), clip.stat().st_size, None)


# -- slow, hung and raising callbacks ------------------------------------------------------------


#: Every byte is taken at once, then the answer comes a byte a millisecond: callers that start
#: together surely share the upload, however fast the machine.
SLOW_UPLOAD_ANSWER = FaultConfig(
    trickle=1.0, trickle_seconds=0.2, endpoints=frozenset({"streamUpload"})
)


def relays() -> list[asyncio.Task[object]]:
    """The progress relays' pumps still running."""
    return [t for t in asyncio.all_tasks() if t.get_name() == "kling_async progress relay"]


async def test_a_slow_callback_holds_up_no_one_sharing_its_upload(
    sim: Simulator, tmp_path: Path
) -> None:
    # 20 MiB at 4 MB/s at the least: about 7 s allowed, while a 1 s callback after each of the
    # 21 chunks would take 21 s if the upload waited on it.
    video = big_video(tmp_path, 20 * MIB)
    size = video.stat().st_size
    slow_heard: list[tuple[int, int | None]] = []
    other_heard: list[tuple[int, int | None]] = []

    async def slow(done: int, total: int | None) -> None:
        slow_heard.append((done, total))
        await asyncio.sleep(1.0)

    sim.reconfigure(faults=SLOW_UPLOAD_ANSWER)
    settings = {"request_timeout": 2.0, "max_retries": 0, "min_transfer_rate": 4_000_000}
    async with session_for(sim, **settings) as kling:
        # Both start together: they hash the file once, then share one upload.
        mine = asyncio.create_task(kling.upload_video(video, on_progress=slow))
        theirs = asyncio.create_task(
            kling.upload_video(video, on_progress=lambda d, t: other_heard.append((d, t)))
        )
        assert (await mine).url == (await theirs).url
        assert not relays()
    assert sim.count("streamUpload") == 1
    for heard in (slow_heard, other_heard):
        # Fewer reports for the slow one, but in order, and always the last.
        assert heard and heard[-1] == (size, size), heard
        assert heard == sorted(heard) and {t for _, t in heard} == {size}
    assert len(slow_heard) < len(other_heard)


async def test_a_slow_on_event_holds_up_neither_its_transfers_nor_other_jobs(
    sim: Simulator, tmp_path: Path
) -> None:
    video = big_video(tmp_path, 20 * MIB)
    events: list[JobEvent] = []

    async def on_event(event: JobEvent) -> None:
        events.append(event)
        # A chat bot editing its message over a slow API, for one of the two jobs only (from
        # the video on: both jobs share its upload). The download's two reports (0 and the
        # end) together outlast its 2 s of grace.
        if event.job_key != "slow":
            return
        if event.kind is JobEventKind.UPLOADING and event.detail == "video":
            await asyncio.sleep(0.5)
        if event.job_key == "slow" and event.kind is JobEventKind.DOWNLOADING:
            await asyncio.sleep(1.4)

    jobs = [Job(MEDIA / "portrait.png", video, key=key) for key in ("slow", "quick")]
    sim.reconfigure(faults=SLOW_UPLOAD_ANSWER)
    settings = {"request_timeout": 2.0, "max_retries": 0, "min_transfer_rate": 4_000_000}
    async with session_for(sim, **settings) as kling:
        outcomes = [
            o
            async for o in kling.generate_many(
                jobs, on_event=on_event, download_to=tmp_path / "out"
            )
        ]
        assert not relays()
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert sim.count("streamUpload") == 2 and sim.count("result") == 2
    for outcome in outcomes:
        assert outcome.result is not None
        [clip] = outcome.result.files
        mine = [e for e in events if e.job_key == outcome.job_key]
        for kind, done_kind, path, size in (
            (JobEventKind.UPLOADING, JobEventKind.UPLOADED, video, video.stat().st_size),
            (JobEventKind.DOWNLOADING, JobEventKind.DOWNLOADED, clip, clip.stat().st_size),
        ):
            moving = moves(mine, kind, path)
            assert moving and moving[-1].bytes == moving[-1].total == size
            assert [e.bytes for e in moving] == sorted(e.bytes or 0 for e in moving)
            # Every report of a file comes before the step that ends it.
            last = max(i for i, e in enumerate(mine) if e.kind is kind and e.path == path)
            assert [e.kind for e in mine[last + 1 :]].count(done_kind) == 1
            assert all(e.kind is not kind or e.path != path for e in mine[last + 1 :])


async def test_a_hung_callback_is_given_up_after_the_request_timeout(
    sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    video = big_video(tmp_path)
    calls: list[int] = []
    cancelled: list[int] = []

    async def hangs(done: int, total: int | None) -> None:
        calls.append(done)
        try:
            await asyncio.Event().wait()  # an API call that never answers
        except asyncio.CancelledError:
            cancelled.append(done)
            raise

    caplog.set_level(logging.WARNING, logger="kling_async")
    async with asyncio.timeout(60), session_for(sim, request_timeout=0.5) as kling:
        uploaded = await kling.upload_video(video, on_progress=hangs)
        task = await kling.generate(MEDIA / "portrait.png", uploaded.url)
        clip = await kling.download(task.task, tmp_path / "out/", on_progress=hangs)
        assert not relays()
    assert uploaded.size_bytes == video.stat().st_size
    assert clip.read_bytes() == RESULT.read_bytes()
    # Each transfer: its first report is heard and never returns; it is cancelled, logged.
    assert calls == cancelled and len(calls) == 2
    given_up = [r for r in caplog.records if "did not return within 0.5 s" in r.getMessage()]
    assert len(given_up) == 2 and {r.levelno for r in given_up} == {logging.WARNING}


async def test_a_caller_that_leaves_a_shared_upload_takes_its_callback_along(
    sim: Simulator, tmp_path: Path
) -> None:
    video = big_video(tmp_path)
    heard: list[int] = []
    cancelled: list[int] = []

    async def hangs(done: int, total: int | None) -> None:
        heard.append(done)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(done)
            raise

    async with session_for(sim) as kling:
        leaving = asyncio.create_task(kling.upload_video(video, on_progress=hangs))
        staying = asyncio.create_task(kling.upload_video(video))
        await eventually(lambda: bool(heard))
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        # Its callback ended with it: the pump did not outlive the caller that owned it.
        assert cancelled == heard and len(heard) == 1 and not relays()
        uploaded = await staying
    assert uploaded.size_bytes == video.stat().st_size
    assert sim.count("streamUpload") == 1 and heard == cancelled


async def test_a_raising_callback_is_logged_once_per_transfer_then_quietly(
    sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    video = big_video(tmp_path)
    progress_calls: list[int] = []
    bot_calls: list[JobEvent] = []

    def breaks(done: int, total: int | None) -> None:
        progress_calls.append(done)
        raise ValueError("the progress bar broke")

    def on_event(event: JobEvent) -> None:
        if event.kind in (JobEventKind.UPLOADING, JobEventKind.DOWNLOADING):
            bot_calls.append(event)
            raise ValueError("the bot broke")

    caplog.set_level(logging.DEBUG, logger="kling_async")
    async with session_for(sim) as kling:
        await kling.upload_file(video, on_progress=breaks)
        await kling.upload_file(MEDIA / "d3.0.mp4", on_progress=breaks)
        await kling.generate(
            MEDIA / "portrait.png", video, download_to=tmp_path / "out", on_event=on_event
        )
    raised = [r for r in caplog.records if "on_progress raised" in r.getMessage()]
    # Two transfers: one warning with its traceback each; the other reports at DEBUG.
    assert len(raised) == len(progress_calls) > 2
    loud = [r for r in raised if r.levelno == logging.WARNING]
    assert len(loud) == 2 and all(r.exc_info for r in loud)
    assert {r.levelno for r in raised} == {logging.WARNING, logging.DEBUG}
    # on_event on progress: once at ERROR per file moved (an image, a video, a clip).
    bot = [r for r in caplog.records if "on_event raised" in r.getMessage()]
    assert len(bot) == len(bot_calls) > 3
    assert len([r for r in bot if r.levelno == logging.ERROR]) == 3


async def test_an_on_event_returning_a_future_is_awaited(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    seen: list[JobEventKind] = []

    def on_event(event: JobEvent) -> asyncio.Future[None]:
        seen.append(event.kind)
        answer: asyncio.Future[None] = loop.create_future()
        if event.kind is JobEventKind.VALIDATED:
            answer.set_exception(RuntimeError("the bot's send failed"))
        else:
            loop.call_soon(answer.set_result, None)
        return answer

    caplog.set_level(logging.ERROR, logger="kling_async")
    async with session_for(sim) as kling:
        await kling.generate(MEDIA / "portrait.png", MEDIA / "d3.0.mp4", on_event=on_event)
    failed = [r for r in caplog.records if "on_event raised" in r.getMessage()]
    assert len(failed) == seen.count(JobEventKind.VALIDATED) > 0
    assert all("(validated)" in r.getMessage() and r.exc_info for r in failed)
    assert JobEventKind.CREATED in seen


async def test_a_hung_on_event_never_hangs_a_download_of_unknown_length(
    sim: Simulator, tmp_path: Path, chunked_clip: str, caplog: pytest.LogCaptureFixture
) -> None:
    journal = tmp_path / "batch.sqlite"
    async with Journal(journal) as book:  # a job done before, whose file is not here any more
        await book.update("done", status="succeeded", task_id="t1", result_urls=[chunked_clip])
    heard: list[JobEvent] = []
    cancelled: list[int | None] = []

    async def on_event(event: JobEvent) -> None:
        heard.append(event)
        if event.kind is JobEventKind.DOWNLOADING:  # a progress message that never sends
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(event.bytes)
                raise

    caplog.set_level(logging.WARNING, logger="kling_async")
    job = Job(MEDIA / "portrait.png", MEDIA / "d3.0.mp4", key="done")
    async with asyncio.timeout(60), session_for(sim, request_timeout=0.5) as kling:
        [outcome] = [
            o
            async for o in kling.generate_many(
                [job], journal=journal, download_to=tmp_path / "out", on_event=on_event
            )
        ]
    assert outcome.ok and outcome.result is not None
    [clip] = outcome.result.files
    # Its first report hung and was given up; so was the end, said after the download.
    assert cancelled == [0, clip.stat().st_size]
    kinds = [e.kind for e in heard]
    assert JobEventKind.DOWNLOADING not in kinds[kinds.index(JobEventKind.DOWNLOADED) :]
    given_up = [r for r in caplog.records if "did not return within 0.5 s" in r.getMessage()]
    assert len(given_up) == 2
