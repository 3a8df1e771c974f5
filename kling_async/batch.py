"""One job from files to clip, and many at once: what ``generate`` and ``generate_many`` run.

A job goes: validate → upload (each content once) → createTask → wait → download. With a journal,
each step is recorded before the next, and a rerun picks up where the last run stopped.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
)
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .downloads import safe_file_name
from .errors import SubmissionUnknownError, TaskFailedError
from .jobs import GenerationResult, Job, JobEvent, JobEventKind, JobOutcome, MediaSource
from .journal import CREATED, CREATING, FAILED, PENDING, SUCCEEDED, UNKNOWN, Journal, JournalRecord
from .media import validate_image, validate_video
from .models import MotionControlInput, Task, TaskState, UploadedFile, is_http_url

if TYPE_CHECKING:
    from .session import KlingSession

__all__ = ["JobRunner", "run_many"]

OnEvent = Callable[[JobEvent], Awaitable[None] | None]
#: An upload recorded in the journal is reused only if it stays valid this much longer.
UPLOAD_MARGIN = timedelta(hours=1)


class JobRunner:
    """Runs jobs through one session, reporting events and (optionally) journaling each step."""

    def __init__(
        self,
        session: KlingSession,
        *,
        journal: Journal | None = None,
        download_to: str | os.PathLike[str] | None = None,
        on_event: OnEvent | None = None,
        callback_url: str | None = None,
    ) -> None:
        self.session = session
        self.journal = journal
        self.download_to = Path(download_to) if download_to is not None else None
        self.on_event = on_event
        self.callback_url = callback_url

    async def emit(self, kind: JobEventKind, key: str, **fields: Any) -> None:
        """Report one step; a plain or async ``on_event`` may be given."""
        if self.on_event is None:
            return
        result = self.on_event(JobEvent(kind, key, **fields))
        if asyncio.iscoroutine(result):
            await result

    async def _record(self, key: str, **fields: Any) -> None:
        if self.journal is not None:
            await self.journal.update(key, **fields)

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
        if record is not None and record.status in (SUCCEEDED, FAILED, UNKNOWN, CREATING):
            if after_create is not None:
                after_create()
            return await self._settled(job, record)
        task_id = record.task_id if record is not None else None
        if task_id is None:
            inp = MotionControlInput(
                await self._media(job, "image", record),
                await self._media(job, "video", record),
                prompt=job.prompt,
                character_orientation=job.character_orientation,
                mode=job.mode,
            )
            if before_create is not None:
                await before_create()
            try:
                task_id = await self._create(key, inp)
            finally:
                if after_create is not None:
                    after_create()
            await self.emit(JobEventKind.CREATED, key, task_id=task_id)
        else:
            if after_create is not None:
                after_create()
            await self.emit(JobEventKind.RESUMED, key, task_id=task_id)
        return await self._finish(key, task_id)

    async def _settled(self, job: Job, record: JournalRecord) -> GenerationResult:
        """A job the journal says has ended (or may have been created): never create it again."""
        key = job.job_key
        if record.status == SUCCEEDED and record.task_id is not None:
            task = Task(record.task_id, TaskState.SUCCESS, result_urls=record.result_urls)
            files = await self._download(key, task, record.files)
            await self.emit(JobEventKind.SKIPPED, key, task_id=task.task_id, detail="done before")
            return GenerationResult(task, task.result_urls, files)
        if record.status == FAILED and record.task_id is not None:
            task = Task(record.task_id, TaskState.FAIL, fail_msg=record.error)
            raise TaskFailedError(task)
        await self._record(key, status=UNKNOWN)
        raise SubmissionUnknownError(
            f"job {key}: its createTask was sent but the answer never reached the journal "
            f"({record.error or 'the batch stopped while it was in flight'}); it is not created "
            "again, to avoid paying twice. Check your kie.ai task list, then give the job a new "
            "key to redo it."
        )

    async def _media(self, job: Job, which: str, record: JournalRecord | None) -> str:
        source: MediaSource = job.image if which == "image" else job.video
        key = job.job_key
        if isinstance(source, UploadedFile):
            return source.url
        text = os.fspath(source)
        if is_http_url(text):
            return text
        if record is not None:
            url = record.image_url if which == "image" else record.video_url
            expires = record.image_expires if which == "image" else record.video_expires
            if url and expires and expires > datetime.now(UTC) + UPLOAD_MARGIN:
                return url
        path = Path(text)
        if which == "image":
            info_size = (await asyncio.to_thread(validate_image, path)).size_bytes
        else:
            info_size = (
                await asyncio.to_thread(validate_video, path, job.character_orientation)
            ).size_bytes
        await self.emit(JobEventKind.VALIDATED, key, path=path, bytes=info_size, detail=which)
        if which == "image":
            uploaded = await self.session.upload_image(path)
        else:
            uploaded = await self.session.upload_video(path, job.character_orientation)
        await self.emit(
            JobEventKind.UPLOADED, key, path=path, bytes=uploaded.size_bytes, detail=which
        )
        if which == "image":
            await self._record(key, image_url=uploaded.url, image_expires=uploaded.expires_at)
        else:
            await self._record(key, video_url=uploaded.url, video_expires=uploaded.expires_at)
        return uploaded.url

    async def _create(self, key: str, inp: MotionControlInput) -> str:
        async def sending() -> None:
            # Committed before the request leaves: a crash from here on cannot re-create it.
            await self._record(key, status=CREATING)

        try:
            task_id = await self.session.create_task(
                inp, self.callback_url, before_send=sending if self.journal else None
            )
        except SubmissionUnknownError as exc:
            await self._record(key, status=UNKNOWN, error=str(exc))
            raise
        except BaseException as exc:
            # The service surely created nothing: the job may be tried again later.
            await self._record(key, status=PENDING, error=f"{type(exc).__name__}: {exc}")
            raise
        await self._record(key, status=CREATED, task_id=task_id, error=None)
        return task_id

    async def _finish(self, key: str, task_id: str) -> GenerationResult:
        async def changed(task: Task) -> None:
            await self.emit(JobEventKind.STATE_CHANGED, key, task_id=task_id, task=task)

        try:
            task = await self.session.wait_for_task(task_id, on_update=changed)
        except TaskFailedError as exc:
            await self._record(key, status=FAILED, state="fail", error=exc.fail_msg)
            raise
        await self._record(key, status=SUCCEEDED, state="success", result_urls=task.result_urls)
        files = await self._download(key, task, ())
        return GenerationResult(task, task.result_urls, files)

    async def _download(self, key: str, task: Task, known: tuple[Path, ...]) -> tuple[Path, ...]:
        if self.download_to is None:
            return known
        base = safe_file_name(key, default="clip")
        files: list[Path] = []
        for index, url in enumerate(task.result_urls):
            suffix = Path(safe_file_name(url)).suffix or ".mp4"
            name = (
                f"{base}{suffix}" if len(task.result_urls) == 1 else f"{base}-{index + 1}{suffix}"
            )
            target = self.download_to / name
            if target in known and target.exists():
                files.append(target)
                continue
            path = await self.session.download(url, target, overwrite=True)
            files.append(path)
            await self.emit(
                JobEventKind.DOWNLOADED,
                key,
                task_id=task.task_id,
                path=path,
                bytes=(await asyncio.to_thread(path.stat)).st_size,
            )
        await self._record(key, files=files)
        return tuple(files)


async def _iterate(jobs: Iterable[Job] | AsyncIterable[Job]) -> AsyncIterator[Job]:
    if isinstance(jobs, AsyncIterable):
        async for job in jobs:
            yield job
    else:
        for job in jobs:
            yield job


async def run_many(
    runner: JobRunner,
    jobs: Iterable[Job] | AsyncIterable[Job],
    *,
    max_pending: int,
    max_running: int | None,
) -> AsyncGenerator[JobOutcome, None]:
    """Run jobs concurrently, pulling them lazily; yield each outcome as its job ends.

    At most ``max_pending`` jobs are pulled but not yet created, and at most ``max_running``
    (if set) have a task the service is working on; a job's failure never stops the others.
    """
    pending = asyncio.Semaphore(max_pending)
    running = asyncio.Semaphore(max_running) if max_running else None
    outcomes: asyncio.Queue[JobOutcome | BaseException | None] = asyncio.Queue()
    active: set[asyncio.Task[None]] = set()

    async def one(job: Job) -> None:
        released = False
        holds_running = False

        def release_pending() -> None:
            nonlocal released
            if not released:
                released = True
                pending.release()

        async def acquire_running() -> None:
            nonlocal holds_running
            if running is not None:
                await running.acquire()
                holds_running = True

        try:
            result = await runner.run(
                job, before_create=acquire_running, after_create=release_pending
            )
            outcome = JobOutcome(job, result=result)
        except Exception as exc:  # one job's failure is its outcome, never the batch's
            outcome = JobOutcome(job, error=exc)
            await runner.emit(JobEventKind.FAILED, job.job_key, error=exc, detail=str(exc))
        finally:
            release_pending()
            if holds_running and running is not None:
                running.release()
        outcomes.put_nowait(outcome)

    started = 0

    async def produce() -> None:
        nonlocal started
        try:
            async for job in _iterate(jobs):
                await pending.acquire()
                task = asyncio.create_task(one(job))
                started += 1
                active.add(task)
                task.add_done_callback(active.discard)
            outcomes.put_nowait(None)
        except Exception as exc:  # the caller's iterable failed: stop and tell them
            outcomes.put_nowait(exc)

    producer = asyncio.create_task(produce())
    exhausted = False
    delivered = 0
    try:
        while not (exhausted and delivered == started):
            item = await outcomes.get()
            if item is None:
                exhausted = True
                continue
            if isinstance(item, BaseException):
                raise item
            delivered += 1
            yield item
    finally:
        producer.cancel()
        for task in list(active):
            task.cancel()
        await asyncio.gather(producer, *active, return_exceptions=True)
