"""Pieces the benchmarks share: a simulator run as its own process."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import attrs


def memory_folder() -> str | None:
    """``/dev/shm`` when it is there (files in memory, no disk noise), else the default."""
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


@attrs.frozen
class RemoteSimulator:
    """A simulator running as its own process, so that it shares no CPU with the client."""

    base_url: str
    api_key: str

    @property
    def upload_base_url(self) -> str:
        return self.base_url

    async def stats(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with http.get(f"{self.base_url}/_simulator/stats") as r:
            result: dict[str, Any] = await r.json()
            return result


@contextlib.asynccontextmanager
async def remote_simulator(
    scale: float = 1.0, key: str = "bench-key", credits: float | None = None
) -> AsyncIterator[RemoteSimulator]:
    """Start ``python -m kling_async.simulator`` on a free port; stop it on exit.

    ``credits``: the account's balance (None: the simulator's default).

    Its uploads are stored in a folder made here and removed after it stops (a terminated
    process cleans up nothing), in memory when ``/dev/shm`` is there: writing back a disk's
    dirty pages would add the disk's noise to upload timings.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="kling-bench-sim-", dir=memory_folder()) as store:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kling_async.simulator",
                "--port",
                str(port),
                "--api-key",
                key,
                "--time-scale",
                str(scale),
                *(() if credits is None else ("--credits", str(credits))),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "TMPDIR": store},
        )
        try:
            assert proc.stdout is not None
            proc.stdout.readline()
            yield RemoteSimulator(f"http://127.0.0.1:{port}", key)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
