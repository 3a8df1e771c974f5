"""The base of the client: the key, the hosts, the connection, and the one choke point.

Every API request goes through :meth:`BaseClient._call`: it opens the transport if needed, holds
a rate-limit slot while the request is in flight, adds the key and the User-Agent, and decodes
the answer (errors become the library's own). Retries are wrapped here too, once, for whoever
asks. The key never leaves this class: not in a repr, a log line or an error.

Bounds: it knows no endpoint's meaning beyond decoding answers; never imports the batch layer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import telemetry
from .errors import ConfigurationError, KlingError, RateLimitError, SessionClosedError
from .ratelimit import Limiter
from .retries import with_retries
from .settings import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_UPLOAD_BASE_URL,
    DEFAULT_USER_AGENT,
    UPLOAD_BASE_URL_ENV,
    check_api_key,
    check_base_url,
    upload_base_url_for,
)
from .transport import HttpTransport
from .wire import decode_answer

if TYPE_CHECKING:
    import aiohttp

__all__ = ["BaseClient"]

log = logging.getLogger("kling_async")


class BaseClient:
    """The key, the two hosts, the HTTP transport, retries, and the request choke point."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        upload_base_url: str | None = None,
        max_retries: int = 4,
        request_timeout: float = 30.0,
        retry_base: float = 0.5,
        retry_cap: float = 20.0,
        user_agent: str = DEFAULT_USER_AGENT,
        allow_insecure_http: bool = False,
        http_session: aiohttp.ClientSession | None = None,
        trace_configs: Sequence[aiohttp.TraceConfig] | None = None,
        seed: int | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not key or not key.strip():
            raise ConfigurationError(
                f"no API key: pass api_key= or set the {API_KEY_ENV} environment variable"
            )
        if max_retries < 0 or request_timeout <= 0:
            raise ConfigurationError("max_retries must be >= 0 and request_timeout > 0")
        if not user_agent or not user_agent.isprintable() or not user_agent.isascii():
            raise ConfigurationError("user_agent must be printable ASCII text")
        self.__api_key = check_api_key(key)
        self.user_agent = user_agent
        # Unset: the environment (to point a program at a simulator), else the real hosts.
        from_env = os.environ.get(BASE_URL_ENV)
        base_url = base_url or from_env or DEFAULT_BASE_URL
        # A simulator serves both hosts on one address: KIE_BASE_URL alone points at both
        # (unless it names the real API host, whose uploads go to the real upload host).
        upload_base_url = (
            upload_base_url
            or os.environ.get(UPLOAD_BASE_URL_ENV)
            or (upload_base_url_for(from_env) if from_env else None)
            or DEFAULT_UPLOAD_BASE_URL
        )
        self.base_url = check_base_url("base_url", base_url, allow_insecure_http)
        self.upload_base_url = check_base_url(
            "upload_base_url", upload_base_url, allow_insecure_http
        )
        self.max_retries = max_retries
        self.request_timeout = request_timeout
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._rng = random.Random(seed)
        if trace_configs and http_session is not None:
            raise ConfigurationError("give trace_configs to your own http_session instead")
        self._http = http_session
        self._trace_configs = list(trace_configs or ())
        self._transport: HttpTransport | None = None
        self._closed = False
        self._closing = asyncio.Event()

    def _retrying(
        self,
        target: Callable[..., Awaitable[Any]],
        should_retry: Callable[[Exception], bool],
        floor: Callable[[Exception], float] | None = None,
    ) -> Callable[..., Awaitable[Any]]:
        return with_retries(
            target,
            should_retry,
            max_tries=self.max_retries + 1,
            base=self._retry_base,
            cap=self._retry_cap,
            rng=self._rng,
            floor=floor,
        )

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(base_url={self.base_url!r}, upload_base_url={self.upload_base_url!r})"

    def _open(self) -> HttpTransport:
        if self._closed:
            raise SessionClosedError("the session is closed")
        if self._transport is None:
            self._transport = HttpTransport(
                self._http, timeout=self.request_timeout, trace_configs=self._trace_configs
            )
        return self._transport

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    async def until_closed(self) -> None:
        """Return once :meth:`close` starts: for work of the caller's that should end with it."""
        await self._closing.wait()

    async def _close_transport(self) -> None:
        self._closed = True
        self._closing.set()
        if self._transport is not None:
            await self._transport.close()
        self._transport = None

    @property
    def account_id(self) -> str:
        """A name for the account that does not reveal the key (a hash of it), for shared state."""
        return hashlib.sha256(self.__api_key.encode()).hexdigest()[:20]

    # -- the one choke point for API requests --------------------------------------------------
    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.__api_key}", "User-Agent": self.user_agent}

    async def _call(
        self,
        endpoint: str,
        method: str,
        url: str,
        *,
        limiter: Limiter | None = None,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        data: Any = None,
        total: float | None = None,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> Any:
        """Send one request (holding a rate-limit slot while in flight) and decode its answer."""
        transport = self._open()
        if callable(data):
            data = data()  # a fresh multipart body for each attempt: a stream is read once
        started = time.perf_counter()
        hold = await limiter.acquire() if limiter is not None else None
        if limiter is not None:  # the limiters are named for the endpoints they serve
            telemetry.count("limiter.wait", time.perf_counter() - started, limiter=endpoint)
            telemetry.count("limiter.granted", limiter=endpoint)
        try:
            # The wait for a slot may have outlived the session.
            transport = self._open()
            if before_send is not None:
                await before_send()
            started = time.perf_counter()  # the request's own time (the slot's wait is a metric)
            answer = await transport.send(
                method,
                url,
                headers=self._auth_headers(),
                json=json,
                params=params,
                data=data,
                total=total,
                what=endpoint,
            )
        finally:
            if limiter is not None:
                limiter.release(hold)
        took = (time.perf_counter() - started) * 1000
        try:
            decoded = decode_answer(
                answer.status,
                answer.headers,
                answer.body,
                endpoint=endpoint,
                now=datetime.now(UTC),
            )
        except KlingError as exc:
            code = getattr(exc, "code", "?")
            log.debug(
                "%s %s -> HTTP %d, code %s in %.0f ms", method, endpoint, answer.status, code, took
            )
            if isinstance(exc, RateLimitError):
                telemetry.count("http.rate_limited", endpoint=endpoint)
            raise
        log.debug("%s %s -> HTTP %d in %.0f ms", method, endpoint, answer.status, took)
        return decoded
