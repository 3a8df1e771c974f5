"""Run every benchmark: ``python -m benchmarks``."""

from __future__ import annotations

import asyncio

from . import bench_batch, bench_cancel, bench_polling, bench_soak, bench_upload, bench_webhooks


def main() -> None:
    asyncio.run(bench_upload.main())
    asyncio.run(bench_polling.main())
    asyncio.run(bench_batch.main())
    asyncio.run(bench_webhooks.main())
    asyncio.run(bench_soak.main([]))
    asyncio.run(bench_cancel.main([]))


if __name__ == "__main__":
    main()
