"""The benchmark table's pure helpers: per-pair ratios, goals, verdicts, text and markdown."""

from __future__ import annotations

import math

import pytest

from benchmarks._machine import describe
from benchmarks._report import (
    COLUMNS,
    FAIL,
    NONE,
    PASS,
    Row,
    at_least,
    at_most,
    between,
    judged,
    markdown_table,
    median_interval,
    pair_ratios,
    results_document,
    skipped,
    summary,
    text_table,
)


def test_the_upload_ratio_is_the_median_of_per_pair_ratios_not_a_ratio_of_medians() -> None:
    # Per pair, the baseline took 2, 0.5 and 2 times as long as ours; the medians alone
    # (4 s ours, 2 s theirs) would say 0.5.
    spread = pair_ratios([1.0, 4.0, 4.0], [2.0, 2.0, 8.0])
    assert (spread.median, spread.low, spread.high, spread.count) == (2.0, 0.5, 2.0, 3)
    assert spread.text() == "2.00 (0.50-2.00, 3 pairs)"


def test_one_noisy_pair_moves_the_range_but_not_the_median() -> None:
    ours = [1.0] * 7
    theirs = [0.9, 0.95, 1.0, 1.0, 1.05, 1.1, 10.0]
    spread = pair_ratios(ours, theirs)
    assert spread.median == 1.0
    assert spread.high == 10.0 and spread.low == 0.9


@pytest.mark.parametrize(
    ("n", "k", "coverage"),
    # The k-th smallest to k-th largest of n holds the median with chance 1 - 2 P(Bin(n,1/2) < k).
    [(5, 1, 1 - 2 / 32), (9, 2, 1 - 2 * 10 / 512), (15, 4, 1 - 2 * 576 / 32768)],
)
def test_the_median_interval_takes_the_order_statistics_the_binomial_law_allows(
    n: int, k: int, coverage: float
) -> None:
    values = [float(v) for v in reversed(range(n))]  # any order: they are sorted
    low, high, covered = median_interval(values)
    assert (low, high) == (k - 1, n - k)
    assert covered == pytest.approx(coverage) and covered >= 0.9


def test_too_few_values_give_their_whole_range_and_its_low_coverage() -> None:
    assert median_interval([2.0, 1.0]) == (1.0, 2.0, 0.5)
    with pytest.raises(ValueError):
        median_interval([])


def test_saved_telemetry_runs_pool_round_by_round_and_only_when_alike() -> None:
    from benchmarks.bench_telemetry import _pooled, _ratios

    def run(off: list[float], on: list[float], jobs: int = 10) -> dict[str, object]:
        batches = {"off": off, "batch": on}
        runs = {v: [{"cpu": c, "ok": jobs} for c in cpus] for v, cpus in batches.items()}
        return {"jobs": jobs, "scale": 0.05, "runs": runs}

    runs, jobs, scale = _pooled([run([1.0, 2.0], [1.1, 2.4]), run([4.0], [4.2])])
    assert (jobs, scale) == (10, 0.05)
    assert _ratios(runs, "batch", "cpu") == pytest.approx([1.1, 1.2, 1.05])  # pairs kept
    with pytest.raises(ValueError):
        _pooled([run([1.0], [1.0]), run([1.0], [1.0], jobs=20)])
    other = run([1.0], [1.0])
    other["runs"] = {"off": [{"cpu": 1.0, "ok": 10}]}  # no traced variant
    with pytest.raises(ValueError):
        _pooled([run([1.0], [1.0]), other])


@pytest.mark.parametrize(("ours", "theirs"), [([], []), ([1.0, 2.0], [1.0])])
def test_pairs_must_match_and_exist(ours: list[float], theirs: list[float]) -> None:
    with pytest.raises(ValueError):
        pair_ratios(ours, theirs)


def test_goals_include_their_ends_and_refuse_a_figure_that_was_not_measured() -> None:
    assert at_least(0.8).met(0.8) and not at_least(0.8).met(0.79)
    assert at_most(32, " MB").met(32) and not at_most(32).met(32.1)
    assert between(0.95, 1.0).met(1.0) and not between(0.95, 1.0).met(1.01)
    assert NONE.met(0) and not NONE.met(1)
    assert not at_least(0.8).met(math.nan)
    assert (at_least(0.8).text, at_most(32, " MB").text, between(0.9, 1).text) == (
        ">= 0.8",
        "<= 32 MB",
        "0.9 to 1",
    )


def test_a_row_is_judged_on_the_number_it_is_given() -> None:
    good = judged("b", "f", value="1.2", checked=1.2, goal=at_least(1.0), ratio="1.20")
    bad = judged("b", "f", value="0 MB", checked=0.5, goal=at_least(1.0))
    assert good.verdict == PASS and not good.failed
    assert bad.verdict == FAIL and bad.failed
    assert good.cells() == ("b", "f", "1.2", "-", "1.20", ">= 1", PASS)
    gone = skipped("upload", "vs curl", "curl not installed", "120 MB/s")
    assert gone.verdict == "skipped (curl not installed)" and not gone.failed
    assert gone.value == "120 MB/s"


ROWS = [
    judged("upload", "vs curl", value="200 MB/s", checked=1.1, goal=at_least(0.8), ratio="1.10"),
    judged("soak", "duplicates", value="1", checked=1, goal=NONE, critical=True),
    skipped("upload", "vs ffprobe", "ffprobe not installed"),
    Row("polling", "delay | median", "5.5 s"),
]


def test_the_text_table_has_a_header_a_rule_and_aligned_columns() -> None:
    lines = text_table(ROWS).splitlines()
    assert len(lines) == 2 + len(ROWS)
    assert lines[0].split() == [c for c in COLUMNS]
    assert set(lines[1]) == {"-", " "}
    # Every cell starts where its column's name does, after a space.
    starts = [lines[0].index(name) for name in COLUMNS]
    for line in lines[2:]:
        for at in starts[1:]:
            assert line[at - 1] == " " and line[at] != " ", (line, at)
    assert "skipped (ffprobe not installed)" in lines[4]


def test_the_markdown_table_has_one_line_per_row_and_escapes_pipes() -> None:
    lines = markdown_table(ROWS).splitlines()
    assert lines[0] == "| " + " | ".join(COLUMNS) + " |"
    assert lines[1].count("---") == len(COLUMNS)
    assert len(lines) == 2 + len(ROWS)
    assert "delay \\| median" in lines[-1]
    assert all(line.count(" | ") == len(COLUMNS) - 1 for line in lines[2:])


def test_the_summary_counts_passes_failures_and_skips() -> None:
    assert summary(ROWS) == ("1 of 2 judged figures pass, 1 skipped; FAIL: soak: duplicates")
    assert summary(ROWS[:1]) == "1 of 1 judged figures pass"


def test_the_results_document_names_the_date_command_and_machine() -> None:
    text = results_document(
        ROWS,
        date="2026-01-02 03:04 UTC",
        command="python -m benchmarks --write",
        seconds=95.4,
        machine=[("CPU", "Some CPU, 2 logical"), ("curl", "not installed")],
    )
    assert "`python -m benchmarks --write` (what `make bench` runs) on 2026-01-02 03:04 UTC" in text
    assert "in 95 s" in text
    assert markdown_table(ROWS) in text
    assert "- CPU: Some CPU, 2 logical\n- curl: not installed" in text
    assert summary(ROWS) in text


def test_the_machine_is_described_by_name() -> None:
    about = dict(describe())
    assert list(about) == [
        "CPU",
        "RAM",
        "OS",
        "Python",
        "aiohttp",
        "kling_async",
        "curl",
        "ffprobe",
    ]
    assert all(about.values())
    assert about["Python"].split()[-1].count(".") == 2
