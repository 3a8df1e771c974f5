"""``KlingClient``: one method per API call, under the session's rate limits, with retries.

Owns the connection's lifecycle, the one choke point every API request goes through, and the work
it starts (waits, createTask calls). Knows nothing of batches, jobs or journals: those are built on
top of it (``kling_async.batch``) and composed with it in ``KlingSession``.

Bounds: it never imports the batch layer or the session: they are built on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, overload

from .base import BaseClient
from .downloads import check_video, choose_destination
from .errors import (
    ConfigurationError,
    KlingError,
    ProtocolError,
)
from .media import validate_image, validate_video
from .models import (
    CharacterOrientation,
    MotionControlInput,
    PollSchedule,
    RateLimit,
    Task,
    UploadedFile,
    is_http_url,
)
from .ratelimit import Clock, Limiter, RateLimiter, Sleep
from .relay import OnProgress, ProgressRelay
from .retries import is_transient
from .settings import (
    DEFAULT_CREATE_LIMIT,
    DEFAULT_FALLBACK_POLL,
    DEFAULT_MIN_TRANSFER_RATE,
    DEFAULT_POLL,
    DEFAULT_QUERY_LIMIT,
    DEFAULT_USER_AGENT,
    FILE_UPLOAD_PATH,
    IMAGE_UPLOAD_PATH,
    URL_UPLOAD_PATH,
    VIDEO_UPLOAD_PATH,
)
from .submission import Submission, Submitter
from .uploads import Uploader
from .waiting import OnUpdate, TaskWaiter
from .webhooks import WebhookReceiver
from .wire import (
    create_task_body,
    market_task_body,
    parse_credits,
    parse_download_url,
    parse_task,
)

if TYPE_CHECKING:
    import aiohttp

__all__ = ["KlingClient"]

log = logging.getLogger("kling_async")


class KlingClient(BaseClient):
    """An async session with kie.ai's kling motion-control models (2.6 and 3.0), and any other.

    Use it as ``async with KlingSession(api_key) as kling:``. Every coroutine of the session shares
    one limiter for task creation (``create_limit``) and one for queries (``query_limit``), so the
    service never has to answer 429 in steady state. ``poll`` sets when tasks are asked about,
    ``max_retries`` how often a safe call is retried on 429/455/5xx/transport failures (with
    jittered exponential backoff, honouring ``Retry-After``), and ``request_timeout`` bounds each
    HTTP request. ``clock`` and ``sleep`` exist for tests.

    Several processes sharing one key share its limits through Redis: ``shared_limits=
    "redis://host:6379/0"`` (with the ``redis`` extra; ``limits_prefix`` names the keys), or
    limiters of your own as ``create_limiter`` and ``query_limiter`` (any
    :class:`~kling_async.ratelimit.Limiter`; their limits replace ``create_limit`` and
    ``query_limit``, and you close them).
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        upload_base_url: str | None = None,
        create_limit: RateLimit = DEFAULT_CREATE_LIMIT,
        query_limit: RateLimit = DEFAULT_QUERY_LIMIT,
        poll: PollSchedule = DEFAULT_POLL,
        max_retries: int = 4,
        request_timeout: float = 30.0,
        retry_base: float = 0.5,
        retry_cap: float = 20.0,
        not_visible_grace: float = 60.0,
        webhook: WebhookReceiver | None = None,
        callback_url: str | None = None,
        confirm_callbacks: bool = True,
        fallback_poll: PollSchedule = DEFAULT_FALLBACK_POLL,
        upload_concurrency: int = 4,
        user_agent: str = DEFAULT_USER_AGENT,
        min_transfer_rate: float = DEFAULT_MIN_TRANSFER_RATE,
        allow_insecure_http: bool = False,
        http_session: aiohttp.ClientSession | None = None,
        trace_configs: Sequence[aiohttp.TraceConfig] | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        seed: int | None = None,
        create_limiter: Limiter | None = None,
        query_limiter: Limiter | None = None,
        shared_limits: str | None = None,
        limits_prefix: str = "kling_async",
    ) -> None:
        super().__init__(
            api_key,
            base_url=base_url,
            upload_base_url=upload_base_url,
            max_retries=max_retries,
            request_timeout=request_timeout,
            retry_base=retry_base,
            retry_cap=retry_cap,
            user_agent=user_agent,
            allow_insecure_http=allow_insecure_http,
            http_session=http_session,
            trace_configs=trace_configs,
            seed=seed,
        )
        if not min_transfer_rate > 0:
            raise ConfigurationError("min_transfer_rate must be > 0 (bytes per second)")
        self.min_transfer_rate = float(min_transfer_rate)
        self._clock = clock
        self._sleep = sleep
        # The limiters the session builds are its own to close; those passed in are the caller's.
        self._owned_limiters: list[Limiter] = []
        if shared_limits is not None:
            if create_limiter is not None or query_limiter is not None:
                raise ConfigurationError("pass shared_limits or limiters of your own, not both")
            create_limiter, query_limiter = self._shared_limiters(
                shared_limits, limits_prefix, create_limit, query_limit
            )
            self._owned_limiters += [create_limiter, query_limiter]
        if create_limiter is None:
            create_limiter = RateLimiter(create_limit, clock=clock, sleep=sleep)
            self._owned_limiters.append(create_limiter)
        if query_limiter is None:
            query_limiter = RateLimiter(query_limit, clock=clock, sleep=sleep)
            self._owned_limiters.append(query_limiter)
        self._create_limiter: Limiter = create_limiter
        self._query_limiter: Limiter = query_limiter
        self.create_limit = create_limiter.limit
        self.query_limit = query_limiter.limit
        if callback_url is not None and not is_http_url(callback_url):
            raise ConfigurationError(f"callback_url must be an http(s) URL, got {callback_url!r}")
        if webhook is not None and callback_url is None:
            raise ConfigurationError("a webhook receiver needs the callback_url it is reached at")
        self.callback_url = callback_url
        self._waiter = TaskWaiter(
            self._get_task_once,
            poll=poll,
            fallback_poll=fallback_poll,
            query_limiter=self._query_limiter,
            clock=clock,
            sleep=sleep,
            rng=self._rng,
            not_visible_grace=not_visible_grace,
            webhook=webhook,
            confirm_callbacks=confirm_callbacks,
            is_closed=lambda: self._closed,
            last_look=request_timeout,
            retry_base=retry_base,
            retry_cap=retry_cap,
        )
        # Work the session owns lives in its components: waits in the waiter (each in a task of
        # its own, so close() ends the wait, never the caller), createTask calls in the
        # submitter (they may outlive a cancelled caller), uploads in the uploader.
        self._call_safely = self._retrying(self._call, is_transient)
        self._submitter = Submitter(
            self._call,
            f"{self.base_url}/api/v1/jobs/createTask",
            self._create_limiter,
            self._retrying,
            on_created=self._waiter.created,
            request_timeout=request_timeout,
        )
        self._fetch_file = self._retrying(self._fetch_once, is_transient)
        self._get_task_retried = self._retrying(self._get_task_once, is_transient)
        self._uploader = Uploader(
            self._call_safely,
            self.upload_base_url,
            concurrency=upload_concurrency,
            grace=request_timeout,
            min_rate=self.min_transfer_rate,
        )

    def _shared_limiters(
        self, url: str, prefix: str, create_limit: RateLimit, query_limit: RateLimit
    ) -> tuple[Limiter, Limiter]:
        try:
            from .redis import RedisRateLimiter  # only when asked for: redis is an extra
        except ImportError as exc:
            raise ConfigurationError(str(exc)) from None
        # A slot in flight is held at most as long as its request can last, then one window.
        made = [
            RedisRateLimiter(
                url,
                limit,
                name=f"{prefix}:{self.account_id}:{what}",
                lease=self.request_timeout + limit.window + 5.0,
                clock=self._clock,
                sleep=self._sleep,
            )
            for what, limit in (("create", create_limit), ("query", query_limit))
        ]
        return made[0], made[1]

    # -- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """End waits still in flight (they raise ``SessionClosedError``) and close connections.

        Only the work the session owns is ended, never a caller's own task. A createTask already
        on the wire is given up to ``request_timeout`` to land first; one not yet sent is dropped.
        """
        self._closed = True
        self._closing.set()  # first: work of the caller's that listens for it ends at once
        for limiter in self._owned_limiters:
            limiter.close()  # waits for a slot end now...
        try:
            await self._waiter.close()
            await self._submitter.close()
            await self._close_transport()
        finally:
            # ...and what the limiters hold is freed once no request is left to give a slot back.
            for limiter in self._owned_limiters:
                await limiter.aclose()

    # -- tasks ---------------------------------------------------------------------------------
    @overload
    async def create_task(
        self,
        inp: MotionControlInput,
        callback_url: str | None = None,
        *,
        before_send: Callable[[], Awaitable[None]] | None = None,
        submission: Submission | None = None,
    ) -> str: ...

    @overload
    async def create_task(
        self,
        inp: str,
        input: Mapping[str, Any],
        callback_url: str | None = None,
        *,
        before_send: Callable[[], Awaitable[None]] | None = None,
        submission: Submission | None = None,
    ) -> str: ...

    async def create_task(
        self,
        inp: MotionControlInput | str,
        *args: Any,
        input: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        before_send: Callable[[], Awaitable[None]] | None = None,
        submission: Submission | None = None,
    ) -> str:
        """Create a task and return its id.

        ``create_task(MotionControlInput(...))`` creates a validated motion-control task.
        ``create_task(model, input)`` creates a task of any Market model kie.ai hosts
        (text-to-video, image-to-video, avatars...): **unvalidated**, ``input`` is sent as given,
        unknown fields untouched; the service is the judge. Either way the task gets the same
        rate limits, safe retries, waits and downloads (``download`` takes video results only).

        Retried only when the service surely created nothing (429 after a full window, 455, or
        no connection); if the request went out and its outcome is unknown (lost answer, a 5xx
        or gateway page, an unreadable answer), ``SubmissionUnknownError`` is raised instead.
        ``before_send`` is awaited just before each attempt leaves (after its rate-limit slot is
        granted): the place to record "this task may now exist" in a journal of your own.

        The request runs in a task the session owns. If the caller is cancelled while it is on
        the wire, it is let finish (up to ``request_timeout``) and the id is logged; pass a
        :class:`Submission` to read the outcome after a cancellation.
        """
        # The two forms differ in their positional arguments: (inp, callback_url) and
        # (model, input, callback_url).
        motion = isinstance(inp, MotionControlInput)
        positional = ("callback_url",) if motion else ("input", "callback_url")
        if len(args) > len(positional):
            raise TypeError(
                f"create_task() takes at most {len(positional) + 1} positional arguments"
            )
        named: dict[str, Any] = {"input": input, "callback_url": callback_url}
        for name, value in zip(positional, args, strict=False):
            if named[name] is not None:
                raise TypeError(f"create_task() got {name} twice")
            named[name] = value
        input, callback_url = named["input"], named["callback_url"]
        if callback_url is not None and not is_http_url(callback_url):
            if isinstance(callback_url, Mapping):
                raise ConfigurationError(
                    "create_task(MotionControlInput) takes no input mapping; "
                    "create_task(model, input) is the generic form"
                )
            raise ConfigurationError(f"callback_url must be an http(s) URL, got {callback_url!r}")
        if isinstance(inp, MotionControlInput):
            if input is not None:
                raise ConfigurationError(
                    "create_task(MotionControlInput) takes no input mapping; "
                    "create_task(model, input) is the generic form"
                )
            body = create_task_body(inp, callback_url or self.callback_url)
        else:
            if input is None:
                raise ConfigurationError(
                    "create_task(model, input) needs the input mapping of the model's task"
                )
            body = market_task_body(inp, input, callback_url or self.callback_url)
        self._open()
        return await self._submitter.submit(body, before_send=before_send, submission=submission)

    async def get_task(self, task_id: str) -> Task:
        """The task's current state (one recordInfo query, retried on transient failures)."""
        try:
            task: Task = await self._get_task_retried(task_id)
        except KlingError as exc:
            exc.task_id = exc.task_id or task_id
            raise
        return task

    async def _get_task_once(self, task_id: str) -> Task:
        data = await self._call(
            "recordInfo",
            "GET",
            f"{self.base_url}/api/v1/jobs/recordInfo",
            limiter=self._query_limiter,
            params={"taskId": task_id},
        )
        try:
            return parse_task(data)
        except ProtocolError:
            raise
        except ValueError as exc:
            raise ProtocolError(
                0, f"recordInfo for {task_id} was not understood: {exc}", endpoint="recordInfo"
            ) from exc

    async def wait_for_task(
        self,
        task_id: str,
        timeout: float | None = None,
        on_update: OnUpdate | None = None,
    ) -> Task:
        """Poll until the task ends; return it on success, raise ``TaskFailedError`` on failure.

        ``timeout`` is a deadline for the whole wait on the monotonic clock (``TaskTimeoutError``);
        ``on_update(task)`` (plain or async) is called on each change of state, and an error it
        raises is logged, never the wait's end. Failures that say nothing about the task (429,
        455, 5xx, dropped connections) are retried with backoff until the deadline. Every error
        raised carries ``task_id``. Cancelling the wait stops its polling at once.
        """
        self._open()
        return await self._waiter.wait_owned(task_id, timeout, on_update)

    # -- account and files ---------------------------------------------------------------------
    async def get_credits(self) -> float:
        """The account's remaining credits."""
        data = await self._call_safely("credit", "GET", f"{self.base_url}/api/v1/chat/credit")
        return parse_credits(data)

    async def get_download_url(self, result_url: str) -> str:
        """A temporary (20 min) download link for a file the service generated."""
        data = await self._call_safely(
            "downloadUrl",
            "POST",
            f"{self.base_url}/api/v1/common/download-url",
            json={"url": result_url},
        )
        return parse_download_url(data)

    # -- uploads and downloads -----------------------------------------------------------------
    async def upload_image(
        self, path: str | os.PathLike[str], *, on_progress: OnProgress | None = None
    ) -> UploadedFile:
        """Check an image against the service's rules (headers only), then stream it up.

        ``on_progress(bytes sent, size)`` (plain or async; its errors are logged) hears the
        upload, from 0; callers sharing one upload of the same content all hear it, a late one
        from where it stands, and a reused upload reports nothing. It never holds the upload up:
        a slow one hears fewer reports, always the last one before this returns.
        """
        path = Path(path)
        await asyncio.to_thread(validate_image, path)
        return await self._uploader.upload_path(
            path, upload_path=IMAGE_UPLOAD_PATH, file_name=None, on_progress=on_progress
        )

    async def upload_video(
        self,
        path: str | os.PathLike[str],
        character_orientation: CharacterOrientation = "video",
        on_progress: OnProgress | None = None,
    ) -> UploadedFile:
        """Check a video against the rules for ``character_orientation``, then stream it up.

        ``on_progress`` is told the bytes sent, as for :meth:`upload_image`.
        """
        path = Path(path)
        await asyncio.to_thread(validate_video, path, character_orientation)
        return await self._uploader.upload_path(
            path, upload_path=VIDEO_UPLOAD_PATH, file_name=None, on_progress=on_progress
        )

    async def upload_file(
        self,
        source: str | os.PathLike[str] | bytes,
        upload_path: str = FILE_UPLOAD_PATH,
        file_name: str | None = None,
        *,
        on_progress: OnProgress | None = None,
    ) -> UploadedFile:
        """Upload any file or bytes, without media rules (a fixed ``file_name`` overwrites)."""
        if isinstance(source, bytes):
            return await self._uploader.upload_bytes(
                source, upload_path=upload_path, file_name=file_name
            )
        return await self._uploader.upload_path(
            Path(source), upload_path=upload_path, file_name=file_name, on_progress=on_progress
        )

    async def upload_from_url(
        self, url: str, upload_path: str = URL_UPLOAD_PATH, file_name: str | None = None
    ) -> UploadedFile:
        """Have the service fetch a public http(s) URL and host it."""
        if not is_http_url(url):
            raise ConfigurationError(f"not an absolute http(s) URL: {url!r}")
        return await self._uploader.upload_url(url, upload_path=upload_path, file_name=file_name)

    async def download(
        self,
        url_or_task: str | Task,
        dest: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        on_progress: OnProgress | None = None,
    ) -> Path:
        """Stream a result to ``dest`` (a file, or a folder to put it in); return the file's path.

        The file appears complete or not at all (``.part``, then a rename), and only if what
        arrived is a video (``DownloadError`` otherwise). A transfer slower than
        ``min_transfer_rate`` (after ``request_timeout`` of grace) is ended. The request never
        carries the API key: result files live on other hosts. ``on_progress(bytes written,
        Content-Length or None)`` (plain or async; its errors are logged) hears the transfer, from
        0; a retried transfer starts again from 0. It never holds the transfer up: a slow one
        hears fewer reports, always the last one before this returns (one that takes longer than
        ``request_timeout`` then is given up).
        """
        task_id = url_or_task.task_id if isinstance(url_or_task, Task) else None
        try:
            if isinstance(url_or_task, Task):
                if not url_or_task.result_urls:
                    raise KlingError(f"task {url_or_task.task_id} has no result to download")
                url = url_or_task.result_urls[0]
            else:
                url = url_or_task
            if not is_http_url(url):
                raise ConfigurationError(f"not an absolute http(s) URL: {url!r}")
            target = await asyncio.to_thread(choose_destination, url, dest, overwrite=overwrite)
            # The download only offers its progress; this caller's relay runs the callback.
            async with ProgressRelay(on_progress, timeout=self.request_timeout) as relay:
                await self._fetch_file(
                    url,
                    target,
                    accept=check_video,
                    on_progress=relay.offer,
                    headers={"User-Agent": self.user_agent},
                    grace=self.request_timeout,
                    min_rate=self.min_transfer_rate,
                )
        except KlingError as exc:
            exc.task_id = exc.task_id or task_id
            raise
        return target

    async def _fetch_once(self, url: str, target: Path, **kwargs: Any) -> int:
        # The transport is looked up on each attempt: a retry after close() must not use it.
        written: int = await self._open().fetch_to_file(url, target, **kwargs)
        return written

    @property
    def uploads_sent(self) -> int:
        """Uploads actually sent by this session (each content is sent once)."""
        return self._uploader.sent

    # -- settings that live in the waiter: read-only, one source of truth --------------------
    @property
    def poll(self) -> PollSchedule:
        """The polling schedule."""
        return self._waiter.poll

    @property
    def fallback_poll(self) -> PollSchedule:
        """The safety-net schedule used with a webhook receiver."""
        return self._waiter.fallback_poll

    @property
    def not_visible_grace(self) -> float:
        """Seconds ``422 recordInfo is null`` counts as "not visible yet"."""
        return self._waiter.not_visible_grace

    @property
    def webhook(self) -> WebhookReceiver | None:
        """The webhook receiver waits resolve on, if any."""
        return self._waiter.webhook

    @property
    def confirm_callbacks(self) -> bool:
        """Whether a callback's outcome is confirmed with a query before a wait trusts it."""
        return self._waiter.confirm_callbacks

    # -- introspection for benchmarks and tests ------------------------------------------------
    @property
    def create_limiter(self) -> Limiter:
        """The limiter shared by every task creation of this session."""
        return self._create_limiter

    @property
    def query_limiter(self) -> Limiter:
        """The limiter shared by every recordInfo query of this session."""
        return self._query_limiter
