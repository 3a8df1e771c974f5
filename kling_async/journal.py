"""A crash-safe journal of a batch in SQLite: what was uploaded, created, finished, downloaded.

Each step is committed before the next begins, and the task id is written **before** the wait
starts, so a rerun after a crash, Ctrl-C or ``kill -9`` resumes the same tasks instead of paying
for new ones. A job is marked ``creating`` just before its createTask is sent: if the process dies
before the answer is recorded, the rerun reports it as unknown rather than creating it again.

All SQLite work runs on one private thread, off the event loop. The journal holds an exclusive
lock while open, so a second batch on the same file gets :class:`JournalLockedError`.
:class:`BatchJournal` is what the batch asks of any journal; ``kling_async.redis.RedisJournal``
is one several workers share.

Bounds: it knows nothing of HTTP or the service; it records what the batch runner tells it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import attrs

from .errors import JournalError, JournalLockedError

__all__ = [
    "BatchJournal",
    "Journal",
    "JournalLockedError",
    "JournalRecord",
    "record_task",
    "release_jobs",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    image_url TEXT,
    image_expires REAL,
    video_url TEXT,
    video_expires REAL,
    task_id TEXT,
    state TEXT,
    result_urls TEXT,
    files TEXT,
    error TEXT,
    updated REAL NOT NULL,
    callback_token TEXT,
    fail_code TEXT,
    credits REAL,
    model TEXT
)
"""

#: Bumped when the table changes; a journal from a newer version is refused, not misread.
SCHEMA_VERSION = 4
#: How an older journal is brought up to date, by the version it has.
_MIGRATIONS = {
    1: ("ALTER TABLE jobs ADD COLUMN callback_token TEXT",),
    2: ("ALTER TABLE jobs ADD COLUMN fail_code TEXT", "ALTER TABLE jobs ADD COLUMN credits REAL"),
    3: ("ALTER TABLE jobs ADD COLUMN model TEXT",),
}

_COLUMNS = frozenset(
    {
        "status",
        "image_url",
        "image_expires",
        "video_url",
        "video_expires",
        "task_id",
        "state",
        "result_urls",
        "files",
        "error",
        "callback_token",
        "fail_code",
        "credits",
        "model",
    }
)

log = logging.getLogger("kling_async")

# Job statuses, in the order a job normally goes through them.
PENDING = "pending"
CREATING = "creating"
CREATED = "created"
SUCCEEDED = "succeeded"
FAILED = "failed"
UNKNOWN = "unknown"

# What a claim on a job finds (see BatchJournal.claim).
CLAIMED = "claimed"
BUSY = "busy"
DONE = "done"


@attrs.frozen
class JournalRecord:
    """What the journal knows about one job."""

    key: str
    status: str
    image_url: str | None = None
    image_expires: datetime | None = None
    video_url: str | None = None
    video_expires: datetime | None = None
    task_id: str | None = None
    state: str | None = None
    result_urls: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()
    error: str | None = None
    #: The token of the job's last createTask callback URL (to match a late callback).
    callback_token: str | None = None
    #: The service's ``failCode`` of a failed task.
    fail_code: str | None = None
    #: Credits the service says the task consumed (a finished task), or None.
    credits: float | None = None
    #: The model the job's task was created with (None in journals older than schema 4).
    model: str | None = None


def _when(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class Journal:
    """Per-job records of a batch in one SQLite file; use as ``async with Journal(path)``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kling-journal")
        self._db: sqlite3.Connection | None = None
        self._closed = False

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            done = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except RuntimeError as exc:  # the journal's thread was shut down: it is closed
            raise JournalError(f"journal {self.path} is closed") from exc
        # A caller that was cancelled never reads the outcome: read it here, so a failed write
        # is logged rather than lost as "exception never retrieved".
        done.add_done_callback(self._retrieved)
        try:
            # Shielded: a write that was queued still happens when its caller is cancelled, so
            # a recorded task id is never lost half-way; the thread runs writes in order.
            return await asyncio.shield(done)
        except (sqlite3.Error, OSError) as exc:
            # A full disk, a file removed underneath, a corrupt page, a folder that is a file:
            # one error class for all.
            raise JournalError(f"journal {self.path}: {type(exc).__name__}: {exc}") from exc

    def _retrieved(self, done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.warning("journal %s: a write failed: %s", self.path, done.exception())

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            # Taking the write lock now makes a second batch fail at once, not corrupt anything.
            db.execute("BEGIN EXCLUSIVE")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                db.execute("ROLLBACK")
                raise JournalError(
                    f"journal {self.path} was written by a newer kling_async "
                    f"(schema {version}); upgrade to resume it"
                )
            tables = db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'jobs'")
            if tables.fetchone()[0] and version < SCHEMA_VERSION:
                for step in range(max(version, 1), SCHEMA_VERSION):
                    for statement in _MIGRATIONS[step]:
                        db.execute(statement)
            db.execute(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
            # One fsync per step (of the write-ahead log): a step survives even a power cut.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
        except sqlite3.OperationalError as exc:
            db.close()
            if "locked" in str(exc):
                raise JournalLockedError(
                    f"journal {self.path} is in use by another batch; wait for it to finish"
                ) from None
            raise JournalError(f"journal {self.path} cannot be opened: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            db.close()
            raise JournalError(f"journal {self.path} is not a usable SQLite file: {exc}") from exc
        self._db = db

    async def open(self) -> None:
        """Open (creating if needed) and lock the journal."""
        try:
            await self._run(self._open_sync)
        except asyncio.CancelledError:
            # The open goes on in the journal's thread: close behind it (and wait for that),
            # or the lock would outlive the cancelled batch.
            closing = asyncio.get_running_loop().run_in_executor(self._executor, self._close_sync)
            self._closed = True
            self._executor.shutdown(wait=False)
            await asyncio.shield(closing)
            raise

    def _close_sync(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            db.close()

    async def close(self) -> None:
        """Release the lock and close the file, after every write already asked for."""
        if self._closed:
            return
        self._closed = True
        # In the journal's thread, in order: writes queued before the close still happen.
        closing = asyncio.get_running_loop().run_in_executor(self._executor, self._close_sync)
        closing.add_done_callback(self._retrieved)
        self._executor.shutdown(wait=False)
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            # Cancelled while closing: the lock must still be gone before the caller goes on,
            # or a rerun started right after finds the journal "in use".
            await asyncio.wait({closing})
            raise
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"journal {self.path}: {type(exc).__name__}: {exc}") from exc

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

    def _db_or_fail(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError("the journal is not open")
        return self._db

    def _get_sync(self, key: str) -> JournalRecord | None:
        row = (
            self._db_or_fail()
            .execute(
                "SELECT key, status, image_url, image_expires, video_url, video_expires, task_id, "
                "state, result_urls, files, error, callback_token, fail_code, credits, model "
                "FROM jobs WHERE key = ?",
                (key,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return JournalRecord(
            key=row[0],
            status=row[1],
            image_url=row[2],
            image_expires=_when(row[3]),
            video_url=row[4],
            video_expires=_when(row[5]),
            task_id=row[6],
            state=row[7],
            result_urls=tuple(json.loads(row[8] or "[]")),
            files=tuple(Path(p) for p in json.loads(row[9] or "[]")),
            error=row[10],
            callback_token=row[11],
            fail_code=row[12],
            credits=row[13],
            model=row[14],
        )

    async def get(self, key: str) -> JournalRecord | None:
        """The record of job ``key``, if any."""
        result: JournalRecord | None = await self._run(self._get_sync, key)
        return result

    def _update_sync(self, key: str, fields: dict[str, Any]) -> None:
        db = self._db_or_fail()
        unknown = set(fields) - _COLUMNS
        if unknown:
            raise ValueError(f"not journal columns: {sorted(unknown)}")
        values = dict(fields)
        for name in ("image_expires", "video_expires"):
            if isinstance(values.get(name), datetime):
                values[name] = values[name].timestamp()
        for name in ("result_urls", "files"):
            if name in values:
                values[name] = json.dumps([str(v) for v in values[name]])
        values["updated"] = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT OR IGNORE INTO jobs (key, status, updated) VALUES (?, ?, ?)",
                (key, PENDING, values["updated"]),
            )
            assignments = ", ".join(f"{name} = ?" for name in values)
            db.execute(f"UPDATE jobs SET {assignments} WHERE key = ?", (*values.values(), key))  # noqa: S608
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def update(self, key: str, **fields: Any) -> None:
        """Record ``fields`` for job ``key`` (created if new), committed before returning."""
        await self._run(self._update_sync, key, fields)

    def _release_sync(self, keys: tuple[str, ...]) -> list[str]:
        db = self._db_or_fail()
        released: list[str] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for key in keys:
                cursor = db.execute(
                    "UPDATE jobs SET status = ?, error = NULL, updated = ? "
                    "WHERE key = ? AND status IN (?, ?)",
                    (PENDING, time.time(), key, UNKNOWN, CREATING),
                )
                if cursor.rowcount:
                    released.append(key)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return released

    async def release(self, *keys: str) -> list[str]:
        """Let jobs whose submission is unknown be created again; return the keys released.

        Call it only after checking the service's console: a job released while its task does
        exist will be paid for twice.
        """
        result: list[str] = await self._run(self._release_sync, keys)
        return result

    def _keys_sync(self, status: str) -> list[str]:
        rows = self._db_or_fail().execute(
            "SELECT key FROM jobs WHERE status = ? ORDER BY key", (status,)
        )
        return [row[0] for row in rows]

    async def keys(self, status: str) -> list[str]:
        """The keys of the jobs in ``status`` (``unknown``, say), sorted."""
        result: list[str] = await self._run(self._keys_sync, status)
        return result

    async def unresolved(self) -> list[str]:
        """The keys of jobs whose createTask may have made a task the journal does not know."""
        return sorted(await self.keys(UNKNOWN) + await self.keys(CREATING))

    def _counts_sync(self) -> dict[str, int]:
        rows = self._db_or_fail().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {status: count for status, count in rows}

    async def counts(self) -> dict[str, int]:
        """How many jobs are in each status."""
        result: dict[str, int] = await self._run(self._counts_sync)
        return result

    async def claim(self, key: str) -> str:
        """Always ``CLAIMED``: the file's lock makes this batch its only worker."""
        return CLAIMED

    async def finish(self, key: str) -> None:
        """Nothing to do: no other worker shares this journal."""

    #: Never ``BUSY``, so never asked again.
    recheck_interval = 1.0


class BatchJournal(Protocol):
    """What a batch asks of a journal: records per job, and claims when workers share it.

    Used as ``async with journal:``. Several workers fed the same jobs split them by
    :meth:`claim`: ``CLAIMED`` (this worker runs the job now), ``BUSY`` (a live worker holds it:
    ask again every ``recheck_interval`` seconds, it may die) or ``DONE`` (a worker of this run
    gave its outcome already). :meth:`finish` says this worker gave the job's outcome.
    """

    @property
    def recheck_interval(self) -> float:
        """Seconds between two claims on a job another worker holds."""
        ...

    async def __aenter__(self) -> Self:
        """Open the journal."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the journal (after every write asked for), letting go of what it holds."""
        ...

    async def get(self, key: str) -> JournalRecord | None:
        """The record of job ``key``, if any."""
        ...

    async def update(self, key: str, **fields: Any) -> None:
        """Record ``fields`` for job ``key``, durably, before returning."""
        ...

    async def claim(self, key: str) -> str:
        """Take job ``key`` for this worker: ``CLAIMED``, ``BUSY`` or ``DONE``."""
        ...

    async def finish(self, key: str) -> None:
        """This worker gave job ``key``'s outcome: other workers of this run skip it."""
        ...

    async def release(self, *keys: str) -> list[str]:
        """Let jobs whose submission is unknown be created again; return the keys released."""
        ...

    async def keys(self, status: str) -> list[str]:
        """The keys of the jobs in ``status``, sorted."""
        ...

    async def unresolved(self) -> list[str]:
        """The keys of jobs whose createTask may have made a task the journal does not know."""
        ...

    async def counts(self) -> dict[str, int]:
        """How many jobs are in each status."""
        ...


async def record_task(
    journal: BatchJournal | None, key: str, task_id: str, *, attempts: int = 3, pause: float = 0.25
) -> None:
    """Record that job ``key``'s createTask made task ``task_id``; the id is never lost.

    The task exists and is paid for, so a failed write is tried again (``attempts`` in all,
    pausing ``pause`` seconds, then twice that); if the journal still refuses, the id is logged
    at ERROR and the ``JournalError`` raised carries it (``task_id``). No journal: nothing to do.
    """
    if journal is None:
        return
    for attempt in range(attempts):
        try:
            await journal.update(key, status=CREATED, task_id=task_id, error=None)
            return
        except JournalError as exc:
            failure = exc
            if attempt + 1 < attempts:
                await asyncio.sleep(pause * 2**attempt)
    log.error(
        "job %s: task %s was created (and is paid for), but the journal refused to record it "
        "as this job's: %s. Keep this task id: a job released and run again is paid twice",
        key,
        task_id,
        failure,
    )
    failure.task_id = task_id
    raise failure


async def release_jobs(path: str | os.PathLike[str], *keys: str) -> list[str]:
    """Open the journal at ``path`` and release jobs left ``unknown`` (see :meth:`Journal.release`).

    Also on the command line: ``python -m kling_async.journal release JOURNAL KEY...``.
    """
    async with Journal(path) as journal:
        return await journal.release(*keys)
