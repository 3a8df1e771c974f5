"""The one module that talks aiohttp: send a request, get status, headers and body back.

aiohttp's errors are mapped to :class:`~kling_async.errors.TransportError` here and nowhere else,
keeping apart "the request surely never left" (connect failed) from "it may have arrived".
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
import attrs

from .errors import ProtocolError, SessionClosedError, TransportError
from .wire import MAX_ANSWER_BYTES

__all__ = ["HttpAnswer", "HttpTransport", "map_client_error"]


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


class HttpTransport:
    """Sends requests over one ``aiohttp.ClientSession``; reads whole (small) answers."""

    def __init__(self, session: aiohttp.ClientSession, *, timeout: float) -> None:
        self.session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        json: Any = None,
        data: Any = None,
        params: Mapping[str, str] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
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
                timeout=timeout or self._timeout,
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
