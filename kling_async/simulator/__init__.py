"""A local simulator of kie.ai's kling-2.6/motion-control service, speaking its real HTTP API.

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
Run it alone with ``python -m kling_async.simulator --port 8080``.
"""

from __future__ import annotations

import shutil
from collections import Counter
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

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
    "RequestRecord",
    "Simulator",
    "SimulatorConfig",
]


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

    def session(self, **settings: Any) -> KlingSession:
        """A ``KlingSession`` pointed at this simulator, its limits and schedules time-scaled.

        The documented defaults (``create_limit``, ``query_limit``, ``poll``, ``fallback_poll``)
        are scaled by ``time_scale`` so that the client sees the service as the real one would;
        any of them, or any other session setting, can be overridden.
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

        scale = self.config.time_scale
        settings.setdefault("create_limit", DEFAULT_CREATE_LIMIT.scaled(scale))
        settings.setdefault("query_limit", DEFAULT_QUERY_LIMIT.scaled(scale))
        settings.setdefault("poll", DEFAULT_POLL.scaled(scale))
        settings.setdefault("fallback_poll", DEFAULT_FALLBACK_POLL.scaled(scale))
        api_key = settings.pop("api_key", self.api_key)
        return KlingSession(
            api_key, base_url=self.base_url, upload_base_url=self.upload_base_url, **settings
        )

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
