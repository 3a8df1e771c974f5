"""``KlingSession``: the client, plus ``generate`` and ``generate_many`` (a thin composition).

The batch layer (``kling_async.batch``) is built on :class:`~kling_async.client.KlingClient`; this
module is the only place that puts the two together, so neither imports the other's caller.

Bounds: it holds no logic of its own beyond putting the client and the batch layer together.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterable, Iterable

from .batch import BatchRun, JobItem, JobRunner, OnEvent, run_many
from .client import KlingClient
from .errors import ConfigurationError
from .jobs import GenerationResult, Job, JobOutcome, MediaSource
from .journal import BatchJournal, Journal
from .models import (
    BackgroundSource,
    CharacterOrientation,
    ModeSpelling,
    MotionModel,
    check_background_source,
)
from .rules import MODEL_NAME
from .settings import DEFAULT_BASE_URL, DEFAULT_UPLOAD_BASE_URL

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_UPLOAD_BASE_URL", "KlingSession", "open_journal"]

JournalSpec = str | os.PathLike[str] | BatchJournal


def open_journal(spec: JournalSpec) -> BatchJournal:
    """The journal ``spec`` names: a SQLite file, a ``redis://`` URL, or a journal object.

    A ``redis://`` URL (with the ``redis`` extra) names a journal several workers share
    (``?journal=NAME`` names the batch); a journal object is returned as it is.
    """
    if not isinstance(spec, str | os.PathLike):
        return spec
    text = os.fspath(spec)
    if text.startswith(("redis://", "rediss://", "unix://")):
        try:
            from .redis import RedisJournal  # only when asked for: redis is an extra
        except ImportError as exc:
            raise ConfigurationError(str(exc)) from None
        return RedisJournal(text)
    return Journal(text)


class KlingSession(KlingClient):
    """An async session with kie.ai's kling motion-control models (2.6 and 3.0), and any other.

    Use it as ``async with KlingSession(api_key) as kling:``. Every coroutine of the session shares
    one limiter for task creation (``create_limit``) and one for queries (``query_limit``), so the
    service never has to answer 429 in steady state. ``poll`` sets when tasks are asked about,
    ``max_retries`` how often a safe call is retried on 429/455/5xx/transport failures (with
    jittered exponential backoff, honouring ``Retry-After``), and ``request_timeout`` bounds each
    HTTP request. ``clock`` and ``sleep`` exist for tests. Besides the API calls of
    :class:`~kling_async.client.KlingClient`, it runs whole jobs: :meth:`generate` and
    :meth:`generate_many`.
    """

    async def generate(
        self,
        image: MediaSource,
        video: MediaSource,
        *,
        prompt: str | None = None,
        character_orientation: CharacterOrientation = "video",
        mode: ModeSpelling = "720p",
        model: MotionModel = MODEL_NAME,
        background_source: BackgroundSource | None = None,
        callback_url: str | None = None,
        download_to: str | os.PathLike[str] | None = None,
        on_event: OnEvent | None = None,
        timeout: float | None = None,
    ) -> GenerationResult:
        """Validate, upload, create, wait and (with ``download_to``) download one clip.

        ``image`` and ``video`` are local paths, ``UploadedFile`` values or http(s) URLs (used as
        is). ``model`` is ``kling-2.6/motion-control`` or ``kling-3.0/motion-control`` (which also
        takes ``background_source``); ``mode`` may be spelled ``std``/``pro``. ``timeout`` bounds
        the wait for the task (``TaskTimeoutError`` with its id). The clip is saved as
        ``<task id>.mp4`` in ``download_to``. Errors raise the classes of
        :mod:`kling_async.errors`; those about a created task carry its ``task_id``.
        """
        job = Job(
            image,
            video,
            prompt,
            character_orientation,
            mode,
            model=model,
            background_source=background_source,
        )
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
        jobs: Iterable[JobItem] | AsyncIterable[JobItem],
        *,
        journal: JournalSpec | None = None,
        download_to: str | os.PathLike[str] | None = None,
        on_event: OnEvent | None = None,
        max_pending: int | None = None,
        max_running: int | None = None,
        job_timeout: float | None = None,
        max_credits: float | None = None,
        retry_failed: bool = False,
        model: MotionModel | None = None,
        background_source: BackgroundSource | None = None,
    ) -> BatchRun:
        """Run many jobs at once; yield a ``JobOutcome`` as each one completes.

        ``jobs`` (a plain or async iterable of ``Job`` or of rows such as ``{"image": ...,
        "video": ..., "mode": ...}``, see ``Job.from_row``) is pulled lazily; a row that makes no
        valid job ends as its own outcome with a ``ConfigurationError``, a file that breaks a
        rule with a ``MediaValidationError``, before any upload, and the batch goes on. Jobs are
        pulled lazily: at most ``max_pending`` jobs
        (default: twice the create limit) are taken but not yet created, and at most ``max_running``
        (default: no cap) have a task in progress. ``job_timeout`` bounds each job's wait for its
        task. With ``max_credits``, no task is created that would take the batch's estimated spend
        (per-second price times the video's length) over it: such jobs end with
        ``CreditLimitError``. With ``retry_failed``, jobs the journal holds as failed get a new task
        (never jobs whose creation is unknown). ``model`` and ``background_source`` are the
        defaults of jobs that leave theirs None (the model's default: kling-2.6/motion-control);
        a job of 2.6 given a background source ends with ``ConfigurationError``, unsent.
        With ``journal`` (a SQLite file path), a rerun after a crash or Ctrl-C resumes tasks
        instead of creating them again; with a ``redis://`` URL (or a ``RedisJournal``), several
        workers fed the same jobs split them, each job run by one. Use it as ``async with
        kling.generate_many(...) as outcomes:`` to be able to leave early cleanly.
        """
        check_background_source(model, background_source)
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
                max_credits=max_credits,
                retry_failed=retry_failed,
                model=model,
                background_source=background_source,
            )
        )

    async def _generate_many(
        self,
        jobs: Iterable[JobItem] | AsyncIterable[JobItem],
        *,
        journal: JournalSpec | None,
        download_to: str | os.PathLike[str] | None,
        on_event: OnEvent | None,
        max_pending: int,
        max_running: int | None,
        job_timeout: float | None,
        max_credits: float | None,
        retry_failed: bool,
        model: MotionModel | None,
        background_source: BackgroundSource | None,
    ) -> AsyncGenerator[JobOutcome, None]:
        async with contextlib.AsyncExitStack() as stack:
            book = await stack.enter_async_context(open_journal(journal)) if journal else None
            runner = JobRunner(
                self,
                journal=book,
                download_to=download_to,
                on_event=on_event,
                job_timeout=job_timeout,
                max_credits=max_credits,
                retry_failed=retry_failed,
                model=model,
                background_source=background_source,
            )
            outcomes = run_many(runner, jobs, max_pending=max_pending, max_running=max_running)
            try:
                async for outcome in outcomes:
                    yield outcome
            finally:
                await outcomes.aclose()
