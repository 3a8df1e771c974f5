"""Verified callbacks: check the service's signature, parse the body, and wake waiting tasks.

The service signs ``taskId + "." + timestamp`` with the account's webhook HMAC key (HMAC-SHA256,
standard Base64; kie-api.md section 3.2). The signature does not cover the body, so a replayed
signature could carry a forged body: a :class:`KlingSession` therefore confirms a callback's
outcome with one recordInfo query before it ends a wait (``confirm=True``, the default).

Accounts without an HMAC key get unsigned callbacks; the receiver then accepts any well-formed
callback (and logs a warning once), and confirmation is what keeps a fake result out.

**Per-job tokens.** A caller that does not know a task's id yet (its createTask answer may be
lost) can give each createTask its own callback URL, ``callback_url_with_token(url, token)``,
and wait on the token (:meth:`WebhookReceiver.subscribe_token`). The token travels in the URL's
query, which the signature does **not** cover: anyone who captured one signed callback can
replay it to any token. A task found by token is therefore only a lead. The caller must query
it (recordInfo) and check that the service recorded this very token in the task's
``callBackUrl``: ``callback_token(task.callback_url) == token``. The receiver does not do this.

Bounds: it never queries the service: a callback's outcome is confirmed by the waiter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.http import HttpProcessingError

from .callbacks import (
    CALLBACK_TOKEN_PARAM,
    DEFAULT_TOLERANCE,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    callback_token,
    callback_url_with_token,
    parse_callback,
    verify_signature,
)
from .errors import (
    ConfigurationError,
    MalformedCallbackError,
    WebhookError,
    WebhookVerificationError,
)
from .models import Task

__all__ = [
    "CALLBACK_TOKEN_PARAM",
    "DEFAULT_KEEP_FOR",
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_KEPT",
    "DEFAULT_TOLERANCE",
    "MalformedCallbackError",
    "WebhookError",
    "WebhookReceiver",
    "WebhookVerificationError",
    "callback_token",
    "callback_url_with_token",
    "parse_callback",
    "verify_signature",
]

log = logging.getLogger("kling_async.webhooks")

#: Callbacks kept for waits that start late: at most this many, for at most this many seconds.
DEFAULT_MAX_KEPT = 10_000
DEFAULT_KEEP_FOR = 3600.0
#: Largest callback body read; the documented body is about 2 kB.
DEFAULT_MAX_BODY = 1024 * 1024
_READ_CHUNK = 64 * 1024


class _Kept:
    """Tasks from callbacks by key (task id or token), bounded by count and age, and waiters."""

    def __init__(self, max_kept: int, keep_for: float, clock: Callable[[], float]) -> None:
        self._max_kept = max_kept
        self._keep_for = keep_for
        self._clock = clock
        # Insertion order is arrival order (a repeat is moved to the end): oldest first.
        self._items: dict[str, tuple[Task, float]] = {}
        self._waiters: dict[str, set[asyncio.Future[Task]]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def _forget_old(self) -> None:
        cutoff = self._clock() - self._keep_for
        while self._items:
            oldest = next(iter(self._items))
            if self._items[oldest][1] >= cutoff:
                break
            del self._items[oldest]

    def put(self, key: str, task: Task) -> None:
        self._items.pop(key, None)
        self._items[key] = (task, self._clock())
        self._forget_old()
        while len(self._items) > self._max_kept:
            del self._items[next(iter(self._items))]
        for future in self._waiters.pop(key, set()):
            if not future.done():
                future.set_result(task)

    def get(self, key: str) -> Task | None:
        self._forget_old()
        item = self._items.get(key)
        return item[0] if item is not None else None

    def discard(self, key: str) -> None:
        self._items.pop(key, None)

    def subscribe(self, key: str, future: asyncio.Future[Task]) -> None:
        task = self.get(key)
        if task is not None:
            future.set_result(task)
        else:
            self._waiters.setdefault(key, set()).add(future)

    def unsubscribe(self, key: str, future: asyncio.Future[Task]) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._waiters[key]

    def abandon_waiters(self) -> None:
        # The futures stay pending: their owners stop waiting on them (see ``close``).
        self._waiters.clear()


class WebhookReceiver:
    """Receives callbacks, verifies them, and hands each task's outcome to whoever waits on it.

    Mount ``handle`` on ``path`` in an existing aiohttp app, or ``await receiver.start(host,
    port)`` to serve it alone. Repeated deliveries are harmless. A callback for a task nobody
    waits on yet is kept, so a late ``wait_for_task`` still sees it: at most ``max_kept``
    callbacks (the oldest are dropped first), each for at most ``keep_for`` seconds of
    ``clock``. The same bounds hold apart for callbacks kept by job token. A body longer than
    ``max_body`` bytes is answered 413.
    """

    def __init__(
        self,
        hmac_key: str | None,
        path: str = "/kling/callback",
        tolerance: float = DEFAULT_TOLERANCE,
        *,
        keep_for: float = DEFAULT_KEEP_FOR,
        max_kept: int = DEFAULT_MAX_KEPT,
        max_body: int = DEFAULT_MAX_BODY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not keep_for >= 0:
            raise ConfigurationError(f"keep_for must be at least 0 seconds; got {keep_for!r}")
        if isinstance(max_kept, bool) or not isinstance(max_kept, int) or max_kept < 0:
            raise ConfigurationError(f"max_kept must be an int of at least 0; got {max_kept!r}")
        if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
            raise ConfigurationError(f"max_body must be a positive int; got {max_body!r}")
        self.__key = hmac_key or None
        self.path = path
        self.tolerance = tolerance
        self.keep_for = keep_for
        self.max_kept = max_kept
        self.max_body = max_body
        self._by_task = _Kept(max_kept, keep_for, clock)
        self._by_token = _Kept(max_kept, keep_for, clock)
        self._runner: web.AppRunner | None = None
        self._warned = False
        self._closed = False
        #: Counters for monitoring: callbacks accepted, rejected (401) and malformed (400, 413).
        self.accepted = 0
        self.rejected = 0
        self.malformed = 0
        self.url: str | None = None

    def __repr__(self) -> str:
        signed = "signed" if self.__key else "unsigned"
        return f"WebhookReceiver(path={self.path!r}, {signed}, url={self.url!r})"

    @property
    def closed(self) -> bool:
        """True after :meth:`close` (until a new :meth:`start`): callbacks wake nobody then."""
        return self._closed

    # -- what a session uses -------------------------------------------------------------------
    def _future(self) -> asyncio.Future[Task]:
        return asyncio.get_running_loop().create_future()

    def subscribe(self, task_id: str) -> asyncio.Future[Task]:
        """A future resolved with the task when its callback arrives (at once if it already did).

        On a closed receiver the future is never resolved (nor cancelled): a wait on it falls
        back to its polling schedule. Check :attr:`closed` to poll on a faster one instead.
        """
        future = self._future()
        if not self._closed:
            self._by_task.subscribe(task_id, future)
        return future

    def unsubscribe(self, task_id: str, future: asyncio.Future[Task]) -> None:
        """Stop waiting with ``future`` (it is cancelled if still pending)."""
        self._by_task.unsubscribe(task_id, future)
        if not future.done():
            future.cancel()

    def discard(self, task_id: str) -> None:
        """Forget a received callback (one that a confirming query contradicted)."""
        self._by_task.discard(task_id)

    def received(self, task_id: str) -> Task | None:
        """The task from a callback received for ``task_id`` recently, if any."""
        return self._by_task.get(task_id)

    def subscribe_token(self, token: str) -> asyncio.Future[Task]:
        """A future resolved with the task of the first callback that carries ``token``.

        The token is not signed: confirm the task before trusting it (see the module's doc).
        Like :meth:`subscribe`, never resolved on a closed receiver.
        """
        future = self._future()
        if not self._closed:
            self._by_token.subscribe(token, future)
        return future

    def unsubscribe_token(self, token: str, future: asyncio.Future[Task]) -> None:
        """Stop waiting on ``token`` with ``future`` (it is cancelled if still pending)."""
        self._by_token.unsubscribe(token, future)
        if not future.done():
            future.cancel()

    def received_for_token(self, token: str) -> Task | None:
        """The task from a callback received recently with ``token`` in its URL, if any."""
        return self._by_token.get(token)

    def discard_token(self, token: str) -> None:
        """Forget a callback received with ``token`` (one that a confirming query contradicted)."""
        self._by_token.discard(token)

    # -- HTTP ----------------------------------------------------------------------------------
    def _answer(self, status: int, msg: str) -> web.Response:
        return web.json_response({"code": status, "msg": msg}, status=status)

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The whole body, however it was framed or split; None once it passes ``max_body``."""
        if request.content_length is not None and request.content_length > self.max_body:
            return None
        chunks: list[bytes] = []
        size = 0
        # ``read(n)`` returns what has arrived so far, not the body: read until EOF (b"").
        while chunk := await request.content.read(_READ_CHUNK):
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def handle(self, request: web.Request) -> web.Response:
        """aiohttp handler: 200 verified, 401 unverified, 400 malformed, 413 body too large.

        An accepted callback is kept by task id and, when its URL has a ``kling_job`` token,
        by that token too.
        """
        try:
            body = await self._read_body(request)
        except (ConnectionError, HttpProcessingError):
            # The sender went away or broke the framing mid-body: nobody reads this answer.
            self.malformed += 1
            return self._answer(400, "incomplete body")
        if body is None:
            self.malformed += 1
            return self._answer(413, "body too large")
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
                log.warning(
                    "callback for task %s refused (401): %s",
                    task.task_id,
                    exc,
                    extra={"task_id": task.task_id},
                )
                return self._answer(401, exc.reason)
        elif not self._warned:
            self._warned = True
            log.warning(
                "webhook receiver has no HMAC key: callbacks are not verified; set the key "
                "from your kie.ai settings (outcomes are still confirmed by a query)"
            )
        self.accepted += 1
        token = callback_token(str(request.rel_url))
        if token is not None:
            self._by_token.put(token, task)
        self._by_task.put(task.task_id, task)
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
        self._closed = False
        return self.url

    async def close(self) -> None:
        """Stop serving (if started alone) and let go of pending subscriptions.

        Pending futures are neither resolved nor cancelled: a wait on one goes on by polling,
        and its owner cancels it as usual (``unsubscribe``). Cancelling them here would wake
        every wait at once, and a wait that subscribes again would spin.
        """
        self._closed = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._by_task.abandon_waiters()
        self._by_token.abandon_waiters()
