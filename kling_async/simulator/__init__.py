"""A local simulator of kie.ai's Kling motion-control service, speaking its real HTTP API.

It serves ``kling-2.6/motion-control`` and ``kling-3.0/motion-control`` (each with its own
prices and inputs), and other Market models generically (``SimulatorConfig.market_models``).

Use it in tests and demos instead of the real service::

    async with Simulator(SimulatorConfig(time_scale=0.01)) as sim:
        async with sim.session() as kling:   # limits and polling time-scaled alike
            ...

It implements both hosts (API and file upload), auth, validation with the documented codes, the
task lifecycle, rate limits, credits, signed callbacks, seeded fault injection and a time scale,
and keeps a request log and counters for assertions. It can also play the real service's odd
answers (kie-api.md section 9b): the edge's bare 403 to library User-Agents, 433 quotas, 404 for
new tasks, gateway pages and empty successes after a task was created, HTML in place of a video,
trickling transfers, and outages of an endpoint while tasks keep rendering (``outage``).
Run it alone with ``python -m kling_async.simulator --port 8080``, and point a client at it with
its time scale applied::

    async with Simulator.connect("http://127.0.0.1:8080") as sim:
        async with sim.session() as kling:
            ...
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import attrs
from aiohttp import web

from ._app import RequestRecord, Service, make_workdir
from ._callbacks import CallbackDelivery
from ._config import LIBRARY_USER_AGENTS, OUTAGE_KINDS, FaultConfig, SimulatorConfig
from ._state import SimTask

if TYPE_CHECKING:
    from ..session import KlingSession

__all__ = [
    "LIBRARY_USER_AGENTS",
    "OUTAGE_KINDS",
    "CallbackDelivery",
    "FaultConfig",
    "RemoteSimulator",
    "RequestRecord",
    "Simulator",
    "SimulatorConfig",
]


#: Where ``Simulator.connect()`` looks when no URL is given: the session's variable, then the
#: simulator command's default port.
_BASE_URL_ENV = "KIE_BASE_URL"
_API_KEY_ENV = "KIE_API_KEY"
_DEFAULT_URL = "http://127.0.0.1:8080"
_CONFIG_PATH = "/_simulator/config"


# A dataclass, not attrs: attrs' generated validators look up a global ``_config`` (its own),
# which this package's ``_config`` module shadows.
@dataclasses.dataclass(frozen=True)
class RemoteSimulator:
    """A simulator as a client sees it: its two hosts, a key to use and its time scale.

    ``Simulator.connect(url)`` makes one for a simulator run apart (``python -m
    kling_async.simulator``); ``session()`` and ``scaled()`` behave as on a ``Simulator``.
    """

    base_url: str
    upload_base_url: str
    api_key: str = dataclasses.field(repr=False)
    time_scale: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ValueError(f"time_scale must be a finite number above 0; got {self.time_scale!r}")

    def scaled(self, seconds: float) -> float:
        """Real seconds for ``seconds`` of the service's time (a timeout, a deadline)."""
        return seconds * self.time_scale

    def session(self, **settings: Any) -> KlingSession:
        """A ``KlingSession`` pointed at this simulator, its limits and schedules time-scaled.

        The documented defaults (``create_limit``, ``query_limit``, ``poll``, ``fallback_poll``)
        are scaled by ``time_scale`` so that the client sees the service as the real one would;
        any of them, or any other session setting (``api_key`` too), can be overridden.
        """
        # The simulator's one bridge to the client, for convenience: nothing the simulator
        # judges depends on client code (tests/test_layers.py holds it to that).
        from ..session import KlingSession
        from ..settings import (
            DEFAULT_CREATE_LIMIT,
            DEFAULT_FALLBACK_POLL,
            DEFAULT_POLL,
            DEFAULT_QUERY_LIMIT,
        )

        scale = self.time_scale
        settings.setdefault("create_limit", DEFAULT_CREATE_LIMIT.scaled(scale))
        settings.setdefault("query_limit", DEFAULT_QUERY_LIMIT.scaled(scale))
        settings.setdefault("poll", DEFAULT_POLL.scaled(scale))
        settings.setdefault("fallback_poll", DEFAULT_FALLBACK_POLL.scaled(scale))
        api_key = settings.pop("api_key", self.api_key)
        return KlingSession(
            api_key, base_url=self.base_url, upload_base_url=self.upload_base_url, **settings
        )


def _upload_url(url: str, reported_base: str, reported_upload: str) -> str:
    """The upload host as reached from here: same as ``url``, or its host on the upload port."""
    if reported_upload == reported_base:
        return url
    parts = urlsplit(url)
    port = urlsplit(reported_upload).port
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
    return urlunsplit((parts.scheme, f"{host}:{port}", "", "", ""))


async def _connect(url: str | None, api_key: str | None, timeout: float) -> RemoteSimulator:
    base = (url or os.environ.get(_BASE_URL_ENV) or _DEFAULT_URL).rstrip("/")
    key = api_key or os.environ.get(_API_KEY_ENV) or SimulatorConfig().api_key
    try:
        # No key is sent: the config is public, and the key may be a real one by mistake.
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(base + _CONFIG_PATH) as answer,
        ):
            status, text = answer.status, await answer.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ConnectionError(f"no kling_async simulator answered at {base}: {exc!r}") from exc
    try:
        if status != 200:
            raise ValueError(status)
        config = json.loads(text)
        return RemoteSimulator(
            base_url=base,
            upload_base_url=_upload_url(base, config["base_url"], config["upload_base_url"]),
            api_key=key,
            time_scale=float(config["time_scale"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConnectionError(
            f"{base} is not a kling_async simulator (GET {_CONFIG_PATH} answered HTTP {status})"
        ) from exc


class _Connecting:
    """What ``Simulator.connect`` returns: awaited, or entered with ``async with``."""

    def __init__(self, url: str | None, api_key: str | None, timeout: float) -> None:
        self._args = (url, api_key, timeout)

    def __await__(self) -> Generator[Any, None, RemoteSimulator]:
        return _connect(*self._args).__await__()

    async def __aenter__(self) -> RemoteSimulator:
        return await _connect(*self._args)

    async def __aexit__(self, *exc_info: object) -> None:
        return None  # nothing is held open between calls


class Simulator:
    """The simulated service on 127.0.0.1, one port (or two with ``split_hosts=True``)."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        upload_port: int = 0,
        split_hosts: bool = False,
    ) -> None:
        self._config = config or SimulatorConfig()
        self._host = host
        self._port = port
        self._upload_port = upload_port
        self._split = split_hosts
        self._workdir = make_workdir()
        self._service = Service(self._config, self._workdir)
        self._runners: list[web.AppRunner] = []

    # -- addresses and keys --------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """Base URL of the API host (``https://api.kie.ai`` for the real service)."""
        return self._service.base_url

    @property
    def upload_base_url(self) -> str:
        """Base URL of the upload host (``https://kieai.redpandaai.co`` for the real service)."""
        return self._service.upload_base_url

    @property
    def api_key(self) -> str:
        """The API key of the default account."""
        return self._config.api_key

    @property
    def webhook_hmac_key(self) -> str | None:
        """The webhook HMAC key callbacks are signed with, if any."""
        return self._config.webhook_hmac_key

    @property
    def config(self) -> SimulatorConfig:
        """The settings in force."""
        return self._service.config

    def reconfigure(self, **changes: Any) -> None:
        """Change settings while running (faults, failure rate, error transport...)."""
        self._service.config = attrs.evolve(self._service.config, **changes)

    @property
    def time_scale(self) -> float:
        """Real seconds per nominal second of the service."""
        return self.config.time_scale

    def scaled(self, seconds: float) -> float:
        """Real seconds for ``seconds`` of the service's time (a timeout, a deadline)."""
        return seconds * self.config.time_scale

    def session(self, **settings: Any) -> KlingSession:
        """A ``KlingSession`` pointed at this simulator, its limits and schedules time-scaled.

        The documented defaults (``create_limit``, ``query_limit``, ``poll``, ``fallback_poll``)
        are scaled by ``time_scale`` so that the client sees the service as the real one would;
        any of them, or any other session setting, can be overridden.
        """
        seen = RemoteSimulator(self.base_url, self.upload_base_url, self.api_key, self.time_scale)
        return seen.session(**settings)

    @classmethod
    def connect(
        cls, url: str | None = None, *, api_key: str | None = None, timeout: float = 10.0
    ) -> _Connecting:
        """A simulator run apart, as a ``RemoteSimulator`` with its time scale read from it.

        ``url`` defaults to ``$KIE_BASE_URL``, then ``http://127.0.0.1:8080``; ``api_key`` to
        ``$KIE_API_KEY``, then the simulator's default key (``--api-key`` changes it: pass the
        one it printed). Use ``async with Simulator.connect(url) as sim:`` or ``await``; a URL
        where no simulator answers raises ``ConnectionError``.
        """
        return _Connecting(url, api_key, timeout)

    def outage(
        self,
        kind: str,
        seconds: float,
        *,
        endpoints: frozenset[str] = frozenset({"recordInfo"}),
    ) -> None:
        """Answer ``endpoints`` with ``kind`` for the next ``seconds`` (nominal) while tasks go on.

        ``kind`` is ``"455"`` (maintenance), ``"500"`` (server error) or ``"drop"`` (the
        connection is closed unanswered); see ``OUTAGE_KINDS``. Tasks keep rendering and their
        callbacks are still sent; a later call adds another window.
        """
        if kind not in OUTAGE_KINDS:
            raise ValueError(f"outage kind must be one of {', '.join(OUTAGE_KINDS)}; got {kind!r}")
        if not seconds >= 0:
            raise ValueError(f"outage seconds must be at least 0; got {seconds!r}")
        self._service.faults.outage(kind, seconds, frozenset(endpoints))

    def add_key(self, key: str, credits: float = 100_000.0) -> None:
        """Add an account with its own balance and rate windows."""
        self._service.add_key(key, credits)

    # -- observability -------------------------------------------------------------------------
    @property
    def requests(self) -> list[RequestRecord]:
        """Every request received, in order of arrival."""
        return self._service.records

    @property
    def callbacks(self) -> list[CallbackDelivery]:
        """Every callback delivery attempt."""
        return self._service.callbacks

    @property
    def tasks_created(self) -> Counter[str]:
        """Tasks created, per API key."""
        return self._service.state.tasks_created

    @property
    def rate_limited(self) -> dict[str, int]:
        """429 answers sent by the rate limiter (not by fault injection), per endpoint."""
        return self._service.rate_limited

    @property
    def tasks(self) -> dict[str, SimTask]:
        """Every task, by id."""
        return self._service.state.tasks

    def count(self, endpoint: str, *, code: int | None = None) -> int:
        """How many requests reached ``endpoint`` (optionally: answered with ``code``)."""
        return sum(
            1 for r in self.requests if r.endpoint == endpoint and (code is None or r.code == code)
        )

    def credits(self, key: str | None = None) -> float:
        """The current balance of ``key`` (default: the default account)."""
        return self._service.state.accounts[key or self.api_key].credits

    def completed_at(self, task_id: str) -> float:
        """The real monotonic time at which the task reaches its terminal state."""
        return self._service.monotonic_at(self._service.state.tasks[task_id].done_at)

    def now(self) -> float:
        """Nominal seconds since the simulator started."""
        return self._service.now()

    # -- lifecycle -----------------------------------------------------------------------------
    async def _serve(self, routes: list[web.RouteDef], port: int) -> str:
        app = web.Application(
            middlewares=[self._service.middleware],
            client_max_size=self._config.max_upload_bytes,
        )
        app.add_routes(routes)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, port)
        await site.start()
        self._runners.append(runner)
        bound_host, bound_port = runner.addresses[0][:2]
        return f"http://{bound_host}:{bound_port}"

    async def start(self) -> None:
        """Start serving."""
        service = self._service
        if self._split:
            service.base_url = await self._serve(service.main_routes(), self._port)
            service.upload_base_url = await self._serve(service.upload_routes(), self._upload_port)
        else:
            url = await self._serve(service.main_routes() + service.upload_routes(), self._port)
            service.base_url = service.upload_base_url = url

    async def close(self) -> None:
        """Stop serving and remove stored files."""
        await self._service.close()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        shutil.rmtree(self._workdir, ignore_errors=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
