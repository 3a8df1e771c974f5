"""generate(), generate_many() and the journal, against the simulator over real HTTP."""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kling_async import (
    ConfigurationError,
    Job,
    JobEvent,
    JobEventKind,
    JobOutcome,
    JournalLockedError,
    KlingSession,
    MediaValidationError,
    SubmissionUnknownError,
    TaskFailedError,
    TaskState,
)
from kling_async.journal import Journal
from kling_async.simulator import FaultConfig, Simulator

from .conftest import MEDIA, SimFactory, eventually, session_for

ROOT = Path(__file__).parent.parent


async def collect(kling: KlingSession, jobs: object, **kw: object) -> list[JobOutcome]:
    return [o async for o in kling.generate_many(jobs, **kw)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "mode", "source", "credits"),
    [
        ("kling-2.6/motion-control", "1080p", None, 180.0),
        ("kling-3.0/motion-control", "pro", "input_image", 270.0),
    ],
)
async def test_generate_one_clip_end_to_end(
    sim: Simulator, tmp_path: Path, model: str, mode: str, source: str | None, credits: float
) -> None:
    events: list[JobEvent] = []
    async with session_for(sim) as kling:
        result = await kling.generate(
            MEDIA / "portrait.png",
            MEDIA / "d10.0.mp4",
            prompt="dance",
            mode=mode,  # type: ignore[arg-type]
            model=model,  # type: ignore[arg-type]
            background_source=source,  # type: ignore[arg-type]
            download_to=tmp_path,
            on_event=events.append,
        )
    # What went on the wire: the model, the mode as the schema spells it, the source if given.
    sent = sim.tasks[result.task.task_id].body
    assert sent["model"] == model and sent["input"]["mode"] == "1080p"
    assert sent["input"].get("background_source") == source
    assert result.task.model == model and result.task.credits_consumed == pytest.approx(credits)
    assert result.task.input is not None and result.task.input.background_source == source
    assert result.task.state is TaskState.SUCCESS
    assert result.result_urls == result.task.result_urls and len(result.files) == 1
    assert result.files[0].parent == tmp_path and result.files[0].stat().st_size > 0
    moving = (JobEventKind.UPLOADING, JobEventKind.DOWNLOADING)
    kinds = [e.kind for e in events if e.kind not in moving]
    # Both files are judged before either is uploaded.
    assert kinds[:5] == [JobEventKind.VALIDATED] * 2 + [JobEventKind.UPLOADED] * 2 + [
        JobEventKind.CREATED
    ]
    assert kinds[-1] is JobEventKind.DOWNLOADED
    states = [e.task.state for e in events if e.kind is JobEventKind.STATE_CHANGED and e.task]
    assert states[-1] is TaskState.SUCCESS
    assert events[0].bytes == (MEDIA / "portrait.png").stat().st_size
    assert events[-1].bytes == result.files[0].stat().st_size


async def test_generate_uses_urls_and_uploaded_files_as_they_are(sim: Simulator) -> None:
    async with session_for(sim) as kling:
        image = await kling.upload_image(MEDIA / "portrait.png")
        video = await kling.upload_video(MEDIA / "d3.0.mp4")
        uploads = sim.count("streamUpload")
        result = await kling.generate(image, video.url)
    assert result.task.input is not None and result.task.input.image_url == image.url
    assert sim.count("streamUpload") == uploads == 2


async def test_generate_raises_the_core_errors(make_sim: SimFactory) -> None:
    sim = await make_sim(failure_rate=1.0)
    async with session_for(sim) as kling:
        with pytest.raises(MediaValidationError):
            await kling.generate(MEDIA / "animated.gif", MEDIA / "d3.0.mp4")
        with pytest.raises(TaskFailedError):
            await kling.generate(MEDIA / "portrait.png", MEDIA / "d3.0.mp4")


async def test_200_jobs_under_the_documented_limits(make_sim: SimFactory) -> None:
    sim = await make_sim(time_scale=0.002)
    jobs = [Job(MEDIA / "portrait.png", MEDIA / "d10.0.mp4", key=f"j{i}") for i in range(200)]
    first_seen_with_tasks_running = None
    outcomes: list[JobOutcome] = []
    async with session_for(sim) as kling:
        async for outcome in kling.generate_many(jobs):
            if not outcomes:
                now = sim.now()
                first_seen_with_tasks_running = sum(
                    1 for t in sim.tasks.values() if t.done_at > now
                )
            outcomes.append(outcome)
    assert len(outcomes) == 200 and all(o.ok for o in outcomes)
    assert {o.job_key for o in outcomes} == {f"j{i}" for i in range(200)}
    assert sim.rate_limited == {"createTask": 0, "recordInfo": 0}
    assert sim.tasks_created[sim.api_key] == 200
    assert sim.count("streamUpload") == 2  # one picture and one video for all 200 jobs
    assert first_seen_with_tasks_running  # outcomes stream out while others still run


async def test_mixed_failures_leave_other_jobs_unharmed(make_sim: SimFactory) -> None:
    sim = await make_sim(failure_rate=0.4, seed=11)
    jobs = [Job(MEDIA / "portrait.png", MEDIA / "d10.0.mp4", key=f"ok{i}") for i in range(12)]
    jobs.insert(3, Job(MEDIA / "animated.gif", MEDIA / "d10.0.mp4", key="bad-image"))
    jobs.insert(
        7,
        Job(
            MEDIA / "portrait.png",
            MEDIA / "d12.mov",
            character_orientation="image",
            key="bad-video",
        ),
    )
    failed_events: list[JobEvent] = []
    async with session_for(sim) as kling:
        outcomes = await collect(
            kling,
            jobs,
            on_event=lambda e: failed_events.append(e) if e.kind is JobEventKind.FAILED else None,
        )
    by_key = {o.job_key: o for o in outcomes}
    assert len(by_key) == 14
    assert isinstance(by_key["bad-image"].error, MediaValidationError)
    assert isinstance(by_key["bad-video"].error, MediaValidationError)
    failed = [o for o in outcomes if isinstance(o.error, TaskFailedError)]
    succeeded = [o for o in outcomes if o.ok]
    assert failed and succeeded and len(failed) + len(succeeded) == 12
    assert sim.tasks_created[sim.api_key] == 12
    assert sim.count("streamUpload") == 2  # the bad files were never sent
    assert {e.job_key for e in failed_events} == {o.job_key for o in outcomes if not o.ok}


async def test_jobs_are_pulled_lazily(make_sim: SimFactory) -> None:
    sim = await make_sim()
    pulled = 0

    def endless() -> Iterator[Job]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield Job(MEDIA / "portrait.png", MEDIA / "d3.0.mp4", key=f"k{i}")

    seen = 0
    async with session_for(sim) as kling:
        async for outcome in kling.generate_many(endless(), max_pending=3, max_running=4):
            assert outcome.ok
            seen += 1
            assert pulled <= seen + 3 + 4 + 1
            if seen == 5:
                break
    assert pulled <= 5 + 3 + 4 + 1
    assert sim.tasks_created[sim.api_key] <= 5 + 4


async def test_async_iterables_work_too(sim: Simulator) -> None:
    async def jobs() -> AsyncIterator[Job]:
        for i in range(3):
            yield Job(MEDIA / "portrait.png", MEDIA / "d3.0.mp4", key=f"a{i}")

    async with session_for(sim) as kling:
        outcomes = await collect(kling, jobs())
    assert sorted(o.job_key for o in outcomes) == ["a0", "a1", "a2"]


def test_default_keys_hash_the_inputs() -> None:
    a = Job(MEDIA / "portrait.png", MEDIA / "d3.0.mp4")
    assert a.job_key == Job(str(MEDIA / "portrait.png"), MEDIA / "d3.0.mp4").job_key
    assert a.job_key != Job(MEDIA / "portrait.png", MEDIA / "d3.0.mp4", prompt="x").job_key
    assert Job(MEDIA / "portrait.png", MEDIA / "d3.0.mp4", key="mine").job_key == "mine"


# -- the journal ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["kling-2.6/motion-control", "kling-3.0/motion-control"])
async def test_rerun_skips_done_jobs_and_fetches_missing_files(
    sim: Simulator, tmp_path: Path, model: str
) -> None:
    journal, out = tmp_path / "batch.sqlite", tmp_path / "out"
    jobs = [
        Job(MEDIA / "portrait.png", MEDIA / "d3.0.mp4", key=f"r{i}", model=model)  # type: ignore[arg-type]
        for i in range(4)
    ]
    async with session_for(sim) as kling:
        first = await collect(kling, jobs, journal=journal, download_to=out)
    assert all(o.ok for o in first)
    assert {t.body["model"] for t in sim.tasks.values()} == {model}
    (out / "r2.mp4").unlink()
    requests_before = len(sim.requests)
    events: list[JobEvent] = []
    async with session_for(sim) as kling:
        again = await collect(kling, jobs, journal=journal, download_to=out, on_event=events.append)
    assert all(o.ok for o in again) and (out / "r2.mp4").exists()
    new = sim.requests[requests_before:]
    assert [r.endpoint for r in new] == ["result"]  # no upload, no task, no query: one download
    assert sorted(e.job_key for e in events if e.kind is JobEventKind.SKIPPED) == [
        "r0",
        "r1",
        "r2",
        "r3",
    ]
    assert sim.tasks_created[sim.api_key] == 4
    # The journal knows each task's model, and a rerun's outcomes say it.
    assert {o.result.task.model for o in again if o.result} == {model}
    async with Journal(journal) as book:
        assert {(await book.get(f"r{i}")).model for i in range(4)} == {model}  # type: ignore[union-attr]


async def test_a_second_batch_on_the_same_journal_is_refused(
    sim: Simulator, tmp_path: Path
) -> None:
    journal = tmp_path / "batch.sqlite"
    async with Journal(journal), session_for(sim) as kling:
        with pytest.raises(JournalLockedError, match="in use"):
            await collect(kling, [Job(MEDIA / "portrait.png", MEDIA / "d3.0.mp4")], journal=journal)
    assert sim.tasks_created[sim.api_key] == 0


@pytest.mark.parametrize("model", ["kling-2.6/motion-control", "kling-3.0/motion-control"])
async def test_unknown_submission_is_recorded_and_never_recreated(
    sim: Simulator, tmp_path: Path, model: str
) -> None:
    journal = tmp_path / "batch.sqlite"
    job = Job(MEDIA / "portrait.png", MEDIA / "d3.0.mp4", key="lost", model=model)  # type: ignore[arg-type]
    sim.reconfigure(faults=FaultConfig(drop_after=1.0, endpoints=frozenset({"createTask"})))
    async with session_for(sim) as kling:
        [outcome] = await collect(kling, [job], journal=journal)
    assert isinstance(outcome.error, SubmissionUnknownError)
    sim.reconfigure(faults=FaultConfig())
    async with session_for(sim) as kling:
        [again] = await collect(kling, [job], journal=journal)
    assert isinstance(again.error, SubmissionUnknownError)
    assert sim.tasks_created[sim.api_key] == 1 and sim.count("createTask") == 1
    async with Journal(journal) as book:
        record = await book.get("lost")
    assert record is not None and record.status == "unknown" and record.model == model


async def test_expired_uploads_are_uploaded_again(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = await make_sim(credits=1.0)  # every createTask gets 402: nothing is created
    journal = tmp_path / "batch.sqlite"
    job = Job(MEDIA / "portrait.png", MEDIA / "d3.0.mp4", key="exp")
    async with session_for(sim) as kling:
        [outcome] = await collect(kling, [job], journal=journal)
    assert outcome.error is not None and sim.count("streamUpload") == 2
    async with Journal(journal) as book:
        record = await book.get("exp")
        assert record is not None and record.status == "pending" and record.image_url
        await book.update("exp", image_expires=datetime.now(UTC) - timedelta(minutes=1))
    sim.add_key(sim.api_key, credits=1000.0)
    async with session_for(sim) as kling:  # a new session: no in-memory upload cache
        [outcome] = await collect(kling, [job], journal=journal)
    assert outcome.ok
    assert sim.count("streamUpload") == 3  # the expired picture again; the video was still fresh


async def run_child(
    sim: Simulator, journal: Path, out: Path, jobs: int, scale: float
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.batch_child",
        sim.base_url,
        sim.api_key,
        str(journal),
        str(out),
        str(jobs),
        str(scale),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )


async def read_until(proc: asyncio.subprocess.Process, done: object) -> list[list[str]]:
    assert proc.stdout is not None
    lines: list[list[str]] = []
    while True:
        raw = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert raw, f"child ended early after {lines}"
        lines.append(raw.decode().split())
        if done(lines):  # type: ignore[operator]
            return lines


async def finish_rerun(sim: Simulator, journal: Path, out: Path, jobs: int) -> list[JobOutcome]:
    batch = [Job(MEDIA / "portrait.png", MEDIA / "d10.0.mp4", key=f"job-{i}") for i in range(jobs)]
    async with session_for(sim) as kling:
        return await collect(kling, batch, journal=journal, download_to=out)


async def test_sigkill_mid_batch_then_rerun_pays_once_per_job(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(time_scale=0.02)  # tasks take 2 s real: the kill lands while they run
    journal, out, n = tmp_path / "batch.sqlite", tmp_path / "out", 30
    proc = await run_child(sim, journal, out, n, 0.02)
    await read_until(proc, lambda lines: sum(1 for line in lines if line[0] == "created") == n)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    assert proc.stdout is not None
    await proc.stdout.read()
    assert sim.tasks_created[sim.api_key] == n
    outcomes = await finish_rerun(sim, journal, out, n)
    assert len(outcomes) == n and all(o.ok for o in outcomes), [
        o.error for o in outcomes if not o.ok
    ]
    assert sim.tasks_created[sim.api_key] == n  # exactly one task per job, ever
    assert sorted(p.name for p in out.iterdir()) == sorted(f"job-{i}.mp4" for i in range(n))


async def test_sigkill_while_creates_are_in_flight(make_sim: SimFactory, tmp_path: Path) -> None:
    # Every createTask answer is held 5 s real by the service: the kill finds them in flight.
    sim = await make_sim(
        time_scale=0.02,
        faults=FaultConfig(slow=1.0, slow_seconds=250.0, endpoints=frozenset({"createTask"})),
    )
    journal, out, n = tmp_path / "batch.sqlite", tmp_path / "out", 6
    proc = await run_child(sim, journal, out, n, 0.02)
    await read_until(proc, lambda lines: sum(1 for line in lines if line[0] == "uploaded") >= 2)
    await eventually(lambda: sim.count("createTask") == n)  # every job has sent its createTask
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    assert proc.stdout is not None
    await proc.stdout.read()
    await eventually(lambda: sim.tasks_created[sim.api_key] == n)  # the service creates them all
    sim.reconfigure(faults=FaultConfig())
    outcomes = await finish_rerun(sim, journal, out, n)
    unknown = [o for o in outcomes if isinstance(o.error, SubmissionUnknownError)]
    assert len(outcomes) == n and len(unknown) == n  # all were in flight: none is re-created
    assert "not created again" in str(unknown[0].error)
    assert sim.tasks_created[sim.api_key] == n and sim.count("createTask") == n


async def test_ctrl_c_while_creates_are_in_flight_lets_them_land(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    # As the SIGKILL case, but a real Ctrl-C (SIGINT): the batch lets the requests on the wire
    # land and records their task ids, so the rerun resumes every job and pays for none again.
    sim = await make_sim(
        time_scale=0.02,
        faults=FaultConfig(slow=1.0, slow_seconds=250.0, endpoints=frozenset({"createTask"})),
    )
    journal, out, n = tmp_path / "batch.sqlite", tmp_path / "out", 6
    proc = await run_child(sim, journal, out, n, 0.02)
    await read_until(proc, lambda lines: sum(1 for line in lines if line[0] == "uploaded") >= 2)
    await eventually(lambda: sim.count("createTask") == n)
    proc.send_signal(signal.SIGINT)
    await proc.wait()
    assert proc.stdout is not None
    await proc.stdout.read()
    assert sim.tasks_created[sim.api_key] == n
    async with Journal(journal) as book:
        assert await book.counts() == {"created": n}
    sim.reconfigure(faults=FaultConfig())
    outcomes = await finish_rerun(sim, journal, out, n)
    assert len(outcomes) == n and all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert sim.tasks_created[sim.api_key] == n and sim.count("createTask") == n


async def test_a_journal_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from kling_async import KlingError

    path = tmp_path / "future.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(KlingError, match="newer"):
        async with Journal(path):
            pass


async def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    from kling_async import KlingError

    path = tmp_path / "notes.txt"
    path.write_text("not a database, just some words that are long enough to be read" * 20)
    with pytest.raises(KlingError, match="not a usable SQLite file"):
        async with Journal(path):
            pass


async def test_a_failed_job_is_reported_again_not_recreated(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(failure_rate=1.0)
    journal = tmp_path / "batch.sqlite"
    job = Job(MEDIA / "portrait.png", MEDIA / "d3.0.mp4", key="doomed")
    async with session_for(sim) as kling:
        [first] = await collect(kling, [job], journal=journal)
        [again] = await collect(kling, [job], journal=journal)
    assert isinstance(first.error, TaskFailedError) and isinstance(again.error, TaskFailedError)
    assert again.error.fail_msg == "Internal server error"
    assert again.error.task.task_id == first.error.task.task_id
    assert sim.tasks_created[sim.api_key] == 1


async def test_a_journal_of_schema_1_is_brought_up_to_date(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE jobs (key TEXT PRIMARY KEY, status TEXT NOT NULL, image_url TEXT, "
        "image_expires REAL, video_url TEXT, video_expires REAL, task_id TEXT, state TEXT, "
        "result_urls TEXT, files TEXT, error TEXT, updated REAL NOT NULL)"
    )
    db.execute("INSERT INTO jobs (key, status, task_id, updated) VALUES ('a', 'created', 't1', 0)")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    async with Journal(path) as journal:
        record = await journal.get("a")
        assert record is not None and record.task_id == "t1" and record.callback_token is None
        await journal.update("a", callback_token="tok")
        again = await journal.get("a")
        assert again is not None and again.callback_token == "tok"


async def test_retry_failed_gives_a_failed_job_a_new_task(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(failure_rate=1.0)
    journal = tmp_path / "batch.sqlite"
    job = Job(MEDIA / "portrait.png", MEDIA / "d3.0.mp4", key="doomed")
    async with session_for(sim) as kling:
        [first] = await collect(kling, [job], journal=journal)
        sim.reconfigure(failure_rate=0.0)
        [again] = await collect(kling, [job], journal=journal, retry_failed=True)
    assert isinstance(first.error, TaskFailedError) and again.ok
    assert again.task_id != first.task_id and sim.tasks_created[sim.api_key] == 2


async def test_the_journal_keeps_credits_and_fail_codes(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(failure_rate=0.5, seed=3)
    journal = tmp_path / "batch.sqlite"
    jobs = [Job(MEDIA / "portrait.png", MEDIA / "d3.0.mp4", key=f"j{i}") for i in range(6)]
    async with session_for(sim) as kling:
        first = await collect(kling, jobs, journal=journal)
        again = await collect(kling, jobs, journal=journal)
    assert any(o.ok for o in first) and any(not o.ok for o in first)
    async with Journal(journal) as book:
        for outcome in first:
            record = await book.get(outcome.job_key)
            assert record is not None
            if outcome.ok and outcome.result is not None:
                assert record.credits == outcome.result.task.credits_consumed and record.credits
            else:
                assert isinstance(outcome.error, TaskFailedError)
                assert record.fail_code == outcome.error.fail_code and record.fail_code
    # A rerun's outcomes say what each clip cost, and why each failure failed.
    costs = {o.job_key: o.credits for o in again if o.ok}
    assert costs == {o.job_key: o.credits for o in first if o.ok} and all(costs.values())
    assert all(o.credits is None for o in again if not o.ok)
    codes = {o.job_key: o.error.fail_code for o in again if isinstance(o.error, TaskFailedError)}
    assert codes and all(codes.values())


async def test_rows_that_make_no_job_are_outcomes_and_the_batch_goes_on(
    sim: Simulator, tmp_path: Path
) -> None:
    image, video = str(MEDIA / "portrait.png"), str(MEDIA / "d3.0.mp4")
    good = {"image": image, "video": video, "key": "good"}
    rows: list[object] = [
        {**good, "mode": "4k", "key": "bad-mode"},
        {**good, "prompt": "x" * 3000, "key": "long-prompt"},
        {**good, "promt": "typo", "key": "typo"},
        {"image": image},  # no video, no key: named by its place in the batch
        {**good, "video": str(MEDIA / "missing.mp4"), "key": "missing"},
        {**good, "image": str(MEDIA / "animated.gif"), "key": "gif"},
        {**good, None: "extra cell", "prmpt": "typo", "key": "csv-extra"},  # type: ignore[dict-item]
        {**good, "image": [image], "key": "list-image"},
        {**good, "orientation": "image", "character_orientation": "video", "key": "twice"},
        42,  # not a row at all: the 10th item
        good,
    ]
    events: list[JobEvent] = []
    async with session_for(sim) as kling:
        outcomes = await collect(kling, rows, download_to=tmp_path, on_event=events.append)
    by_key = {o.job_key: o for o in outcomes}
    refused = {
        "bad-mode": "mode must be one of",
        "long-prompt": "prompt has 3000 characters",
        "typo": "unknown field 'promt'",
        "#4": "video is missing",
        "csv-extra": "a cell without a column name: 'extra cell'",
        "list-image": "image must be a file path",
        "twice": "character_orientation is given twice",
        "#10": "a row must be a mapping of fields; got int",
    }
    assert set(by_key) == set(refused) | {"missing", "gif", "good"}
    assert by_key["good"].ok
    for key, words in refused.items():
        outcome = by_key[key]
        assert isinstance(outcome.error, ConfigurationError) and words in str(outcome.error)
        assert outcome.job is None and outcome.task_id is None
        assert (outcome.row is None) == (key == "#10")
    assert isinstance(by_key["missing"].error, MediaValidationError)
    assert by_key["missing"].error.rule == "unreadable"
    assert isinstance(by_key["gif"].error, MediaValidationError)
    # Nothing of a bad row is uploaded: only the good job's two files went up.
    assert sim.count("streamUpload") == 2 and sim.count("createTask") == 1
    failed = {e.job_key for e in events if e.kind is JobEventKind.FAILED}
    assert failed == set(by_key) - {"good"}


def test_from_row_takes_a_manifest_row() -> None:
    job = Job.from_row(
        {"image": "a.png", "video": "https://x.test/v.mp4", "orientation": "image", "mode": ""},
        base_dir="/data",
    )
    assert job.image == Path("/data/a.png") and job.video == "https://x.test/v.mp4"
    assert job.character_orientation == "image" and job.mode == "720p"
    with pytest.raises(ConfigurationError, match="image is missing"):
        Job.from_row({"video": "v.mp4"})
