"""Pieces the benchmarks share: a simulator run as its own process."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import attrs


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
    scale: float = 1.0, key: str = "bench-key"
) -> AsyncIterator[RemoteSimulator]:
    """Start ``python -m kling_async.simulator`` on a free port; stop it on exit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
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
        ],
        stdout=subprocess.PIPE,
        text=True,
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
