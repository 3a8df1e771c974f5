"""Make every clip listed in a CSV manifest, with a progress bar; run it again to resume.

    python examples/csv_batch.py jobs.csv --out clips/

The manifest has a header row and the columns ``image`` and ``video`` (paths relative to the
manifest), and optionally ``prompt``, ``orientation`` (``video`` or ``image``), ``mode``
(``720p`` or ``1080p``) and ``key`` (the job's name; its clip is saved as ``KEY.mp4``)::

    image,video,prompt,key
    fox.png,salsa.mp4,dancing on a neon street,fox-salsa
    fox.png,tango.mp4,,fox-tango

Every step is written to a journal (``jobs.csv.journal.sqlite`` by default), so a second run
skips the clips already made, waits on the tasks already created and never pays for a clip
twice, even after a crash or Ctrl-C. On a terminal, a progress bar (``rich``) counts finished
jobs and shows how many are at each step; a summary follows.

Configuration comes from the environment: ``KIE_API_KEY`` (required) and ``KIE_BASE_URL`` (to
point it at a simulator: ``python -m kling_async.simulator --time-scale 0.01`` prints both).
Exit codes: 0 every clip made, 1 some job failed, 2 a bad manifest or setting, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
import time
from collections import Counter
from pathlib import Path
from typing import cast

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from kling_async import (
    ConfigurationError,
    Job,
    JobEvent,
    JobEventKind,
    JobOutcome,
    KlingError,
    KlingSession,
    MediaValidationError,
    SubmissionUnknownError,
)
from kling_async.models import CharacterOrientation, Mode

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
COLUMNS = ("image", "video", "prompt", "orientation", "mode", "key")
#: Steps a job is "at" while it runs, in the order the bar lists them.
STEPS = ("checked", "uploaded", "waiting", "queuing", "generating", "downloading")


class ManifestError(Exception):
    """The manifest cannot be read, or a row of it is not a valid job."""


def read_manifest(path: Path) -> list[Job]:
    """The jobs of a CSV manifest; paths are taken relative to the manifest's folder."""
    base = path.parent
    jobs: list[Job] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = {"image", "video"} - set(reader.fieldnames or ())
            if missing:
                raise ManifestError(f"{path}: no {' or '.join(sorted(missing))} column")
            unknown = set(reader.fieldnames or ()) - set(COLUMNS)
            if unknown:
                raise ManifestError(f"{path}: unknown column(s) {', '.join(sorted(unknown))}")
            # Line 1 is the header, so the first job is on line 2.
            for line, row in enumerate(reader, 2):
                jobs.append(_job(row, base, f"{path}:{line}"))
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{path} is not UTF-8 text") from None
    return jobs


def _job(row: dict[str, str | None], base: Path, where: str) -> Job:
    cells = {name: (row.get(name) or "").strip() for name in COLUMNS}
    if not cells["image"] or not cells["video"]:
        raise ManifestError(f"{where}: image and video are required")
    try:
        return Job(
            base / cells["image"],
            base / cells["video"],
            prompt=cells["prompt"] or None,
            # Job checks both against the allowed values (ConfigurationError otherwise).
            character_orientation=cast(CharacterOrientation, cells["orientation"] or "video"),
            mode=cast(Mode, cells["mode"] or "720p"),
            key=cells["key"] or None,
        )
    except (ConfigurationError, ValueError, TypeError) as exc:
        raise ManifestError(f"{where}: {exc}") from None


class BatchProgress:
    """Turns the batch's ``JobEvent``s into a rich progress bar and counts for the summary."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress = progress
        self.bar: TaskID = progress.add_task("clips", total=total, steps="")
        #: Where each running job is; finished jobs leave the map.
        self.step: dict[str, str] = {}
        #: Jobs found finished in the journal (made by an earlier run).
        self.done_before: set[str] = set()
        #: Jobs whose task an earlier run created; this run waits on it.
        self.resumed: set[str] = set()

    def on_event(self, event: JobEvent) -> None:
        """Follow one step of one job (called by ``generate_many``)."""
        key, kind = event.job_key, event.kind
        if kind is JobEventKind.VALIDATED:
            self.step[key] = "checked"
        elif kind is JobEventKind.UPLOADED:
            self.step[key] = "uploaded"
        elif kind is JobEventKind.CREATED:
            self.step[key] = "waiting"
        elif kind is JobEventKind.RESUMED:
            self.step[key] = "waiting"
            self.resumed.add(key)
        elif kind is JobEventKind.STATE_CHANGED and event.task is not None:
            state = event.task.state.value
            # A task that succeeded is downloaded next; one that failed ends with its outcome.
            self.step[key] = "downloading" if state == "success" else state
        elif kind is JobEventKind.SKIPPED:
            self.done_before.add(key)
        self._redraw()

    def finished(self, outcome: JobOutcome) -> None:
        """Count one finished job."""
        self.step.pop(outcome.job_key, None)
        self.progress.advance(self.bar)
        self._redraw()

    def _redraw(self) -> None:
        counts = Counter(self.step.values())
        steps = " · ".join(f"{step} {counts[step]}" for step in STEPS if counts[step])
        self.progress.update(self.bar, steps=steps)


def describe_failure(error: BaseException | None) -> str:
    """One line saying why a job failed (the library's messages never hold the key)."""
    if isinstance(error, MediaValidationError):
        return f"{Path(error.path).name} breaks the rule {error.rule}: {error.detail}"
    if isinstance(error, SubmissionUnknownError):
        return (
            "its task may or may not exist (the createTask answer was lost): check kie.ai's "
            "console, then `python -m kling_async release JOURNAL KEY` to run it again"
        )
    return str(error) or type(error).__name__


async def run_batch(
    manifest: Path,
    *,
    out: Path,
    journal: Path,
    max_credits: float | None,
    console: Console,
) -> int:
    """Run the manifest's jobs; print a progress bar and a summary; return the exit code."""
    jobs = read_manifest(manifest)
    started = time.monotonic()
    made: list[JobOutcome] = []
    failed: list[JobOutcome] = []
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[steps]}"),
    )
    # A bar only on a terminal: redirected to a file or a pipe, stderr gets no redraws.
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        tracker = BatchProgress(progress, len(jobs))
        async with KlingSession() as kling:  # reads KIE_API_KEY and KIE_BASE_URL
            batch = kling.generate_many(
                jobs,
                journal=journal,
                download_to=out,
                on_event=tracker.on_event,
                max_credits=max_credits,
            )
            async with batch as outcomes:
                async for outcome in outcomes:
                    (made if outcome.ok else failed).append(outcome)
                    tracker.finished(outcome)
    elapsed = time.monotonic() - started
    new = [o for o in made if o.job_key not in tracker.done_before]
    credits = sum(o.result.task.credits_consumed or 0 for o in new if o.result is not None)
    print(
        f"{len(made)} of {len(jobs)} clips made ({len(made) - len(new)} already done before, "
        f"{len(tracker.resumed)} resumed), {len(failed)} failed, in {elapsed:.1f} s; "
        f"{credits:g} credits for the clips finished now; files in {out}/"
    )
    for outcome in failed:
        print(f"  failed: {outcome.job_key}: {describe_failure(outcome.error)}")
    return EXIT_FAILED if failed else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the batch; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="csv_batch.py", description=__doc__.split("\n", 1)[0] if __doc__ else None
    )
    parser.add_argument("manifest", type=Path, help="CSV file of jobs")
    parser.add_argument("--out", type=Path, default=Path("clips"), help="where clips go")
    parser.add_argument("--journal", type=Path, help="default: MANIFEST.journal.sqlite")
    parser.add_argument("--max-credits", type=float, help="never spend more than this")
    args = parser.parse_args(argv)
    journal = args.journal or args.manifest.with_name(args.manifest.name + ".journal.sqlite")
    # Progress goes to stderr, the summary to stdout: `> summary.txt` keeps only the summary.
    console = Console(stderr=True)
    try:
        return asyncio.run(
            run_batch(
                args.manifest,
                out=args.out,
                journal=journal,
                max_credits=args.max_credits,
                console=console,
            )
        )
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KlingError as exc:  # the journal is locked by another run, the key is refused...
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(
            "interrupted: run the same command again to resume (nothing is created twice)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
