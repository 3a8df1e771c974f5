"""The simulator for users: run apart as a command, and reached with its time scale applied."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from kling_async.settings import DEFAULT_CREATE_LIMIT, DEFAULT_QUERY_LIMIT
from kling_async.simulator import RemoteSimulator, Simulator, SimulatorConfig

from .conftest import SimFactory, serve

ASSETS = Path(__file__).resolve().parent.parent / "kling_async" / "assets"
BANNER_URL = re.compile(r"base_url=(http://\S+) upload_base_url=(http://\S+)")
BANNER_KEY = re.compile(r"^api key: (\S+)", re.M)
# Both ways a user starts it: the simulator's module and the command line's subcommand.
COMMANDS = {
    "module": ["-m", "kling_async.simulator"],
    "cli": ["-m", "kling_async", "simulate"],
}


async def start_command(argv: list[str], tmp_path: Path) -> tuple[asyncio.subprocess.Process, str]:
    """Start a simulator command on a free port; return it and what it printed at start."""
    # Its stored uploads go under tmp_path, so the test can see them removed at the end.
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        "--port",
        "0",
        "--time-scale",
        "0.02",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    banner = ""
    while not banner.rstrip().endswith("in Python"):  # the last line of the banner
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert line, f"the simulator exited before it was ready:\n{banner}"
        banner += line.decode()
    return proc, banner


async def stop_command(proc: asyncio.subprocess.Process) -> int:
    """SIGTERM, as a service manager stops it; its exit code."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize("command", sorted(COMMANDS))
async def test_the_command_prints_a_url_and_a_key_that_work(
    command: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    proc, banner = await start_command(COMMANDS[command], tmp_path)
    try:
        match = BANNER_URL.search(banner)
        key = BANNER_KEY.search(banner)
        assert match and key, banner
        url, upload_url = match.groups()
        assert url == upload_url
        assert f'Simulator.connect("{url}")' in banner
        assert f"KIE_BASE_URL={url} KIE_API_KEY={key[1]}" in banner
        credit = f"{url}/api/v1/chat/credit"
        async with http.get(credit, headers={"Authorization": f"Bearer {key[1]}"}) as answer:
            assert (await answer.json())["code"] == 200
        async with http.get(credit, headers={"Authorization": f"Bearer {key[1]}x"}) as answer:
            assert (await answer.json())["code"] == 401  # the printed key, not any key, works

        async with Simulator.connect(url, api_key=key[1]) as sim:
            assert sim.time_scale == 0.02
            async with sim.session() as kling:
                result = await kling.generate(
                    ASSETS / "character.png", ASSETS / "motion.mp4", timeout=sim.scaled(3600)
                )
            assert result.task.state.value == "success"
        stats = f"{url}/_simulator/stats?endpoint=recordInfo"
        async with http.get(stats) as answer:
            polls = len((await answer.json())["requests"])
        # 100 s of service time take 2 s here. Polled on the scaled schedule (every 0.06 s),
        # the task is seen dozens of times; on the real schedule (first look after 2 s, then
        # every 3 s) once or twice.
        assert polls >= 5
        stored = list(tmp_path.glob("kling-sim-*"))
        assert stored and any(p.rglob("*.mp4") for p in stored)  # the uploads were kept...
    finally:
        code = await stop_command(proc)
    assert code == 0
    assert not list(tmp_path.glob("kling-sim-*"))  # ...and are removed when it is stopped


async def test_connect_reads_the_simulators_time_scale_and_hosts(make_sim: SimFactory) -> None:
    for split in (False, True):
        local = await make_sim(time_scale=0.004, split_hosts=split)
        remote = await Simulator.connect(local.base_url + "/")
        assert remote == RemoteSimulator(
            local.base_url, local.upload_base_url, local.api_key, 0.004
        )
        assert remote.scaled(100) == pytest.approx(0.4)
        assert local.scaled(100) == pytest.approx(0.4)


async def test_a_connected_session_is_scaled_as_an_in_process_one(make_sim: SimFactory) -> None:
    local = await make_sim(time_scale=0.004)
    async with Simulator.connect(local.base_url) as remote:
        assert isinstance(remote, RemoteSimulator)
    async with remote.session() as apart, local.session() as inside:
        for kling in (apart, inside):
            assert kling.create_limit == DEFAULT_CREATE_LIMIT.scaled(0.004)
            assert kling.query_limit == DEFAULT_QUERY_LIMIT.scaled(0.004)
            assert kling.base_url == local.base_url
            assert await kling.get_credits() == local.credits()
    async with remote.session(create_limit=DEFAULT_CREATE_LIMIT) as kling:
        assert kling.create_limit == DEFAULT_CREATE_LIMIT  # settings can be overridden


async def test_connect_defaults_to_the_environment(
    make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = await make_sim()
    local.add_key("sk-from-env")
    monkeypatch.setenv("KIE_BASE_URL", local.base_url)
    monkeypatch.setenv("KIE_API_KEY", "sk-from-env")
    remote = await Simulator.connect()
    assert (remote.base_url, remote.api_key) == (local.base_url, "sk-from-env")
    monkeypatch.delenv("KIE_API_KEY")
    remote = await Simulator.connect()
    assert remote.api_key == SimulatorConfig().api_key == local.api_key
    assert "sk-sim" not in repr(remote)


async def test_connect_refuses_what_is_not_a_simulator() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/other/_simulator/config", hello)  # a 200 that is no config
    async with serve(app) as url:
        for where in (url, f"{url}/other"):
            with pytest.raises(ConnectionError, match="is not a kling_async simulator"):
                await Simulator.connect(where)
    # The server is gone: nothing answers there now.
    with pytest.raises(ConnectionError, match="no kling_async simulator answered"):
        await Simulator.connect(url)


async def test_the_config_endpoint_shows_no_key(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    local = await make_sim()
    async with http.get(f"{local.base_url}/_simulator/config") as answer:
        text = await answer.text()
    assert local.api_key not in text
    assert local.webhook_hmac_key is not None and local.webhook_hmac_key not in text


def test_a_time_scale_must_be_positive() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="time_scale"):
            RemoteSimulator("http://127.0.0.1:1", "http://127.0.0.1:1", "k", bad)


async def test_the_command_starts_the_account_with_the_credits_given(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    proc, banner = await start_command([*COMMANDS["module"], "--credits", "12.5"], tmp_path)
    try:
        url = BANNER_URL.search(banner)
        key = BANNER_KEY.search(banner)
        assert url and key, banner
        credit = f"{url[1]}/api/v1/chat/credit"
        async with http.get(credit, headers={"Authorization": f"Bearer {key[1]}"}) as answer:
            assert (await answer.json())["data"] == 12.5
    finally:
        assert await stop_command(proc) == 0
