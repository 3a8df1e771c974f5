"""Run the simulator as a server: ``python -m kling_async.simulator --port 8080``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal

from . import LIBRARY_USER_AGENTS, Simulator, SimulatorConfig
from ._rules import RateWindow


def _parse(argv: list[str] | None, prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--upload-port",
        type=int,
        default=0,
        help="serve the upload host on its own port (default: same port)",
    )
    parser.add_argument("--api-key", default=SimulatorConfig().api_key)
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="real seconds per nominal second (0.01: a 100 s task takes 1 s)",
    )
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument(
        "--credits",
        type=float,
        default=SimulatorConfig().credits,
        help="the account's balance (tasks beyond it are refused with 402)",
    )
    parser.add_argument(
        "--http-error-status",
        action="store_true",
        help="send errors as real HTTP statuses instead of HTTP 200",
    )
    parser.add_argument(
        "--edge-block",
        action="store_true",
        help="refuse library User-Agents with a bare 403 'error code: 1010', as the edge may",
    )
    parser.add_argument("--create-limit", type=int, default=20, help="createTask per 10 s")
    parser.add_argument("--query-limit", type=int, default=10, help="recordInfo per second")
    parser.add_argument(
        "--json", action="store_true", help="print what it serves as one JSON object instead"
    )
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> None:
    config = SimulatorConfig(
        api_key=args.api_key,
        time_scale=args.time_scale,
        failure_rate=args.failure_rate,
        credits=args.credits,
        http_error_status=args.http_error_status,
        create_limit=RateWindow(args.create_limit, 10.0),
        query_limit=RateWindow(args.query_limit, 1.0),
        request_log_limit=100_000,
        edge_block_user_agents=LIBRARY_USER_AGENTS if args.edge_block else (),
    )
    sim = Simulator(
        config,
        host=args.host,
        port=args.port,
        upload_port=args.upload_port,
        split_hosts=bool(args.upload_port),
    )
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows' loop
        # A terminated simulator closes as an interrupted one does: stored files are removed.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with sim:
        # The key is the simulator's own, printed so a developer can point a client at it.
        if args.json:
            facts = {
                "base_url": sim.base_url,
                "upload_base_url": sim.upload_base_url,
                "api_key": sim.api_key,
                "webhook_hmac_key": sim.webhook_hmac_key,
                "time_scale": sim.time_scale,
            }
            print(json.dumps(facts), flush=True)
        else:
            _banner(sim, bool(args.upload_port))
        await stop.wait()


def _banner(sim: Simulator, split: bool) -> None:
    print(f"kie.ai simulator: base_url={sim.base_url} upload_base_url={sim.upload_base_url}")
    print(f"api key: {sim.api_key}  webhook hmac key: {sim.webhook_hmac_key}")
    print(f"time scale: {sim.time_scale:g} (a 100 s task takes {sim.scaled(100):g} s)")
    upload = f" KIE_UPLOAD_BASE_URL={sim.upload_base_url}" if split else ""
    print(
        f"use it: KIE_BASE_URL={sim.base_url}{upload} KIE_API_KEY={sim.api_key} "
        f'python your_program.py, or Simulator.connect("{sim.base_url}") in Python',
        flush=True,
    )


def main(argv: list[str] | None = None, prog: str = "python -m kling_async.simulator") -> None:
    """Entry point of the simulator command (``prog`` names it in ``--help``)."""
    args = _parse(argv, prog)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(args))


if __name__ == "__main__":
    main()
