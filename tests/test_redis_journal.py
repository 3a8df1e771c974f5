"""RedisJournal against a real redis-server: records, claims, leases, runs, release, the CLI."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from kling_async import Job, JournalError
from kling_async.journal import BUSY, CLAIMED, CREATING, DONE, PENDING, UNKNOWN, JournalRecord
from kling_async.redis import RedisJournal

from .cli_run import cli
from .conftest import MEDIA, SimFactory, session_for
from .redis_server import RedisServer


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
        with pytest.raises(JournalError, match="another worker took it over"):
            await a.update("j", status=PENDING)
        assert (await b.get("j")).status == CREATING  # type: ignore[union-attr]


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
    url = f"{redis_server.url}?journal=cli"
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
    code, text = await cli("unknown", url)
    assert code == 0 and text.strip() == f"no unknown jobs in {url}"
    code, text = await cli("release", url, "c0")
    assert code == 1 and "not released" in text
