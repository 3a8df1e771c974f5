"""createTask calls: where each one stands, and the component that owns them while they run.

A createTask costs money and is not idempotent, so the client must always know whether its
request may have reached the service. :class:`Submission` is that knowledge, kept up to date while
the call runs and readable by whoever started it, even after being cancelled. :class:`Submitter`
runs each call in a task of its own, retries only what surely created nothing, lets a call on the
wire land when its caller leaves, and ends what it owns on ``close()``. It sends through the
client's one choke point and never touches aiohttp, batches or journals.

Bounds: it never touches aiohttp, batches or journals; the caller records what it reports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from . import telemetry
from .errors import (
    KlingError,
    ProtocolError,
    RateLimitError,
    SessionClosedError,
    SubmissionUnknownError,
)
from .ratelimit import Limiter
from .retries import NOT_CREATED, create_outcome, create_surely_not_done
from .wire import parse_task_id

__all__ = ["Submission", "Submitter"]

log = logging.getLogger("kling_async")

Call = Callable[..., Awaitable[Any]]
Retrying = Callable[..., Callable[..., Awaitable[Any]]]


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
    def surely_not_created(self) -> bool:
        """True if no task was made: no request may have reached the service, or one that did
        was refused (and no task id came back)."""
        return not self.sent and self.task_id is None

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


class Submitter:
    """Runs createTask calls, each in a task it owns; see the module docstring."""

    def __init__(
        self,
        call: Call,
        url: str,
        limiter: Limiter,
        retrying: Retrying,
        *,
        on_created: Callable[[str], None],
        request_timeout: float,
    ) -> None:
        self._call = call
        self._url = url
        self._limiter = limiter
        telemetry.watch("limiter.queue", limiter, "waiting", limiter="createTask")
        self._on_created = on_created
        self._request_timeout = request_timeout
        self._send = retrying(self._send_once, create_surely_not_done, self._least_wait)
        self._running: dict[asyncio.Task[str], Submission] = {}

    def _least_wait(self, exc: Exception) -> float:
        # A 429 means the request was dropped, not queued: wait out a whole window (9b).
        return self._limiter.limit.window if isinstance(exc, RateLimitError) else 0.0

    async def _send_once(self, endpoint: str, body: dict[str, Any], sub: Submission) -> str:
        async def leaving() -> None:
            if sub.abandoned:
                # The caller left (or the session closed) while this retry waited: never send
                # a new request that nobody will record.
                raise asyncio.CancelledError("the caller of create_task is gone")
            if sub.before_send is not None:
                await sub.before_send()
            # From here on the request may reach the service: the task may exist.
            sub.sent = True

        try:
            data = await self._call(
                endpoint, "POST", self._url, limiter=self._limiter, json=body, before_send=leaving
            )
            try:
                return parse_task_id(data)
            except ProtocolError:
                raise
            except ValueError as exc:
                raise ProtocolError(0, str(exc), endpoint=endpoint) from exc
        except KlingError as exc:
            if not sub.sent or create_outcome(exc) == NOT_CREATED:
                sub.sent = False
                raise
            raise SubmissionUnknownError(
                f"createTask was sent but its outcome is unknown ({exc}); the task may exist "
                "and be charged, so it is not sent again",
                request_body=body,
            ) from exc

    async def _run(self, body: dict[str, Any], sub: Submission) -> str:
        try:
            task_id: str = await self._send("createTask", body, sub)
        except BaseException as exc:
            sub.error = exc
            telemetry.count("submissions.unknown", 1 if sub.may_exist else 0)
            raise
        sub.task_id = task_id
        sub.sent = False
        # The creation is recorded before anything else is done (telemetry included): the task
        # exists and is paid for, whatever happens next.
        self._on_created(task_id)
        telemetry.note_task(task_id, model=body.get("model"))
        telemetry.count("tasks.created", model=str(body.get("model")))
        return task_id

    @telemetry.traced("createTask")
    async def submit(
        self,
        body: dict[str, Any],
        *,
        before_send: Callable[[], Awaitable[None]] | None,
        submission: Submission | None,
    ) -> str:
        """Send ``body`` as a createTask (with safe retries) and return the task id."""
        sub = submission if submission is not None else Submission()
        sub.before_send = before_send
        owned = asyncio.create_task(self._run(body, sub), name="kling createTask")
        sub.attach(owned)
        self._running[owned] = sub
        owned.add_done_callback(lambda done: self._running.pop(done, None))
        try:
            return await asyncio.shield(owned)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if owned.done() and current is not None and not current.cancelling():
                # The session ended the call (it closed), not this caller's own cancellation.
                if sub.sent:
                    raise SubmissionUnknownError(
                        "the session closed while createTask was on the wire; the task may "
                        "exist, so it is not sent again",
                        request_body=body,
                    ) from None
                raise SessionClosedError("the session closed before createTask was sent") from None
            if not owned.done():
                self._let_land(owned, sub)
            raise

    def _let_land(self, owned: asyncio.Task[str], sub: Submission) -> None:
        """The caller left: drop a call not yet sent, give one on the wire a bounded time."""
        sub.abandoned = True
        if not sub.sent:
            owned.cancel("the caller of create_task was cancelled before it was sent")
            return
        timer = asyncio.get_running_loop().call_later(
            self._request_timeout + 1.0, owned.cancel, "createTask took too long to land"
        )

        def landed(task: asyncio.Task[str]) -> None:
            timer.cancel()
            if not task.cancelled():
                task.exception()  # read here: the caller that would have is gone
            # A batch records these itself (and says so per job); a direct caller learns it here.
            level = logging.INFO if sub.before_send is not None else logging.WARNING
            if sub.task_id is not None:
                log.log(level, "task %s was created after its caller was cancelled", sub.task_id)
            elif sub.sent:
                log.log(level, "a createTask cancelled on the wire may have created a task")

        owned.add_done_callback(landed)

    async def close(self) -> None:
        """Drop calls not yet sent; give those on the wire up to the request timeout to land."""
        landing: list[asyncio.Task[str]] = []
        for task, sub in list(self._running.items()):
            sub.abandoned = True
            if task.done():
                continue
            if not sub.sent:
                task.cancel("kling session closed")  # never sent: nothing can exist
            landing.append(task)
        if not landing:
            return
        _, late = await asyncio.wait(landing, timeout=self._request_timeout)
        for task in late:
            task.cancel("kling session closed")
        if late:
            await asyncio.wait(late)
