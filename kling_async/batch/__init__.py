"""One job from files to clip, and many at once: what ``generate`` and ``generate_many`` run.

A job goes: validate → upload (each content once) → createTask → wait → download. With a journal,
each step is recorded before the next, and a rerun picks up where the last run stopped.

A job's journal status moves ``pending → creating → created → succeeded | failed``. It goes back
to ``pending`` only when its createTask surely never reached the service; anything else after
the request left is ``unknown`` ("may exist"), and the job is never created again until the user
releases it (:func:`kling_async.journal.release_jobs`). A batch that is cancelled stops taking
jobs and cancels their work, but a createTask already on the wire is let land (bounded by the
request timeout) and its task id recorded: Ctrl-C normally leaves no unknown job behind.
"""

from __future__ import annotations

from .many import BatchRun, JobItem, run_many
from .runner import JobRunner, OnEvent, file_stem

__all__ = ["BatchRun", "JobItem", "JobRunner", "OnEvent", "file_stem", "run_many"]
