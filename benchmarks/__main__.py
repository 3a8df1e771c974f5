"""Run every benchmark: ``python -m benchmarks``."""

from __future__ import annotations

import asyncio

from . import bench_polling, bench_upload


def main() -> None:
    asyncio.run(bench_upload.main())
    asyncio.run(bench_polling.main())


if __name__ == "__main__":
    main()
