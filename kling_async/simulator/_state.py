"""The simulated service's state: keys, credits, rate windows, tasks and hosted files.

No HTTP here: handlers in ``_app`` call these methods with the nominal time ``now``.
"""

from __future__ import annotations

import collections
import json
import random
import secrets
from pathlib import Path
from typing import Any

import attrs

from ._rules import MODEL_NAME, RateWindow, TaskState


@attrs.define
class HostedFile:
    """A file the simulator hosts: an upload, or a fetched URL."""

    path: Path
    url_path: str
    file_name: str
    file_path: str
    size: int
    mime_type: str
    uploaded_at: float
    expires_at: float
    #: Duration in seconds when the file is a video the simulator could read.
    video_seconds: float | None = None
    image_format: str | None = None


@attrs.define
class SimTask:
    """One task and the schedule of its life, in nominal seconds."""

    task_id: str
    key: str
    body: dict[str, Any]
    created: float
    queued_at: float
    generating_at: float
    done_at: float
    will_fail: bool
    output_seconds: float
    cost: float
    callback_url: str | None
    settled: bool = False

    def state_at(self, now: float) -> TaskState:
        """The state this task is in at nominal time ``now``."""
        if now >= self.done_at:
            return TaskState.FAIL if self.will_fail else TaskState.SUCCESS
        if now >= self.generating_at:
            return TaskState.GENERATING
        if now >= self.queued_at:
            return TaskState.QUEUING
        return TaskState.WAITING

    def last_change(self, now: float) -> float:
        """When the state last changed, at or before ``now``."""
        changes = [self.created, self.queued_at, self.generating_at, self.done_at]
        return max(t for t in changes if t <= now)


class SlidingWindow:
    """Counts accepted requests in the last ``window`` seconds; over the limit they are refused."""

    def __init__(self, limit: RateWindow) -> None:
        self.limit = limit
        self._times: collections.deque[float] = collections.deque()

    def try_acquire(self, now: float) -> bool:
        """Record a request at ``now`` if the window has room; False (rejected) otherwise."""
        while self._times and self._times[0] <= now - self.limit.window:
            self._times.popleft()
        if len(self._times) >= self.limit.max_requests:
            return False
        self._times.append(now)
        return True


@attrs.define
class Account:
    """One API key's balance, reservations and rate windows."""

    credits: float
    reserved: float = 0.0
    create_window: SlidingWindow | None = None
    query_window: SlidingWindow | None = None


class ServiceState:
    """Everything the simulated service remembers."""

    def __init__(self, seed: int) -> None:
        self.accounts: dict[str, Account] = {}
        self.tasks: dict[str, SimTask] = {}
        self.files: dict[str, HostedFile] = {}
        self.result_names: dict[str, str] = {}
        self.rng = random.Random(seed)
        self.tasks_created: collections.Counter[str] = collections.Counter()

    def new_task_id(self) -> str:
        """A fresh 32-hex task id, as the real service hands out."""
        return secrets.token_hex(16)

    def task_data(self, task: SimTask, now: float, epoch: float) -> dict[str, Any]:
        """The ``data`` of recordInfo (and of a callback) for ``task`` at nominal time ``now``."""
        state = task.state_at(now)

        def ms(nominal: float) -> int:
            return int((epoch + nominal) * 1000)

        data: dict[str, Any] = {
            "taskId": task.task_id,
            "model": task.body.get("model", MODEL_NAME),
            "state": state.value,
            "param": json.dumps(task.body, separators=(",", ":")),
            "resultJson": None,
            "failCode": None,
            "failMsg": None,
            "costTime": None,
            "completeTime": None,
            "createTime": ms(task.created),
            "updateTime": ms(task.last_change(now)),
        }
        if state is TaskState.SUCCESS:
            data.update(
                resultJson=json.dumps({"resultUrls": [self.result_names[task.task_id]]}),
                failCode="",
                failMsg="",
                costTime=round(task.done_at - task.created),
                completeTime=ms(task.done_at),
                creditsConsumed=task.cost,
            )
        elif state is TaskState.FAIL:
            data.update(
                failCode="500",
                failMsg="Internal server error",
                costTime=round(task.done_at - task.created),
                completeTime=ms(task.done_at),
                creditsConsumed=0,
            )
        return data

    def settle(self, task: SimTask, now: float) -> None:
        """Charge a succeeded task, or release a failed one's reservation, once it has ended."""
        if task.settled or not task.state_at(now).is_terminal:
            return
        account = self.accounts[task.key]
        account.reserved -= task.cost
        if not task.will_fail:
            account.credits -= task.cost
        task.settled = True
