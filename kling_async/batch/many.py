"""Many jobs at once: lazy pulling, bounded pending and running jobs, one outcome per job.

Owns the batch's job tasks (each one job of :mod:`kling_async.batch.runner`) and how leaving early
works: stop pulling, cancel the jobs, wait for createTask calls on the wire to be recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from types import TracebackType
from typing import Self

from ..errors import ConfigurationError, JournalError, SessionClosedError
from ..jobs import Job, JobEventKind, JobOutcome
from ..journal import BUSY, CLAIMED
from .runner import JobRunner, log

__all__ = ["BatchRun", "run_many"]


async def _iterate(jobs: Iterable[Job] | AsyncIterable[Job]) -> AsyncIterator[Job]:
    if isinstance(jobs, AsyncIterable):
        async for job in jobs:
            yield job
    else:
        for job in jobs:
            yield job


async def run_many(
    runner: JobRunner,
    jobs: Iterable[Job] | AsyncIterable[Job],
    *,
    max_pending: int,
    max_running: int | None,
) -> AsyncGenerator[JobOutcome, None]:
    """Run jobs concurrently, pulling them lazily; yield each outcome as its job ends.

    At most ``max_pending`` jobs are pulled but not yet created, and at most ``max_running``
    (if set) have a task the service is working on; a job's failure never stops the others.
    A job whose key repeats an earlier one of the batch ends at once with a
    ``ConfigurationError``. Leaving early (``aclose``, an error, cancellation) stops pulling
    jobs, cancels their work, and waits for createTask calls on the wire to be recorded.

    With a journal several workers share, each job is claimed first: a job another worker holds
    is asked about again after the others (it is run here if that worker dies), and one whose
    outcome another worker gave is skipped without an outcome here.
    """
    journal = runner.journal
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
                if journal is not None:
                    await finish(job.job_key)
                outcomes.put_nowait(outcome)

    async def finish(key: str) -> None:
        assert journal is not None
        try:
            await journal.finish(key)
        except JournalError as exc:  # the outcome stands; another worker may report it again
            log.warning("job %s: %s", key, exc)

    started = 0

    async def start(job: Job) -> bool:
        """Start ``job`` if this worker gets it; False if another worker holds it."""
        nonlocal started
        await pending.acquire()
        verdict = await journal.claim(job.job_key) if journal is not None else CLAIMED
        if verdict != CLAIMED:
            pending.release()
            return verdict != BUSY
        started += 1
        task = asyncio.create_task(one(job), name=f"kling job {job.job_key}")
        active.add(task)
        task.add_done_callback(active.discard)
        return True

    async def taken_over(held: list[Job]) -> None:
        """Ask again about jobs other workers held, until each is done or run here."""
        assert journal is not None
        while held:
            await asyncio.sleep(journal.recheck_interval)
            held = [job for job in held if not await start(job)]

    async def produce() -> None:
        nonlocal started
        try:
            held: list[Job] = []
            async for job in _iterate(jobs):
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
                    started += 1
                    outcomes.put_nowait(JobOutcome(job, error=error))
                    continue
                seen.add(key)
                if not await start(job):
                    held.append(job)
            if held:
                await taken_over(held)
            outcomes.put_nowait(None)
        except Exception as exc:  # the caller's iterable failed: stop and tell them
            outcomes.put_nowait(exc)

    producer = asyncio.create_task(produce(), name="kling batch producer")
    exhausted = False
    delivered = 0
    try:
        while not (exhausted and delivered == started):
            item = await outcomes.get()
            if item is None:
                exhausted = True
                continue
            if isinstance(item, BaseException):
                raise item
            delivered += 1
            yield item
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
