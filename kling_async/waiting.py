"""Waiting for tasks: the polling loop, webhook-first waits, deadlines and learned render times."""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import random
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import SessionClosedError, TaskFailedError, TaskNotVisibleError, TaskTimeoutError
from .models import PollSchedule, Task
from .ratelimit import Clock, RateLimiter, Sleep
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
        query_limiter: RateLimiter,
        clock: Clock,
        sleep: Sleep,
        rng: random.Random,
        not_visible_grace: float,
        webhook: WebhookReceiver | None,
        confirm_callbacks: bool,
        is_closed: Callable[[], bool],
    ) -> None:
        self._get_task = get_task
        self.poll = poll
        self.fallback_poll = fallback_poll
        self._query_limiter = query_limiter
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self.not_visible_grace = not_visible_grace
        self.webhook = webhook
        self.confirm_callbacks = confirm_callbacks
        self._is_closed = is_closed
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
        if heard is None:
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

    async def wait(self, task_id: str, timeout: float | None, on_update: OnUpdate | None) -> Task:
        """Wait until the task ends; see ``KlingSession.wait_for_task``."""
        try:
            return await self._wait(task_id, timeout, on_update)
        finally:
            self._created_at.pop(task_id, None)

    async def _wait(self, task_id: str, timeout: float | None, on_update: OnUpdate | None) -> Task:
        started = self._clock()
        deadline = None if timeout is None else started + timeout
        since = self._created_at.get(task_id, started)
        schedule = self.poll if self.webhook is None else self.fallback_poll
        heard = self.webhook.subscribe(task_id) if self.webhook is not None else None
        polls = 0
        last: Task | None = None
        try:
            while True:
                now = self._clock()
                # Only when queries queue up is it worth skipping polls of tasks not likely done.
                expected = self.typical_render_time() if self._query_limiter.waiting else None
                delay = schedule.next_delay(now - since, polls, self._rng.random(), expected)
                if deadline is not None and now + delay > deadline:
                    # One last look at the deadline itself, then give up.
                    delay = max(0.0, deadline - now)
                called_back = await self._pause(delay, heard)
                if self._is_closed():
                    raise SessionClosedError(f"the session closed while waiting for task {task_id}")
                polls += 1
                if called_back is not None and not self.confirm_callbacks:
                    task: Task | None = called_back
                else:
                    task = await self._query(task_id, since, deadline, timeout, last)
                if called_back is not None and self.webhook is not None:
                    if task is None or not task.state.is_terminal:
                        # The service does not confirm it: a replayed or forged callback.
                        log.warning("callback for task %s not confirmed by the service", task_id)
                        self.webhook.discard(task_id)
                    heard = self.webhook.subscribe(task_id)
                if task is not None:
                    changed = last is None or task.state is not last.state
                    last = task
                    if changed and on_update is not None:
                        result = on_update(task)
                        if inspect.isawaitable(result):
                            await result
                    if task.state.is_terminal:
                        if task.state.value == "fail":
                            raise TaskFailedError(task)
                        if task_id in self._created_at:
                            self._render_times.append(self._clock() - since)
                        return task
                if deadline is not None and self._clock() >= deadline:
                    raise TaskTimeoutError(task_id, timeout or 0.0, last)
        finally:
            if heard is not None and self.webhook is not None:
                self.webhook.unsubscribe(task_id, heard)

    async def _query(
        self,
        task_id: str,
        since: float,
        deadline: float | None,
        timeout: float | None,
        last: Task | None,
    ) -> Task | None:
        """One recordInfo for a wait: None while the task is not visible yet."""
        try:
            query = self._get_task(task_id)
            if deadline is None:
                return await query
            remaining = max(deadline - self._clock(), 0.001)
            return await asyncio.wait_for(query, remaining)
        except TaskNotVisibleError:
            if self._clock() - since > self.not_visible_grace:
                raise
            return None
        except TimeoutError:
            raise TaskTimeoutError(task_id, timeout or 0.0, last) from None
