"""The one table ``python -m benchmarks`` prints: rows, goals, ratios, text and markdown.

Pure: no clock, no I/O. Each benchmark's quick mode returns ``Row`` values; ``__main__`` lays
them out and writes ``RESULTS.md``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import attrs

COLUMNS = ("benchmark", "figure", "value", "baseline", "ratio", "goal", "pass/fail")
PASS = "pass"
FAIL = "FAIL"


@attrs.frozen
class Goal:
    """What a figure must be to pass: a closed range, shown as ``text``."""

    text: str
    low: float = -math.inf
    high: float = math.inf

    def met(self, value: float) -> bool:
        """True if ``value`` is in range (NaN, a figure that could not be measured, is not)."""
        return self.low <= value <= self.high


def at_least(low: float, unit: str = "") -> Goal:
    """A goal of ``low`` or more."""
    return Goal(f">= {low:g}{unit}", low=low)


def at_most(high: float, unit: str = "") -> Goal:
    """A goal of ``high`` or less."""
    return Goal(f"<= {high:g}{unit}", high=high)


def between(low: float, high: float) -> Goal:
    """A goal from ``low`` to ``high``, both included."""
    return Goal(f"{low:g} to {high:g}", low=low, high=high)


#: Zero, as a performance goal (429 answers).
ZERO = Goal("0", 0.0, 0.0)
#: Zero, as a money promise (duplicate tasks, paid results lost).
NONE = Goal("0 (must)", 0.0, 0.0)


@attrs.frozen
class Row:
    """One figure of one benchmark, with what it is compared to and whether it passes."""

    benchmark: str
    figure: str
    value: str
    baseline: str = "-"
    ratio: str = "-"
    goal: str = "-"
    verdict: str = "-"
    #: A broken money promise (a job paid twice, a paid result lost), not a slow figure.
    critical: bool = False

    def cells(self) -> tuple[str, ...]:
        """The row's cells, in ``COLUMNS`` order."""
        return (
            self.benchmark,
            self.figure,
            self.value,
            self.baseline,
            self.ratio,
            self.goal,
            self.verdict,
        )

    @property
    def failed(self) -> bool:
        """True if the figure missed its goal."""
        return self.verdict == FAIL


def judged(
    benchmark: str,
    figure: str,
    *,
    value: str,
    checked: float,
    goal: Goal,
    baseline: str = "-",
    ratio: str = "-",
    critical: bool = False,
) -> Row:
    """A row whose ``checked`` number (the ratio, or the value itself) is held to ``goal``."""
    return Row(
        benchmark,
        figure,
        value,
        baseline,
        ratio,
        goal.text,
        PASS if goal.met(checked) else FAIL,
        critical,
    )


def skipped(benchmark: str, figure: str, why: str, value: str = "-") -> Row:
    """A row that could not be judged here, e.g. ``skipped(..., "curl not installed")``."""
    return Row(benchmark, figure, value, verdict=f"skipped ({why})")


@attrs.frozen
class Spread:
    """The median of some ratios, and their smallest and largest."""

    median: float
    low: float
    high: float
    count: int

    def text(self) -> str:
        """``0.93 (0.85-1.02, 8 pairs)``."""
        return f"{self.median:.2f} ({self.low:.2f}-{self.high:.2f}, {self.count} pairs)"


def pair_ratios(ours: Sequence[float], theirs: Sequence[float]) -> Spread:
    """The baseline's time over ours, pair by pair (above 1: ours was faster), summarized.

    Each ratio compares two runs made one right after the other, so a moment when the machine
    was busy moves one pair, and the median of the pairs barely moves at all.
    """
    if not ours or len(ours) != len(theirs):
        raise ValueError("need one baseline time for each of ours, and at least one pair")
    ratios = [t / o for o, t in zip(ours, theirs, strict=True)]
    return Spread(statistics.median(ratios), min(ratios), max(ratios), len(ratios))


def median_interval(values: Sequence[float], confidence: float = 0.9) -> tuple[float, float, float]:
    """Where the median of what ``values`` sample lies: ``(low, high, coverage)``.

    Distribution-free: the k-th smallest and k-th largest value, with k the largest whose
    chance of holding the true median (``coverage``, from the binomial law: each value is
    below the median with chance 1/2) is at least ``confidence``; too few values give the
    smallest and largest, and the coverage they have.
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("need at least one value")
    best = 1
    for k in range(1, n // 2 + 1):
        below = sum(math.comb(n, i) for i in range(k)) / 2**n  # k-1 or fewer under the median
        if 1 - 2 * below < confidence:
            break
        best = k
    coverage = 1 - 2 * sum(math.comb(n, i) for i in range(best)) / 2**n
    return ordered[best - 1], ordered[n - best], coverage


def text_table(rows: Sequence[Row]) -> str:
    """The rows as aligned plain-text columns, a header first."""
    table = [COLUMNS, *(r.cells() for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a GitHub markdown table."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join(
        [line(COLUMNS), line(["---"] * len(COLUMNS)), *(line(r.cells()) for r in rows)]
    )


def summary(rows: Sequence[Row]) -> str:
    """One line: how many judged figures passed, failed, or were skipped."""
    passed = sum(r.verdict == PASS for r in rows)
    failed = [f"{r.benchmark}: {r.figure}" for r in rows if r.failed]
    skips = sum(r.verdict.startswith("skipped") for r in rows)
    text = f"{passed} of {passed + len(failed)} judged figures pass"
    if skips:
        text += f", {skips} skipped"
    if failed:
        text += "; FAIL: " + "; ".join(failed)
    return text


def results_document(
    rows: Sequence[Row],
    *,
    date: str,
    command: str,
    seconds: float,
    machine: Sequence[tuple[str, str]],
) -> str:
    """``RESULTS.md``: the table, when and how it was made, and on what machine."""
    about = "\n".join(f"- {name}: {value}" for name, value in machine)
    return (
        "# Benchmark results\n\n"
        f"Made by `{command}` (what `make bench` runs) on {date}, in {seconds:.0f} s: the "
        "quick configuration of each benchmark (`python -m benchmarks.bench_NAME` runs one in "
        "full). Ratios are against a baseline measured in the same run. Paired runs (uploads) "
        "give each side's own median as value and baseline, and judge the median of the "
        "per-pair ratios (smallest-largest in brackets). Rates in time-scaled runs are per "
        "service second. A load average above the CPU count means the machine was shared.\n\n"
        f"{markdown_table(rows)}\n\n"
        f"{summary(rows)}.\n\n"
        f"## Machine\n\n{about}\n"
    )
