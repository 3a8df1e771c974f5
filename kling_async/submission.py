"""Where one createTask call stands: not sent, sent (the task may exist), created, or refused.

A createTask costs money and is not idempotent, so the client must always know whether its
request may have reached the service. :class:`Submission` is that knowledge, kept up to date by
the session while the call runs and readable by whoever started it, even after being cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["Submission"]


class Submission:
    """The state of one createTask call: ``sent``, then ``task_id`` or ``error``.

    ``sent`` is True from the moment a request may have left until an answer proves that the
    service created nothing (a connect failure, 429, 455 or a refusal): only while it is False may
    the call be cancelled or retried without risk of paying twice.
    """

    def __init__(self) -> None:
        #: True while a request may have reached the service without a known outcome.
        self.sent = False
        #: The id of the task, once the service's answer gave it.
        self.task_id: str | None = None
        #: Why the call ended without a task id, if it did.
        self.error: BaseException | None = None
        #: Awaited just before each attempt leaves (set by the session from its caller).
        self.before_send: Callable[[], Awaitable[None]] | None = None
        #: True once the caller stopped waiting: no new attempt may leave after that.
        self.abandoned = False
        self._task: asyncio.Task[str] | None = None

    @property
    def may_exist(self) -> bool:
        """True if a task may exist whose id is not known: the call left and never came back."""
        return self.task_id is None and self.sent

    def attach(self, task: asyncio.Task[str]) -> None:
        """Bind the task that runs the call (done by the session)."""
        self._task = task

    @property
    def done(self) -> bool:
        """True once the call has ended, one way or another."""
        return self._task is None or self._task.done()

    async def settled(self) -> None:
        """Wait until the call has ended (its request landed, failed, or ran out of time)."""
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task})
