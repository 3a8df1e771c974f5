"""Many jobs at once: lazy pulling, bounded pending and running jobs, one outcome per job.

Owns the batch's job tasks (each one job of :mod:`kling_async.batch.runner`), the task that pulls
the caller's jobs, and how leaving early works: stop pulling, cancel the jobs, wait for createTask
calls on the wire to be recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from ..errors import ConfigurationError, JournalError, SessionClosedError
from ..jobs import Job, JobEventKind, JobOutcome
from ..journal import BUSY, CLAIMED
from .runner import JobRunner, log

__all__ = ["BatchRun", "JobItem", "run_many"]

#: What a batch takes: a job, or a row to make one from (see ``Job.from_row``).
JobItem = Job | Mapping[str, Any]


async def _iterate(
    jobs: Iterable[JobItem] | AsyncIterable[JobItem],
) -> AsyncGenerator[JobItem, None]:
    if isinstance(jobs, AsyncIterable):
        iterator = aiter(jobs)
        try:
            async for job in iterator:
                yield job
        finally:
            # An async generator of the caller's is finished when the batch stops taking from
            # it, so its ``finally`` runs then, not whenever it is garbage-collected.
            if inspect.isasyncgen(iterator):
                await iterator.aclose()
    else:
        for job in jobs:
            yield job


def _job_of(item: object, place: int) -> Job:
    """The job ``item`` is or describes; ``ConfigurationError`` if it makes none."""
    try:
        job = item if isinstance(item, Job) else Job.from_row(item)  # type: ignore[arg-type]
        job.job_key  # noqa: B018 - a key that cannot be made is the row's fault, said here
    except ConfigurationError:
        raise
    except Exception as exc:  # a value of a kind no job takes: the row's outcome, not the batch's
        raise ConfigurationError(f"item {place} of the batch makes no job: {exc}") from None
    return job


def _key_of_item(item: object, place: int) -> str:
    key = item.get("key") if isinstance(item, Mapping) else None
    return key if isinstance(key, str) and key else f"#{place}"


class _NotAllTaken(Exception):
    """The session closed before the caller's jobs were all taken."""

    def __init__(self, last_key: str | None) -> None:
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
    ``ConfigurationError``; so does an item that cannot be made into a job (its outcome has
    no ``job``, but the ``row``), before anything of it is uploaded. Leaving early (``aclose``,
    an error, cancellation) stops pulling jobs, cancels their work, and waits for createTask
    calls on the wire to be recorded. If the session closes under the batch, no more jobs are
    taken (even while the caller's iterable is waiting); the jobs taken end with
    ``SessionClosedError`` outcomes, then the iteration raises ``SessionClosedError``.

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

    started = 0  # outcomes to deliver
    last_key: str | None = None  # the last job taken
    closed_under_us = False

    async def refuse(item: object, error: ConfigurationError, place: int) -> None:
        nonlocal started
        key = _key_of_item(item, place)
        started += 1
        row = item if isinstance(item, Mapping) else None
        outcomes.put_nowait(JobOutcome(None, error=error, job_key=key, row=row))
        await runner.emit(JobEventKind.FAILED, key, error=error, detail=str(error))

    async def start(job: Job) -> bool:
        """Start ``job`` if this worker gets it; False if another worker holds it."""
        nonlocal started
        await pending.acquire()
        try:  # a claim Redis does not answer is asked again by the journal, for about a lease
            verdict = await journal.claim(job.job_key) if journal is not None else CLAIMED
        except BaseException:
            pending.release()
            raise
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
        nonlocal started, last_key
        held: list[Job] = []
        waiting: Job | None = None  # taken from the caller, not started yet
        place = 0
        try:
            async with contextlib.aclosing(_iterate(jobs)) as items:
                async for item in items:
                    place += 1
                    try:
                        job = _job_of(item, place)
                    except ConfigurationError as exc:
                        await refuse(item, exc, place)
                        continue
                    key = last_key = job.job_key
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
                    waiting = job
                    if not await start(job):
                        held.append(job)
                    waiting = None
            if held:
                await taken_over(held)
            outcomes.put_nowait(None)
        except asyncio.CancelledError:
            if not closed_under_us:
                raise
            # Stopped by the session's close (this task is ours): tell the caller, then end.
            if waiting is not None:
                started += 1
                unstarted = SessionClosedError(
                    f"job {waiting.job_key} was not started: the session closed"
                )
                outcomes.put_nowait(JobOutcome(waiting, error=unstarted))
            outcomes.put_nowait(_NotAllTaken(last_key))
        except Exception as exc:  # the caller's iterable failed: stop and tell them
            outcomes.put_nowait(exc)

    producer = asyncio.create_task(produce(), name="kling batch producer")

    def stop_taking(_: object) -> None:
        nonlocal closed_under_us
        if not producer.done():
            closed_under_us = True
            producer.cancel()

    # The session's close ends the taking of jobs, wherever the producer waits (the caller's
    # iterable, a free slot, a claim).
    watcher = asyncio.create_task(runner.session.until_closed(), name="kling batch close watch")
    watcher.add_done_callback(stop_taking)
    exhausted = False
    stopped: _NotAllTaken | None = None
    delivered = 0
    try:
        while not (exhausted and delivered == started):
            item = await outcomes.get()
            if item is None:
                exhausted = True
                continue
            if isinstance(item, _NotAllTaken):
                stopped, exhausted = item, True
                continue
            if isinstance(item, BaseException):
                raise item
            delivered += 1
            yield item
        if stopped is not None:
            after = f" after {stopped.last_key}" if stopped.last_key else ""
            raise SessionClosedError(
                f"the session closed during the batch; any jobs{after} were not taken "
                "from the iterable"
            )
    finally:
        watcher.remove_done_callback(stop_taking)
        watcher.cancel()
        producer.cancel()
        for task in list(active):
            task.cancel()
        await asyncio.gather(watcher, producer, *active, return_exceptions=True)
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
