"""Waiting for tasks: the polling loop, webhook-first waits, deadlines and learned render times.

A wait ends only with the task's outcome, its own deadline, or an answer that speaks of the task
itself. Failures that say nothing about the task (429, 455, 5xx, a dropped connection, an answer
that cannot be read) are "no news": the wait polls again later, backing off, until its deadline.

Bounds: it never creates tasks or touches aiohttp; it asks through the query function it is
given.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import random
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

from . import telemetry
from .errors import (
    GenerationFailedError,
    KlingError,
    NotFoundError,
    SessionClosedError,
    TaskFailedError,
    TaskNotVisibleError,
    TaskTimeoutError,
)
from .models import PollSchedule, Task, TaskState
from .ratelimit import Clock, Limiter, Sleep
from .retries import is_no_news
from .webhooks import WebhookReceiver

__all__ = ["OnUpdate", "TaskWaiter"]

log = logging.getLogger("kling_async")

OnUpdate = Callable[[Task], Awaitable[None] | None]
#: Render times remembered, and how many are needed before they steer polling.
_RENDER_MEMORY = 50
_RENDER_MINIMUM = 5


class TaskWaiter:
    """Waits for tasks of one session, sharing its query limiter and what it has learned."""

    def __init__(
        self,
        get_task: Callable[[str], Awaitable[Task]],
        *,
        poll: PollSchedule,
        fallback_poll: PollSchedule,
        query_limiter: Limiter,
        clock: Clock,
        sleep: Sleep,
        rng: random.Random,
        not_visible_grace: float,
        webhook: WebhookReceiver | None,
        confirm_callbacks: bool,
        is_closed: Callable[[], bool],
        last_look: float = 30.0,
        retry_base: float = 0.5,
        retry_cap: float = 20.0,
    ) -> None:
        self._get_task = get_task
        self.poll = poll
        self.fallback_poll = fallback_poll
        self._query_limiter = query_limiter
        telemetry.watch("limiter.queue", query_limiter, "waiting", limiter="recordInfo")
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self.not_visible_grace = not_visible_grace
        self.webhook = webhook
        self.confirm_callbacks = confirm_callbacks
        self._is_closed = is_closed
        #: The query at a wait's deadline may take this long: the last look gets a real chance.
        self._last_look = last_look
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._unknown_states: set[str] = set()
        self._waits: set[asyncio.Task[Task]] = set()
        self._created_at: dict[str, float] = {}
        self._render_times: collections.deque[float] = collections.deque(maxlen=_RENDER_MEMORY)

    def created(self, task_id: str) -> None:
        """Note that this session just created ``task_id`` (its render time is then measurable)."""
        self._created_at[task_id] = self._clock()

    def typical_render_time(self) -> float | None:
        """Median time from creation to seen success over recent tasks, once a few are known."""
        if self.poll.expected_lead <= 0 or len(self._render_times) < _RENDER_MINIMUM:
            return None
        return statistics.median(self._render_times)

    async def _pause(self, delay: float, heard: asyncio.Future[Task] | None) -> Task | None:
        """Sleep ``delay`` seconds, or less if a callback for the task arrives; return it."""
        if heard is None or heard.cancelled():
            # No receiver, or it closed: fall back to the polling schedule, never a busy loop.
            await self._sleep(delay)
            return None
        if not heard.done():
            sleeper: asyncio.Future[Any] = asyncio.ensure_future(self._sleep(delay))
            either: set[asyncio.Future[Any]] = {sleeper, heard}
            try:
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
        return heard.result() if heard.done() and not heard.cancelled() else None

    @telemetry.traced("wait")
    async def wait_owned(
        self, task_id: str, timeout: float | None, on_update: OnUpdate | None
    ) -> Task:
        """Wait in a task this waiter owns: ``close()`` ends it without touching the caller."""
        wait = asyncio.create_task(self.wait(task_id, timeout, on_update), name=f"kling {task_id}")
        self._waits.add(wait)
        wait.add_done_callback(self._waits.discard)
        try:
            # Cancelling the caller cancels its own wait (nobody else shares it).
            return await wait
        except asyncio.CancelledError:
            current = asyncio.current_task()
            caller_cancelled = current is not None and current.cancelling() > 0
            if self._is_closed() and wait.cancelled() and not caller_cancelled:
                closed = SessionClosedError(f"the session closed while waiting for task {task_id}")
                closed.task_id = task_id
                raise closed from None
            raise
        except KlingError as exc:
            exc.task_id = exc.task_id or task_id
            raise

    async def close(self) -> None:
        """End every wait this waiter owns (their callers get ``SessionClosedError``)."""
        waits = [t for t in self._waits if not t.done()]
        for task in waits:
            task.cancel("kling session closed")
        if waits:
            await asyncio.wait(waits)

    async def wait(self, task_id: str, timeout: float | None, on_update: OnUpdate | None) -> Task:
        """Wait until the task ends; see ``KlingSession.wait_for_task``."""
        telemetry.note_task(task_id)  # this wait runs in a task of its own: its logs name it
        try:
            return await self._wait(task_id, timeout, on_update)
        finally:
            self._created_at.pop(task_id, None)

    async def _wait(self, task_id: str, timeout: float | None, on_update: OnUpdate | None) -> Task:
        started = self._clock()
        deadline = None if timeout is None else started + timeout
        since = self._created_at.get(task_id, started)
        # A task this session created, or one it only waits for (a rerun resuming it, say): the
        # metrics keep them apart, as the CLI's summary keeps this run's credits apart.
        origin = "created" if task_id in self._created_at else "resumed"
        schedule = self.poll if self.webhook is None else self.fallback_poll
        heard = self.webhook.subscribe(task_id) if self.webhook is not None else None
        polls = 0
        failures = 0
        retry_after: float | None = None
        last: Task | None = None
        unconfirmed: Task | None = None
        try:
            while True:
                now = self._clock()
                if deadline is not None and now >= deadline:
                    raise TaskTimeoutError(task_id, timeout or 0.0, last)
                # Only when queries queue up is it worth skipping polls of tasks not likely done.
                expected = self.typical_render_time() if self._query_limiter.waiting else None
                delay = schedule.next_delay(now - since, polls, self._rng.random(), expected)
                if failures:
                    backoff = self._rng.uniform(
                        0.0, min(self._retry_cap, self._retry_base * 2**failures)
                    )
                    delay = max(delay, backoff, retry_after or 0.0)
                if deadline is not None and now + delay > deadline:
                    # One last look at the deadline itself, then give up.
                    delay = max(0.0, deadline - now)
                if unconfirmed is None:
                    called_back = await self._pause(delay, heard)
                else:
                    # A callback whose confirming query got no news: ask again after a pause.
                    await self._sleep(delay)
                    called_back, unconfirmed = unconfirmed, None
                if self._is_closed():
                    raise SessionClosedError(f"the session closed while waiting for task {task_id}")
                polls += 1
                if called_back is not None and not self.confirm_callbacks:
                    task: Task | None = called_back
                else:
                    try:
                        task = await self._query(task_id, since, deadline)
                    except GenerationFailedError as exc:
                        # 501 (or 408) inside recordInfo's answer: the task ended and failed.
                        failed = Task(
                            task_id, TaskState.FAIL, fail_code=str(exc.code), fail_msg=exc.message
                        )
                        telemetry.count("tasks.finished", state="fail", origin=origin)
                        raise TaskFailedError(failed) from exc
                    except KlingError as exc:
                        if not is_no_news(exc):
                            raise
                        failures += 1
                        retry_after = getattr(exc, "retry_after", None)
                        telemetry.count("retries", reason=type(exc).__name__)
                        log.info("task %s: no news this time (%s); polling on", task_id, exc)
                        task = None
                    else:
                        failures = 0
                        retry_after = None
                if called_back is not None and self.webhook is not None:
                    if task is None and failures:
                        unconfirmed = called_back
                    elif task is None or not task.state.is_terminal:
                        # The service does not confirm it: a replayed or forged callback.
                        log.warning("callback for task %s not confirmed by the service", task_id)
                        self.webhook.discard(task_id)
                    if unconfirmed is None:
                        heard = self.webhook.subscribe(task_id)
                if task is not None:
                    self._note_unknown_state(task)
                    changed = last is None or task.state is not last.state
                    last = task
                    if changed:
                        telemetry.event("state", state=task.state.value)
                    if changed and on_update is not None:
                        await self._tell(on_update, task)
                    if task.state.is_terminal:
                        telemetry.count("tasks.finished", state=task.state.value, origin=origin)
                        telemetry.count(
                            "credits.consumed", task.credits_consumed or 0, origin=origin
                        )
                        if task.state.value == "fail":
                            raise TaskFailedError(task)
                        if task_id in self._created_at:
                            self._render_times.append(self._clock() - since)
                        return task
        finally:
            if heard is not None and self.webhook is not None:
                self.webhook.unsubscribe(task_id, heard)

    def _note_unknown_state(self, task: Task) -> None:
        raw = getattr(task, "raw_state", None)
        if raw and raw not in self._unknown_states:
            self._unknown_states.add(raw)
            log.warning(
                "task %s is in a state this client does not know (%r): waiting on",
                task.task_id,
                raw,
            )

    async def _tell(self, on_update: OnUpdate, task: Task) -> None:
        """Call the user's ``on_update``; an error there is logged, never the wait's end."""
        try:
            result = on_update(task)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("on_update raised for task %s; the wait goes on", task.task_id)

    async def _query(self, task_id: str, since: float, deadline: float | None) -> Task | None:
        """One recordInfo for a wait: None while the task is not visible yet."""
        try:
            query = self._get_task(task_id)
            if deadline is None:
                return await query
            remaining = max(deadline - self._clock(), self._last_look)
            return await asyncio.wait_for(query, remaining)
        except (TaskNotVisibleError, NotFoundError):
            # 422 "recordInfo is null" or 404 right after creation: not visible yet.
            if self._clock() - since > self.not_visible_grace:
                raise
            return None
        except TimeoutError:
            # The last look ran out too: the caller's deadline check ends the wait.
            return None
