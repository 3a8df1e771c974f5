"""The same N tasks waited by polling and by webhook: queries sent and completion-to-return delay.

python -m benchmarks.bench_webhooks [--tasks 1000] [--time-scale 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp

from kling_async.simulator import Simulator, SimulatorConfig
from kling_async.webhooks import WebhookReceiver

from .bench_polling import inputs, percentile


async def run(mode: str, n: int, scale: float) -> dict[str, str]:
    async with Simulator(SimulatorConfig(time_scale=scale)) as sim, aiohttp.ClientSession() as http:
        inp = await inputs(sim, http)
        receiver = WebhookReceiver(sim.webhook_hmac_key)
        settings: dict[str, object] = {}
        if mode == "webhook":
            settings = {
                "webhook": receiver,
                "callback_url": await receiver.start(),
            }
        delays: list[float] = []
        async with sim.session(**settings) as kling:

            async def one() -> None:
                task_id = await kling.create_task(inp)
                await kling.wait_for_task(task_id)
                delays.append(time.monotonic() - sim.completed_at(task_id))

            await asyncio.gather(*(one() for _ in range(n)))
        await receiver.close()
        return {
            "waited by": mode,
            "queries": str(sim.count("recordInfo")),
            "queries per task": f"{sim.count('recordInfo') / n:.2f}",
            "429s": str(sum(sim.rate_limited.values())),
            "delay median s": f"{statistics.median(delays) / scale:.2f}",
            "delay p95 s": f"{percentile(delays, 0.95) / scale:.2f}",
        }


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--time-scale", type=float, default=0.05)
    args = parser.parse_args(argv)
    rows = [await run(m, args.tasks, args.time_scale) for m in ("polling", "webhook")]
    print(f"\n== webhooks: {args.tasks} tasks, time scale {args.time_scale} ==")
    keys = list(rows[0])
    widths = [max(len(k), *(len(r[k]) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    for row in rows:
        print("  ".join(row[k].ljust(w) for k, w in zip(keys, widths, strict=True)))


if __name__ == "__main__":
    asyncio.run(main())
