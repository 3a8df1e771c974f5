"""The CLI's live display (rich), fed real events from runs against the simulator.

Checked with rich's own fake terminal (a console writing to a string), and the CLI's wiring with a
pseudo-terminal as stderr.
"""

from __future__ import annotations

import asyncio
import io
import os
import pty
import sys
from pathlib import Path

from rich.console import Console
from rich.filesize import decimal

from kling_async import Job, JobOutcome, SubmissionUnknownError, TaskFailedError
from kling_async.progress import JobsDisplay
from kling_async.rules import DOLLARS_PER_CREDIT
from kling_async.simulator import FaultConfig, Simulator

from .conftest import MEDIA, SimFactory, session_for
from .test_progress import RESULT, big_video

WIDTH = 160


def fake_terminal() -> tuple[Console, io.StringIO]:
    screen = io.StringIO()
    return Console(file=screen, force_terminal=True, width=WIDTH, color_system=None), screen


def last_frame(drawn: str) -> str:
    """What the fake terminal shows at the end: the text after the last erase of a line."""
    return drawn.rsplit("\x1b[2K", 1)[-1]


def text_of(display: JobsDisplay, journal: str | None = None) -> str:
    """The summary table as plain text."""
    console = Console(file=io.StringIO(), width=WIDTH, record=True, color_system=None)
    console.print(display.summary(journal))
    return console.export_text()


def row(table: str, label: str) -> list[str]:
    """The cells of the summary row starting with ``label``."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("│┃| ").split("│")]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in\n{table}")


async def test_a_batch_shows_one_bar_its_bytes_and_a_summary(
    sim: Simulator, tmp_path: Path
) -> None:
    video = big_video(tmp_path)
    jobs = [Job(MEDIA / "portrait.png", video, key=f"clip{n}") for n in range(3)]
    console, screen = fake_terminal()
    now = [100.0]
    outcomes: list[JobOutcome] = []
    display = JobsDisplay(console, jobs=3, auto_refresh=False, clock=lambda: now[0])
    async with session_for(sim) as kling:
        with display:
            # 10 s at 720p is 110 credits: the third task would pass 250.
            async with kling.generate_many(
                jobs,
                download_to=tmp_path / "out",
                on_event=display.on_event,
                max_credits=250,
            ) as run:
                async for outcome in run:
                    display.finished(outcome)
                    outcomes.append(outcome)
    drawn = screen.getvalue()
    size = decimal(video.stat().st_size)
    assert f"upload {video.name}" in drawn and f"/ {size}" in drawn  # the bytes of the upload
    assert "download clip" in drawn and f"/ {decimal(RESULT.stat().st_size)}" in drawn
    assert "0/3 jobs" in drawn and "1/3 jobs (1 failed)" in drawn
    final = last_frame(drawn)  # transfers gone, the bar full
    assert "3/3 jobs (1 failed)" in final and "upload" not in final and "━" * 30 in final
    table = text_of(display, "batch.sqlite")
    assert row(table, "done")[1:] == ["2", "2 clips saved"]
    failed = row(table, "failed: CreditLimitError")
    assert failed[1] == "1" and "max_credits=250" in table
    spent = sum(o.result.task.credits_consumed or 0 for o in outcomes if o.result is not None)
    dollars = f"${spent * DOLLARS_PER_CREDIT:.2f}"
    assert spent > 0 and row(table, "credits used now")[1:] == [f"{spent:g}", dollars]
    now[0] += 3723
    assert row(text_of(display), "elapsed")[1] == "1:02:03"
    assert "unknown" not in table


async def test_the_summary_says_why_jobs_failed_and_what_to_do_with_unknown_ones(
    make_sim: SimFactory,
) -> None:
    # Every task fails; half the createTask answers are lost after the task was made.
    faults = FaultConfig(drop_after=0.5, seed=3, endpoints=frozenset({"createTask"}))
    sim = await make_sim(failure_rate=1.0, faults=faults)
    jobs = [Job(MEDIA / "portrait.png", MEDIA / "d3.0.mp4", key=f"job{n}") for n in range(6)]
    display = JobsDisplay(fake_terminal()[0], jobs=6, auto_refresh=False)
    outcomes: list[JobOutcome] = []
    async with session_for(sim) as kling, kling.generate_many(jobs) as run:
        async for outcome in run:
            display.finished(outcome)
            outcomes.append(outcome)
    lost = [o.job_key for o in outcomes if isinstance(o.error, SubmissionUnknownError)]
    failed = [o for o in outcomes if isinstance(o.error, TaskFailedError)]
    assert lost and failed and len(lost) + len(failed) == 6
    table = text_of(display, "batch.sqlite")
    assert row(table, "done")[1] == "0"
    assert row(table, "failed [500]")[1] == str(len(failed))
    assert row(table, "unknown")[1] == str(len(lost))
    assert "kling-async release batch.sqlite KEY" in table
    assert all(key in table for key in lost[:5])
    assert row(table, "credits used now")[1] == "0"


async def test_a_resumed_batch_tells_its_own_spend_from_earlier_runs(
    sim: Simulator, tmp_path: Path
) -> None:
    jobs = [Job(MEDIA / "portrait.png", MEDIA / "d3.0.mp4", key=f"job{n}") for n in range(2)]
    journal = tmp_path / "batch.sqlite"
    displays = []
    async with session_for(sim) as kling:
        for _ in range(2):
            display = JobsDisplay(fake_terminal()[0], jobs=2, auto_refresh=False)
            async with kling.generate_many(jobs, journal=journal, on_event=display.on_event) as run:
                async for outcome in run:
                    display.finished(outcome)
            displays.append(text_of(display))
    first, again = displays
    spent = row(first, "credits used now")[1]
    assert float(spent) > 0 and "by earlier runs" not in first
    assert row(again, "credits used now")[1] == "0" and row(again, "by earlier runs")[1] == spent
    assert sim.tasks_created[sim.api_key] == 2


async def test_one_clip_shows_its_transfers_and_its_tasks_state(
    sim: Simulator, tmp_path: Path
) -> None:
    video = big_video(tmp_path)
    console, screen = fake_terminal()
    with JobsDisplay(console, auto_refresh=False) as display:
        async with session_for(sim) as kling:
            result = await kling.generate(
                MEDIA / "portrait.png", video, download_to=tmp_path, on_event=display.on_event
            )
    final = last_frame(screen.getvalue())
    [clip] = result.files
    for name, path in (("upload", MEDIA / "portrait.png"), ("upload", video), ("download", clip)):
        size = decimal(path.stat().st_size)
        assert f"{name} {path.name}" in final and f"{size} / {size}" in final, (name, final)
    assert f"task {result.task.task_id}: success" in final


# -- the command line on a terminal --------------------------------------------------------------


async def run_on_a_terminal(
    *command: str, env: dict[str, str], cwd: Path | None = None
) -> tuple[int, str, str]:
    """Run a command with a pseudo-terminal as stderr; return its code, stdout and terminal."""
    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        *command, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=slave
    )
    os.close(slave)

    def read_terminal() -> bytes:
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                return b"".join(chunks)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    try:
        terminal, (out, _) = await asyncio.gather(
            asyncio.to_thread(read_terminal), proc.communicate()
        )
    finally:
        os.close(master)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), terminal.decode(errors="replace")


def cli_env(sim: Simulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KIE_API_KEY"}
    return {**env, "KIE_API_KEY": sim.api_key, "COLUMNS": "140", "TERM": "xterm"}


async def test_the_batch_command_draws_on_a_terminal_and_keeps_stdout_plain(
    sim: Simulator, tmp_path: Path
) -> None:
    manifest = tmp_path / "jobs.csv"
    manifest.write_text(
        "image,video,key\n"
        + "".join(f"{MEDIA / 'portrait.png'},{MEDIA / 'd3.0.mp4'},k{n}\n" for n in range(2))
    )
    command = [
        sys.executable,
        "-m",
        "kling_async",
        "batch",
        str(manifest),
        "--out",
        str(tmp_path / "out"),
        "--base-url",
        sim.base_url,
    ]
    code, out, terminal = await run_on_a_terminal(*command, env=cli_env(sim))
    assert code == 0, (out, terminal)
    assert "2/2 jobs" in terminal and "credits used" in terminal and "elapsed" in terminal
    assert out.count("ok  k") == 2 and "summary: ok 2" in out  # stdout as without a terminal
    assert sim.api_key not in out + terminal
    # --json: no display, even on a terminal; the JSON lines as ever.
    code, out, terminal = await run_on_a_terminal(*command, "--json", env=cli_env(sim))
    assert code == 0 and "jobs" not in terminal
    assert [line[0] for line in out.splitlines()] == ["{"] * 3


async def test_without_rich_the_command_prints_plain_lines(sim: Simulator, tmp_path: Path) -> None:
    # rich is made unimportable: the cli extra is not installed.
    program = (
        "import sys; sys.modules['rich'] = None; from kling_async.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    command = [
        sys.executable,
        "-c",
        program,
        "generate",
        str(MEDIA / "portrait.png"),
        str(MEDIA / "d3.0.mp4"),
        "--out",
        str(tmp_path),
        "--base-url",
        sim.base_url,
    ]
    code, out, terminal = await run_on_a_terminal(*command, env=cli_env(sim))
    assert code == 0, (out, terminal)
    assert "done: task" in out and "saved" in out
    assert ": uploaded" in terminal and ": downloaded" in terminal  # the plain progress lines
    assert ": uploading" not in terminal  # a line per step, not per chunk
    assert "━" not in terminal  # no bar was drawn
