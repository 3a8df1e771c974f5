"""``RedisJournal``: one batch journal shared by several workers, each job claimed by one of them.

The same records and statuses as the SQLite journal (``pending → creating → created →
succeeded | failed``, or ``unknown``), kept in Redis so that workers on one machine or several,
fed the same jobs, split them. A worker claims a job before touching it (one Lua script, so two
workers never both get it) and keeps its claims alive with a heartbeat; a worker whose heartbeat
stops (killed, cut off) loses its claims after ``lease`` seconds, and another worker takes its
jobs over. A job found ``creating`` then is ``unknown``, never created again: only the worker
holding a job's claim, with its lease alive, may write its record, so a worker that lost its
claim (or stalled past its lease) can never send a createTask for it. Every Redis call ends within
a quarter of the lease, so one slow call never costs a live worker its claims.

A createTask answered after its worker lost the claim is paid for all the same: that worker may
still record the task's id (the record it marked ``creating`` takes it, whoever holds it now).

A "run" is every worker that overlaps another: a job whose outcome a worker of this run gave is
not run again by the others; a worker that starts when no other is alive starts a new run and
resumes the jobs like a rerun on a SQLite journal would.

Keep the Redis that holds a journal persistent (``appendonly yes``) and unable to evict
(``maxmemory-policy noeviction``): the records are the proof of what was paid for. Opening a
journal warns when Redis may evict keys; a worker that finds the batch's records gone (Redis
restarted without them, keys evicted) stops with ``JournalError`` rather than start jobs over.

Bounds: it records what the batch runner tells it; it knows nothing of HTTP or the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import secrets
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import attrs

from ..errors import ConfigurationError, JournalError
from ..journal import BUSY, CLAIMED, CREATED, CREATING, DONE, UNKNOWN, JournalRecord
from . import _journal_scripts as lua
from ._connect import ATTEMPTS, UNREACHABLE, connect, split_url

__all__ = ["RedisJournal"]

log = logging.getLogger("kling_async")

#: (Redis, journal) pairs already warned about: once per process is enough.
_WARNED: set[tuple[str, str]] = set()

#: How a record field is read back, by its annotation in JournalRecord (others are text).
_DECODE: dict[str, Any] = {
    "datetime | None": lambda text: datetime.fromtimestamp(float(text), UTC),
    "tuple[str, ...]": lambda text: tuple(json.loads(text)),
    "tuple[Path, ...]": lambda text: tuple(Path(p) for p in json.loads(text)),
    "float | None": float,
    "int | None": int,
}
_FIELDS = {field.name: field.type for field in attrs.fields(JournalRecord) if field.name != "key"}


def _encode(value: Any) -> str:
    if isinstance(value, datetime):
        return repr(value.timestamp())
    if isinstance(value, tuple | list):
        return json.dumps([str(v) for v in value])
    if isinstance(value, float):
        return repr(value)
    return str(value)


class RedisJournal:
    """A batch journal in Redis that several workers share; use as ``async with``.

    ``url`` is a ``redis://`` URL; ``name`` names the batch (several batches can share one
    Redis), ``lease`` is how long a worker's claims outlive its last heartbeat, and ``timeout``
    bounds each Redis call (a step that cannot be recorded fails with ``JournalError``); it is
    held to an eighth of the lease, so that every call (two tries at most) ends within a quarter
    of it. The URL may carry them as ``?journal=NAME&lease=SECONDS``.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        lease: float | None = None,
        timeout: float = 5.0,
    ) -> None:
        url, ours = split_url(url, frozenset({"journal", "lease"}))
        self.name = name or ours.get("journal") or "default"
        try:
            self.lease = float(lease if lease is not None else ours.get("lease", 30.0))
        except ValueError:
            raise ConfigurationError("the journal's lease must be a number of seconds") from None
        if not self.lease > 0:
            raise ConfigurationError(f"the journal's lease must be > 0 s; got {self.lease!r}")
        # A heartbeat is sent every quarter lease and each call ends within one: a worker keeps
        # its claims through one failed beat.
        self._bound = self.lease / 4
        self._redis = connect(url, min(timeout, self._bound / ATTEMPTS))
        where = self._redis.connection_pool.connection_kwargs  # never the password
        self._where = str([where.get(k) for k in ("host", "port", "path", "db")])
        self._tag = f"{{kling_async:journal:{self.name}}}"
        self._worker = secrets.token_hex(8)
        self._run_id: str | None = None
        self._batch = ""  # the batch's id, once joined
        self._lost: str | None = None
        self._claims: set[str] = set()
        #: The sender (worker and a nonce) of each job this worker marked creating.
        self._sent: dict[str, str] = {}
        self._writes: set[asyncio.Future[Any]] = set()
        self._tails: dict[str, asyncio.Future[Any]] = {}
        self._beat: asyncio.Task[None] | None = None
        self._claims_failing = False
        self._closed = False
        scripts = (lua.JOIN, lua.BEAT, lua.CLAIM, lua.UPDATE, lua.LAND, lua.FINISH, lua.LEAVE)
        (
            self._join,
            self._heartbeat,
            self._claim,
            self._update,
            self._land,
            self._finish,
            self._leave,
        ) = (self._redis.register_script(s) for s in scripts)
        self._release = self._redis.register_script(lua.RELEASE)

    def __repr__(self) -> str:
        return f"RedisJournal(name={self.name!r})"

    @property
    def recheck_interval(self) -> float:
        """Seconds between two claims on a job another worker holds."""
        return max(self.lease / 5, 0.05)

    def _key(self, *parts: str) -> str:
        return ":".join((self._tag, *parts))

    def _job(self, key: str) -> str:
        return self._key("job", key)

    async def _do(self, what: str, call: Any) -> Any:
        """Run one Redis call; a failure is a ``JournalError`` naming what could not be done."""
        if self._closed or self._lost is not None:
            if asyncio.iscoroutine(call):
                call.close()
            raise JournalError(self._lost or f"journal {self.name} is closed")
        try:
            async with asyncio.timeout(self._bound):
                result = await call
        except UNREACHABLE as exc:
            raise JournalError(
                f"journal {self.name}: cannot {what}: {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(result, str) and result == lua.LOST:
            raise self._lose()
        return result

    def _lose(self) -> JournalError:
        """Redis lost this batch's records: this worker stops for good (said once)."""
        if self._lost is None:
            self._lost = (
                f"journal {self.name}: its records are gone from Redis (restarted without "
                "persistence, or keys evicted); this worker stops rather than create jobs again. "
                "Keep that Redis persistent (appendonly yes) with maxmemory-policy noeviction"
            )
            log.error("%s", self._lost)
        return JournalError(self._lost)

    async def _write(self, key: str, step: Coroutine[Any, Any, Any]) -> Any:
        # One job's writes land in the order they were asked for, each after the one before.
        # Shielded: a write that was asked for still happens when its caller is cancelled, so a
        # recorded task id (or a claim) is never lost half-way; close() waits for it.
        done = asyncio.ensure_future(self._after(self._tails.get(key), step))
        self._tails[key] = done
        self._writes.add(done)
        done.add_done_callback(functools.partial(self._written, key))
        return await asyncio.shield(done)

    @staticmethod
    async def _after(previous: asyncio.Future[Any] | None, step: Coroutine[Any, Any, Any]) -> Any:
        if previous is not None:
            try:
                await asyncio.wait({previous})
            except BaseException:
                step.close()
                raise
        return await step

    def _written(self, key: str, done: asyncio.Future[Any]) -> None:
        self._writes.discard(done)
        if self._tails.get(key) is done:
            del self._tails[key]
        if not done.cancelled() and done.exception() is not None:
            log.debug("journal %s: a write failed: %s", self.name, done.exception())

    # -- lifecycle -----------------------------------------------------------------------------
    async def open(self) -> None:
        """Check that Redis answers, and warn if it may evict the journal's records."""
        await self._do("reach Redis", self._redis.ping())
        try:
            async with asyncio.timeout(self._bound):
                policy = (await self._redis.config_get("maxmemory-policy")).get("maxmemory-policy")
        except UNREACHABLE:  # CONFIG is often refused by managed Redis: nothing to tell then
            return
        seen = (self._where, self.name)
        if policy and policy != "noeviction" and seen not in _WARNED:
            _WARNED.add(seen)
            log.warning(
                "journal %s: this Redis may evict keys (maxmemory-policy %s): a journal record "
                "evicted is a job paid for twice. Set maxmemory-policy noeviction (and keep it "
                "persistent: appendonly yes)",
                self.name,
                policy,
            )

    async def close(self) -> None:
        """Let go of unfinished claims (another worker takes them at once) and disconnect."""
        if self._closed:
            return
        while self._writes:
            await asyncio.wait(set(self._writes))
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        try:
            if self._run_id is not None:
                keys = [self._key("workers"), *(self._job(k) for k in sorted(self._claims))]
                await self._do("let go of claims", self._leave(keys=keys, args=[self._worker]))
        except JournalError as exc:
            log.warning("%s; its claims end with their lease", exc)
        finally:
            self._closed = True
            await self._redis.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _joined(self) -> None:
        if self._run_id is not None:
            return
        keys = [self._key("workers"), self._key("run"), self._key("batch"), self._key("status")]
        args: list[str | float] = [self._worker, self.lease, secrets.token_hex(8)]
        run, batch = await self._do("join the batch", self._join(keys=keys, args=args))
        if run == lua.LOST:
            raise self._lose()
        self._run_id, self._batch = run, batch
        self._beat = asyncio.create_task(self._keep_alive(), name="kling journal heartbeat")

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        failing = False
        beat = loop.time()
        while True:
            # On a schedule: a slow beat does not push the next one back.
            beat = max(beat + self.lease / 4, loop.time())
            await asyncio.sleep(beat - loop.time())
            try:
                keys = [self._key("workers"), self._key("batch")]
                call = self._heartbeat(keys=keys, args=[self._worker, self.lease, self._batch])
                await self._do("renew this worker's claims", call)
            except JournalError as exc:
                if self._lost is not None:
                    return
                if not failing:
                    log.warning("%s; its jobs go to other workers if this lasts", exc)
                failing = True
            else:
                failing = False

    # -- the batch's side ----------------------------------------------------------------------
    async def claim(self, key: str) -> str:
        """Take job ``key`` for this worker: ``CLAIMED``, ``BUSY`` or ``DONE``.

        A claim Redis does not answer is asked again, backing off, for about a lease (a blip
        never ends the batch); past that, or at once if the batch's records are gone from Redis,
        it raises ``JournalError``.
        """
        loop = asyncio.get_running_loop()
        give_up, pause = loop.time() + self.lease, 0.05
        while True:
            try:
                await self._joined()
                verdict: str = await self._write(key, self._claim_job(key))
            except JournalError as exc:
                if self._lost is not None or self._closed or loop.time() + pause > give_up:
                    raise
                if not self._claims_failing:
                    log.warning("%s; asking again for up to %g s", exc, self.lease)
                    self._claims_failing = True
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.recheck_interval)
                continue
            self._claims_failing = False
            return verdict

    async def _claim_job(self, key: str) -> str:
        keys = [self._job(key), self._key("status"), self._key("workers"), self._key("run")]
        call = self._claim(keys=[*keys, self._key("batch")], args=[self._worker, key, self._batch])
        verdict = await self._do(f"claim job {key}", call)
        if verdict == CLAIMED:
            self._claims.add(key)
        return verdict if verdict in (CLAIMED, BUSY, DONE) else BUSY

    async def finish(self, key: str) -> None:
        """This worker gave job ``key``'s outcome: other workers of this run skip it."""
        self._claims.discard(key)
        keys = [self._job(key), self._key("run")]
        call = self._finish(keys=keys, args=[self._worker])
        await self._write(key, self._do(f"finish job {key}", call))

    async def get(self, key: str) -> JournalRecord | None:
        """The record of job ``key``, if any."""
        read = self._redis.hgetall(self._job(key))
        stored: dict[str, str] = await self._do(f"read job {key}", read)
        if not stored:
            return None
        values: dict[str, Any] = {}
        for name, kind in _FIELDS.items():
            if name in stored:
                values[name] = _DECODE.get(str(kind), str)(stored[name])
        return JournalRecord(key=key, **values)

    async def update(self, key: str, **fields: Any) -> None:
        """Record ``fields`` for job ``key`` (this worker must hold its claim, lease alive)."""
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise ValueError(f"not journal columns: {sorted(unknown)}")
        await self._joined()
        pairs = [(k, _encode(v)) for k, v in fields.items() if v is not None]
        gone = [k for k, v in fields.items() if v is None]
        sender = (
            f"{self._worker}:{secrets.token_hex(4)}" if fields.get("status") == CREATING else ""
        )
        args: list[str | int] = [self._worker, key, self._batch, sender, len(pairs)]
        args += [x for pair in pairs for x in pair] + gone
        keys = [self._job(key), self._key("status"), self._key("workers"), self._key("batch")]
        call = self._update(keys=keys, args=args)
        if await self._write(key, self._do(f"record job {key}", call)):
            if sender:
                self._sent[key] = sender
            return
        lapsed = f"journal {self.name}: job {key} is no longer this worker's (its claim lapsed)"
        task_id, sender = fields.get("task_id"), self._sent.get(key, "")
        if fields.get("status") == CREATED and task_id and sender:
            # The task exists: the record this worker marked creating takes its id all the same.
            keys = [self._job(key), self._key("status"), self._key("batch")]
            call = self._land(keys=keys, args=[sender, task_id, self._batch, key])
            if await self._write(key, self._do(f"record job {key}'s task", call)) == "landed":
                raise JournalError(
                    f"{lapsed}, but its task {task_id} is recorded: a rerun of the batch resumes "
                    "it (never release this job)"
                )
        raise JournalError(f"{lapsed}; another worker may have taken it over; nothing recorded")

    # -- the user's side -----------------------------------------------------------------------
    async def release(self, *keys: str) -> list[str]:
        """Let jobs whose submission is unknown be created again; return the keys released.

        Only jobs no live worker holds. Call it only after checking the service's console: a
        job released while its task does exist will be paid for twice.
        """
        released = []
        for key in keys:
            call = self._release(
                keys=[self._job(key), self._key("status"), self._key("workers")], args=[key]
            )
            if await self._write(key, self._do(f"release job {key}", call)):
                released.append(key)
        return released

    async def _statuses(self) -> dict[str, str]:
        found: dict[str, str] = {}
        scan = self._redis.hscan_iter(self._key("status"), count=1000)
        async for key, status in scan:
            found[key] = status
        return found

    async def keys(self, status: str) -> list[str]:
        """The keys of the jobs in ``status`` (``unknown``, say), sorted."""
        found = await self._do("list jobs", self._statuses())
        return sorted(key for key, value in found.items() if value == status)

    async def unresolved(self) -> list[str]:
        """The keys of jobs whose createTask may have made a task the journal does not know."""
        return sorted(await self.keys(UNKNOWN) + await self.keys(CREATING))

    async def counts(self) -> dict[str, int]:
        """How many jobs are in each status."""
        found = await self._do("count jobs", self._statuses())
        counts: dict[str, int] = {}
        for status in found.values():
            counts[status] = counts.get(status, 0) + 1
        return counts
