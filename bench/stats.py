"""Intervals and verdicts.

A figure is a ratio measured side by side, once per round. Its value is the
geometric mean of the per-round ratios and its 95% interval is Student's t
interval of the mean of their logarithms, turned back into ratios (a ratio and
its inverse get mirror-image intervals). The A/A control of a figure is the same
comparison between two identical arms, measured the same way: its interval is
the machine's noise at that figure.

Verdict for a target ``>= T``: met when the interval's lower bound is at least T,
missed when its upper bound is below T, undecided otherwise (``<= T`` the other
way round). At least ``MIN_ROUNDS`` rounds are needed for a verdict.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

MIN_ROUNDS = 10

# Two-sided 95% Student's t quantiles by degrees of freedom (1..30); above 30, 1.96 + 2.4/df.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]


def t95(df: int) -> float:
    if df < 1:
        return math.inf
    return _T95[df - 1] if df <= len(_T95) else 1.96 + 2.4 / df


@dataclass(frozen=True)
class Interval:
    """Geometric mean of positive ratios and its 95% interval."""

    value: float
    low: float
    high: float
    n: int

    def text(self) -> str:
        return f"{self.low:.3f}-{self.high:.3f}"

    def as_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "low": self.low, "high": self.high, "rounds": self.n}


def interval(ratios: list[float]) -> Interval | None:
    values = [r for r in ratios if r > 0 and math.isfinite(r)]
    if not values:
        return None
    logs = [math.log(v) for v in values]
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return Interval(math.exp(mean), math.nan, math.nan, len(logs))
    half = t95(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return Interval(math.exp(mean), math.exp(mean - half), math.exp(mean + half), len(logs))


def verdict(found: Interval | None, target: tuple[str, float] | None) -> str | None:
    """"met", "missed" or "undecided" (None without a target); "undecided" below MIN_ROUNDS rounds."""
    if target is None:
        return None
    if found is None or found.n < MIN_ROUNDS or math.isnan(found.low):
        return "undecided"
    op, bound = target
    if op == ">=":
        return "met" if found.low >= bound else "missed" if found.high < bound else "undecided"
    return "met" if found.high <= bound else "missed" if found.low > bound else "undecided"


def verdict_of_value(value: float | None, target: tuple[str, float] | None) -> str | None:
    """For a figure that is a maximum, not a mean (the longest batch): met or missed outright."""
    if target is None:
        return None
    if value is None:
        return "undecided"
    op, bound = target
    ok = value >= bound if op == ">=" else value <= bound
    return "met" if ok else "missed"
