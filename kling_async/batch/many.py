"""Many jobs at once: lazy pulling, bounded pending and running jobs, one outcome per job.

Owns the batch's job tasks (each one job of :mod:`kling_async.batch.runner`) and how leaving early
works: stop pulling, cancel the jobs, wait for createTask calls on the wire to be recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from ..errors import ConfigurationError, SessionClosedError
from ..jobs import Job, JobEventKind, JobOutcome
from .runner import JobRunner

__all__ = ["BatchRun", "JobItem", "run_many"]

#: What a batch takes: a job, or a row to make one from (see ``Job.from_row``).
JobItem = Job | Mapping[str, Any]


async def _iterate(
    jobs: Iterable[JobItem] | AsyncIterable[JobItem],
) -> AsyncIterator[JobItem]:
    if isinstance(jobs, AsyncIterable):
        async for job in jobs:
            yield job
    else:
        for job in jobs:
            yield job


class _NotAllPulled(Exception):
    """The producer stopped early: the session closed before the iterable was exhausted."""

    def __init__(self, last_key: str) -> None:
        super().__init__(last_key)
        self.last_key = last_key


async def run_many(
    runner: JobRunner,
    jobs: Iterable[JobItem] | AsyncIterable[JobItem],
    *,
    max_pending: int,
    max_running: int | None,
) -> AsyncGenerator[JobOutcome, None]:
    """Run jobs concurrently, pulling them lazily; yield each outcome as its job ends.

    At most ``max_pending`` jobs are pulled but not yet created, and at most ``max_running``
    (if set) have a task the service is working on; a job's failure never stops the others.
    A job whose key repeats an earlier one of the batch ends at once with a
    ``ConfigurationError``; so does a row that cannot be made into a job (its outcome has
    no ``job``, but the ``row``), before anything of it is uploaded. Leaving early (``aclose``,
    an error, cancellation) stops pulling jobs, cancels their work, and waits for createTask
    calls on the wire to be recorded.
    """
    pending = asyncio.Semaphore(max_pending)
    running = asyncio.Semaphore(max_running) if max_running else None
    outcomes: asyncio.Queue[JobOutcome | BaseException | None] = asyncio.Queue()
    active: set[asyncio.Task[None]] = set()
    seen: set[str] = set()

    async def one(job: Job) -> None:
        released = False
        holds_running = False
        outcome: JobOutcome | None = None

        def release_pending() -> None:
            nonlocal released
            if not released:
                released = True
                pending.release()

        async def acquire_running() -> None:
            nonlocal holds_running
            if running is not None:
                await running.acquire()
                holds_running = True

        try:
            result = await runner.run(
                job, before_create=acquire_running, after_create=release_pending
            )
            outcome = JobOutcome(job, result=result, task_id=result.task.task_id)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is None or current.cancelling():
                raise  # the batch itself is stopping
            # Cancelled from elsewhere (the session closed under the batch): an outcome too.
            error = SessionClosedError(f"job {job.job_key} ended: the session closed")
            outcome = JobOutcome(job, error=error)
        except Exception as exc:  # one job's failure is its outcome, never the batch's
            outcome = JobOutcome(job, error=exc, task_id=getattr(exc, "task_id", None))
            await runner.emit(
                JobEventKind.FAILED,
                job.job_key,
                task_id=outcome.task_id,
                error=exc,
                detail=str(exc),
            )
        finally:
            release_pending()
            if holds_running and running is not None:
                running.release()
            if outcome is not None:
                outcomes.put_nowait(outcome)

    started = 0

    async def _refuse_row(row: Mapping[str, Any], error: ConfigurationError, place: int) -> None:
        key = row.get("key")
        key = key if isinstance(key, str) and key else f"#{place}"
        outcomes.put_nowait(JobOutcome(None, error=error, job_key=key, row=row))
        await runner.emit(JobEventKind.FAILED, key, error=error, detail=str(error))

    async def produce() -> None:
        nonlocal started
        try:
            async for item in _iterate(jobs):
                started += 1
                if isinstance(item, Job):
                    job = item
                else:
                    try:
                        job = Job.from_row(item)
                    except ConfigurationError as exc:
                        await _refuse_row(item, exc, started)
                        continue
                key = job.job_key
                if key in seen:
                    what = (
                        f"job key {key!r}"
                        if job.key is not None
                        else f"a job with the same inputs (default key {key!r})"
                    )
                    error = ConfigurationError(
                        f"{what} appears twice in this batch; the repeat is not run "
                        "(give each job a key of its own)"
                    )
                    outcomes.put_nowait(JobOutcome(job, error=error))
                    continue
                seen.add(key)
                await pending.acquire()
                if runner.session.closed:
                    # Pull no more of the caller's jobs into a session that can run none; the
                    # caller hears it after the outcomes of the jobs that were started.
                    pending.release()
                    closed = SessionClosedError(f"job {key} was not started: the session closed")
                    outcomes.put_nowait(JobOutcome(job, error=closed))
                    outcomes.put_nowait(_NotAllPulled(key))
                    return
                task = asyncio.create_task(one(job), name=f"kling job {key}")
                active.add(task)
                task.add_done_callback(active.discard)
            outcomes.put_nowait(None)
        except Exception as exc:  # the caller's iterable failed: stop and tell them
            outcomes.put_nowait(exc)

    producer = asyncio.create_task(produce(), name="kling batch producer")
    exhausted = False
    stopped: _NotAllPulled | None = None
    delivered = 0
    try:
        while not (exhausted and delivered == started):
            item = await outcomes.get()
            if item is None:
                exhausted = True
                continue
            if isinstance(item, _NotAllPulled):
                stopped, exhausted = item, True
                continue
            if isinstance(item, BaseException):
                raise item
            delivered += 1
            yield item
        if stopped is not None:
            raise SessionClosedError(
                f"the session closed during the batch; any jobs after {stopped.last_key} "
                "were not taken from the iterable"
            )
    finally:
        producer.cancel()
        for task in list(active):
            task.cancel()
        await asyncio.gather(producer, *active, return_exceptions=True)
        # A createTask on the wire lands in the journal before the batch lets it go.
        await runner.landed()


class BatchRun:
    """The outcomes of ``generate_many``, as its jobs end.

    Iterate with ``async for``. To leave early, use ``async with kling.generate_many(...) as
    outcomes:`` (or call :meth:`aclose`): the batch then stops at once, lets createTask calls on
    the wire land in the journal, and releases the journal before the block ends.
    """

    def __init__(self, outcomes: AsyncGenerator[JobOutcome, None]) -> None:
        self._outcomes = outcomes

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> JobOutcome:
        return await self._outcomes.__anext__()

    async def aclose(self) -> None:
        """Stop the batch: no new jobs, running ones cancelled, their creations recorded."""
        await self._outcomes.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
