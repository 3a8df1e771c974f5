"""``python -m kling_async``: journal housekeeping from the command line.

``python -m kling_async unknown JOURNAL`` lists the jobs whose createTask may have created a task
that the journal never learned of; ``python -m kling_async release JOURNAL KEY...`` (or
``--all-unknown``) lets them be created again, once the service's console shows no such task.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .errors import KlingError
from .journal import CREATING, UNKNOWN, Journal


async def _unknown(path: str) -> list[str]:
    async with Journal(path) as journal:
        return sorted(await journal.keys(UNKNOWN) + await journal.keys(CREATING))


async def _release(path: str, keys: list[str], all_unknown: bool) -> list[str]:
    async with Journal(path) as journal:
        if all_unknown:
            keys = await journal.keys(UNKNOWN) + await journal.keys(CREATING)
        return await journal.release(*keys)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m kling_async", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    unknown = commands.add_parser("unknown", help="list jobs whose submission is unknown")
    unknown.add_argument("journal")
    release = commands.add_parser(
        "release", help="let unknown jobs be created again (check the console first)"
    )
    release.add_argument("journal")
    release.add_argument("keys", nargs="*")
    release.add_argument("--all-unknown", action="store_true")
    args = parser.parse_args(argv)
    if not Path(args.journal).is_file():
        print(f"error: no journal at {args.journal}", file=sys.stderr)
        return 2
    try:
        if args.command == "unknown":
            for key in asyncio.run(_unknown(args.journal)):
                print(key)
            return 0
        if not args.keys and not args.all_unknown:
            parser.error("name the keys to release, or pass --all-unknown")
        released = asyncio.run(_release(args.journal, args.keys, args.all_unknown))
    except KlingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for key in released:
        print(f"released {key}")
    missing = sorted(set(args.keys) - set(released))
    for key in missing:
        print(f"not released (not unknown in this journal): {key}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
