"""A real redis-server on an ephemeral 127.0.0.1 port, without persistence, for tests and benches;
and a TCP proxy in front of it that can black-hole the traffic (a cut network, not a refusal).

``make test`` installs Debian's ``redis-server`` when it is missing; these tests never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process; ``stop()`` and ``start()`` again keep its port (and lose data).

    redis-server cannot be told to pick a port itself, so a free one is picked here; if another
    process takes it first, the start is tried again (on a new port the first time, on the same
    port, after a pause, for a restart: clients keep the URL).
    """

    def __init__(self, *, persistent: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: `make test` installs it "
                "(or: apt-get install redis-server)"
            )
        self._binary = binary
        self._dir = tempfile.mkdtemp(prefix="kling-redis-")
        self._persistent = persistent
        self.port = _free_port()
        self._started_once = False
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's ``redis://`` URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def _log(self) -> Path:
        return Path(self._dir) / "redis.log"

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait until it answers PING."""
        deadline = time.monotonic() + timeout
        while True:
            failure = self._start_once(deadline)
            if failure is None:
                self._started_once = True
                return
            if "Address already in use" not in failure or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{failure}")
            if self._started_once:
                time.sleep(0.2)  # a restart keeps its port: wait for whoever holds it
            else:
                self.port = _free_port()

    def _start_once(self, deadline: float) -> str | None:
        """Start the server; None once it answers, else the end of its log."""
        settings = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "yes" if self._persistent else "no",
            "dir": self._dir,
            "logfile": str(self._log),
        }
        args = [arg for name, value in settings.items() for arg in (f"--{name}", value)]
        self._log.write_text("")
        self._proc = subprocess.Popen(
            [self._binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        while not self._answers():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                return self._log.read_text(errors="replace")[-2000:] or "(no log)"
            time.sleep(0.02)
        return None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server (its data is gone, unless it is persistent)."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def close(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class Blackhole:
    """A TCP proxy to a Redis port: ``cut()`` drops every byte both ways (connections stay open,
    nothing is refused, as when a network drops packets) until ``heal()``."""

    def __init__(self, port: int) -> None:
        self._port = port
        self.cut_off = False
        #: The ``redis://`` URL that goes through the proxy (once started).
        self.url = ""
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        """Listen on an ephemeral port; return the ``redis://`` URL that goes through it."""
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"
        return self.url

    def cut(self) -> None:
        """Drop everything from now on."""
        self.cut_off = True

    def heal(self) -> None:
        """Pass everything again (what was dropped stays lost)."""
        self.cut_off = False

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._port)
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pipe = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                if not self.cut_off:
                    sink.write(data)
                    await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
