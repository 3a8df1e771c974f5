"""Property: cancel a journaled batch at any moment, rerun it, and each job has exactly one task.

Each example runs a real simulator and a real journal; the cancel time and the share of slow
createTask answers (requests left on the wire at the cancel) are drawn by Hypothesis. The same
runs, many more of them with figures, are ``python -m benchmarks.bench_cancel``.
"""

from __future__ import annotations

import asyncio
import collections
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.bench_cancel import cancel_then_rerun


@settings(
    max_examples=16,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    cancel_after=st.floats(min_value=0.0, max_value=1.2),
    slow_share=st.sampled_from([0.0, 0.5, 1.0]),
)
def test_cancel_at_any_moment_then_rerun_pays_exactly_once_per_job(
    cancel_after: float, slow_share: float
) -> None:
    tally: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory() as workdir:
        asyncio.run(cancel_then_rerun(Path(workdir), cancel_after, slow_share, tally))
    assert tally["jobs left unknown"] == 0 and tally["duplicate tasks"] == 0
