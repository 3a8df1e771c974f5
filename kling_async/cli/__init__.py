"""``kling-async`` (or ``python -m kling_async``): the library from a terminal or a script.

Commands: ``validate``, ``estimate``, ``credits``, ``status``, ``wait``, ``generate``, ``batch``,
``journal``, ``unknown``, ``release``, ``simulate``, ``demo``. Every command takes ``--json`` (one
JSON object per line on stdout); progress goes to stderr, and only when it is a terminal. The key
comes from ``KIE_API_KEY`` or ``--api-key-file`` and is never printed. Expected failures are one
line, in the command line's words (its flags, not Python's arguments), never a traceback.

Exit codes: 0 done; 1 a file or a job failed; 2 bad usage or settings; 3 the service refused or
could not be reached; 130 interrupted (the message says what a rerun would do).

Bounds: it holds no logic of the library's own; it parses arguments and prints what it is told.
The commands live in ``_commands`` and ``_batch``, manifests in ``_manifest``, the words in
``_output``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from ..errors import APIError, ConfigurationError, KlingError, MediaValidationError, TransportError
from ._batch import batch
from ._commands import COMMANDS, SYNC_COMMANDS, demo, simulate
from ._output import Out, Run, describe, masked, plural
from ._parser import PASS_THROUGH, build_parser

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SERVICE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _interrupted(run: Run) -> str:
    """What a Ctrl-C leaves behind, and what running the command again would do."""
    command, created = run.args.command, run.created
    out_dir = run.option("out") or "clips/"
    if command == "batch":
        journal = masked(run.option("journal"))
        if journal:
            return (
                "interrupted; run the same command again to resume (the journal "
                f"{journal} keeps every task created, and none is created twice)"
            )
        made = ""
        if created:
            made = (
                f" {plural(len(created), 'task')} had been created "
                f"({', '.join(created.values())}): `kling-async wait TASK_ID --out {out_dir}` "
                "saves each clip."
            )
        return (
            "interrupted; without a journal a rerun creates every job again (and pays for it "
            f"again).{made} Pass --journal FILE next time to be able to resume."
        )
    if command == "generate":
        if created:
            task = next(iter(created.values()))
            return (
                f"interrupted; task {task} was created: `kling-async wait {task} --out "
                f"{out_dir}` waits for it and saves the clip"
            )
        return (
            "interrupted; if a task was created (see kie.ai's task list), `kling-async wait "
            f"TASK_ID --out {out_dir}` waits for it and saves the clip"
        )
    if command == "wait":
        out = f" --out {run.args.out}" if run.args.out else ""
        return (
            f"interrupted; the task goes on: `kling-async wait {run.args.task_id}{out}` waits again"
        )
    return "interrupted"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser(__doc__.split("\n")[0] if __doc__ else "kling-async")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    if rest and args.command not in PASS_THROUGH:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    run = Run(args, Out(as_json=getattr(args, "json", False) or "--json" in rest))
    try:
        if args.command == "simulate":
            return simulate(run, rest)
        if args.command == "demo":
            return demo(run, rest)
        if args.command in SYNC_COMMANDS:
            return SYNC_COMMANDS[args.command](run)
        command = batch if args.command == "batch" else COMMANDS[args.command]
        return asyncio.run(command(run))
    except KeyboardInterrupt:
        run.out.error(_interrupted(run), task_ids=list(run.created.values()))
        return EXIT_INTERRUPTED
    except (ConfigurationError, MediaValidationError) as exc:
        run.out.error(describe(exc, run))
        return EXIT_USAGE if isinstance(exc, ConfigurationError) else EXIT_FAILED
    except (APIError, TransportError) as exc:
        run.out.error(describe(exc, run))
        return EXIT_SERVICE
    except KlingError as exc:
        run.out.error(describe(exc, run))
        return EXIT_FAILED
