"""The command line's arguments: one parser, its subcommands and their options.

``simulate`` and ``demo`` take no options here: what follows them goes to the simulator's and
the demo's own commands, so both spellings (``kling-async simulate``, ``python -m
kling_async.simulator``) always take the same options.

Bounds: it only describes arguments; it runs nothing.
"""

from __future__ import annotations

import argparse

from ..rules import BACKGROUND_SOURCES, MODE_SPELLINGS, MODEL_NAME, MOTION_MODELS
from ..settings import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_UPLOAD_BASE_URL,
    UPLOAD_BASE_URL_ENV,
)

__all__ = ["PASS_THROUGH", "build_parser"]

#: Commands whose own arguments are another command's (the simulator's, the demo's).
PASS_THROUGH = ("simulate", "demo")

_ENVIRONMENT = f"""\
environment:
  {API_KEY_ENV}           the API key (or --api-key-file); never printed
  {BASE_URL_ENV}          the API host (or --base-url), default {DEFAULT_BASE_URL}; a
                         simulator's address points uploads there too
  {UPLOAD_BASE_URL_ENV}   the upload host (or --upload-base-url), default
                         {DEFAULT_UPLOAD_BASE_URL}
"""


def _version() -> str:
    from .. import __version__  # the package's, read when asked for

    return f"kling-async {__version__}"


def build_parser(description: str) -> argparse.ArgumentParser:
    """The ``kling-async`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="one JSON object per line")
    service = argparse.ArgumentParser(add_help=False)
    service.add_argument("--api-key-file", help=f"read the key from a file (else ${API_KEY_ENV})")
    service.add_argument(
        "--base-url",
        default=None,
        help=f"the API host only (default ${BASE_URL_ENV} or {DEFAULT_BASE_URL})",
    )
    service.add_argument(
        "--upload-base-url",
        default=None,
        help=f"default ${UPLOAD_BASE_URL_ENV}; else {DEFAULT_UPLOAD_BASE_URL} for the real API "
        "host, and --base-url's own host for another (a simulator)",
    )
    service.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="let the key travel over plain http to a host that is not this machine",
    )
    clip = argparse.ArgumentParser(add_help=False)
    clip.add_argument("--orientation", choices=("image", "video"), default="video")
    clip.add_argument("--mode", choices=tuple(MODE_SPELLINGS), default="720p")
    motion = argparse.ArgumentParser(add_help=False)
    motion.add_argument("--model", choices=MOTION_MODELS, help=f"default: {MODEL_NAME}")
    motion.add_argument(
        "--background-source", choices=BACKGROUND_SOURCES, help="kling-3.0/motion-control only"
    )

    parser = argparse.ArgumentParser(
        prog="kling-async",
        description=description,
        epilog=_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
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
    cmd.add_argument("--out", help="folder for the clip (made if missing)")
    cmd.add_argument("--timeout", type=float, help="seconds to wait")
    # No options of their own (not even -h): the simulator's and the demo's parsers take them.
    commands.add_parser(
        "simulate",
        add_help=False,
        help="serve the simulator (prints its URL and key); `simulate --help` for its options",
    )
    commands.add_parser(
        "demo", add_help=False, help="a small batch on the embedded simulator (`demo --help`)"
    )
    cmd = commands.add_parser("generate", parents=[common, service, clip, motion], help="one clip")
    cmd.add_argument("image")
    cmd.add_argument("video")
    cmd.add_argument("--prompt")
    cmd.add_argument("--out", help="folder for the clip (made if missing)")
    cmd.add_argument("--timeout", type=float, help="seconds to wait for the task")
    cmd = commands.add_parser(
        "batch", parents=[common, service, motion], help="a CSV/JSONL manifest"
    )
    cmd.add_argument("manifest")
    cmd.add_argument("--out", help="folder for the clips (made if missing)")
    cmd.add_argument(
        "--journal",
        help="SQLite file: makes the batch resumable; or redis://HOST:PORT/DB?journal=NAME, "
        "shared by workers on several machines running the same manifest",
    )
    cmd.add_argument(
        "--max-credits",
        type=float,
        help="create no task that would take this run's estimated spend over N credits "
        "(tasks of earlier runs are not counted)",
    )
    cmd.add_argument(
        "--dry-run",
        action="store_true",
        help="check and estimate, create nothing (with --journal: only what a run would create)",
    )
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
