"""``kling-async batch``: a manifest's clips, judged whole first, journaled, resumable.

``--dry-run`` creates nothing: it prices the jobs a run would create, leaving out those the
journal already holds, and says how many ``--max-credits`` would refuse. A run's summary keeps
the credits of tasks it created apart from those of tasks earlier runs created.

Bounds: it reads the journal only to plan a dry run; a real run's journal is the batch's own.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

from ..errors import SubmissionUnknownError
from ..jobs import JobEvent, JobEventKind, JobOutcome
from ..journal import CREATED, CREATING, FAILED, SUCCEEDED, UNKNOWN
from ..rules import DOLLARS_PER_CREDIT
from ..session import open_journal
from ._commands import check_journal, out_folder, session
from ._manifest import Checked, check_manifest
from ._output import Out, Run, describe, display_for, masked, plural, printer

__all__ = ["batch"]


def _dollars(credits: float) -> str:
    return f"${credits * DOLLARS_PER_CREDIT:.2f}"


async def batch(run: Run) -> int:
    """Check the whole manifest, then run it (or, with ``--dry-run``, price it)."""
    args, out = run.args, run.out
    manifest = Path(args.manifest)
    journal_there = check_journal(args.journal, must_exist=False) if args.journal else False
    checked = check_manifest(manifest, args.model, args.background_source)
    for problem in checked.problems:
        out.result(f"bad {problem}", ok=False, problem=problem)
    bad = len(checked.problems)
    if checked.bad_header:
        out.error(f"the header of {manifest} needs fixing first; no row was judged")
        return 1
    if bad and not args.skip_invalid:
        them = "it" if bad == 1 else "them"
        out.error(f"{plural(bad, 'bad row')}; fix {them} or pass --skip-invalid")
        return 1
    if not checked.jobs:
        out.error(f"no valid rows in {manifest}" if bad else f"no rows in {manifest}")
        return 1
    if bad:
        out.warn(f"{plural(bad, 'bad row')} left out (--skip-invalid)")
    if args.dry_run:
        return await _dry_run(run, checked, journal_there)
    return await _run(run, checked)


async def _statuses(spec: str | None, there: bool) -> dict[str, str]:
    """Each job's status in the journal; nothing for a journal that does not exist yet."""
    if spec is None or not there:
        return {}
    found: dict[str, str] = {}
    async with open_journal(spec) as book:
        for state in await book.counts():
            for key in await book.keys(state):
                found[key] = state
    return found


async def _dry_run(run: Run, checked: Checked, journal_there: bool) -> int:
    args, out = run.args, run.out
    statuses = await _statuses(args.journal, journal_there)
    held: Counter[str] = Counter()
    to_create: list[float] = []
    for job, cost in zip(checked.jobs, checked.costs, strict=True):
        state = statuses.get(job.job_key)
        if state == SUCCEEDED:
            held["already done"] += 1
        elif state in (CREATED, CREATING, UNKNOWN):
            held["already created"] += 1  # waited on or reported, never created again
        elif state == FAILED and not args.retry_failed:
            held["failed before"] += 1  # --retry-failed would give them a new task
        else:
            to_create.append(cost)
    total = sum(to_create)
    # As the run would: each new task counted against --max-credits, in the manifest's order.
    spend, refused = 0.0, 0
    for cost in to_create:
        if args.max_credits is not None and spend + cost > args.max_credits:
            refused += 1
        else:
            spend += cost
    jobs = len(checked.jobs)
    new = f" for the {len(to_create)} to create" if held else ""
    kept = "".join(f"; {what}: {n}" for what, n in held.items())
    out.result(
        f"{plural(jobs, 'job')}, about {total:g} credits ({_dollars(total)}){new}{kept}; "
        "nothing was created (dry run)",
        jobs=jobs,
        to_create=len(to_create),
        credits=total,
        dollars=round(total * DOLLARS_PER_CREDIT, 2),
        already_done=held["already done"],
        already_created=held["already created"],
        failed_before=held["failed before"],
        refused=refused,
    )
    if refused:
        out.error(
            f"about {total:g} credits is over --max-credits {args.max_credits:g}: "
            f"{plural(refused, 'job')} would be refused (--max-credits bounds what one run "
            "creates)",
            refused=refused,
        )
        return 1
    return 0


async def _run(run: Run, checked: Checked) -> int:
    args, out = run.args, run.out
    folder = out_folder(args.out)
    tally: Counter[str] = Counter()
    unknown: list[str] = []
    earlier: set[str] = set()  # jobs whose task an earlier run created
    credits_now = credits_before = 0.0
    display = display_for(out, len(checked.jobs))
    show = printer(out, display)

    def on_event(event: JobEvent) -> None:
        if event.kind is JobEventKind.CREATED and event.task_id is not None:
            run.created[event.job_key] = event.task_id
        elif event.kind in (JobEventKind.SKIPPED, JobEventKind.RESUMED):
            earlier.add(event.job_key)
        show(event)

    async with (
        session(run) as kling,
        kling.generate_many(
            checked.jobs,
            journal=args.journal,
            download_to=folder,
            on_event=on_event,
            max_credits=args.max_credits,
            retry_failed=args.retry_failed,
        ) as outcomes,
    ):
        with display or contextlib.nullcontext():
            async for outcome in outcomes:
                _report(run, outcome, tally, unknown)
                if display is not None:
                    display.finished(outcome)
                spent = outcome.credits or 0.0
                if outcome.job_key in earlier:
                    credits_before += spent
                else:
                    credits_now += spent
    if display is not None:
        display.print_summary(masked(args.journal))
    summary = ", ".join(f"{kind} {n}" for kind, n in sorted(tally.items()))
    before = (
        f"; {credits_before:g} by tasks earlier runs created ({_dollars(credits_before)})"
        if earlier
        else ""
    )
    out.result(
        f"summary: {summary}; {credits_now:g} credits used now ({_dollars(credits_now)}){before}",
        summary=dict(tally),
        credits=credits_now,
        credits_earlier_runs=credits_before,
    )
    if unknown:
        journal = masked(args.journal) or "JOURNAL"
        out.result(
            f"{plural(len(unknown), 'job')} may have a task the journal does not know: check "
            f"kie.ai's task list, then `kling-async release {journal} KEY`",
            unknown=unknown,
        )
    # Every outcome given here was a success (with a shared journal, other workers give theirs).
    return 0 if sum(tally.values()) == tally.get("ok", 0) else 1


def _report(run: Run, outcome: JobOutcome, tally: Counter[str], unknown: list[str]) -> None:
    out: Out = run.out
    key = outcome.job_key
    if outcome.ok and outcome.result is not None:
        tally["ok"] += 1
        files = [str(f) for f in outcome.result.files]
        out.result(
            f"ok  {key}: task {outcome.task_id}" + (f" -> {', '.join(files)}" if files else ""),
            key=key,
            ok=True,
            task_id=outcome.task_id,
            files=files,
        )
        return
    kind = type(outcome.error).__name__
    tally[kind] += 1
    if isinstance(outcome.error, SubmissionUnknownError):
        unknown.append(key)
    detail = describe(outcome.error, run, key=key) if outcome.error is not None else kind
    out.result(
        f"bad {key}: {detail}",
        key=key,
        ok=False,
        task_id=outcome.task_id,
        error=kind,
        detail=detail,
    )
