"""``kling-async`` (or ``python -m kling_async``): the library from a terminal or a script.

Commands: ``validate``, ``estimate``, ``credits``, ``status``, ``wait``, ``generate``, ``batch``,
``journal``, ``unknown``, ``release``, ``simulate``, ``demo``. Every command takes ``--json`` (one
JSON object per line on stdout); progress goes to stderr, and only when it is a terminal. The key
comes from ``KIE_API_KEY`` or ``--api-key-file`` and is never printed. Expected failures are one
line, never a traceback.

Exit codes: 0 done; 1 a file or a job failed; 2 bad usage or settings; 3 the service refused or
could not be reached; 130 interrupted (a batch can be resumed by running it again).

Bounds: it holds no logic of the library's own; it parses arguments and prints what it is told.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import APIError, ConfigurationError, KlingError, MediaValidationError, TransportError
from .jobs import Job, JobEvent, JobEventKind, JobOutcome, MediaSource
from .media import validate_image, validate_video
from .models import UploadedFile, check_background_source, is_http_url
from .rules import (
    BACKGROUND_SOURCES,
    DOLLARS_PER_CREDIT,
    MODE_SPELLINGS,
    MODEL_NAME,
    MOTION_MODELS,
    estimate_credits,
    wire_mode,
)
from .session import KlingSession, open_journal
from .settings import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL

if TYPE_CHECKING:
    from .progress import JobsDisplay

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SERVICE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class _Out:
    """Where results and progress go: JSON lines or text on stdout, progress on a terminal."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.progress = sys.stderr.isatty() and not as_json

    def result(self, text: str, **fields: Any) -> None:
        if self.as_json:
            print(json.dumps(fields, default=str), flush=True)
        else:
            print(text, flush=True)

    def note(self, text: str) -> None:
        if self.progress:
            print(text, file=sys.stderr, flush=True)

    def error(self, text: str) -> None:
        if self.as_json:
            print(json.dumps({"error": text}), flush=True)
        else:
            print(f"error: {text}", file=sys.stderr, flush=True)


def _key(args: argparse.Namespace) -> str:
    if args.api_key_file:
        try:
            return Path(args.api_key_file).read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"cannot read --api-key-file: {exc.strerror}") from None
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise ConfigurationError(f"no API key: set {API_KEY_ENV} or pass --api-key-file")
    return key


def _session(args: argparse.Namespace) -> KlingSession:
    upload = args.upload_base_url or args.base_url
    return KlingSession(_key(args), base_url=args.base_url, upload_base_url=upload)


# -- commands ------------------------------------------------------------------------------------
def _validate(args: argparse.Namespace, out: _Out) -> int:
    failed = 0
    for name in args.files:
        path = Path(name)
        try:
            if path.suffix.lower() in _IMAGE_SUFFIXES:
                image = validate_image(path)
                out.result(
                    f"ok  {path}: {image.format}, {image.width}x{image.height}, "
                    f"{image.size_bytes} bytes",
                    file=str(path),
                    ok=True,
                    format=image.format,
                    width=image.width,
                    height=image.height,
                    bytes=image.size_bytes,
                )
            else:
                video = validate_video(path, args.orientation)
                out.result(
                    f"ok  {path}: {video.container}, {video.width}x{video.height}, "
                    f"{video.duration_s:.2f} s, {video.size_bytes} bytes",
                    file=str(path),
                    ok=True,
                    format=video.container,
                    width=video.width,
                    height=video.height,
                    seconds=round(video.duration_s, 3),
                    bytes=video.size_bytes,
                )
        except MediaValidationError as exc:
            failed += 1
            out.result(
                f"bad {path}: {exc.rule}: {exc.detail}",
                file=str(path),
                ok=False,
                rule=exc.rule,
                detail=exc.detail,
            )
    return EXIT_FAILED if failed else EXIT_OK


def _estimate(args: argparse.Namespace, out: _Out) -> int:
    validate_image(Path(args.image))
    video = validate_video(Path(args.video), args.orientation)
    model = args.model or MODEL_NAME
    check_background_source(model, args.background_source)
    credits = estimate_credits(video.duration_s, args.mode, model=model)
    mode = wire_mode(args.mode)
    out.result(
        f"{video.duration_s:.2f} s at {mode} on {model}: about {credits:g} credits "
        f"(${credits * DOLLARS_PER_CREDIT:.2f}); nothing was created",
        seconds=round(video.duration_s, 3),
        mode=mode,
        model=model,
        credits=credits,
        dollars=round(credits * DOLLARS_PER_CREDIT, 2),
    )
    return EXIT_OK


async def _credits(args: argparse.Namespace, out: _Out) -> int:
    async with _session(args) as kling:
        balance = await kling.get_credits()
    out.result(f"{balance:g} credits", credits=balance)
    return EXIT_OK


async def _status(args: argparse.Namespace, out: _Out) -> int:
    async with _session(args) as kling:
        task = await kling.get_task(args.task_id)
    out.result(
        f"{task.task_id}: {task.state.value}" + (f" {task.fail_msg}" if task.fail_msg else ""),
        task_id=task.task_id,
        state=task.state.value,
        result_urls=list(task.result_urls),
        fail_code=task.fail_code,
        fail_msg=task.fail_msg,
    )
    return EXIT_OK


async def _wait(args: argparse.Namespace, out: _Out) -> int:
    async with _session(args) as kling:
        task = await kling.wait_for_task(
            args.task_id,
            timeout=args.timeout,
            on_update=lambda t: out.note(f"{t.task_id}: {t.state.value}"),
        )
        files = [str(await kling.download(task, Path(args.out) / ""))] if args.out else []
    out.result(
        f"{task.task_id}: success" + (f", saved {', '.join(files)}" if files else ""),
        task_id=task.task_id,
        state=task.state.value,
        result_urls=list(task.result_urls),
        files=files,
    )
    return EXIT_OK


def _simulate(args: argparse.Namespace, out: _Out) -> int:
    from .simulator.__main__ import main as serve  # the simulator only when asked for

    serve(["--port", str(args.port), "--time-scale", str(args.time_scale)])
    return EXIT_OK


def _demo(args: argparse.Namespace, out: _Out) -> int:
    from .demo import main as demo

    demo([])
    return EXIT_OK


def _display(out: _Out, jobs: int | None = None) -> JobsDisplay | None:
    """The live display on stderr when it is a terminal and rich (the cli extra) is there."""
    if not out.progress:
        return None
    try:
        from .progress import JobsDisplay
    except ImportError:
        return None  # plain lines, as without a display
    return JobsDisplay.on_stderr(jobs=jobs, redirect_stdout=sys.stdout.isatty())


def _printer(out: _Out, display: JobsDisplay | None = None) -> Any:
    if display is not None:
        return display.on_event

    def on_event(event: JobEvent) -> None:
        if event.kind in (JobEventKind.UPLOADING, JobEventKind.DOWNLOADING):
            return  # a line per step, not per chunk
        where = f" {event.task_id}" if event.task_id else ""
        detail = f" ({event.detail})" if event.detail and event.kind.value != "failed" else ""
        state = f" {event.task.state.value}" if event.task is not None else ""
        out.note(f"{event.job_key}: {event.kind.value}{where}{state}{detail}")

    return on_event


async def _generate(args: argparse.Namespace, out: _Out) -> int:
    display = _display(out)
    async with _session(args) as kling:
        with display or contextlib.nullcontext():
            result = await kling.generate(
                args.image,
                args.video,
                prompt=args.prompt,
                character_orientation=args.orientation,
                mode=args.mode,
                model=args.model or MODEL_NAME,
                background_source=args.background_source,
                download_to=args.out,
                timeout=args.timeout,
                on_event=_printer(out, display),
            )
    files = [str(f) for f in result.files]
    out.result(
        f"done: task {result.task.task_id}" + (f", saved {', '.join(files)}" if files else ""),
        task_id=result.task.task_id,
        files=files,
        result_urls=list(result.result_urls),
    )
    return EXIT_OK


def _manifest(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV (with a header) or JSON Lines manifest, with their line numbers."""
    with path.open(newline="") as fh:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            for number, line in enumerate(fh, 1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ConfigurationError(f"{path}:{number}: not a JSON object")
                    yield number, {k: str(v) for k, v in row.items() if v not in (None, "")}
        else:
            for number, row in enumerate(csv.DictReader(fh), 2):
                yield number, {k: v for k, v in row.items() if k and v}


def _local_file(source: MediaSource, name: str) -> Path:
    """A manifest's file as a path: the CLI judges files (and their cost) before any upload."""
    if isinstance(source, UploadedFile) or is_http_url(os.fspath(source)):
        raise ConfigurationError(f"{name} must be a local file, not a URL")
    return Path(os.fspath(source))


def _jobs(
    path: Path, base: Path, model: str | None = None, background_source: str | None = None
) -> tuple[list[Job], float, list[str]]:
    """Every job of the manifest, checked before anything is sent; its cost; the problems.

    A row's ``model`` and ``background_source`` columns win over the ``--model`` and
    ``--background-source`` given for the whole batch.
    """
    jobs: list[Job] = []
    total = 0.0
    problems: list[str] = []
    for number, row in _manifest(path):
        try:
            # The batch's --model and --background-source, unless the row gives its own.
            given = {"model": model or MODEL_NAME, "background_source": background_source}
            job = Job.from_row({**{k: v for k, v in given.items() if v}, **row}, base_dir=base)
            validate_image(_local_file(job.image, "image"))
            video = _local_file(job.video, "video")
            seconds = validate_video(video, job.character_orientation).duration_s
            total += estimate_credits(seconds, job.mode, model=job.model or MODEL_NAME)
            jobs.append(job)
        except (KlingError, ValueError) as exc:
            problems.append(f"{path}:{number}: {exc}")
    return jobs, total, problems


async def _batch(args: argparse.Namespace, out: _Out) -> int:
    manifest = Path(args.manifest)
    try:
        jobs, total, problems = _jobs(manifest, manifest.parent, args.model, args.background_source)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {manifest}: {exc}") from None
    for problem in problems:
        out.result(f"bad {problem}", ok=False, problem=problem)
    if problems and not args.skip_invalid:
        out.error(f"{len(problems)} bad rows; fix them or pass --skip-invalid")
        return EXIT_FAILED
    if args.dry_run:
        out.result(
            f"{len(jobs)} jobs, about {total:g} credits (${total * DOLLARS_PER_CREDIT:.2f}); "
            "nothing was created (dry run)",
            jobs=len(jobs),
            credits=total,
            dollars=round(total * DOLLARS_PER_CREDIT, 2),
        )
        return EXIT_OK
    tally: Counter[str] = Counter()
    unknown: list[str] = []
    credits: list[float] = []
    display = _display(out, len(jobs))
    async with (
        _session(args) as kling,
        kling.generate_many(
            jobs,
            journal=args.journal,
            download_to=args.out,
            on_event=_printer(out, display),
            max_credits=args.max_credits,
            retry_failed=args.retry_failed,
        ) as outcomes,
    ):
        with display or contextlib.nullcontext():
            async for outcome in outcomes:
                _report(outcome, out, tally, unknown)
                if display is not None:
                    display.finished(outcome)
                if outcome.result is not None and outcome.result.task.credits_consumed:
                    credits.append(outcome.result.task.credits_consumed)
    if display is not None:
        display.print_summary(args.journal)
    summary = ", ".join(f"{kind} {n}" for kind, n in sorted(tally.items()))
    spent = sum(credits)
    out.result(
        f"summary: {summary}; {spent:g} credits used (${spent * DOLLARS_PER_CREDIT:.2f})",
        summary=dict(tally),
        credits=spent,
    )
    if unknown:
        out.result(
            f"{len(unknown)} jobs may have a task the journal does not know: check kie.ai's "
            f"task list, then `kling-async release {args.journal or 'JOURNAL'} KEY`",
            unknown=unknown,
        )
    # Every outcome given here was a success (with a shared journal, other workers give theirs).
    return EXIT_OK if sum(tally.values()) == tally.get("ok", 0) else EXIT_FAILED


def _report(outcome: JobOutcome, out: _Out, tally: Counter[str], unknown: list[str]) -> None:
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
    if kind == "SubmissionUnknownError":
        unknown.append(key)
    out.result(
        f"bad {key}: {outcome.error}",
        key=key,
        ok=False,
        task_id=outcome.task_id,
        error=kind,
        detail=str(outcome.error),
    )


async def _journal(args: argparse.Namespace, out: _Out) -> int:
    async with open_journal(args.journal) as journal:
        counts = await journal.counts()
        for status in sorted(counts):
            for key in await journal.keys(status):
                record = await journal.get(key)
                task = record.task_id if record is not None and record.task_id else "-"
                model = record.model if record is not None else None
                out.result(
                    f"{status:10} {key} {task}", key=key, status=status, task_id=task, model=model
                )
    return EXIT_OK


async def _unknown(args: argparse.Namespace, out: _Out) -> int:
    async with open_journal(args.journal) as journal:
        keys = await journal.unresolved()
    for key in keys:
        out.result(key, key=key)
    return EXIT_OK


async def _release(args: argparse.Namespace, out: _Out) -> int:
    if not args.keys and not args.all_unknown:
        raise ConfigurationError("name the keys to release, or pass --all-unknown")
    async with open_journal(args.journal) as journal:
        keys = list(args.keys)
        if args.all_unknown:
            keys = await journal.unresolved()
        released = await journal.release(*keys)
    for key in released:
        out.result(f"released {key}", key=key, released=True)
    missing = sorted(set(args.keys) - set(released))
    for key in missing:
        out.result(f"not released (not unknown here): {key}", key=key, released=False)
    return EXIT_FAILED if missing else EXIT_OK


# -- arguments -----------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="one JSON object per line")
    service = argparse.ArgumentParser(add_help=False)
    service.add_argument("--api-key-file", help=f"read the key from a file (else ${API_KEY_ENV})")
    service.add_argument(
        "--base-url", default=None, help=f"default ${BASE_URL_ENV} or {DEFAULT_BASE_URL}"
    )
    service.add_argument("--upload-base-url", default=None, help="default: --base-url's host")
    clip = argparse.ArgumentParser(add_help=False)
    clip.add_argument("--orientation", choices=("image", "video"), default="video")
    clip.add_argument("--mode", choices=tuple(MODE_SPELLINGS), default="720p")
    motion = argparse.ArgumentParser(add_help=False)
    motion.add_argument("--model", choices=MOTION_MODELS, help=f"default: {MODEL_NAME}")
    motion.add_argument(
        "--background-source", choices=BACKGROUND_SOURCES, help="kling-3.0/motion-control only"
    )

    parser = argparse.ArgumentParser(prog="kling-async", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("validate", parents=[common], help="check files, no upload")
    cmd.add_argument("files", nargs="+")
    cmd.add_argument("--orientation", choices=("image", "video"), default="video")
    cmd = commands.add_parser(
        "estimate", parents=[common, clip, motion], help="credits, nothing created"
    )
    cmd.add_argument("image")
    cmd.add_argument("video")
    commands.add_parser("credits", parents=[common, service], help="the account's balance")
    cmd = commands.add_parser("status", parents=[common, service], help="a task's state, once")
    cmd.add_argument("task_id")
    cmd = commands.add_parser("wait", parents=[common, service], help="wait for a task")
    cmd.add_argument("task_id")
    cmd.add_argument("--out", help="folder for the clip")
    cmd.add_argument("--timeout", type=float, help="seconds to wait")
    cmd = commands.add_parser("simulate", help="serve the simulator (prints its URL and key)")
    cmd.add_argument("--port", type=int, default=8080)
    cmd.add_argument("--time-scale", type=float, default=1.0)
    commands.add_parser("demo", help="a small batch on the embedded simulator")
    cmd = commands.add_parser("generate", parents=[common, service, clip, motion], help="one clip")
    cmd.add_argument("image")
    cmd.add_argument("video")
    cmd.add_argument("--prompt")
    cmd.add_argument("--out", help="folder for the clip")
    cmd.add_argument("--timeout", type=float, help="seconds to wait for the task")
    cmd = commands.add_parser(
        "batch", parents=[common, service, motion], help="a CSV/JSONL manifest"
    )
    cmd.add_argument("manifest")
    cmd.add_argument("--out", help="folder for the clips")
    cmd.add_argument(
        "--journal",
        help="SQLite file: makes the batch resumable; or redis://HOST:PORT/DB?journal=NAME, "
        "shared by workers on several machines running the same manifest",
    )
    cmd.add_argument("--max-credits", type=float)
    cmd.add_argument("--dry-run", action="store_true", help="check and estimate, create nothing")
    cmd.add_argument("--skip-invalid", action="store_true", help="run the good rows anyway")
    cmd.add_argument(
        "--retry-failed", action="store_true", help="give jobs that failed before a new task"
    )
    cmd = commands.add_parser("journal", parents=[common], help="what a journal holds")
    cmd.add_argument("journal")
    cmd = commands.add_parser("unknown", parents=[common], help="jobs whose creation is unknown")
    cmd.add_argument("journal")
    cmd = commands.add_parser("release", parents=[common], help="let unknown jobs run again")
    cmd.add_argument("journal")
    cmd.add_argument("keys", nargs="*")
    cmd.add_argument("--all-unknown", action="store_true")
    return parser


_SYNC = {"validate": _validate, "estimate": _estimate, "simulate": _simulate, "demo": _demo}
_ASYNC = {
    "credits": _credits,
    "status": _status,
    "wait": _wait,
    "generate": _generate,
    "batch": _batch,
    "journal": _journal,
    "unknown": _unknown,
    "release": _release,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    out = _Out(getattr(args, "json", False))
    journal = getattr(args, "journal", None)
    needs_journal = args.command in ("journal", "unknown", "release")
    shared = str(journal).startswith(("redis://", "rediss://", "unix://"))
    if needs_journal and journal is not None and not shared and not Path(journal).is_file():
        out.error(f"no journal at {journal}")
        return EXIT_USAGE
    try:
        if args.command in _SYNC:
            return _SYNC[args.command](args, out)
        return asyncio.run(_ASYNC[args.command](args, out))
    except KeyboardInterrupt:
        out.error("interrupted; run the same command again to resume (the journal keeps it)")
        return EXIT_INTERRUPTED
    except (ConfigurationError, MediaValidationError) as exc:
        out.error(str(exc))
        return EXIT_USAGE if isinstance(exc, ConfigurationError) else EXIT_FAILED
    except (APIError, TransportError) as exc:
        out.error(str(exc))
        return EXIT_SERVICE
    except KlingError as exc:
        out.error(str(exc))
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
