"""The one module that talks aiohttp's client: requests, streamed bodies and downloads.

Owns the HTTP session (made here unless the caller passes one), sending a request and reading its
answer whole (with a size cap), file bodies streamed from disk in constant memory, and streamed
downloads with a deadline that grows with what arrives. aiohttp's errors are mapped to
:class:`~kling_async.errors.TransportError` here and nowhere else, keeping apart "the request
surely never left" (connect failed) from "it may have arrived". It knows nothing of the API.

Bounds: it knows nothing of the API's endpoints, answers' meaning, retries or rate limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
import aiofiles.threadpool
import aiohttp
import attrs
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import BytesIOPayload, Payload

from . import telemetry
from .errors import (
    DownloadError,
    ProtocolError,
    SessionClosedError,
    TransportError,
    api_error_for,
)
from .relay import Meter
from .settings import DEFAULT_MIN_TRANSFER_RATE
from .wire import MAX_ANSWER_BYTES

__all__ = [
    "FilePart",
    "HttpAnswer",
    "HttpTransport",
    "map_client_error",
    "multipart_form",
]

log = logging.getLogger("kling_async")

_CHUNK = 256 * 1024
_FILE_CHUNK = 1024 * 1024


async def _read_capped(answer: aiohttp.ClientResponse, what: str) -> bytes:
    """The whole body, however it is framed, but never more than ``MAX_ANSWER_BYTES``."""
    if answer.content_length is not None and answer.content_length > MAX_ANSWER_BYTES:
        raise ProtocolError(
            answer.status,
            f"answer of {answer.content_length} bytes is larger than {MAX_ANSWER_BYTES}",
            http_status=answer.status,
            endpoint=what,
        )
    parts: list[bytes] = []
    size = 0
    async for chunk in answer.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise ProtocolError(
                answer.status,
                f"answer is larger than {MAX_ANSWER_BYTES} bytes",
                http_status=answer.status,
                endpoint=what,
            )
        parts.append(chunk)
    return b"".join(parts)


@attrs.frozen
class HttpAnswer:
    """What came back: status, headers, body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def map_client_error(exc: BaseException, what: str) -> TransportError:
    """Turn an aiohttp or timeout error into a ``TransportError`` saying whether it was sent."""
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ClientProxyConnectionError):
        # Nothing was written: the connection was never established.
        return TransportError(f"{what}: could not connect ({exc.os_error})", request_sent=False)
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return TransportError(f"{what}: TLS handshake failed", request_sent=False)
    if isinstance(exc, asyncio.TimeoutError):
        return TransportError(f"{what}: no answer within the request timeout")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return TransportError(f"{what}: the server closed the connection without answering")
    return TransportError(f"{what}: {type(exc).__name__}: {exc}")


async def _open_for_reading(path: Path) -> Any:
    """Open a file in a worker thread; if cancelled meanwhile, the file is still closed."""
    loop = asyncio.get_running_loop()
    opening = loop.run_in_executor(None, path.open, "rb")
    try:
        raw = await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(
            lambda done: done.exception() is None and done.result().close()  # type: ignore[func-returns-value]
        )
        raise
    return aiofiles.threadpool.wrap(raw, loop=loop)


class FilePayload(Payload):
    """A file streamed from disk with aiofiles, with a known size and progress reports.

    Progress goes to a :data:`~kling_async.relay.Meter`: a plain call that returns at once, so
    no caller's callback ever runs inside the transfer (it is relayed, see ``relay``).
    """

    def __init__(
        self,
        path: Path,
        size: int,
        *,
        content_type: str,
        filename: str,
        on_progress: Meter | None = None,
    ) -> None:
        super().__init__(path, content_type=content_type, filename=filename)
        self._path = path
        self._size = size
        self._file_size = size
        self._on_progress = on_progress

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """Not supported: the payload is streamed, never held as text."""
        raise TypeError("a streamed file payload cannot be decoded")

    async def write(self, writer: AbstractStreamWriter) -> None:
        """Stream the file in chunks; memory use does not grow with its size."""
        sent = 0
        total = self._file_size
        fh = await _open_for_reading(self._path)
        try:
            # From 0: a watcher learns the size (and that this attempt started) before a chunk.
            if self._on_progress is not None:
                self._on_progress(0, total)
            while sent < total:
                chunk = await fh.read(min(_FILE_CHUNK, total - sent))
                if not chunk:
                    raise OSError(f"{self._path} shrank while being uploaded")
                await writer.write(chunk)
                sent += len(chunk)
                if self._on_progress is not None:
                    self._on_progress(sent, total)
        finally:
            await asyncio.shield(fh.close())

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        """Stream the file (the length is already known and set)."""
        await self.write(writer)


@attrs.frozen
class FilePart:
    """The file of a multipart upload: a path on disk (streamed) or bytes in memory."""

    source: Path | bytes
    size: int
    filename: str
    content_type: str
    on_progress: Meter | None = None


def multipart_form(fields: Mapping[str, str], file_field: str, part: FilePart) -> Callable[[], Any]:
    """A maker of the multipart body: called once per attempt, as a stream is read only once."""

    def make() -> aiohttp.FormData:
        form = aiohttp.FormData()
        for name, value in fields.items():
            form.add_field(name, value)
        if isinstance(part.source, bytes):
            body: Payload = BytesIOPayload(
                io.BytesIO(part.source), content_type=part.content_type, filename=part.filename
            )
        else:
            body = FilePayload(
                part.source,
                part.size,
                content_type=part.content_type,
                filename=part.filename,
                on_progress=part.on_progress,
            )
        form.add_field(file_field, body, filename=part.filename)
        return form

    return make


class HttpTransport:
    """Sends requests over one ``aiohttp.ClientSession``; reads whole (small) answers.

    ``timeout`` bounds one request; a transfer is bounded by the ``total`` its caller gives (by
    size or by rate) and by no silence longer than ``timeout``.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None,
        *,
        timeout: float,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        self._own = session is None
        # For HTTP spans: aiohttp's tracing hooks (an OpenTelemetry instrumentation's, say).
        self._trace_configs = list(trace_configs)
        self._session = session
        self._closed = False
        self._request_timeout = timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._idle = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session, made on first use unless one was given."""
        if self._closed:
            raise SessionClosedError("the session is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100), trace_configs=self._trace_configs
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session if it was made here; none is made after this."""
        self._closed = True
        if self._own and self._session is not None:
            await self._session.close()

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        json: Any = None,
        data: Any = None,
        params: Mapping[str, str] | None = None,
        total: float | None = None,
        what: str,
    ) -> HttpAnswer:
        """Send one request and return its answer; ``TransportError`` if none came."""
        try:
            async with self.session.request(
                method,
                url,
                headers=headers,
                json=json,
                data=data,
                params=params,
                timeout=self._timeout if total is None else self._transfer(total),
                allow_redirects=False,
            ) as answer:
                body = await _read_capped(answer, what)
                return HttpAnswer(answer.status, answer.headers, body)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise map_client_error(exc, what) from exc
        except RuntimeError as exc:
            if self.session.closed:  # closed while this request waited: nothing was sent
                raise SessionClosedError(f"{what}: the session is closed") from exc
            raise

    def _transfer(self, total: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=total, sock_connect=self._request_timeout, sock_read=self._request_timeout
        )

    @telemetry.traced("download")
    async def fetch_to_file(
        self,
        url: str,
        target: Path,
        *,
        accept: Callable[[str, bytes], None],
        on_progress: Meter | None = None,
        headers: Mapping[str, str] | None = None,
        grace: float = 30.0,
        min_rate: float = DEFAULT_MIN_TRANSFER_RATE,
    ) -> int:
        """GET ``url`` (no credentials) into ``target.part``, then rename; return bytes written.

        The transfer must average ``min_rate`` bytes per second after ``grace`` seconds, or it is
        ended with a ``TransportError``. ``on_progress(bytes so far, Content-Length or None)``, a
        :data:`~kling_async.relay.Meter` (never awaited), is told from 0 and after each chunk.
        ``accept(url, head)`` judges the first bytes before the rename (and raises to refuse
        them); nothing is left behind when it does.
        """
        part = target.with_name(target.name + ".part")
        written = 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout_at(started + grace) as deadline:
                async with self.session.get(
                    url, timeout=self._idle, allow_redirects=True, headers=headers
                ) as answer:
                    if answer.status != 200:
                        if answer.status == 429:  # counted as the service's own 429s are
                            telemetry.count("http.rate_limited", endpoint="download")
                        raise api_error_for(
                            answer.status,
                            f"download failed: HTTP {answer.status}",
                            http_status=answer.status,
                            endpoint="download",
                        )
                    total = answer.content_length
                    if total is not None:
                        deadline.reschedule(started + grace + total / min_rate)
                    await _mkdir(target.parent)
                    head = b""
                    if on_progress is not None:
                        on_progress(0, total)
                    async with aiofiles.open(part, "wb") as out:
                        async for chunk in answer.content.iter_chunked(_CHUNK):
                            if len(head) < 32:
                                head += chunk[: 32 - len(head)]
                            await out.write(chunk)
                            written += len(chunk)
                            if total is None:
                                deadline.reschedule(started + grace + written / min_rate)
                            if on_progress is not None:
                                on_progress(written, total)
                    if total is not None and written != total:
                        short = aiohttp.ClientPayloadError(f"got {written} of {total} bytes")
                        raise map_client_error(short, "download")
                accept(url, head)
                await aiofiles.os.replace(part, target)
        except TimeoutError as exc:
            await _remove(part)
            if loop.time() >= started + grace:
                raise TransportError(
                    f"download: {written} bytes in {loop.time() - started:.0f} s, slower than "
                    f"{min_rate:.0f} bytes/s; ended"
                ) from exc
            raise map_client_error(exc, "download") from exc
        except aiohttp.ClientError as exc:
            await _remove(part)
            raise map_client_error(exc, "download") from exc
        except OSError as exc:
            await _remove(part)
            raise DownloadError(f"cannot save the result to {target}: {exc}") from exc
        except BaseException:
            await _remove(part)
            raise
        log.debug("GET download -> %d bytes in %.0f ms", written, (loop.time() - started) * 1e3)
        telemetry.count("download.bytes", written)
        telemetry.annotate(bytes=written)
        return written


async def _mkdir(folder: Path) -> None:
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)


async def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        await aiofiles.os.remove(path)
