"""Run the quick configuration of every benchmark and print one table: ``python -m benchmarks``.

``--write`` also writes ``benchmarks/RESULTS.md`` (the table, the date, the command and the
machine); ``make bench`` passes it. Each ``benchmarks/bench_*.py`` runs alone in full mode.
Exits 1 if a money promise is broken (a job paid twice, a paid result lost), as the soak does.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import (
    _machine,
    bench_batch,
    bench_cancel,
    bench_polling,
    bench_soak,
    bench_telemetry,
    bench_upload,
    bench_webhooks,
)
from ._report import FAIL, Row, results_document, summary, text_table

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
#: In the order they run: each is (name, quick run).
BENCHMARKS: tuple[tuple[str, Callable[[], Coroutine[Any, Any, list[Row]]]], ...] = (
    ("upload", bench_upload.quick),
    ("polling", bench_polling.quick),
    ("batch", bench_batch.quick),
    ("webhooks", bench_webhooks.quick),
    ("soak", bench_soak.quick),
    ("cancel", bench_cancel.quick),
    ("telemetry", bench_telemetry.quick),
)


def run_all() -> list[Row]:
    """Every quick run, each in its own event loop; one that raises becomes a failed row."""
    rows: list[Row] = []
    for name, quick in BENCHMARKS:
        started = time.monotonic()
        try:
            rows += asyncio.run(quick())
        except Exception as exc:
            raised = f"raised {type(exc).__name__}: {exc}"[:120]
            rows.append(Row(name, "the run itself", raised, verdict=FAIL))
        print(f"{name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS.name}")
    args = parser.parse_args(argv)
    # The table is the output: warnings the cancel and fault runs cause on purpose (a batch
    # stopping with requests on the wire) would only break it up. Errors still show.
    logging.getLogger("kling_async").setLevel(logging.ERROR)
    load_before = _machine.load()
    started = time.monotonic()
    rows = run_all()
    seconds = time.monotonic() - started
    print()
    print(text_table(rows))
    print(f"\n{summary(rows)}; {seconds:.0f} s")
    if args.write:
        command = " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])])
        machine = [
            *_machine.describe(),
            ("load average (1, 5, 15 min) before and after", f"{load_before}; {_machine.load()}"),
        ]
        RESULTS.write_text(
            results_document(
                rows,
                date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                command=command,
                seconds=seconds,
                machine=machine,
            )
        )
        print(f"wrote {RESULTS}")
    if any(r.critical and r.failed for r in rows):
        raise SystemExit("money promise broken")


if __name__ == "__main__":
    main()
