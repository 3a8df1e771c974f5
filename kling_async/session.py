"""``KlingSession``: create motion-control tasks and wait for many at once, under rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import os
import random
import time
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiohttp

from .batch import BatchRun, JobRunner, OnEvent, run_many
from .downloads import choose_destination, stream_to_file
from .errors import (
    ConfigurationError,
    KlingError,
    ProtocolError,
    RateLimitError,
    SessionClosedError,
    SubmissionUnknownError,
)
from .jobs import GenerationResult, Job, JobOutcome, MediaSource
from .journal import Journal
from .media import validate_image, validate_video
from .models import (
    CharacterOrientation,
    Mode,
    MotionControlInput,
    PollSchedule,
    RateLimit,
    Task,
    UploadedFile,
    is_http_url,
)
from .ratelimit import Clock, RateLimiter, Sleep
from .retries import NOT_CREATED, create_outcome, create_surely_not_done, is_transient, with_retries
from .submission import Submission
from .transport import HttpTransport
from .uploads import OnProgress, Uploader
from .waiting import OnUpdate, TaskWaiter
from .webhooks import WebhookReceiver
from .wire import (
    create_task_body,
    decode_answer,
    parse_credits,
    parse_download_url,
    parse_task,
    parse_task_id,
)

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_UPLOAD_BASE_URL", "KlingSession"]

log = logging.getLogger("kling_async")

DEFAULT_BASE_URL = "https://api.kie.ai"
DEFAULT_UPLOAD_BASE_URL = "https://kieai.redpandaai.co"
API_KEY_ENV = "KIE_API_KEY"
#: An ordinary, honest User-Agent: the service's edge refuses some library defaults (9b).
DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (compatible; kling_async/0.1; +https://pypi.org/project/kling-async/)"
)
#: Transfers slower than this (bytes per second, after the request timeout's grace) are ended.
DEFAULT_MIN_TRANSFER_RATE = 50_000.0

#: 20 createTask per 10 s per account (kie-api.md section 6).
DEFAULT_CREATE_LIMIT = RateLimit(20, 10.0)
#: 10 recordInfo per second per key (kie-api.md section 2.1).
DEFAULT_QUERY_LIMIT = RateLimit(10, 1.0)
DEFAULT_POLL = PollSchedule()
#: With a webhook receiver, polling is only a safety net for a lost callback.
DEFAULT_FALLBACK_POLL = PollSchedule(phases=((math.inf, 60.0),), first_delay=150.0)

#: Where uploads go on the service (the docs' example layout).
IMAGE_UPLOAD_PATH = "images/kling-async"
VIDEO_UPLOAD_PATH = "videos/kling-async"
FILE_UPLOAD_PATH = "files/kling-async"
URL_UPLOAD_PATH = "urls/kling-async"


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_base_url(name: str, url: str, allow_insecure_http: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"{name} must be an absolute http(s) URL, got {url!r}")
    if parts.scheme == "http" and not (allow_insecure_http or _is_loopback(url)):
        raise ConfigurationError(
            f"{name} {url!r} is plain http: the API key would travel unencrypted. Use https, "
            "a loopback address, or pass allow_insecure_http=True."
        )
    return url.rstrip("/")


class KlingSession:
    """An async session with kie.ai's kling-2.6/motion-control model.

    Use it as ``async with KlingSession(api_key) as kling:``. Every coroutine of the session shares
    one limiter for task creation (``create_limit``) and one for queries (``query_limit``), so the
    service never has to answer 429 in steady state. ``poll`` sets when tasks are asked about,
    ``max_retries`` how often a safe call is retried on 429/455/5xx/transport failures (with
    jittered exponential backoff, honouring ``Retry-After``), and ``request_timeout`` bounds each
    HTTP request. ``clock`` and ``sleep`` exist for tests.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        upload_base_url: str = DEFAULT_UPLOAD_BASE_URL,
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
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        seed: int | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not key or not key.strip():
            raise ConfigurationError(
                f"no API key: pass api_key= or set the {API_KEY_ENV} environment variable"
            )
        if max_retries < 0 or request_timeout <= 0:
            raise ConfigurationError("max_retries must be >= 0 and request_timeout > 0")
        if not user_agent or not user_agent.isprintable() or not user_agent.isascii():
            raise ConfigurationError("user_agent must be printable ASCII text")
        if not min_transfer_rate > 0:
            raise ConfigurationError("min_transfer_rate must be > 0 (bytes per second)")
        self.user_agent = user_agent
        self.min_transfer_rate = float(min_transfer_rate)
        self.__api_key = key.strip()
        self.base_url = _check_base_url("base_url", base_url, allow_insecure_http)
        self.upload_base_url = _check_base_url(
            "upload_base_url", upload_base_url, allow_insecure_http
        )
        self.create_limit = create_limit
        self.query_limit = query_limit
        self.max_retries = max_retries
        self.request_timeout = request_timeout
        self._clock = clock
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._own_http = http_session is None
        self._http = http_session
        self._transport: HttpTransport | None = None
        self._create_limiter = RateLimiter(create_limit, clock=clock, sleep=sleep)
        self._query_limiter = RateLimiter(query_limit, clock=clock, sleep=sleep)
        if callback_url is not None and not is_http_url(callback_url):
            raise ConfigurationError(f"callback_url must be an http(s) URL, got {callback_url!r}")
        if webhook is not None and callback_url is None:
            raise ConfigurationError("a webhook receiver needs the callback_url it is reached at")
        self.callback_url = callback_url
        self._closed = False
        self._retry_base = retry_base
        self._retry_cap = retry_cap
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
        # Work the session owns: waits (each in a task of its own, so close() ends the wait and
        # never the caller) and createTask calls (which may outlive a cancelled caller).
        self._waits: set[asyncio.Task[Any]] = set()
        self._submissions: dict[asyncio.Task[str], Submission] = {}
        self._call_safely = self._retrying(self._call, is_transient)
        self._create_with_retries = self._retrying(
            self._create_once, create_surely_not_done, floor=self._create_floor
        )
        self._fetch_file = self._retrying(self._fetch_once, is_transient)
        self._get_task_retried = self._retrying(self._get_task_once, is_transient)
        # Large transfers: no total limit, but no silence longer than the request timeout.
        self._transfer_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=request_timeout, sock_read=request_timeout
        )
        self._uploader = Uploader(
            self._call_safely,
            self.upload_base_url,
            concurrency=upload_concurrency,
            timeout=self._transfer_timeout,
            min_rate=self.min_transfer_rate,
        )

    def _retrying(
        self,
        target: Callable[..., Awaitable[Any]],
        should_retry: Callable[[Exception], bool],
        floor: Callable[[Exception], float] | None = None,
    ) -> Callable[..., Awaitable[Any]]:
        return with_retries(
            target,
            should_retry,
            max_tries=self.max_retries + 1,
            base=self._retry_base,
            cap=self._retry_cap,
            rng=self._rng,
            floor=floor,
        )

    def _create_floor(self, exc: Exception) -> float:
        # A 429 means the request was dropped, not queued: wait out a whole window (9b).
        return self.create_limit.window if isinstance(exc, RateLimitError) else 0.0

    def __repr__(self) -> str:
        return f"KlingSession(base_url={self.base_url!r}, upload_base_url={self.upload_base_url!r})"

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

    def _open(self) -> HttpTransport:
        if self._closed:
            raise SessionClosedError("the session is closed")
        if self._transport is None:
            if self._http is None:
                self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
            self._transport = HttpTransport(self._http, timeout=self.request_timeout)
        return self._transport

    async def close(self) -> None:
        """End waits still in flight (they raise ``SessionClosedError``) and close connections.

        Only the work the session owns is ended, never a caller's own task. A createTask already
        on the wire is given up to ``request_timeout`` to land first; one not yet sent is dropped.
        """
        self._closed = True
        self._create_limiter.close()
        self._query_limiter.close()
        waits = [t for t in self._waits if not t.done()]
        for task in waits:
            task.cancel("kling session closed")
        if waits:
            await asyncio.wait(waits)
        await self._settle_submissions()
        if self._own_http and self._http is not None:
            await self._http.close()
        self._transport = None

    async def _settle_submissions(self) -> None:
        landing: list[asyncio.Task[str]] = []
        for task, sub in list(self._submissions.items()):
            sub.abandoned = True
            if task.done():
                continue
            if sub.sent:
                landing.append(task)
            else:
                task.cancel("kling session closed")  # never sent: nothing can exist
                landing.append(task)
        if not landing:
            return
        _, late = await asyncio.wait(landing, timeout=self.request_timeout)
        for task in late:
            task.cancel("kling session closed")
        if late:
            await asyncio.wait(late)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    # -- the one choke point for API requests --------------------------------------------------
    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.__api_key}", "User-Agent": self.user_agent}

    async def _call(
        self,
        endpoint: str,
        method: str,
        url: str,
        *,
        limiter: RateLimiter | None = None,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        data: Any = None,
        timeout: aiohttp.ClientTimeout | None = None,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> Any:
        """Send one request (holding a rate-limit slot while in flight) and decode its answer."""
        transport = self._open()
        if callable(data):
            data = data()  # a fresh multipart body for each attempt: a stream is read once
        started = time.perf_counter()
        if limiter is not None:
            await limiter.acquire()
        try:
            # The wait for a slot may have outlived the session.
            transport = self._open()
            if before_send is not None:
                await before_send()
            answer = await transport.send(
                method,
                url,
                headers=self._auth_headers(),
                json=json,
                params=params,
                data=data,
                timeout=timeout,
                what=endpoint,
            )
        finally:
            if limiter is not None:
                limiter.release()
        log.debug(
            "%s %s -> HTTP %d in %.0f ms",
            method,
            endpoint,
            answer.status,
            (time.perf_counter() - started) * 1000,
        )
        return decode_answer(
            answer.status,
            answer.headers,
            answer.body,
            endpoint=endpoint,
            now=datetime.now(UTC),
        )

    # -- tasks ---------------------------------------------------------------------------------
    async def _create_once(self, endpoint: str, body: dict[str, Any], sub: Submission) -> str:
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
                endpoint,
                "POST",
                f"{self.base_url}/api/v1/jobs/createTask",
                limiter=self._create_limiter,
                json=body,
                before_send=leaving,
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

    async def _submit(self, body: dict[str, Any], sub: Submission) -> str:
        try:
            task_id: str = await self._create_with_retries("createTask", body, sub)
        except BaseException as exc:
            sub.error = exc
            raise
        sub.task_id = task_id
        sub.sent = False
        self._waiter.created(task_id)
        return task_id

    async def create_task(
        self,
        inp: MotionControlInput,
        callback_url: str | None = None,
        *,
        before_send: Callable[[], Awaitable[None]] | None = None,
        submission: Submission | None = None,
    ) -> str:
        """Create a task and return its id.

        Retried only when the service surely created nothing (429 after a full window, 455, or
        no connection); if the request went out and its outcome is unknown (lost answer, a 5xx
        or gateway page, an unreadable answer), ``SubmissionUnknownError`` is raised instead.
        ``before_send`` is awaited just before each attempt leaves (after its rate-limit slot is
        granted): the place to record "this task may now exist" in a journal of your own.

        The request runs in a task the session owns. If the caller is cancelled while it is on
        the wire, it is let finish (up to ``request_timeout``) and the id is logged; pass a
        :class:`Submission` to read the outcome after a cancellation.
        """
        body = create_task_body(inp, callback_url or self.callback_url)
        self._open()
        sub = submission if submission is not None else Submission()
        sub.before_send = before_send
        owned = asyncio.create_task(self._submit(body, sub), name="kling createTask")
        sub.attach(owned)
        self._submissions[owned] = sub
        owned.add_done_callback(lambda done: self._submissions.pop(done, None))
        try:
            return await asyncio.shield(owned)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if owned.done() and current is not None and not current.cancelling():
                # The session ended the call (it closed), not this caller's own cancellation.
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
            self.request_timeout + 1.0, owned.cancel, "createTask took too long to land"
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
        wait = asyncio.create_task(
            self._waiter.wait(task_id, timeout, on_update), name=f"kling wait {task_id}"
        )
        self._waits.add(wait)
        wait.add_done_callback(self._waits.discard)
        try:
            # Cancelling the caller cancels its own wait (nobody else shares it).
            return await wait
        except asyncio.CancelledError:
            current = asyncio.current_task()
            caller_cancelled = current is not None and current.cancelling() > 0
            if self._closed and wait.cancelled() and not caller_cancelled:
                closed = SessionClosedError(f"the session closed while waiting for task {task_id}")
                closed.task_id = task_id
                raise closed from None
            raise
        except KlingError as exc:
            exc.task_id = exc.task_id or task_id
            raise

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

    # -- the whole chain ----------------------------------------------------------------------
    async def generate(
        self,
        image: MediaSource,
        video: MediaSource,
        *,
        prompt: str | None = None,
        character_orientation: CharacterOrientation = "video",
        mode: Mode = "720p",
        callback_url: str | None = None,
        download_to: str | os.PathLike[str] | None = None,
        on_event: OnEvent | None = None,
        timeout: float | None = None,
    ) -> GenerationResult:
        """Validate, upload, create, wait and (with ``download_to``) download one clip.

        ``image`` and ``video`` are local paths, ``UploadedFile`` values or http(s) URLs (used as
        is). ``timeout`` bounds the wait for the task (``TaskTimeoutError`` with its id). The
        clip is saved as ``<task id>.mp4`` in ``download_to``. Errors raise the classes of
        :mod:`kling_async.errors`; those about a created task carry its ``task_id``.
        """
        job = Job(image, video, prompt, character_orientation, mode)
        runner = JobRunner(
            self,
            download_to=download_to,
            on_event=on_event,
            callback_url=callback_url,
            job_timeout=timeout,
        )
        try:
            return await runner.run(job)
        finally:
            await runner.landed()

    def generate_many(
        self,
        jobs: Iterable[Job] | AsyncIterable[Job],
        *,
        journal: str | os.PathLike[str] | None = None,
        download_to: str | os.PathLike[str] | None = None,
        on_event: OnEvent | None = None,
        max_pending: int | None = None,
        max_running: int | None = None,
        job_timeout: float | None = None,
    ) -> BatchRun:
        """Run many jobs at once; yield a ``JobOutcome`` as each one completes.

        ``jobs`` (a plain or async iterable) is pulled lazily: at most ``max_pending`` jobs
        (default: twice the create limit) are taken but not yet created, and at most
        ``max_running`` (default: no cap) have a task in progress. ``job_timeout`` bounds each
        job's wait for its task. With ``journal`` (a SQLite file path), a rerun after a crash or
        Ctrl-C resumes tasks instead of creating them again. Use it as ``async with
        kling.generate_many(...) as outcomes:`` to be able to leave early cleanly.
        """
        pending = max_pending or 2 * self.create_limit.max_requests
        return BatchRun(
            self._generate_many(
                jobs,
                journal=journal,
                download_to=download_to,
                on_event=on_event,
                max_pending=pending,
                max_running=max_running,
                job_timeout=job_timeout,
            )
        )

    async def _generate_many(
        self,
        jobs: Iterable[Job] | AsyncIterable[Job],
        *,
        journal: str | os.PathLike[str] | None,
        download_to: str | os.PathLike[str] | None,
        on_event: OnEvent | None,
        max_pending: int,
        max_running: int | None,
        job_timeout: float | None,
    ) -> AsyncGenerator[JobOutcome, None]:
        async with contextlib.AsyncExitStack() as stack:
            book = await stack.enter_async_context(Journal(journal)) if journal else None
            runner = JobRunner(
                self,
                journal=book,
                download_to=download_to,
                on_event=on_event,
                job_timeout=job_timeout,
            )
            outcomes = run_many(runner, jobs, max_pending=max_pending, max_running=max_running)
            try:
                async for outcome in outcomes:
                    yield outcome
            finally:
                await outcomes.aclose()

    # -- uploads and downloads -----------------------------------------------------------------
    async def upload_image(
        self, path: str | os.PathLike[str], *, on_progress: OnProgress | None = None
    ) -> UploadedFile:
        """Check an image against the service's rules (headers only), then stream it up."""
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
        """Check a video against the rules for ``character_orientation``, then stream it up."""
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
        on_progress: Callable[[int, int | None], Any] | None = None,
    ) -> Path:
        """Stream a result to ``dest`` (a file, or a folder to put it in); return the file's path.

        The file appears complete or not at all (``.part``, then a rename), and only if what
        arrived is a video (``DownloadError`` otherwise). A transfer slower than
        ``min_transfer_rate`` (after ``request_timeout`` of grace) is ended. The request never
        carries the API key: result files live on other hosts.
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
            await self._fetch_file(
                url,
                target,
                timeout=self._transfer_timeout,
                on_progress=on_progress,
                headers={"User-Agent": self.user_agent},
                grace=self.request_timeout,
                min_rate=self.min_transfer_rate,
            )
        except KlingError as exc:
            exc.task_id = exc.task_id or task_id
            raise
        return target

    async def _fetch_once(self, url: str, target: Path, **kwargs: Any) -> int:
        # The HTTP session is looked up on each attempt: a retry after close() must not use it.
        return await stream_to_file(self._open().session, url, target, **kwargs)

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
    def create_limiter(self) -> RateLimiter:
        """The limiter shared by every task creation of this session."""
        return self._create_limiter

    @property
    def query_limiter(self) -> RateLimiter:
        """The limiter shared by every recordInfo query of this session."""
        return self._query_limiter
