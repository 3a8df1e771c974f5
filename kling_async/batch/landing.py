"""createTask calls that outlive their job: recorded and told in steps the runner owns.

A job cancelled (Ctrl-C, a closed batch) while its createTask is on the wire, or while the task
it just made is being recorded, goes away; the task may exist and be paid for all the same. The
steps here finish for it: the answer lands, the journal records it, the task id is logged, and
``on_event`` hears of the task (``CREATED``, or ``RESUMED`` for an earlier run's task found by
its callback), so a caller without a journal can still name it. The batch waits for them
(:meth:`Landings.landed`, bounded) before its journal closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ..errors import KlingError
from ..jobs import JobEventKind
from ..journal import PENDING, UNKNOWN, BatchJournal, record_task
from ..submission import Submission

__all__ = ["Landings"]

log = logging.getLogger("kling_async")

Emit = Callable[..., Awaitable[None]]


class Landings:
    """The runner's steps that outlive a cancelled job, owned here until they end.

    ``emit`` reports an event (the runner's); ``bound`` (seconds, the request timeout) caps
    how long a late ``CREATED`` (or ``RESUMED``) may keep ``on_event`` busy while the batch
    stops.
    """

    def __init__(self, journal: BatchJournal | None, emit: Emit, bound: float) -> None:
        self.journal = journal
        self._emit = emit
        self._bound = bound
        # Each step, the job it finishes for, and the createTask call it waits on (if any).
        self._steps: dict[asyncio.Future[None], tuple[str, Submission | None]] = {}

    def own(
        self, key: str, step: Coroutine[Any, Any, None], sub: Submission | None = None
    ) -> asyncio.Future[None]:
        """Run ``step`` for job ``key`` in a task of the runner's, which a job's cancel spares."""
        task = asyncio.ensure_future(step)
        self._steps[task] = (key, sub)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, step: asyncio.Future[None]) -> None:
        key, _ = self._steps.pop(step, ("?", None))
        failure = None if step.cancelled() else step.exception()
        # A journal's refusal is told (and logged with the task id) where it is awaited; any
        # other failure would go unread: said here.
        if failure is not None and not isinstance(failure, KlingError):
            log.error("job %s: recording its createTask failed", key, exc_info=failure)

    async def landed(self) -> None:
        """Wait until every step left by a cancelled job has ended."""
        # A call still waiting for its rate slot was never sent: it is not waited on for long.
        jobs = {key for key, sub in self._steps.values() if sub is None or sub.sent or sub.task_id}
        if jobs:
            calls = "createTask call" if len(jobs) == 1 else "createTask calls"
            log.warning(
                "stopping: waiting for %d %s of cancelled jobs to be recorded (at most about "
                "%g s); a second interrupt leaves those jobs unknown",
                len(jobs),
                calls,
                2 * self._bound,  # the answer's landing, then on_event hearing of it
            )
        while self._steps:
            await asyncio.wait(set(self._steps))

    async def record_created(
        self, key: str, task_id: str, kind: JobEventKind = JobEventKind.CREATED
    ) -> None:
        """Record job ``key``'s task; if the job is cancelled meanwhile, ``kind`` still tells it."""
        recording = self.own(key, record_task(self.journal, key, task_id))
        try:
            await asyncio.shield(recording)
        except asyncio.CancelledError:
            # The job goes away with its task made and paid for. Said here first: a second
            # interrupt may cancel what follows before it runs.
            log.warning("job %s: cancelled while its task %s was being recorded", key, task_id)
            self.own(key, self._tell(key, task_id, kind, after=recording))
            raise

    def land(self, key: str, sub: Submission) -> None:
        """Job ``key`` was cancelled with ``sub`` on the wire: record how it ends, and tell."""
        self.own(key, self._land(key, sub), sub)

    async def _land(self, key: str, sub: Submission) -> None:
        try:
            await sub.settled()
            if sub.task_id is not None:
                # Said first (and loud enough to be seen): a second interrupt may end the rest.
                log.warning("job %s: task %s landed after the batch stopped", key, sub.task_id)
                try:
                    await record_task(self.journal, key, sub.task_id)
                finally:
                    await self._tell(key, sub.task_id, JobEventKind.CREATED)
            elif sub.sent:
                log.warning("job %s: its createTask was on the wire, never answered: unknown", key)
                stopped = "the batch stopped while createTask was on the wire"
                await self._record(key, status=UNKNOWN, error=stopped)
            else:  # never sent (or surely refused): nothing exists, the job may run again
                unsent = "the batch stopped before it was sent"
                await self._record(key, status=PENDING, error=unsent)
        except KlingError as exc:  # the journal closed under us (a second Ctrl-C): say what
            log.error("job %s: could not record how its createTask ended: %s", key, exc)

    async def _tell(
        self,
        key: str,
        task_id: str,
        kind: JobEventKind,
        after: asyncio.Future[None] | None = None,
    ) -> None:
        """Tell ``on_event`` of the task of a job that is gone, then read its record's end."""
        try:
            async with asyncio.timeout(self._bound):
                await self._emit(kind, key, task_id=task_id)
        except TimeoutError:
            log.warning(
                "job %s: on_event was still busy with task %s after %g s", key, task_id, self._bound
            )
        if after is not None:
            await asyncio.wait({after})
            if not after.cancelled():
                after.exception()  # read: a refused record was logged with its task id

    async def _record(self, key: str, **fields: Any) -> None:
        if self.journal is not None:
            await self.journal.update(key, **fields)
