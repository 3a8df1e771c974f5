"""One job from files to clip: validate, upload, create, wait, download, each step journaled.

Owns the job's journal status (``pending → creating → created → succeeded | failed``, or
``unknown``) and the bookkeeping of createTask calls left on the wire by a cancelled job. Built on
:class:`~kling_async.client.KlingClient`; never imported by it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .. import telemetry
from ..callbacks import callback_token, callback_url_with_token
from ..client import KlingClient
from ..downloads import safe_file_name
from ..errors import (
    ConfigurationError,
    CreditLimitError,
    KlingError,
    SubmissionUnknownError,
    TaskFailedError,
)
from ..jobs import GenerationResult, Job, JobEventKind, MediaSource
from ..journal import (
    CREATING,
    FAILED,
    PENDING,
    SUCCEEDED,
    UNKNOWN,
    BatchJournal,
    JournalRecord,
)
from ..media import validate_image, validate_video
from ..models import (
    BackgroundSource,
    MotionControlInput,
    MotionModel,
    Task,
    TaskState,
    UploadedFile,
    check_background_source,
    is_http_url,
)
from ..rules import MODEL_NAME, estimate_credits
from ..submission import Submission
from ..webhooks import WebhookReceiver
from .events import EventReporter, OnEvent
from .landing import Landings

__all__ = ["JobRunner", "OnEvent", "file_stem"]

log = logging.getLogger("kling_async")

_UNSAFE_NAME = re.compile(r"[^a-z0-9._-]+")
#: How long a job whose createTask answer was lost waits for its callback (without a job_timeout).
UNKNOWN_CALLBACK_WAIT = 15 * 60.0
#: An upload recorded in the journal is reused only if it stays valid this much longer.
UPLOAD_MARGIN = timedelta(hours=1)


class JobRunner(EventReporter):
    """Runs jobs through one session, reporting events and (optionally) journaling each step.

    ``model`` and ``background_source`` are the defaults of jobs that leave theirs None.
    """

    def __init__(
        self,
        session: KlingClient,
        *,
        journal: BatchJournal | None = None,
        download_to: str | os.PathLike[str] | None = None,
        on_event: OnEvent | None = None,
        callback_url: str | None = None,
        job_timeout: float | None = None,
        max_credits: float | None = None,
        retry_failed: bool = False,
        clock: Callable[[], float] = time.monotonic,
        model: MotionModel | None = None,
        background_source: BackgroundSource | None = None,
    ) -> None:
        check_background_source(model, background_source)
        self.model = model
        self.background_source = background_source
        self.session = session
        self._clock = clock  # spaces progress events
        self.journal = journal
        self.download_to = Path(download_to) if download_to is not None else None
        self.on_event = on_event
        self.callback_url = callback_url
        self.job_timeout = job_timeout
        if max_credits is not None and not max_credits >= 0:
            raise ConfigurationError(f"max_credits must be a number >= 0; got {max_credits!r}")
        self.max_credits = max_credits
        self.retry_failed = retry_failed
        #: Estimated credits of the tasks this runner created (or may have): the batch's spend.
        self._committed = 0.0
        # createTask calls whose job was cancelled while they were on the wire (or recorded):
        # owned there, awaited by :meth:`landed` before the journal closes.
        self.landings = Landings(journal, self.emit, session.request_timeout)

    async def landed(self) -> None:
        """Wait until every createTask left on the wire by a cancelled job is recorded."""
        await self.landings.landed()

    async def _record(self, key: str, **fields: Any) -> None:
        if self.journal is not None:
            await self.journal.update(key, **fields)

    @telemetry.traced_job  # one span, log scope and outcome line per job
    async def run(
        self,
        job: Job,
        *,
        before_create: Callable[[], Awaitable[None]] | None = None,
        after_create: Callable[[], None] | None = None,
    ) -> GenerationResult:
        """Take ``job`` from wherever it stands to its clip; raise the error that stopped it."""
        key = job.job_key
        record = await self.journal.get(key) if self.journal is not None else None
        if record is not None and record.status == FAILED and self.retry_failed:
            # Asked for: a task that ended in failure is paid for already; make a new one.
            await self._record(
                key, status=PENDING, task_id=None, state=None, error=None, fail_code=None
            )
            record = await self.journal.get(key) if self.journal is not None else None
        if record is not None and record.status != PENDING:
            self._same_model(job, record)
        if record is not None and record.status in (SUCCEEDED, FAILED, UNKNOWN, CREATING):
            if after_create is not None:
                after_create()
            return await self._settled(job, record)
        task_id = record.task_id if record is not None else None
        if task_id is None:
            model, background_source = self._options(job)
            # Both files are judged before either is uploaded: a bad video costs no upload.
            seconds = await self._validate(job)
            image_url, video_url = await self._upload(job, record)
            inp = MotionControlInput(
                image_url,
                video_url,
                prompt=job.prompt,
                character_orientation=job.character_orientation,
                mode=job.mode,
                model=model,
                background_source=background_source,
            )
            if before_create is not None:
                await before_create()
            cost = self._reserve(job, seconds, model)
            # A token of this submission alone: a callback of an earlier take of the same job
            # can never be taken for this one.
            token = secrets.token_urlsafe(18)
            sub = Submission()
            try:
                task_id = await self._create(key, inp, token, sub)
            except SubmissionUnknownError as unknown:  # it may exist: its cost stays counted
                if after_create is not None:
                    after_create()  # the batch may go on while this job listens for its callback
                    after_create = None
                # With a webhook receiver, the task's callback can still tell us its id.
                task_id = await self._resolve_by_callback(
                    key, token, unknown, wait=True, kind=JobEventKind.CREATED
                )
            except BaseException:
                if sub.surely_not_created:  # its cost is free again
                    self._committed -= cost
                # Cancelled on the wire, or as its answer came: the task may exist, or does
                # (``landings`` records it), and its cost stays counted.
                raise
            else:  # paid for: a journal that cannot record it never takes back its cost
                await self.landings.record_created(key, task_id)
            finally:
                if after_create is not None:
                    after_create()
            if seconds is not None:  # at the model's documented price (rules.py)
                telemetry.count(
                    "credits.estimated", estimate_credits(seconds, job.mode, model=model)
                )
            await self.emit(JobEventKind.CREATED, key, task_id=task_id)
        else:
            if after_create is not None:
                after_create()
            await self.emit(JobEventKind.RESUMED, key, task_id=task_id)
        return await self._finish(job, task_id)

    def _options(self, job: Job) -> tuple[MotionModel, BackgroundSource | None]:
        """The job's model and background source, its own or the batch's; checked together."""
        model = job.model or self.model or MODEL_NAME
        background_source = job.background_source or self.background_source
        check_background_source(model, background_source)
        return model, background_source

    def _same_model(self, job: Job, record: JournalRecord) -> None:
        """A job the journal holds as sent to one model is never handed back for another."""
        made_with = record.model or MODEL_NAME  # journals before schema 4 knew only 2.6
        asked, _ = self._options(job)
        if made_with != asked:
            raise ConfigurationError(
                f"job {job.job_key}: the journal holds it as sent to {made_with}, but this run "
                f"asks for {asked}; give the job a new key (or use another journal) to make it "
                f"with {asked}"
            )

    async def _settled(self, job: Job, record: JournalRecord) -> GenerationResult:
        """A job the journal says has ended (or may have been created): never create it again."""
        key = job.job_key
        if record.status == SUCCEEDED and record.task_id is not None:
            task = Task(
                record.task_id,
                TaskState.SUCCESS,
                model=record.model or MODEL_NAME,
                result_urls=record.result_urls,
                credits_consumed=record.credits,
            )
            files = await self._download(job, task, record.files)
            await self.emit(JobEventKind.SKIPPED, key, task_id=task.task_id, detail="done before")
            return GenerationResult(task, task.result_urls, files)
        if record.status == FAILED and record.task_id is not None:
            task = Task(
                record.task_id,
                TaskState.FAIL,
                model=record.model or MODEL_NAME,
                fail_code=record.fail_code,
                fail_msg=record.error,
            )
            raise TaskFailedError(task)
        await self._record(key, status=UNKNOWN)
        unknown = SubmissionUnknownError(
            f"job {key}: its createTask was sent but the answer never reached the journal "
            f"({record.error or 'the batch stopped while it was in flight'}); it is not created "
            "again, to avoid paying twice. Check your kie.ai task list; if no task was made, "
            "release the job (kling_async.journal.release_jobs, or "
            "`python -m kling_async release JOURNAL KEY`) and run the batch again.",
            job_key=key,
        )
        # A callback received meanwhile by this process's receiver may still name the task.
        if record.callback_token is None:
            raise unknown
        task_id = await self._resolve_by_callback(
            key, record.callback_token, unknown, wait=False, kind=JobEventKind.RESUMED
        )
        await self.emit(JobEventKind.RESUMED, key, task_id=task_id)
        return await self._finish(job, task_id)

    def _callback_url(self, token: str) -> str | None:
        """The callback URL of one submission: with a receiver, it carries the token."""
        base = self.callback_url or self.session.callback_url
        if base is None or self.session.webhook is None:
            return base
        return callback_url_with_token(base, token)

    async def _resolve_by_callback(
        self,
        key: str,
        token: str,
        unknown: SubmissionUnknownError,
        *,
        wait: bool,
        kind: JobEventKind,
    ) -> str:
        """The task id of a submission whose answer was lost, from its callback; else raise.

        ``kind``: the event the caller reports it with (told even if the job is cancelled).
        """
        receiver = self.session.webhook
        if receiver is None or self._callback_url(token) is None:
            raise unknown
        heard = receiver.subscribe_token(token)
        try:
            if wait and not heard.done() and not receiver.closed:
                limit = self.job_timeout if self.job_timeout is not None else UNKNOWN_CALLBACK_WAIT
                await self._listen(heard, receiver, limit)
            if not heard.done() or heard.cancelled():
                raise unknown
            called_back = heard.result()
        except asyncio.CancelledError:
            if heard.done() and not heard.cancelled() and heard.exception() is None:
                self._cancelled_with(key, heard.result().task_id)
            raise
        finally:
            receiver.unsubscribe_token(token, heard)
        # The token is not signed: only the service itself may confirm the task is this job's.
        try:
            task = await self.session.get_task(called_back.task_id)
        except asyncio.CancelledError:
            self._cancelled_with(key, called_back.task_id)
            raise
        except KlingError as exc:
            log.warning(
                "job %s: its callback names task %s, but the service could not confirm it (%s)",
                key,
                called_back.task_id,
                exc,
            )
            raise unknown from exc
        if callback_token(task.callback_url) not in (token, None):
            log.warning("callback for job %s named task %s of another job", key, task.task_id)
            raise unknown
        await self.landings.record_created(key, task.task_id, kind)
        log.info("job %s: lost createTask answer resolved by callback: task %s", key, task.task_id)
        return task.task_id

    def _cancelled_with(self, key: str, task_id: str) -> None:
        # The callback's id is not confirmed yet (its token is not signed), so it is not
        # recorded as the job's; said, so that a caller without a journal can check it.
        log.warning(
            "job %s: cancelled while its callback named task %s (unconfirmed)", key, task_id
        )

    async def _listen(
        self, heard: asyncio.Future[Task], receiver: WebhookReceiver, limit: float
    ) -> None:
        """Wait for ``heard`` up to ``limit`` s, less if the session or the receiver closes."""
        closing: asyncio.Future[Any] = asyncio.ensure_future(self.session.until_closed())
        try:
            deadline = asyncio.get_running_loop().time() + limit
            while not heard.done() and not receiver.closed:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return
                # A closed receiver resolves nothing: look at it now and then.
                either: set[asyncio.Future[Any]] = {heard, closing}
                done, _ = await asyncio.wait(
                    either, timeout=min(left, 5.0), return_when=asyncio.FIRST_COMPLETED
                )
                if closing in done:
                    return
        finally:
            closing.cancel()

    @telemetry.traced("validate")
    async def _validate(self, job: Job) -> float | None:
        """Judge the job's local files (headers only); return the video's seconds if known."""
        seconds = None
        for which, source in (("image", job.image), ("video", job.video)):
            if isinstance(source, UploadedFile) or is_http_url(os.fspath(source)):
                continue
            path = Path(os.fspath(source))
            if which == "image":
                size = (await asyncio.to_thread(validate_image, path)).size_bytes
            else:
                info = await asyncio.to_thread(validate_video, path, job.character_orientation)
                size, seconds = info.size_bytes, info.duration_s
            await self.emit(
                JobEventKind.VALIDATED, job.job_key, path=path, bytes=size, detail=which
            )
        return seconds

    def _reserve(self, job: Job, seconds: float | None, model: str) -> float:
        """Count the job's estimated cost against ``max_credits``; refuse what would pass it."""
        if self.max_credits is None:
            return 0.0
        if seconds is None:
            raise CreditLimitError(
                f"job {job.job_key}: its video is not a local file, so its cost cannot be "
                "estimated; with max_credits set it is not created"
            )
        cost = estimate_credits(seconds, job.mode, model=model)
        if self._committed + cost > self.max_credits:
            raise CreditLimitError(
                f"job {job.job_key}: its task would cost about {cost:g} credits, taking the "
                f"batch to {self._committed + cost:g} of max_credits={self.max_credits:g}; "
                "it is not created"
            )
        # Counted at once (before any await): concurrent jobs never overshoot together.
        self._committed += cost
        return cost

    @telemetry.traced("upload", join=True)  # one span for the step; each file an event in it
    async def _upload(self, job: Job, record: JournalRecord | None) -> tuple[str, str]:
        """The URLs of the job's image and video: uploaded now, or earlier (journal, or given)."""
        return await self._media(job, "image", record), await self._media(job, "video", record)

    async def _media(self, job: Job, which: str, record: JournalRecord | None) -> str:
        source: MediaSource = job.image if which == "image" else job.video
        key = job.job_key
        if isinstance(source, UploadedFile) or is_http_url(os.fspath(source)):
            telemetry.event("file", which=which, source="given")
            return source.url if isinstance(source, UploadedFile) else os.fspath(source)
        text = os.fspath(source)
        if record is not None:
            url = record.image_url if which == "image" else record.video_url
            expires = record.image_expires if which == "image" else record.video_expires
            if url and expires and expires > datetime.now(UTC) + UPLOAD_MARGIN:
                telemetry.event("file", which=which, source="journal")
                return url
        path = Path(text)
        # The upload returns once its last report is delivered: UPLOADED comes after it.
        progress = self.transfer(JobEventKind.UPLOADING, key, path, detail=which).on_progress
        if which == "image":
            uploaded = await self.session.upload_image(path, on_progress=progress)
        else:
            uploaded = await self.session.upload_video(
                path, job.character_orientation, on_progress=progress
            )
        await self.emit(
            JobEventKind.UPLOADED, key, path=path, bytes=uploaded.size_bytes, detail=which
        )
        if which == "image":
            await self._record(key, image_url=uploaded.url, image_expires=uploaded.expires_at)
        else:
            await self._record(key, video_url=uploaded.url, video_expires=uploaded.expires_at)
        return uploaded.url

    async def _create(self, key: str, inp: MotionControlInput, token: str, sub: Submission) -> str:
        callback_url = self._callback_url(token)

        async def sending() -> None:
            # Committed before the request leaves: a crash from here on cannot re-create it.
            await self._record(
                key,
                status=CREATING,
                callback_token=token if callback_url is not None else None,
                model=inp.model,
            )

        try:
            task_id = await self.session.create_task(
                inp,
                callback_url,
                before_send=sending if self.journal else None,
                submission=sub,
            )
        except asyncio.CancelledError:
            # The session lets a request on the wire land; record how it ends (and tell of
            # its task), even though this job is going away.
            self.landings.land(key, sub)
            raise
        except SubmissionUnknownError as exc:
            await self._record(key, status=UNKNOWN, error=exc.message)
            raise SubmissionUnknownError(
                f"job {key}: {exc.message}. Check the task list in kie.ai's console; if no task "
                f"was made, release the job (python -m kling_async release JOURNAL {key}) and "
                "run the batch again",
                request_body=exc.request_body,
                job_key=key,
            ) from exc
        except Exception as exc:
            if sub.sent:
                # An error no answer explains, after the request left: the task may exist.
                await self._record(key, status=UNKNOWN, error=f"{type(exc).__name__}: {exc}")
                raise SubmissionUnknownError(
                    f"job {key}: createTask failed after it was sent ({type(exc).__name__}: "
                    f"{exc}); the task may exist, so it is not sent again",
                    job_key=key,
                ) from exc
            # The service surely created nothing: the job may be tried again later.
            await self._record(key, status=PENDING, error=f"{type(exc).__name__}: {exc}")
            raise
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: record, then let it go
            status = UNKNOWN if sub.sent else PENDING
            await self._record(key, status=status, error=f"{type(exc).__name__}")
            raise
        return task_id  # recorded by the caller

    async def _finish(self, job: Job, task_id: str) -> GenerationResult:
        key = job.job_key

        async def changed(task: Task) -> None:
            await self.emit(JobEventKind.STATE_CHANGED, key, task_id=task_id, task=task)

        try:
            task = await self.session.wait_for_task(
                task_id, timeout=self.job_timeout, on_update=changed
            )
        except TaskFailedError as exc:
            await self._record(
                key, status=FAILED, state="fail", error=exc.fail_msg, fail_code=exc.fail_code
            )
            raise
        await self._record(
            key,
            status=SUCCEEDED,
            state="success",
            result_urls=task.result_urls,
            credits=task.credits_consumed,
        )
        files = await self._download(job, task, ())
        return GenerationResult(task, task.result_urls, files)

    async def _download(self, job: Job, task: Task, known: tuple[Path, ...]) -> tuple[Path, ...]:
        try:
            return await self._download_all(job, task, known)
        except KlingError as exc:
            exc.task_id = exc.task_id or task.task_id
            raise

    async def _download_all(
        self, job: Job, task: Task, known: tuple[Path, ...]
    ) -> tuple[Path, ...]:
        key = job.job_key
        if self.download_to is None:
            return known
        # A job's own key names its file; without one, the task id does (three generate() calls on
        # the same inputs make three files). Either is stable across reruns.
        base = file_stem(job.key) if job.key is not None else safe_file_name(task.task_id)
        files: list[Path] = []
        for index, url in enumerate(task.result_urls):
            suffix = Path(safe_file_name(url)).suffix or ".mp4"
            # The key is kept whole ("a.mp4" gives "a.mp4.mp4"): keys "a" and "a.mp4" must differ.
            name = (
                f"{base}{suffix}" if len(task.result_urls) == 1 else f"{base}-{index + 1}{suffix}"
            )
            target = self.download_to / name
            if target in known and await asyncio.to_thread(target.exists):
                files.append(target)
                continue
            moving = self.transfer(JobEventKind.DOWNLOADING, key, target, task_id=task.task_id)
            path = await self.session.download(
                url, target, overwrite=True, on_progress=moving.on_progress
            )
            files.append(path)
            size = (await asyncio.to_thread(path.stat)).st_size
            # Without a Content-Length, no report was known to be the last: say it now.
            await moving.settle(size, timeout=self.session.request_timeout)
            await self.emit(
                JobEventKind.DOWNLOADED, key, task_id=task.task_id, path=path, bytes=size
            )
        await self._record(key, files=files)
        return tuple(files)


def file_stem(key: str) -> str:
    """A file name stem for a job key: safe on every file system, and distinct for distinct keys.

    A key that is already a safe lower-case name is used as is; any other gets a short hash of the
    key itself, so ``alice/clip1`` and ``bob/clip1`` (or ``Run?1`` and ``run?1``) never collide.
    """
    safe = _UNSAFE_NAME.sub("_", key.lower()).strip("._")[:80]
    if safe == key and safe:
        return safe
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{safe}-{digest}" if safe else f"job-{digest}"
