"""``RedisJournal``: one batch journal shared by several workers, each job claimed by one of them.

The same records and statuses as the SQLite journal (``pending → creating → created →
succeeded | failed``, or ``unknown``), kept in Redis so that workers on one machine or several,
fed the same jobs, split them. A worker claims a job before touching it (one Lua script, so two
workers never both get it) and keeps its claims alive with a heartbeat; a worker whose heartbeat
stops (killed, cut off) loses its claims after ``lease`` seconds, and another worker takes its
jobs over. A job found ``creating`` then is ``unknown``, never created again: only the worker
holding a job's claim may write its record, so a worker that lost its claim can never send a
createTask for it.

A "run" is every worker that overlaps another: a job whose outcome a worker of this run gave is
not run again by the others; a worker that starts when no other is alive starts a new run and
resumes the jobs like a rerun on a SQLite journal would.

Keep the Redis that holds a journal persistent (``appendonly yes``): the records are the proof of
what was paid for.

Bounds: it records what the batch runner tells it; it knows nothing of HTTP or the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

from ..errors import ConfigurationError, JournalError
from ..journal import BUSY, CLAIMED, CREATING, DONE, UNKNOWN, JournalRecord
from ._connect import NOW, UNREACHABLE, connect

__all__ = ["RedisJournal"]

log = logging.getLogger("kling_async")

# KEYS: workers, run. ARGV: worker, lease. A worker that finds nobody alive starts a new run.
_JOIN = (
    NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', at(now))
if redis.call('ZCARD', KEYS[1]) == 0 or not redis.call('GET', KEYS[2]) then
  redis.call('INCR', KEYS[2])
end
redis.call('ZADD', KEYS[1], at(now + tonumber(ARGV[2])), ARGV[1])
return redis.call('GET', KEYS[2])
"""
)

# KEYS: workers. ARGV: worker, lease.
_BEAT = NOW + "redis.call('ZADD', KEYS[1], at(now + tonumber(ARGV[2])), ARGV[1]) return 1"

# KEYS: job, statuses, workers, run. ARGV: worker, job key.
_CLAIM = (
    NOW
    + """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then
  local alive = redis.call('ZSCORE', KEYS[3], owner)
  if alive and tonumber(alive) > now then return 'busy' end
end
local run = redis.call('GET', KEYS[4])
if run and redis.call('HGET', KEYS[1], 'reported') == run then return 'done' end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'status', 'pending', 'updated', clock[1])
  redis.call('HSET', KEYS[2], ARGV[2], 'pending')
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
return 'claimed'
"""
)

# KEYS: job, statuses. ARGV: worker, job key, n, n (field, value) pairs, fields to delete.
# Only the worker holding the claim writes: one that lost it can never mark a job creating.
_UPDATE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[3])
for i = 4, 2 + 2 * n, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  if ARGV[i] == 'status' then redis.call('HSET', KEYS[2], ARGV[2], ARGV[i + 1]) end
end
for i = 4 + 2 * n, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
redis.call('HSET', KEYS[1], 'updated', redis.call('TIME')[1])
return 1
"""

# KEYS: job, run. ARGV: worker. The outcome was given: other workers of this run skip the job.
_FINISH = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'reported', redis.call('GET', KEYS[2]) or '0')
redis.call('HDEL', KEYS[1], 'owner')
return 1
"""

# KEYS: workers, then jobs. ARGV: worker. A worker leaving lets go of what it did not finish.
_LEAVE = """
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], 'owner') == ARGV[1] then redis.call('HDEL', KEYS[i], 'owner') end
end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""

# KEYS: job, statuses, workers. ARGV: job key. Only a job no live worker holds.
_RELEASE = (
    NOW
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'unknown' and status ~= 'creating' then return 0 end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner then
  local alive = redis.call('ZSCORE', KEYS[3], owner)
  if alive and tonumber(alive) > now then return 0 end
end
redis.call('HSET', KEYS[1], 'status', 'pending')
redis.call('HDEL', KEYS[1], 'error', 'owner', 'reported')
redis.call('HSET', KEYS[2], ARGV[1], 'pending')
return 1
"""
)

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


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """The URL without our own query settings (``journal``, ``lease``), and those settings."""
    parts = urlsplit(url)
    ours = {"journal", "lease"}
    query = parse_qsl(parts.query, keep_blank_values=True)
    rest = urlencode([(k, v) for k, v in query if k not in ours])
    return urlunsplit(parts._replace(query=rest)), {k: v for k, v in query if k in ours}


class RedisJournal:
    """A batch journal in Redis that several workers share; use as ``async with``.

    ``url`` is a ``redis://`` URL; ``name`` names the batch (several batches can share one
    Redis), ``lease`` is how long a worker's claims outlive its last heartbeat, and ``timeout``
    bounds each Redis call (a step that cannot be recorded fails with ``JournalError``). The URL
    may carry them as ``?journal=NAME&lease=SECONDS``.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        lease: float | None = None,
        timeout: float = 5.0,
    ) -> None:
        url, ours = _split_url(url)
        self.name = name or ours.get("journal") or "default"
        try:
            self.lease = float(lease if lease is not None else ours.get("lease", 30.0))
        except ValueError:
            raise ConfigurationError("the journal's lease must be a number of seconds") from None
        if not self.lease > 0:
            raise ConfigurationError(f"the journal's lease must be > 0 s; got {self.lease!r}")
        self._redis = connect(url, timeout)
        self._tag = f"{{kling_async:journal:{self.name}}}"
        self._worker = secrets.token_hex(8)
        self._run_id: str | None = None
        self._claims: set[str] = set()
        self._writes: set[asyncio.Future[Any]] = set()
        self._beat: asyncio.Task[None] | None = None
        self._closed = False
        scripts = (_JOIN, _BEAT, _CLAIM, _UPDATE, _FINISH, _LEAVE, _RELEASE)
        (
            self._join,
            self._heartbeat,
            self._claim,
            self._update,
            self._finish,
            self._leave,
            self._release,
        ) = (self._redis.register_script(s) for s in scripts)

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
        if self._closed:
            if asyncio.iscoroutine(call):
                call.close()
            raise JournalError(f"journal {self.name} is closed")
        try:
            return await call
        except UNREACHABLE as exc:
            raise JournalError(
                f"journal {self.name}: cannot {what}: {type(exc).__name__}: {exc}"
            ) from exc

    async def _write(self, step: Any) -> Any:
        # Shielded: a write that was asked for still happens when its caller is cancelled, so a
        # recorded task id (or a claim) is never lost half-way; close() waits for it.
        done = asyncio.ensure_future(step)
        self._writes.add(done)
        done.add_done_callback(self._written)
        return await asyncio.shield(done)

    def _written(self, done: asyncio.Future[Any]) -> None:
        self._writes.discard(done)
        if not done.cancelled() and done.exception() is not None:
            log.debug("journal %s: a write failed: %s", self.name, done.exception())

    # -- lifecycle -----------------------------------------------------------------------------
    async def open(self) -> None:
        """Check that Redis answers (a worker joins the batch with its first claim)."""
        await self._do("reach Redis", self._redis.ping())

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
        keys = [self._key("workers"), self._key("run")]
        self._run_id = await self._do(
            "join the batch", self._join(keys=keys, args=[self._worker, self.lease])
        )
        self._beat = asyncio.create_task(self._keep_alive(), name="kling journal heartbeat")

    async def _keep_alive(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.lease / 4)
            try:
                call = self._heartbeat(keys=[self._key("workers")], args=[self._worker, self.lease])
                await self._do("renew this worker's claims", call)
            except JournalError as exc:
                if not failing:
                    log.warning("%s; its jobs go to other workers if this lasts", exc)
                failing = True
            else:
                failing = False

    # -- the batch's side ----------------------------------------------------------------------
    async def claim(self, key: str) -> str:
        """Take job ``key`` for this worker: ``CLAIMED``, ``BUSY`` or ``DONE``."""
        await self._joined()
        verdict: str = await self._write(self._claim_job(key))
        return verdict

    async def _claim_job(self, key: str) -> str:
        keys = [self._job(key), self._key("status"), self._key("workers"), self._key("run")]
        call = self._claim(keys=keys, args=[self._worker, key])
        verdict = await self._do(f"claim job {key}", call)
        if verdict == CLAIMED:
            self._claims.add(key)
        return verdict if verdict in (CLAIMED, BUSY, DONE) else BUSY

    async def finish(self, key: str) -> None:
        """This worker gave job ``key``'s outcome: other workers of this run skip it."""
        self._claims.discard(key)
        keys = [self._job(key), self._key("run")]
        call = self._finish(keys=keys, args=[self._worker])
        await self._write(self._do(f"finish job {key}", call))

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
        """Record ``fields`` for job ``key`` (this worker must hold its claim)."""
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise ValueError(f"not journal columns: {sorted(unknown)}")
        pairs = [(k, _encode(v)) for k, v in fields.items() if v is not None]
        gone = [k for k, v in fields.items() if v is None]
        args: list[str | int] = [self._worker, key, len(pairs)]
        args += [x for pair in pairs for x in pair] + gone
        keys = [self._job(key), self._key("status")]
        call = self._update(keys=keys, args=args)
        written = await self._write(self._do(f"record job {key}", call))
        if not written:
            raise JournalError(
                f"journal {self.name}: job {key} is no longer this worker's (its claim lapsed "
                "and another worker took it over); nothing was recorded"
            )

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
            if await self._write(self._do(f"release job {key}", call)):
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
