"""Run every benchmark: ``python -m benchmarks``."""

from __future__ import annotations

import asyncio

from . import bench_polling


def main() -> None:
    asyncio.run(bench_polling.main())


if __name__ == "__main__":
    main()
