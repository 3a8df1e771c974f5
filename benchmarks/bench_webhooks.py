"""The same N tasks waited by polling and by webhook: queries sent and completion-to-return delay.

python -m benchmarks.bench_webhooks [--tasks 1000] [--time-scale 0.05] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp
import attrs

from kling_async.simulator import Simulator, SimulatorConfig
from kling_async.webhooks import WebhookReceiver

from ._report import ZERO, Row, at_most, judged, text_table
from .bench_polling import inputs, percentile

QUICK_TASKS = 100
QUICK_SCALE = 0.05
#: A webhook-waited task needs one query (to read its record after the callback).
QUERIES_GOAL = 1.1
#: The median delay by webhook, as a share of the median delay by polling.
DELAY_GOAL = 0.5


@attrs.frozen
class WaitFigures:
    """How ``n`` tasks were waited: queries, 429 answers and delays (nominal seconds)."""

    mode: str
    n: int
    queries: int
    too_many: int
    delays: list[float]

    def table_row(self) -> dict[str, str]:
        """The figures as the full run's table prints them."""
        return {
            "waited by": self.mode,
            "queries": str(self.queries),
            "queries per task": f"{self.queries / self.n:.2f}",
            "429s": str(self.too_many),
            "delay median s": f"{statistics.median(self.delays):.2f}",
            "delay p95 s": f"{percentile(self.delays, 0.95):.2f}",
        }


async def run(mode: str, n: int, scale: float) -> WaitFigures:
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
                delays.append((time.monotonic() - sim.completed_at(task_id)) / scale)

            await asyncio.gather(*(one() for _ in range(n)))
        await receiver.close()
        return WaitFigures(mode, n, sim.count("recordInfo"), sum(sim.rate_limited.values()), delays)


async def quick() -> list[Row]:
    """100 tasks at 1/20 time, by polling then by webhook."""
    polled = await run("polling", QUICK_TASKS, QUICK_SCALE)
    hooked = await run("webhook", QUICK_TASKS, QUICK_SCALE)
    name = f"webhooks ({QUICK_TASKS} tasks, 1/{1 / QUICK_SCALE:.0f} time)"
    per_task = hooked.queries / hooked.n
    polled_median = statistics.median(polled.delays)
    hooked_median = statistics.median(hooked.delays)
    return [
        judged(
            name,
            "queries per task, webhook vs polling",
            value=f"{per_task:.2f}",
            baseline=f"polling {polled.queries / polled.n:.2f}",
            ratio=f"{per_task / (polled.queries / polled.n):.2f}",
            goal=at_most(QUERIES_GOAL, " per task"),
            checked=per_task,
        ),
        judged(
            name,
            "completion-to-return delay median (p95), webhook vs polling",
            value=f"{hooked_median:.1f} s ({percentile(hooked.delays, 0.95):.1f} s)",
            baseline=f"polling {polled_median:.1f} s ({percentile(polled.delays, 0.95):.1f} s)",
            ratio=f"{hooked_median / polled_median:.2f}",
            goal=at_most(DELAY_GOAL),
            checked=hooked_median / polled_median,
        ),
        judged(
            name,
            "429 answers, webhook and polling",
            value=str(hooked.too_many),
            baseline=f"polling {polled.too_many}",
            goal=ZERO,
            checked=hooked.too_many + polled.too_many,
        ),
    ]


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--quick", action="store_true", help="the rows of the quick run")
    args = parser.parse_args(argv)
    if args.quick:
        print(text_table(await quick()))
        return
    rows = [(await run(m, args.tasks, args.time_scale)).table_row() for m in ("polling", "webhook")]
    print(f"\n== webhooks: {args.tasks} tasks, time scale {args.time_scale} ==")
    keys = list(rows[0])
    widths = [max(len(k), *(len(r[k]) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    for row in rows:
        print("  ".join(row[k].ljust(w) for k, w in zip(keys, widths, strict=True)))


if __name__ == "__main__":
    asyncio.run(main())
