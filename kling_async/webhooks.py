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
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_plus, urlsplit, urlunsplit

from aiohttp import web
from aiohttp.http import HttpProcessingError

from .errors import (
    ConfigurationError,
    MalformedCallbackError,
    ProtocolError,
    WebhookError,
    WebhookVerificationError,
)
from .models import Task, is_http_url
from .signature import compute_signature, is_well_formed_signature, signatures_match
from .wire import parse_task

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

#: Seconds a callback's timestamp may differ from our clock, either way.
DEFAULT_TOLERANCE = 300.0
#: Callbacks kept for waits that start late: at most this many, for at most this many seconds.
DEFAULT_MAX_KEPT = 10_000
DEFAULT_KEEP_FOR = 3600.0
#: Largest callback body read; the documented body is about 2 kB.
DEFAULT_MAX_BODY = 1024 * 1024
#: The query parameter of a callback URL that names the job it belongs to (a name, no secret).
CALLBACK_TOKEN_PARAM = "kling_job"  # noqa: S105
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Webhook-Signature"
# Unix seconds have 10 digits until the year 2286; a longer "timestamp" is not one.
_MAX_TIMESTAMP_DIGITS = 12
# Tokens are URL-safe as they are, so the service hands them back byte for byte.
_TOKEN = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_READ_CHUNK = 64 * 1024


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
    ``X-Webhook-Signature`` header; ``now`` defaults to the current time. Whatever the header
    values (non-ASCII, absurdly long, ``1e9``, ``-5``), only ``WebhookVerificationError`` is
    raised; its ``reason`` is ``missing-header``, ``malformed-timestamp``,
    ``malformed-signature``, ``stale`` or ``bad-signature``.
    """
    if not timestamp or not signature:
        missing = TIMESTAMP_HEADER if not timestamp else SIGNATURE_HEADER
        raise WebhookVerificationError("missing-header", f"no {missing} header")
    stamp = timestamp.strip()
    # isdigit() alone accepts "²" and other digits int() refuses; the length keeps int() cheap.
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= _MAX_TIMESTAMP_DIGITS):
        raise WebhookVerificationError(
            "malformed-timestamp", f"{timestamp[:40]!r} is not Unix seconds"
        )
    received = signature.strip()
    if not is_well_formed_signature(received):
        raise WebhookVerificationError(
            "malformed-signature", "the signature is not Base64 of a 32-byte digest"
        )
    current = time.time() if now is None else now
    skew = abs(current - int(stamp))
    if skew > tolerance:
        raise WebhookVerificationError(
            "stale", f"timestamp is {skew:.0f} s away from now (tolerance {tolerance:g} s)"
        )
    try:
        expected = compute_signature(task_id, stamp, key)
    except UnicodeEncodeError:  # a task id with lone surrogates cannot have been signed
        raise WebhookVerificationError("bad-signature", "the task id cannot be signed") from None
    if not signatures_match(expected, received):
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
    """Parse a callback body into a :class:`Task`, as recordInfo's answer would be.

    Raises ``MalformedCallbackError`` (and nothing else) for any body that is not the
    documented JSON of a task in a final state.
    """
    try:
        decoded = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        # Not UTF-8, not JSON, an integer past Python's digit limit, or nested absurdly deep.
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
        task = parse_task(fields, endpoint=None)
    except ProtocolError as exc:
        raise MalformedCallbackError("malformed-body", exc.message) from None
    if not task.state.is_terminal:
        state = task.raw_state if task.raw_state is not None else task.state.value
        raise MalformedCallbackError("malformed-body", f"state {state!r} is not final")
    return task


def _is_token(value: object) -> bool:
    return isinstance(value, str) and _TOKEN.fullmatch(value) is not None


def callback_url_with_token(base_url: str, token: str) -> str:
    """``base_url`` with ``kling_job=<token>`` in its query; its other parameters kept as sent.

    ``token`` is 1-128 characters of ``A-Z a-z 0-9 . _ ~ -`` (``secrets.token_urlsafe`` fits);
    a ``kling_job`` parameter already in ``base_url`` is replaced.
    """
    if not is_http_url(base_url):
        raise ConfigurationError(f"callback URL must be an absolute http(s) URL: {base_url[:80]!r}")
    if not _is_token(token):
        raise ConfigurationError(
            "callback token must be 1-128 characters of A-Z a-z 0-9 . _ ~ -; "
            f"got {str(token)[:40]!r}"
        )
    parts = urlsplit(base_url)
    kept = [
        pair
        for pair in parts.query.split("&")
        if pair and unquote_plus(pair.partition("=")[0]) != CALLBACK_TOKEN_PARAM
    ]
    kept.append(f"{CALLBACK_TOKEN_PARAM}={quote(token, safe='')}")
    return urlunsplit(parts._replace(query="&".join(kept)))


def callback_token(url: str | None) -> str | None:
    """The job token in a callback URL (as recorded in a task's ``callBackUrl``), if it has one.

    None when the URL has no ``kling_job`` parameter, has several, or its value is no token.
    """
    if not isinstance(url, str):
        return None
    try:
        query = urlsplit(url).query
    except ValueError:
        return None
    values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == CALLBACK_TOKEN_PARAM]
    return values[0] if len(values) == 1 and _is_token(values[0]) else None


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
                log.warning("callback for task %s refused (401): %s", task.task_id, exc)
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
