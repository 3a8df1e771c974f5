"""Shared fixtures: the simulator on 127.0.0.1, raw HTTP clients, and the test media folder."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web

from kling_async import KlingSession
from kling_async.simulator import Simulator, SimulatorConfig

from .redis_server import Blackhole, RedisServer

MEDIA = Path(__file__).parent / "media"
# A time scale at which a whole 100 s task takes 0.5 s: fast, yet far above scheduling jitter.
FAST = 0.005

SimFactory = Callable[..., Awaitable[Simulator]]


@pytest.fixture
def media() -> Path:
    """The folder of small real media files made by ffmpeg."""
    return MEDIA


@pytest.fixture
async def make_sim() -> AsyncIterator[SimFactory]:
    """Start simulators with given settings; all are closed at the end of the test."""
    started: list[Simulator] = []

    async def factory(split_hosts: bool = False, **settings: Any) -> Simulator:
        config = attrs.evolve(SimulatorConfig(time_scale=FAST), **settings)
        sim = Simulator(config, split_hosts=split_hosts)
        await sim.start()
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        await sim.close()


@pytest.fixture
async def sim(make_sim: SimFactory) -> Simulator:
    """A simulator with default settings at the fast time scale."""
    return await make_sim()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on an ephemeral 127.0.0.1 port, no persistence; stopped after."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def blackhole(redis_server: RedisServer) -> AsyncIterator[Blackhole]:
    """A proxy to ``redis_server`` that drops all traffic after ``cut()``, until ``heal()``."""
    proxy = Blackhole(redis_server.port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp client for talking to servers directly."""
    async with aiohttp.ClientSession() as session:
        yield session


@attrs.define
class Receiver:
    """A tiny HTTP server that records the callbacks POSTed to it."""

    url: str
    received: list[tuple[dict[str, str], bytes]]
    status: int = 200


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """An HTTP endpoint on 127.0.0.1 that records what is POSTed to ``/hook``."""
    rec = Receiver(url="", received=[])

    async def hook(request: web.Request) -> web.Response:
        rec.received.append((dict(request.headers), await request.read()))
        return web.json_response({"code": 200, "msg": "success"}, status=rec.status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serve(app) as base:
        rec.url = f"{base}/hook"
        yield rec


async def upload_raw(
    http: aiohttp.ClientSession,
    sim: Simulator,
    path: Path,
    upload_path: str = "tests",
    file_name: str | None = None,
) -> dict[str, Any]:
    """Upload a file with a plain multipart request; return the whole answer."""
    form = aiohttp.FormData()
    form.add_field("file", path.read_bytes(), filename=path.name)
    form.add_field("uploadPath", upload_path)
    if file_name:
        form.add_field("fileName", file_name)
    async with http.post(
        f"{sim.upload_base_url}/api/file-stream-upload",
        data=form,
        headers={"Authorization": f"Bearer {sim.api_key}"},
    ) as r:
        body: dict[str, Any] = await r.json()
    assert body["code"] == 200, body
    return body


async def media_urls(
    http: aiohttp.ClientSession, sim: Simulator, video: str = "d10.0.mp4"
) -> tuple[str, str]:
    """Upload the test portrait and a test video; return their hosted URLs."""
    image = await upload_raw(http, sim, MEDIA / "portrait.png")
    clip = await upload_raw(http, sim, MEDIA / video)
    return image["data"]["downloadUrl"], clip["data"]["downloadUrl"]


def session_for(sim: Simulator, **settings: Any) -> KlingSession:
    """A session pointed at ``sim`` (limits and schedules time-scaled), with quick retries."""
    settings.setdefault("retry_base", 0.01)
    settings.setdefault("retry_cap", 0.1)
    return sim.session(**settings)


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve an aiohttp app on an ephemeral 127.0.0.1 port; yield its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def eventually(predicate: Callable[[], object], timeout: float = 60.0) -> None:
    """Wait until ``predicate()`` is true; fail (never hang) after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
