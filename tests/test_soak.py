"""The fault soak in quick mode: no job paid twice, no paid result lost (full: benchmarks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench_soak import soak


@pytest.mark.parametrize("webhook", [False, True], ids=["polling", "webhook"])
async def test_a_batch_under_faults_then_a_rerun_keeps_the_money_promise(
    tmp_path: Path, webhook: bool
) -> None:
    report = await soak(120, tmp_path, fault_rate=0.10, seed=5, webhook=webhook)
    print("\n".join(report.lines()))
    # The soak did inject faults, of (nearly) every kind.
    assert sum(report.faults.values()) >= 15 and len(report.faults) >= 5
    assert report.duplicate_tasks == 0
    assert report.paid_results_lost == 0
    # Everything not unknown was delivered once the faults stopped.
    assert report.rerun.get("ok", 0) + report.first_run.get("ok", 0) >= report.jobs - (
        report.reported_unknown + report.rerun.get("SubmissionUnknownError", 0)
    )
