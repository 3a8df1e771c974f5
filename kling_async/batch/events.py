"""A job runner's reports: each step as a ``JobEvent`` to ``on_event``, and moving files' bytes.

``on_event`` may be plain or async (anything it returns that can be awaited is awaited, so a
Future's error is read); an error it raises is logged and the job goes on. Byte progress comes
from a transfer's relay (:mod:`kling_async.relay`), never from inside the transfer, throttled by
a :class:`~kling_async.jobs.ProgressGate`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..jobs import JobEvent, JobEventKind, ProgressGate
from ..relay import OnProgress

__all__ = ["EventReporter", "OnEvent", "TransferEvents"]

log = logging.getLogger("kling_async")

OnEvent = Callable[[JobEvent], Awaitable[None] | None]


class EventReporter:
    """Reports the steps of jobs to ``on_event``, and makes the progress events of transfers."""

    on_event: OnEvent | None
    #: Spaces progress events (injected: tests pass their own).
    _clock: Callable[[], float]

    async def emit(self, kind: JobEventKind, key: str, **fields: Any) -> None:
        """Report one step to ``on_event`` (plain or async); an error it raises is logged."""
        await self.send(JobEvent(kind, key, **fields))

    async def send(self, event: JobEvent, *, loud: bool = True) -> bool:
        """Give ``event`` to ``on_event``; False if it raised (logged: at DEBUG unless ``loud``)."""
        if self.on_event is None:
            return True
        try:
            result = self.on_event(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            what = (event.job_key, event.kind.value)
            # As every record of the library: named fields (some events come after the job).
            named = {"job_key": event.job_key, "task_id": event.task_id}
            if loud:
                log.exception(
                    "on_event raised for job %s (%s); the job goes on", *what, extra=named
                )
            else:
                log.debug(
                    "on_event raised again for job %s (%s)", *what, exc_info=True, extra=named
                )
            return False
        return True

    def transfer(self, kind: JobEventKind, key: str, path: Path, **fields: Any) -> TransferEvents:
        """The ``kind`` events (``UPLOADING``/``DOWNLOADING``) of one file of job ``key``."""
        return TransferEvents(self, kind, key, path, fields)


class TransferEvents:
    """One file's byte progress as events: throttled, and an error of ``on_event`` logged once.

    Its :attr:`on_progress` goes to an upload or a download, which calls it from its caller's
    relay: one report at a time, the last one before the transfer's call returns.
    """

    def __init__(
        self,
        reporter: EventReporter,
        kind: JobEventKind,
        key: str,
        path: Path,
        fields: dict[str, Any],
    ) -> None:
        self._reporter = reporter
        self._kind = kind
        self._key = key
        self._path = path
        self._fields = fields
        self._gate = ProgressGate()
        self._raised = False

    @property
    def on_progress(self) -> OnProgress | None:
        """The progress callback to give the transfer; None if nobody listens."""
        return self.report if self._reporter.on_event is not None else None

    async def report(self, done: int, total: int | None) -> None:
        """One progress report of the transfer: an event if the gate lets it through."""
        if self._gate.admit(done, total, self._reporter._clock()):
            await self._send(done, total)

    async def settle(self, size: int, *, timeout: float) -> None:
        """The transfer ended at ``size`` bytes: say so if no event did (no Content-Length).

        As with a relay's last report, a handler that takes longer than ``timeout`` over it is
        cancelled and logged: a hung progress handler never hangs the job.
        """
        if self._reporter.on_event is None or not self._gate.settle(size, self._reporter._clock()):
            return
        try:
            async with asyncio.timeout(timeout):
                await self._send(size, self._gate.total)
        except TimeoutError:
            log.warning(
                "on_event did not return within %g s for job %s (%s at %d bytes); it is "
                "cancelled and the job goes on",
                timeout,
                self._key,
                self._kind.value,
                size,
            )

    async def _send(self, done: int, total: int | None) -> None:
        event = JobEvent(
            self._kind, self._key, path=self._path, bytes=done, total=total, **self._fields
        )
        # Once per transfer at ERROR, with the traceback; then at DEBUG, not once per event.
        if not await self._reporter.send(event, loud=not self._raised):
            self._raised = True
