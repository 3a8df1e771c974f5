"""The command line's live display, drawn with rich: transfers, task states, a batch bar, a summary.

Fed the :class:`~kling_async.jobs.JobEvent` s of a run (:meth:`JobsDisplay.on_event`) and, in a
batch, its outcomes (:meth:`JobsDisplay.finished`), it draws on a rich console (stderr, in the
CLI). Part of the ``cli`` extra: only the CLI imports it, and only when rich is installed.

Bounds: it draws what it is told; it never calls the service and never decides anything.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.filesize import decimal
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from .errors import SubmissionUnknownError, TaskFailedError
from .jobs import JobEvent, JobEventKind, JobOutcome
from .models import TaskState
from .rules import DOLLARS_PER_CREDIT

__all__ = ["JobsDisplay"]

_MOVING = {JobEventKind.UPLOADING: "upload", JobEventKind.DOWNLOADING: "download"}
_MOVED = {JobEventKind.UPLOADED: "upload", JobEventKind.DOWNLOADED: "download"}
#: What a job is doing after each event, for the batch bar's counts.
_STEPS = {
    JobEventKind.VALIDATED: "checking",
    JobEventKind.UPLOADING: "uploading",
    JobEventKind.UPLOADED: "uploading",
    JobEventKind.CREATED: "created",
    JobEventKind.RESUMED: "created",
    JobEventKind.DOWNLOADING: "downloading",
    JobEventKind.DOWNLOADED: "downloading",
}
_ORDER = (
    "checking",
    "uploading",
    "created",
    *(state.value for state in TaskState),
    "downloading",
)
#: Keys named in one row of the summary; the rest are counted.
_KEYS_SHOWN = 5


class JobsDisplay:
    """A live view of one clip or a batch on a rich console, fed job events and outcomes.

    With ``jobs`` (a batch), one bar counts the finished jobs and says how many are at each
    step; transfers show while they run. Without it (one clip), each transfer and the task's
    state stay on screen. ``auto_refresh=False`` redraws on each update instead of on a timer;
    ``redirect_stdout`` prints what is written to stdout above the display (when both are the
    same terminal). Use it as a context manager around the run.
    """

    def __init__(
        self,
        console: Console,
        *,
        jobs: int | None = None,
        auto_refresh: bool = True,
        redirect_stdout: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self._clock = clock
        self._started = clock()
        self._redraw = not auto_refresh
        # Fixed widths: the bars stay put while descriptions change.
        self._progress = Progress(
            TextColumn("{task.description}", table_column=Column(width=52, no_wrap=True)),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[amount]}", table_column=Column(width=24, no_wrap=True)),
            TimeElapsedColumn(),
            console=console,
            auto_refresh=auto_refresh,
            refresh_per_second=4,
            redirect_stdout=redirect_stdout,
            get_time=clock,
        )
        self._jobs = jobs
        self._bar = (
            None if jobs is None else self._progress.add_task("batch", total=jobs, amount="")
        )
        self._transfers: dict[tuple[str, Path], TaskID] = {}
        self._tasks: dict[str, TaskID] = {}
        self._steps: dict[str, str] = {}
        self._outcomes: list[JobOutcome] = []
        self._earlier: set[str] = set()  # jobs whose task an earlier run created
        self._describe_batch()

    @classmethod
    def on_stderr(cls, *, jobs: int | None = None, redirect_stdout: bool = False) -> Self:
        """A display on the process's stderr."""
        return cls(Console(stderr=True), jobs=jobs, redirect_stdout=redirect_stdout)

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    # -- what it is fed ----------------------------------------------------------------------------
    def on_event(self, event: JobEvent) -> None:
        """Show one step of one job (an ``on_event`` handler for ``generate``/``generate_many``)."""
        if event.kind in _MOVING and event.path is not None and event.bytes is not None:
            self._moving(_MOVING[event.kind], event.path, event.bytes, event.total)
        elif event.kind in _MOVED and event.path is not None and self._jobs is not None:
            self._forget((_MOVED[event.kind], event.path))
        if event.kind in (JobEventKind.CREATED, JobEventKind.RESUMED, JobEventKind.STATE_CHANGED):
            self._task(event)
        if event.kind in (JobEventKind.SKIPPED, JobEventKind.RESUMED):
            self._earlier.add(event.job_key)
        step = _STEPS.get(event.kind)
        if event.kind is JobEventKind.STATE_CHANGED and event.task is not None:
            step = event.task.state.value
        if step is not None:
            self._steps[event.job_key] = step
        self._describe_batch()
        self._refresh()

    def finished(self, outcome: JobOutcome) -> None:
        """Count one finished job of a batch (it goes in the summary)."""
        self._outcomes.append(outcome)
        self._steps.pop(outcome.job_key, None)
        self._describe_batch()
        self._refresh()

    # -- the summary -------------------------------------------------------------------------------
    def summary(self, journal: str | None = None) -> Table:
        """A table of the batch: done, failed and why, unknown and what to do, credits, time."""
        table = Table(title="summary", title_justify="left")
        table.add_column("outcome")
        table.add_column("jobs", justify="right")
        table.add_column("detail", overflow="fold")
        done = [o for o in self._outcomes if o.ok and o.result is not None]
        saved = sum(len(o.result.files) for o in done if o.result is not None)
        table.add_row("done", str(len(done)), f"{saved} clips saved" if saved else "")
        failed: defaultdict[str, list[JobOutcome]] = defaultdict(list)
        unknown: list[str] = []
        for outcome in self._outcomes:
            if isinstance(outcome.error, SubmissionUnknownError):
                unknown.append(outcome.job_key)
            elif outcome.error is not None:
                failed[_why(outcome.error)].append(outcome)
        for why, group in failed.items():
            first = str(group[0].error)
            table.add_row(why, str(len(group)), f"{first}\n{_keys(o.job_key for o in group)}")
        if unknown:
            table.add_row(
                "unknown",
                str(len(unknown)),
                "a task may exist: check the task list in kie.ai's console; if none was made, "
                f"`kling-async release {journal or 'JOURNAL'} KEY...` and run the batch again\n"
                + _keys(unknown),
            )
        spent = sum(o.credits or 0 for o in self._outcomes if o.job_key not in self._earlier)
        table.add_row("credits used now", f"{spent:g}", f"${spent * DOLLARS_PER_CREDIT:.2f}")
        if self._earlier:
            # A resumed batch: what earlier runs spent is not this run's spend.
            before = sum(o.credits or 0 for o in self._outcomes if o.job_key in self._earlier)
            table.add_row("by earlier runs", f"{before:g}", f"${before * DOLLARS_PER_CREDIT:.2f}")
        table.add_row("elapsed", _duration(self._clock() - self._started), "")
        return table

    def print_summary(self, journal: str | None = None) -> None:
        """Print :meth:`summary` on the display's console."""
        self.console.print(self.summary(journal))

    # -- drawing -----------------------------------------------------------------------------------
    def _moving(self, direction: str, path: Path, done: int, total: int | None) -> None:
        key = (direction, path)
        row = self._transfers.get(key)
        complete = total is not None and done >= total
        amount = decimal(done) if total is None else f"{decimal(done)} / {decimal(total)}"
        if row is None:
            if complete and self._jobs is not None:
                return  # a shared upload another job already showed to its end
            row = self._progress.add_task(
                f"{direction} {path.name}", total=total, completed=done, amount=amount
            )
            self._transfers[key] = row
        self._progress.update(row, completed=done, amount=amount)
        if complete and self._jobs is not None:
            self._forget(key)

    def _forget(self, key: tuple[str, Path]) -> None:
        row = self._transfers.pop(key, None)
        if row is not None:
            self._progress.remove_task(row)

    def _task(self, event: JobEvent) -> None:
        """One clip: a row for its task, saying its state."""
        if self._jobs is not None or event.task_id is None:
            return
        state = event.task.state.value if event.task is not None else "created"
        row = self._tasks.get(event.task_id)
        if row is None:
            row = self._progress.add_task("", total=None, amount="")
            self._tasks[event.task_id] = row
        self._progress.update(row, description=f"task {event.task_id}: {state}")
        if event.task is not None and event.task.state.is_terminal:
            ok = event.task.state is TaskState.SUCCESS
            self._progress.update(row, total=1, completed=1 if ok else 0)

    def _describe_batch(self) -> None:
        if self._bar is None:
            return
        counts = Counter(self._steps.values())
        steps = " · ".join(f"{counts[s]} {s}" for s in _ORDER if counts[s])
        failed = sum(1 for o in self._outcomes if not o.ok)
        self._progress.update(
            self._bar,
            completed=len(self._outcomes),
            description="batch" + (f" · {steps}" if steps else ""),
            amount=f"{len(self._outcomes)}/{self._jobs} jobs"
            + (f" ({failed} failed)" if failed else ""),
        )

    def _refresh(self) -> None:
        if self._redraw:
            self._progress.refresh()


def _why(error: BaseException) -> str:
    """How a failure is grouped in the summary: the service's fail code, or the error's kind."""
    if isinstance(error, TaskFailedError):
        return f"failed [{error.fail_code or '?'}]"
    return f"failed: {type(error).__name__}"


def _keys(keys: Iterable[str]) -> str:
    names = list(keys)
    shown = ", ".join(names[:_KEYS_SHOWN])
    more = len(names) - _KEYS_SHOWN
    return f"jobs: {shown}" + (f" and {more} more" if more > 0 else "")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
