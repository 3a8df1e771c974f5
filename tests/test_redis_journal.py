"""RedisJournal against a real redis-server: records, claims, leases, runs, release, the CLI."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from kling_async import Job, JobOutcome, JournalError
from kling_async.journal import (
    BUSY,
    CLAIMED,
    CREATED,
    CREATING,
    DONE,
    PENDING,
    UNKNOWN,
    JournalRecord,
)
from kling_async.redis import RedisJournal
from kling_async.simulator import FaultConfig

from .cli_run import SECRETS, assert_no_key_was_printed, cli
from .conftest import MEDIA, SimFactory, eventually, session_for
from .redis_server import Blackhole, RedisServer

#: createTask answers after 1.5 s (at the fast time scale): the task exists before its answer.
SLOW_CREATE = FaultConfig(slow=1.0, slow_seconds=300.0, endpoints=frozenset({"createTask"}))
JOB = Job(MEDIA / "portrait.png", MEDIA / "d10.0.mp4", key="k1")


async def test_a_record_reads_back_as_written(redis_server: RedisServer) -> None:
    expires = datetime(2030, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)
    async with RedisJournal(redis_server.url, name="rt") as journal:
        assert await journal.get("a") is None
        assert await journal.claim("a") == CLAIMED
        await journal.update(
            "a",
            status="succeeded",
            image_url="https://x/i.png",
            image_expires=expires,
            video_url="https://x/v.mp4",
            video_expires=expires,
            task_id="t1",
            state="success",
            result_urls=("https://x/r.mp4",),
            files=[Path("out/a.mp4")],
            error="was slow",
            callback_token="tok",
            fail_code="500",
            credits=110.5,
        )
        await journal.update("a", error=None)
        record = await journal.get("a")
        assert record == JournalRecord(
            key="a",
            status="succeeded",
            image_url="https://x/i.png",
            image_expires=expires,
            video_url="https://x/v.mp4",
            video_expires=expires,
            task_id="t1",
            state="success",
            result_urls=("https://x/r.mp4",),
            files=(Path("out/a.mp4"),),
            callback_token="tok",
            fail_code="500",
            credits=110.5,
        )
        assert await journal.counts() == {"succeeded": 1}
        with pytest.raises(ValueError, match="not journal columns"):
            await journal.update("a", owner="me")


async def test_one_worker_holds_a_job_and_the_others_skip_what_it_finished(
    redis_server: RedisServer,
) -> None:
    async with (
        RedisJournal(redis_server.url, name="w") as a,
        RedisJournal(redis_server.url, name="w") as b,
    ):
        assert await a.claim("j") == CLAIMED
        assert await b.claim("j") == BUSY
        with pytest.raises(JournalError, match="no longer this worker's"):
            await b.update("j", status=CREATING)  # only the holder writes
        assert (await a.get("j")).status == PENDING  # type: ignore[union-attr]
        await a.update("j", status="succeeded", task_id="t")
        await a.finish("j")
        assert await b.claim("j") == DONE  # its outcome was given in this run
        assert await a.claim("k") == CLAIMED
    # Both gone: a later worker starts a new run, and resumes everything like a rerun.
    async with RedisJournal(redis_server.url, name="w") as c:
        assert await c.claim("j") == CLAIMED
        assert await c.claim("k") == CLAIMED  # a let go of it when it left


async def test_a_dead_workers_claims_are_taken_over_and_it_can_no_longer_write(
    redis_server: RedisServer,
) -> None:
    async with (
        RedisJournal(redis_server.url, name="d", lease=60) as a,
        RedisJournal(redis_server.url, name="d", lease=60) as b,
    ):
        assert await a.claim("j") == CLAIMED
        await a.update("j", status=CREATING)
        assert await b.claim("j") == BUSY
        # a's heartbeat is gone from Redis, as when its lease runs out after a kill -9.
        async with aioredis.Redis.from_url(redis_server.url, decode_responses=True) as check:
            workers = "{kling_async:journal:d}:workers"
            members = await check.zrange(workers, 0, -1)
            assert len(members) == 2
            await check.zadd(workers, {m: 0 for m in members if m != b._worker})
        assert await b.claim("j") == CLAIMED
        record = await b.get("j")
        assert record is not None and record.status == CREATING  # the runner calls it unknown
        with pytest.raises(JournalError, match="no longer this worker's"):
            await a.update("j", status=PENDING)
        assert (await b.get("j")).status == CREATING  # type: ignore[union-attr]


async def test_a_worker_past_its_lease_cannot_write_even_if_nobody_took_its_jobs(
    redis_server: RedisServer,
) -> None:
    async with RedisJournal(redis_server.url, name="stall", lease=60) as a:
        assert await a.claim("j") == CLAIMED
        # It stalled longer than its lease (its heartbeat did not get through meanwhile).
        async with aioredis.Redis.from_url(redis_server.url, decode_responses=True) as check:
            await check.zadd("{kling_async:journal:stall}:workers", {a._worker: 0})
        with pytest.raises(JournalError, match="no longer this worker's"):
            await a.update("j", status=CREATING)
        assert (await a.get("j")).status == PENDING  # type: ignore[union-attr]


async def test_release_lets_go_only_of_unknown_jobs_no_live_worker_holds(
    redis_server: RedisServer,
) -> None:
    async with RedisJournal(redis_server.url, name="r") as worker:
        for key in ("u", "c", "s"):
            assert await worker.claim(key) == CLAIMED
        await worker.update("u", status=UNKNOWN, error="lost")
        await worker.update("c", status=CREATING)
        await worker.update("s", status="succeeded")
        await worker.finish("u")
        async with RedisJournal(redis_server.url, name="r") as admin:
            assert await admin.unresolved() == ["c", "u"]
            assert await admin.release("u", "c", "s") == ["u"]  # c is still held
    async with RedisJournal(redis_server.url, name="r") as admin:
        assert await admin.release("c") == ["c"]  # its worker left
        assert await admin.unresolved() == []
        record = await admin.get("u")
        assert record is not None and record.status == PENDING and record.error is None


async def test_an_unreachable_redis_is_a_journal_error_at_once() -> None:
    journal = RedisJournal("redis://127.0.0.1:1/0?journal=x&lease=3", timeout=0.5)
    assert journal.name == "x" and journal.lease == 3.0
    with pytest.raises(JournalError, match="cannot reach Redis"):
        await asyncio.wait_for(journal.open(), timeout=10)


async def test_a_batch_on_a_redis_journal_resumes_like_one_on_sqlite(
    make_sim: SimFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    sim = await make_sim()
    url = f"{redis_server.url}?journal=resume"
    jobs = [Job(MEDIA / "portrait.png", MEDIA / "d10.0.mp4", key=f"k{i}") for i in range(3)]
    async with session_for(sim) as kling:
        outcomes = [o async for o in kling.generate_many(jobs, journal=url, download_to=tmp_path)]
        assert all(o.ok for o in outcomes)
        again = [o async for o in kling.generate_many(jobs, journal=url, download_to=tmp_path)]
    assert sorted(o.job_key for o in again) == ["k0", "k1", "k2"]
    assert all(o.ok for o in again) and sim.tasks_created[sim.api_key] == 3


async def test_the_cli_runs_lists_and_releases_a_redis_journal(
    make_sim: SimFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    sim = await make_sim()
    manifest = tmp_path / "jobs.csv"
    manifest.write_text(
        "key,image,video\n"
        + "".join(f"c{i},{MEDIA / 'portrait.png'},{MEDIA / 'd10.0.mp4'}\n" for i in range(3))
    )
    password = "redis-pass-5b1e0c7d9a"  # the test server's own
    async with aioredis.Redis.from_url(redis_server.url) as admin:
        await admin.config_set("requirepass", password)
    SECRETS.add(password)  # the key sweep of the CLI's tests looks for it too
    where = f"127.0.0.1:{redis_server.port}/0?journal=cli"
    url = f"redis://:{password}@{where}"
    code, text = await cli("batch", str(manifest), "--journal", url, "--json", sim=sim)
    assert code == 0, text
    rows = [json.loads(line) for line in text.splitlines()]
    assert sum(1 for row in rows if row.get("ok")) == 3
    code, text = await cli("journal", url, "--json")
    assert code == 0 and sorted(json.loads(line)["key"] for line in text.splitlines()) == [
        "c0",
        "c1",
        "c2",
    ]
    outputs = [text]
    code, text = await cli("unknown", url)
    # The URL is shown with its password masked.
    assert code == 0 and text.strip() == f"no unknown jobs in redis://:***@{where}"
    outputs.append(text)
    code, text = await cli("release", url, "--all-unknown")
    assert code == 0 and f"redis://:***@{where}" in text
    outputs.append(text)
    code, text = await cli("release", url, "c0")
    assert code == 1 and "not released" in text
    outputs.append(text)
    assert not any(password in output for output in outputs)


async def test_a_task_created_after_its_worker_lost_the_claim_keeps_its_id(
    make_sim: SimFactory, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="kling_async")
    sim = await make_sim(faults=SLOW_CREATE)
    url = f"{redis_server.url}?journal=late"
    outcomes: list[JobOutcome] = []
    async with session_for(sim) as kling, RedisJournal(url) as other:

        async def run() -> None:
            outcomes.extend([o async for o in kling.generate_many([JOB], journal=url)])

        batch = asyncio.create_task(run())
        await eventually(lambda: sim.count("createTask") == 1, timeout=30)
        # While its createTask is on the wire, the worker stalls past its lease: another
        # worker takes the job over and, finding it creating, calls it unknown.
        async with aioredis.Redis.from_url(redis_server.url, decode_responses=True) as check:
            workers = "{kling_async:journal:late}:workers"
            await check.zadd(workers, dict.fromkeys(await check.zrange(workers, 0, -1), 0))
        assert await other.claim("k1") == CLAIMED
        await other.update("k1", status=UNKNOWN)
        await asyncio.wait_for(batch, timeout=60)
        (task_id,) = sim.tasks  # created, and paid for
        (outcome,) = outcomes
        assert isinstance(outcome.error, JournalError) and outcome.task_id == task_id
        assert task_id in str(outcome.error)
        assert any(task_id in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
        # The record the worker marked creating took the id all the same: the truth wins.
        record = await other.get("k1")
        assert record is not None and record.status == CREATED and record.task_id == task_id
        await other.update("k1", status=UNKNOWN)  # a late write cannot bury it again
        assert (await other.get("k1")).status == CREATED  # type: ignore[union-attr]
        assert await other.release("k1") == []
    # A rerun resumes that task instead of paying for another.
    async with session_for(sim) as kling:
        again = [o async for o in kling.generate_many([JOB], journal=url)]
    assert again[0].ok and again[0].task_id == task_id and len(sim.tasks) == 1


async def test_recording_a_created_task_is_tried_again_after_a_blip(
    make_sim: SimFactory, blackhole: Blackhole
) -> None:
    sim = await make_sim(faults=SLOW_CREATE)
    # Each call fails after two tries of 0.5 s; the blip outlasts one call, not the retries.
    journal = RedisJournal(blackhole.url, name="blip", lease=8.0, timeout=0.5)
    async with session_for(sim) as kling:

        async def run() -> list[JobOutcome]:
            return [o async for o in kling.generate_many([JOB], journal=journal)]

        batch = asyncio.create_task(run())
        await eventually(lambda: sim.count("createTask") == 1, timeout=30)
        blackhole.cut()
        await eventually(lambda: bool(sim.tasks), timeout=30)  # its answer is on its way
        await asyncio.sleep(1.5)  # the scenario: the first write of "created" fails
        blackhole.heal()
        (outcome,) = await asyncio.wait_for(batch, timeout=60)
    assert outcome.ok, outcome.error
    assert outcome.task_id in sim.tasks and len(sim.tasks) == 1


async def test_a_claim_redis_cannot_answer_is_asked_again_for_about_a_lease(
    blackhole: Blackhole,
) -> None:
    async with RedisJournal(blackhole.url, name="claims", lease=3.0, timeout=30.0) as journal:
        assert await journal.claim("a") == CLAIMED
        blackhole.cut()
        # Every call ends within a quarter lease, whatever ``timeout`` asked for.
        started = time.monotonic()
        with pytest.raises(JournalError, match="cannot record job a"):
            await journal.update("a", error="x")
        assert time.monotonic() - started < 3.0
        claiming = asyncio.create_task(journal.claim("b"))
        await asyncio.sleep(1.0)  # the scenario: a blip of 1 s
        assert not claiming.done()
        blackhole.heal()
        assert await asyncio.wait_for(claiming, timeout=30) == CLAIMED
        blackhole.cut()
        started = time.monotonic()
        with pytest.raises(JournalError, match="cannot claim job c"):
            await asyncio.wait_for(journal.claim("c"), timeout=60)
        assert time.monotonic() - started >= 2.0  # about a lease, not at once
        blackhole.heal()


async def test_a_worker_stops_when_the_batch_records_are_gone_from_redis(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with aioredis.Redis.from_url(redis_server.url, decode_responses=True) as admin:
        async with RedisJournal(redis_server.url, name="gone") as a:
            assert await a.claim("a") == CLAIMED
            await a.update("a", status=CREATING)
            await admin.flushdb()  # a restart without persistence
            started = time.monotonic()
            with pytest.raises(JournalError, match="records are gone"):
                await a.claim("b")
            assert time.monotonic() - started < 10  # at once, not after a lease of retries
            with pytest.raises(JournalError, match="records are gone"):
                await a.update("a", status=CREATED, task_id="t")
        # One record evicted while the batch's statuses remain: never started over.
        async with RedisJournal(redis_server.url, name="evicted") as b:
            assert await b.claim("x") == CLAIMED
            await b.update("x", status=CREATING)
            await admin.delete("{kling_async:journal:evicted}:job:x")
            with pytest.raises(JournalError, match="records are gone"):
                await b.claim("x")
        # The batch's marker evicted: a worker joining later refuses too.
        await admin.delete("{kling_async:journal:evicted}:batch")
        async with RedisJournal(redis_server.url, name="evicted") as c:
            with pytest.raises(JournalError, match="records are gone"):
                await c.claim("y")
        # A Redis that may evict keys is said once.
        await admin.config_set("maxmemory-policy", "allkeys-lru")
        caplog.set_level(logging.WARNING, logger="kling_async")
        for _ in range(2):
            async with RedisJournal(redis_server.url, name="lru"):
                pass
    assert sum("maxmemory-policy allkeys-lru" in r.getMessage() for r in caplog.records) == 1


async def test_writes_for_one_job_land_in_the_order_they_were_asked(
    redis_server: RedisServer,
) -> None:
    async with RedisJournal(redis_server.url, name="order") as journal:
        assert await journal.claim("j") == CLAIMED
        writes = [asyncio.ensure_future(journal.update("j", error=f"{n}")) for n in range(40)]
        await asyncio.gather(*writes)
        assert (await journal.get("j")).error == "39"  # type: ignore[union-attr]


def test_no_output_showed_a_key_or_a_password() -> None:
    assert_no_key_was_printed()
