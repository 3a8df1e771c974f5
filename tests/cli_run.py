"""Running the command line as a subprocess, and keeping everything it printed for the key sweep.

Every test file of the CLI ends with a test that no output (of any file so far) showed a key.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from kling_async.simulator import Simulator

#: Everything the commands printed, stdout and stderr together.
OUTPUTS: list[str] = []
#: Keys the commands were given: none may ever show up in OUTPUTS.
SECRETS: set[str] = {"sk-sim-0123456789abcdef"}
#: The commands that talk to the service (they get ``--base-url SIMULATOR``).
SERVICE = ("credits", "status", "wait", "generate", "batch")
#: A Python entry with Ctrl-C's default handling: a test runner may start us with SIGINT ignored.
CTRL_C_ABLE = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from kling_async.cli import main; sys.exit(main(sys.argv[1:]))"
)


def environment(sim: Simulator | None, key: str | None, extra: dict[str, str]) -> dict[str, str]:
    """The process environment for a command: no key of the test runner's, ours if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIE_")}
    if key is not None or sim is not None:
        env["KIE_API_KEY"] = key if key is not None else sim.api_key  # type: ignore[union-attr]
        SECRETS.add(env["KIE_API_KEY"].strip())
    return {**env, **extra}


def command_line(args: tuple[str, ...], sim: Simulator | None) -> list[str]:
    """``python -m kling_async ARGS``, pointed at ``sim`` for the commands that call the service."""
    command = [sys.executable, "-m", "kling_async", *args]
    if sim is not None and args and args[0] in SERVICE:
        command += ["--base-url", sim.base_url]
    return command


async def cli(
    *args: str,
    sim: Simulator | None = None,
    key: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[int, str]:
    """Run ``python -m kling_async ARGS``; return its exit code and stdout + stderr."""
    proc = await asyncio.create_subprocess_exec(
        *command_line(args, sim),
        env=environment(sim, key, env or {}),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    text = out.decode()
    OUTPUTS.append(text)
    assert proc.returncode is not None
    return proc.returncode, text


async def interrupted(
    *args: str, sim: Simulator, when: Callable[[], bool], env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run a command, press Ctrl-C once ``when()`` holds; return its exit code and output."""
    command = [sys.executable, "-c", CTRL_C_ABLE, *command_line(args, sim)[3:]]
    proc = await asyncio.create_subprocess_exec(
        *command,
        env=environment(sim, None, env or {}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await eventually(when, 60)
        proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    OUTPUTS.append(text)
    assert proc.returncode is not None
    return proc.returncode, text


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float) -> None:
    """Wait (polling) until ``check()`` holds; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        assert asyncio.get_running_loop().time() < deadline, "it never happened"
        await asyncio.sleep(0.02)


def manifest(path: Path, rows: list[str], header: str = "image,video,prompt,key,mode") -> Path:
    """Write a CSV manifest; return its path."""
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def assert_no_key_was_printed() -> None:
    """The sweep: no output so far showed any key a command was given."""
    assert OUTPUTS, "the other tests of this file ran first"
    for text in OUTPUTS:
        for secret in SECRETS:
            # A key with a line break inside is judged by each of its lines.
            for part in secret.split():
                if len(part) >= 8:
                    assert part not in text, "an output showed a key"
