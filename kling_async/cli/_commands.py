"""The command line's single-shot commands: files, costs, one task, one clip, a journal's records.

Each is a thin layer over the library (``batch`` has a module of its own, ``_batch``). The key is
read here, checked, and handed to the session; it is never printed.

Bounds: it parses nothing and holds no rules of its own; it calls the library and prints.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..downloads import safe_file_name
from ..errors import (
    ConfigurationError,
    MediaValidationError,
    NotFoundError,
    TaskNotVisibleError,
)
from ..jobs import JobEvent, JobEventKind
from ..media import inspect_video, validate_image, validate_video
from ..models import Task, check_background_source, is_http_url
from ..rules import DOLLARS_PER_CREDIT, MODEL_NAME, estimate_credits, wire_mode
from ..session import KlingSession, open_journal
from ..settings import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_UPLOAD_BASE_URL,
    UPLOAD_BASE_URL_ENV,
    check_api_key,
    upload_base_url_for,
)
from ._manifest import media_kind, swapped_hint
from ._output import Out, Run, display_for, masked, plural, printer, reword

__all__ = [
    "COMMANDS",
    "SYNC_COMMANDS",
    "check_journal",
    "credits",
    "estimate",
    "generate",
    "hosts",
    "journal",
    "out_folder",
    "release",
    "session",
    "status",
    "unknown",
    "validate",
    "wait",
]

#: The first bytes of every SQLite file, so a picture is never taken for a journal.
_SQLITE_MAGIC = b"SQLite format 3\x00"


# -- the key, the hosts, the session --------------------------------------------------------------
def _key(run: Run) -> str:
    path = run.option("api_key_file")
    if path:
        where = f"--api-key-file {path}"
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"cannot read --api-key-file: {exc.strerror}") from None
        try:
            key = raw.decode("utf-8-sig").strip()
        except UnicodeDecodeError:
            raise ConfigurationError(f"{where} is not a text file (UTF-8)") from None
        if not key:
            raise ConfigurationError(f"{where} is empty")
    else:
        where = API_KEY_ENV
        key = os.environ.get(API_KEY_ENV, "").strip()
        if not key:
            raise ConfigurationError(f"no API key: set {API_KEY_ENV} or pass --api-key-file")
    try:
        return check_api_key(key)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{exc} (read from {where})") from None


def _host_only(url: str | None, where: str, example: str) -> None:
    """Refuse a base URL with the API's path in it: the client adds the paths itself."""
    if url and urlsplit(url).path.rstrip("/").lower().startswith("/api"):
        raise ConfigurationError(
            f"{where} {url} has the API's path in it: the base URL is the host only, e.g. {example}"
        )


def hosts(
    base_url: str | None, upload_base_url: str | None, environ: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """The API and upload hosts for ``--base-url`` / ``--upload-base-url`` and the environment.

    None leaves the choice to the session (the environment, else the real hosts). A
    ``--base-url`` of the real API host keeps the real upload host; another (a simulator) serves
    uploads too, unless ``--upload-base-url`` or ``KIE_UPLOAD_BASE_URL`` says otherwise.
    """
    base = base_url or environ.get(BASE_URL_ENV)
    upload = upload_base_url or environ.get(UPLOAD_BASE_URL_ENV)
    _host_only(base, "--base-url" if base_url else BASE_URL_ENV, DEFAULT_BASE_URL)
    _host_only(
        upload,
        "--upload-base-url" if upload_base_url else UPLOAD_BASE_URL_ENV,
        DEFAULT_UPLOAD_BASE_URL,
    )
    if upload is None and base_url:
        upload = upload_base_url_for(base_url)
    return base_url, upload


def session(run: Run) -> KlingSession:
    """A session for the command's key, hosts and options."""
    args = run.args
    base, upload = hosts(args.base_url, args.upload_base_url, os.environ)
    return KlingSession(
        _key(run),
        base_url=base,
        upload_base_url=upload,
        allow_insecure_http=args.allow_insecure_http,
    )


def out_folder(name: str | None) -> Path | None:
    """``--out``: always a folder, created if missing."""
    if name is None:
        return None
    folder = Path(name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"--out {name}: cannot make that folder: {exc.strerror}") from None
    return folder


# -- files and costs ------------------------------------------------------------------------------
def validate(run: Run) -> int:
    """``validate``: each file judged by its content, with the rule it breaks."""
    args, out = run.args, run.out
    failed = 0
    for name in args.files:
        if is_http_url(name):
            failed += 1
            out.result(
                f"bad {name}: a URL; only local files are validated (the service judges URLs)",
                file=name,
                ok=False,
                rule="url",
                detail="only local files are validated",
            )
            continue
        path = Path(name)
        try:
            # By content, not by name: a GIF called .mp4 is judged (and refused) as an image.
            kind = media_kind(path)
            if kind is None and path.suffix.lower() in (".png", ".jpg", ".jpeg"):
                kind = "image"
            if kind == "image":
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
                continue
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
            detail = reword(exc.detail)
            out.result(
                f"bad {path}: {exc.rule}: {detail}",
                file=str(path),
                ok=False,
                rule=exc.rule,
                detail=detail,
            )
    return 1 if failed else 0


def _swapped(image: str, video: str) -> None:
    hint = None if is_http_url(image) or is_http_url(video) else swapped_hint(image, video)
    if hint is not None:
        raise ConfigurationError(hint)


def estimate(run: Run) -> int:
    """``estimate``: what one clip would cost; nothing is created."""
    args = run.args
    _swapped(args.image, args.video)
    validate_image(Path(args.image))
    video = validate_video(Path(args.video), args.orientation)
    model = args.model or MODEL_NAME
    check_background_source(model, args.background_source)
    credits = estimate_credits(video.duration_s, args.mode, model=model)
    mode = wire_mode(args.mode)
    run.out.result(
        f"{video.duration_s:.2f} s at {mode} on {model}: about {credits:g} credits "
        f"(${credits * DOLLARS_PER_CREDIT:.2f}); nothing was created",
        seconds=round(video.duration_s, 3),
        mode=mode,
        model=model,
        credits=credits,
        dollars=round(credits * DOLLARS_PER_CREDIT, 2),
    )
    return 0


# -- the service ----------------------------------------------------------------------------------
async def credits(run: Run) -> int:
    """``credits``: the account's balance."""
    async with session(run) as kling:
        balance = await kling.get_credits()
    run.out.result(f"{balance:g} credits", credits=balance)
    return 0


async def status(run: Run) -> int:
    """``status``: a task's state, once."""
    async with session(run) as kling:
        task = await kling.get_task(run.args.task_id)
    run.out.result(
        f"{task.task_id}: {task.state.value}" + (f" {task.fail_msg}" if task.fail_msg else ""),
        task_id=task.task_id,
        state=task.state.value,
        result_urls=list(task.result_urls),
        fail_code=task.fail_code,
        fail_msg=task.fail_msg,
    )
    return 0


def _complete_video(path: Path) -> bool:
    """True if ``path`` is a video whose headers and index are whole (a finished download)."""
    try:
        inspect_video(path)
    except MediaValidationError:
        return False
    return True


async def _save(kling: KlingSession, task: Task, folder: Path, out: Out) -> list[str]:
    """Save each result of ``task`` as ``TASK_ID.mp4`` in ``folder``, unless it is there already."""
    base = safe_file_name(task.task_id)
    files: list[str] = []
    for index, url in enumerate(task.result_urls):
        suffix = Path(safe_file_name(url)).suffix or ".mp4"
        numbered = f"-{index + 1}" if len(task.result_urls) > 1 else ""
        target = folder / f"{base}{numbered}{suffix}"
        # Downloads land whole or not at all (.part, then a rename): a complete video under
        # this name is this task's result from an earlier run.
        if target.is_file() and _complete_video(target):
            out.warn(f"{target} is there already: not downloaded again")
        else:
            target = await kling.download(url, target, overwrite=True)
        files.append(str(target))
    return files


async def wait(run: Run) -> int:
    """``wait``: wait for a task to end, then (with ``--out``) save its clip."""
    args, out = run.args, run.out
    folder = out_folder(args.out)
    async with session(run) as kling:
        try:
            await kling.get_task(args.task_id)
        except (TaskNotVisibleError, NotFoundError):
            args.not_visible = True
            out.warn(
                f"no task {args.task_id} is visible yet; waiting up to "
                f"{kling.not_visible_grace:g} s for it to appear (a task id that does not "
                "exist ends in an error then)"
            )
        task = await kling.wait_for_task(
            args.task_id,
            timeout=args.timeout,
            on_update=lambda t: out.note(f"{t.task_id}: {t.state.value}"),
        )
        files = await _save(kling, task, folder, out) if folder is not None else []
    urls = list(task.result_urls)
    out.result(
        f"{task.task_id}: success"
        + (f", saved {', '.join(files)}" if files else f"; result: {' '.join(urls)}"),
        task_id=task.task_id,
        state=task.state.value,
        result_urls=urls,
        files=files,
    )
    return 0


def tracker(run: Run, then: Any) -> Any:
    """An ``on_event`` that notes the tasks created (for a Ctrl-C's advice), then calls ``then``."""

    def on_event(event: JobEvent) -> None:
        if event.kind is JobEventKind.CREATED and event.task_id is not None:
            run.created[event.job_key] = event.task_id
        then(event)

    return on_event


async def generate(run: Run) -> int:
    """``generate``: one clip, from the files to the result (saved with ``--out``)."""
    args, out = run.args, run.out
    _swapped(args.image, args.video)
    folder = out_folder(args.out)
    display = display_for(out)
    async with session(run) as kling:
        with display or contextlib.nullcontext():
            result = await kling.generate(
                args.image,
                args.video,
                prompt=args.prompt,
                character_orientation=args.orientation,
                mode=args.mode,
                model=args.model or MODEL_NAME,
                background_source=args.background_source,
                download_to=folder,
                timeout=args.timeout,
                on_event=tracker(run, printer(out, display)),
            )
    files = [str(f) for f in result.files]
    urls = list(result.result_urls)
    out.result(
        f"done: task {result.task.task_id}"
        + (f", saved {', '.join(files)}" if files else f"; result: {' '.join(urls)}"),
        task_id=result.task.task_id,
        files=files,
        result_urls=urls,
    )
    return 0


# -- journals -------------------------------------------------------------------------------------
def check_journal(spec: str, *, must_exist: bool) -> bool:
    """Refuse what is plainly no journal (a picture, a folder); True if the file is there."""
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return True
    path = Path(spec)
    if path.is_dir():
        raise ConfigurationError(f"{spec} is a folder, not a journal")
    if not path.exists():
        if must_exist:
            raise ConfigurationError(f"no journal at {spec}")
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the journal {spec}: {exc.strerror}") from None
    if head and head != _SQLITE_MAGIC:
        raise ConfigurationError(
            f"{spec} is not a journal (a journal is the SQLite file `batch --journal` writes)"
        )
    return True


async def journal(run: Run) -> int:
    """``journal``: each job the journal holds, its status and task id."""
    args, out = run.args, run.out
    check_journal(args.journal, must_exist=True)
    shown = 0
    async with open_journal(args.journal) as book:
        counts = await book.counts()
        for state in sorted(counts):
            for key in await book.keys(state):
                record = await book.get(key)
                task = record.task_id if record is not None and record.task_id else None
                model = record.model if record is not None else None
                out.result(
                    f"{state:10} {key} {task or '-'}",
                    key=key,
                    status=state,
                    task_id=task,
                    model=model,
                )
                shown += 1
    if not shown and not out.as_json:
        out.result(f"no jobs in {masked(args.journal)}")
    return 0


async def unknown(run: Run) -> int:
    """``unknown``: the jobs whose creation is unknown (a task may exist)."""
    args, out = run.args, run.out
    check_journal(args.journal, must_exist=True)
    async with open_journal(args.journal) as book:
        keys = await book.unresolved()
    for key in keys:
        out.result(key, key=key)
    if not keys and not out.as_json:
        out.result(f"no unknown jobs in {masked(args.journal)}")
    return 0


async def release(run: Run) -> int:
    """``release``: let jobs whose creation is unknown be created again by the next run."""
    args, out = run.args, run.out
    if not args.keys and not args.all_unknown:
        raise ConfigurationError("name the keys to release, or pass --all-unknown")
    check_journal(args.journal, must_exist=True)
    async with open_journal(args.journal) as book:
        keys = list(args.keys)
        if args.all_unknown:
            keys = await book.unresolved()
        released = await book.release(*keys)
    for key in released:
        out.result(f"released {key}", key=key, released=True)
    missing = sorted(set(args.keys) - set(released))
    for key in missing:
        out.result(f"not released (not unknown here): {key}", key=key, released=False)
    if not released and not missing and not out.as_json:
        out.result(f"no unknown jobs in {masked(args.journal)}: {plural(0, 'job')} released")
    return 1 if missing else 0


def simulate(run: Run, argv: list[str]) -> int:
    """``simulate``: the simulator's own command (``python -m kling_async.simulator``)."""
    from ..simulator.__main__ import main as serve  # the simulator only when asked for

    serve(argv, prog="kling-async simulate")
    return 0


def demo(run: Run, argv: list[str]) -> int:
    """``demo``: what ``make demo`` runs (``python -m kling_async.demo``)."""
    from ..demo import main as run_demo

    run_demo(argv, prog="kling-async demo")
    return 0


#: The commands that need no event loop, and those that run in one.
SYNC_COMMANDS: dict[str, Callable[[Run], int]] = {"validate": validate, "estimate": estimate}
COMMANDS: dict[str, Callable[[Run], Coroutine[Any, Any, int]]] = {
    "credits": credits,
    "status": status,
    "wait": wait,
    "generate": generate,
    "journal": journal,
    "unknown": unknown,
    "release": release,
}
