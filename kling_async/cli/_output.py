"""What the command line prints: results, notes, errors in its own words, and what a run learnt.

The library's messages speak to Python callers (``pass max_credits=``, ``python -m kling_async
release JOURNAL KEY``); :func:`describe` turns them into the command line's flags and commands,
and gives each refusal of the service a plain reading. Nothing here ever sees the key.

Bounds: it prints and rewords; it never calls the service or decides what a command does.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import TYPE_CHECKING, Any, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

from ..errors import (
    APIError,
    AuthenticationError,
    EdgeBlockedError,
    InsufficientCreditsError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    TaskNotVisibleError,
    TaskTimeoutError,
    TransportError,
)
from ..jobs import JobEvent, JobEventKind
from ..settings import API_KEY_ENV

if TYPE_CHECKING:
    from ..progress import JobsDisplay

__all__ = ["Out", "Run", "describe", "display_for", "masked", "plural", "printer", "reword"]


class Out:
    """Where results and progress go: JSON lines or text on stdout, progress on a terminal."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.progress = sys.stderr.isatty() and not as_json

    def result(self, text: str, **fields: Any) -> None:
        """One result: a line of text, or (with ``--json``) its fields as one JSON object."""
        if self.as_json:
            print(json.dumps(fields, default=str), flush=True)
        else:
            print(text, flush=True)

    def note(self, text: str) -> None:
        """Progress: on stderr, only when it is a terminal (never with ``--json``)."""
        if self.progress:
            print(text, file=sys.stderr, flush=True)

    def warn(self, text: str) -> None:
        """Something the user should know while the command goes on: always on stderr."""
        print(f"note: {text}", file=sys.stderr, flush=True)

    def error(self, text: str, **fields: Any) -> None:
        """The one line a failed command ends with (a JSON object with ``--json``)."""
        if self.as_json:
            print(json.dumps({"error": text, **fields}, default=str), flush=True)
        else:
            print(f"error: {text}", file=sys.stderr, flush=True)


@attrs.define
class Run:
    """One command: its arguments, its output, and what it learnt on the way (for a Ctrl-C)."""

    args: argparse.Namespace
    out: Out
    #: Tasks this run created, by job key (``generate``: the one clip's).
    created: dict[str, str] = attrs.Factory(dict)

    def option(self, name: str) -> Any:
        """An argument of the command, or None when the command has no such option."""
        return getattr(self.args, name, None)


def display_for(out: Out, jobs: int | None = None) -> JobsDisplay | None:
    """The live display on stderr when it is a terminal and rich (the cli extra) is there."""
    if not out.progress:
        return None
    try:
        from ..progress import JobsDisplay
    except ImportError:
        return None  # plain lines, as without a display
    return JobsDisplay.on_stderr(jobs=jobs, redirect_stdout=sys.stdout.isatty())


def printer(out: Out, display: JobsDisplay | None = None) -> Any:
    """An ``on_event`` for progress: the display's, or a plain line per step on a terminal."""
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


@overload
def masked(spec: str) -> str: ...
@overload
def masked(spec: None) -> None: ...
def masked(spec: str | None) -> str | None:
    """A journal as it may be printed: a URL's password masked (``***``), a path as it is."""
    if spec is None or "://" not in spec:
        return spec
    parts = urlsplit(spec)
    query = parse_qsl(parts.query, keep_blank_values=True)
    secret = {"password", "pass", "pwd"}
    if parts.password is None and not any(k.lower() in secret for k, _ in query):
        return spec
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user.partition(':')[0]}:***@{host}" if parts.password is not None else host
    hidden = [(k, "***" if k.lower() in secret else v) for k, v in query]
    rest = urlunsplit(("", "", parts.path, urlencode(hidden, safe="*"), parts.fragment))
    return f"{parts.scheme}://{netloc}{rest}"


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 job``, ``2 jobs``: a count with its noun in the right number."""
    return f"{count:g} {noun if count == 1 else many or noun + 's'}"


#: The library's words for Python callers, and the command line's for the same thing.
_PYTHON_TO_CLI: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"pass allow_insecure_http=True"), "pass --allow-insecure-http"),
    (re.compile(r"pass model='([^']+)'"), r"use --model \1 (or a model column)"),
    (re.compile(r"leave background_source out"), "leave --background-source out"),
    (re.compile(r"taking the batch to"), "taking this run to"),
    (re.compile(r"max_credits=(\S+?)([;,]|$)"), r"--max-credits \1\2"),
    (re.compile(r"when character_orientation='(\w+)'"), r"with orientation \1"),
    (
        re.compile(r"pass api_key= or set the (\w+) environment variable"),
        r"set \1 or pass --api-key-file",
    ),
    (re.compile(r"\bupload_base_url\b"), "--upload-base-url"),
    (re.compile(r"(?<![-\w])base_url\b"), "--base-url"),
)
#: ``python -m kling_async release JOURNAL KEY`` in its several spellings, with its brackets.
_RELEASE = re.compile(
    r"\((?:kling_async\.journal\.release_jobs, or )?`?python -m kling_async release "
    r"JOURNAL (\S+?)`?\)"
)


def reword(text: str, run: Run | None = None, key: str | None = None) -> str:
    """A library message with the command line's flags and commands for Python's arguments."""
    journal = masked(run.option("journal")) if run is not None else None

    def release(match: re.Match[str]) -> str:
        named = key if match.group(1) == "KEY" and key else match.group(1)
        return f"(`kling-async release {journal or 'JOURNAL'} {named}`)"

    text = _RELEASE.sub(release, text)
    for pattern, replacement in _PYTHON_TO_CLI:
        text = pattern.sub(replacement, text)
    return text


def describe(exc: BaseException, run: Run | None = None, *, key: str | None = None) -> str:
    """The command line's one line for an error: the service's refusals in plain words.

    ``key`` is the batch job the error is about, if any (to name it in a release command).
    """
    if isinstance(exc, TaskNotVisibleError | NotFoundError) and exc.endpoint == "recordInfo":
        task = run.option("task_id") if run is not None else None
        return f"no task {task or exc.task_id} (or not visible yet)"
    seen = run is not None and run.option("not_visible")
    if isinstance(exc, TaskTimeoutError) and exc.last_task is None and seen:
        return f"no task {exc.task_id} (or not visible yet) after {exc.timeout:g} s"
    if isinstance(exc, AuthenticationError):
        return (
            f"kie.ai refused the key ({exc.code}): {exc.message}; check {API_KEY_ENV} "
            "(or --api-key-file)"
        )
    if isinstance(exc, EdgeBlockedError):
        return (
            "kie.ai's edge blocked the request (403, error code: 1010): the key was not judged; "
            "try again later or from another network, or ask kie.ai's support"
        )
    if isinstance(exc, InsufficientCreditsError):
        return f"kie.ai says the account has too few credits ({exc.code}): {exc.message}"
    if isinstance(exc, RateLimitError | ServiceUnavailableError | ServerError):
        return f"kie.ai could not take the request now ({exc.code}): {exc.message}"
    if isinstance(exc, ProtocolError):
        return f"kie.ai's answer could not be read: {exc.message}"
    if isinstance(exc, NotFoundError):
        return (
            f"kie.ai answered {exc.code} ({exc.message}) to {exc.endpoint or 'a request'}: "
            "the base URL is the host only, e.g. https://api.kie.ai"
        )
    if isinstance(exc, APIError):
        return reword(f"kie.ai refused the request ({exc.code}): {exc.message}", run, key)
    if isinstance(exc, TransportError):
        return f"kie.ai could not be reached: {exc.message}"
    return reword(str(exc) or type(exc).__name__, run, key)
