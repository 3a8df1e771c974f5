"""Verified callbacks: check the service's signature, parse the body, and wake waiting tasks.

The service signs ``taskId + "." + timestamp`` with the account's webhook HMAC key (HMAC-SHA256,
standard Base64; kie-api.md section 3.2). The signature does not cover the body, so a replayed
signature could carry a forged body: a :class:`KlingSession` therefore confirms a callback's
outcome with one recordInfo query before it ends a wait (``confirm=True``, the default).

Accounts without an HMAC key get unsigned callbacks; the receiver then accepts any well-formed
callback (and logs a warning once), and confirmation is what keeps a fake result out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .errors import MalformedCallbackError, WebhookError, WebhookVerificationError
from .models import Task
from .signature import compute_signature, signatures_match
from .wire import parse_task

__all__ = [
    "DEFAULT_TOLERANCE",
    "MalformedCallbackError",
    "WebhookError",
    "WebhookReceiver",
    "WebhookVerificationError",
    "parse_callback",
    "verify_signature",
]

log = logging.getLogger("kling_async.webhooks")

#: Seconds a callback's timestamp may differ from our clock, either way.
DEFAULT_TOLERANCE = 300.0
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Webhook-Signature"
_MAX_BODY = 1024 * 1024


def verify_signature(
    task_id: str,
    timestamp: str | None,
    signature: str | None,
    key: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a callback's signature; raise ``WebhookVerificationError`` saying why it fails.

    ``timestamp`` is the ``X-Webhook-Timestamp`` header (Unix seconds), ``signature`` the
    ``X-Webhook-Signature`` header; ``now`` defaults to the current time.
    """
    if not timestamp or not signature:
        missing = TIMESTAMP_HEADER if not timestamp else SIGNATURE_HEADER
        raise WebhookVerificationError("missing-header", f"no {missing} header")
    stamp = timestamp.strip()
    if not stamp.isdigit():
        raise WebhookVerificationError("malformed-timestamp", f"{timestamp!r} is not Unix seconds")
    current = time.time() if now is None else now
    skew = abs(current - int(stamp))
    if skew > tolerance:
        raise WebhookVerificationError(
            "stale", f"timestamp is {skew:.0f} s away from now (tolerance {tolerance:g} s)"
        )
    if not signatures_match(compute_signature(task_id, stamp, key), signature.strip()):
        raise WebhookVerificationError("bad-signature", "signature does not match")


def _task_id_of(body: Mapping[str, Any]) -> str | None:
    data = body.get("data")
    if isinstance(data, Mapping):
        for name in ("taskId", "task_id"):
            value = data.get(name)
            if isinstance(value, str) and value:
                return value
    value = body.get("taskId")
    return value if isinstance(value, str) and value else None


def parse_callback(body: bytes) -> Task:
    """Parse a callback body into a :class:`Task`, as recordInfo's answer would be."""
    try:
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedCallbackError("malformed-body", "the body is not JSON") from None
    if not isinstance(decoded, dict):
        raise MalformedCallbackError("malformed-body", "the body is not a JSON object")
    task_id = _task_id_of(decoded)
    if task_id is None:
        raise MalformedCallbackError(
            "malformed-body", "no taskId in data.taskId, data.task_id or taskId"
        )
    data = decoded.get("data")
    fields = dict(data) if isinstance(data, Mapping) else {}
    fields["taskId"] = task_id
    try:
        task = parse_task(fields)
    except ValueError as exc:
        raise MalformedCallbackError("malformed-body", str(exc)) from None
    if not task.state.is_terminal:
        raise MalformedCallbackError("malformed-body", f"state {task.state.value!r} is not final")
    return task


class WebhookReceiver:
    """Receives callbacks, verifies them, and hands each task's outcome to whoever waits on it.

    Mount ``handle`` on ``path`` in an existing aiohttp app, or ``await receiver.start(host,
    port)`` to serve it alone. Repeated deliveries are harmless. A callback for a task nobody
    waits on yet is kept for ``keep_for`` seconds, so a late ``wait_for_task`` still sees it.
    """

    def __init__(
        self,
        hmac_key: str | None,
        path: str = "/kling/callback",
        tolerance: float = DEFAULT_TOLERANCE,
        *,
        keep_for: float = 3600.0,
    ) -> None:
        self.__key = hmac_key or None
        self.path = path
        self.tolerance = tolerance
        self.keep_for = keep_for
        self._waiters: dict[str, set[asyncio.Future[Task]]] = {}
        self._recent: dict[str, tuple[Task, float]] = {}
        self._runner: web.AppRunner | None = None
        self._warned = False
        #: Counters for monitoring: callbacks accepted, rejected (401) and malformed (400).
        self.accepted = 0
        self.rejected = 0
        self.malformed = 0
        self.url: str | None = None

    def __repr__(self) -> str:
        signed = "signed" if self.__key else "unsigned"
        return f"WebhookReceiver(path={self.path!r}, {signed}, url={self.url!r})"

    # -- what a session uses -------------------------------------------------------------------
    def subscribe(self, task_id: str) -> asyncio.Future[Task]:
        """A future resolved with the task when its callback arrives (at once if it already did)."""
        future: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
        self._forget_old()
        recent = self._recent.get(task_id)
        if recent is not None:
            future.set_result(recent[0])
        else:
            self._waiters.setdefault(task_id, set()).add(future)
        return future

    def unsubscribe(self, task_id: str, future: asyncio.Future[Task]) -> None:
        """Stop waiting with ``future``."""
        waiters = self._waiters.get(task_id)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._waiters[task_id]
        if not future.done():
            future.cancel()

    def discard(self, task_id: str) -> None:
        """Forget a received callback (one that a confirming query contradicted)."""
        self._recent.pop(task_id, None)

    def received(self, task_id: str) -> Task | None:
        """The task from a callback received for ``task_id`` recently, if any."""
        recent = self._recent.get(task_id)
        return recent[0] if recent is not None else None

    def _forget_old(self) -> None:
        cutoff = time.monotonic() - self.keep_for
        for task_id in [t for t, (_, at) in self._recent.items() if at < cutoff]:
            del self._recent[task_id]

    def _deliver(self, task: Task) -> None:
        self._recent[task.task_id] = (task, time.monotonic())
        for future in self._waiters.pop(task.task_id, set()):
            if not future.done():
                future.set_result(task)

    # -- HTTP ----------------------------------------------------------------------------------
    def _answer(self, status: int, msg: str) -> web.Response:
        return web.json_response({"code": status, "msg": msg}, status=status)

    async def handle(self, request: web.Request) -> web.Response:
        """aiohttp handler: 200 for a verified callback, 401 unverified, 400 malformed."""
        if request.content_length is not None and request.content_length > _MAX_BODY:
            self.malformed += 1
            return self._answer(400, "body too large")
        body = await request.content.read(_MAX_BODY + 1)
        if len(body) > _MAX_BODY:
            self.malformed += 1
            return self._answer(400, "body too large")
        try:
            task = parse_callback(body)
        except MalformedCallbackError as exc:
            self.malformed += 1
            log.warning("callback refused (400): %s", exc)
            return self._answer(400, exc.reason)
        if self.__key is not None:
            try:
                verify_signature(
                    task.task_id,
                    request.headers.get(TIMESTAMP_HEADER),
                    request.headers.get(SIGNATURE_HEADER),
                    self.__key,
                    tolerance=self.tolerance,
                )
            except WebhookVerificationError as exc:
                self.rejected += 1
                log.warning("callback for task %s refused (401): %s", task.task_id, exc)
                return self._answer(401, exc.reason)
        elif not self._warned:
            self._warned = True
            log.warning(
                "webhook receiver has no HMAC key: callbacks are not verified; set the key "
                "from your kie.ai settings (outcomes are still confirmed by a query)"
            )
        self.accepted += 1
        self._deliver(task)
        return self._answer(200, "success")

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve the receiver alone (for scripts without an aiohttp app); return its URL."""
        app = web.Application()
        app.router.add_post(self.path, self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}{self.path}"
        return self.url

    async def close(self) -> None:
        """Stop serving (if started alone) and end pending subscriptions."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for waiters in self._waiters.values():
            for future in waiters:
                future.cancel()
        self._waiters.clear()
