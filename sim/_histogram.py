"""A bounded histogram of non-negative integers: what a model or a workload keeps to report a
distribution (latencies, windows) without memory that grows with the run.

Log-linear buckets, as HdrHistogram and fio's latency bins: values below ``2**(SUB_BITS+1)`` are
exact, above that each power of two is split into ``2**SUB_BITS`` buckets, so a reported
percentile is the middle of its bucket, within 0.2 % of the true value.  Count, sum, min, max
and the sample standard deviation (from the exact sum of squares) are exact.  At most ~14,000
buckets for 64-bit values, whatever the number of samples.
"""

from __future__ import annotations

import math


class Histogram:
    """Values (ints >= 0, in whatever unit the owner chooses) in log-linear buckets."""

    SUB_BITS = 8

    __slots__ = ("buckets", "count", "total", "max", "min", "sumsq")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.max = 0
        self.min = 0
        #: the sum of squared samples (exact: the standard deviation has no rounding drift)
        self.sumsq = 0

    def add(self, value: int) -> None:
        self.count += 1
        self.total += value
        self.sumsq += value * value
        if value > self.max:
            self.max = value
        if value < self.min or self.count == 1:
            self.min = value
        shift = max(value.bit_length() - self.SUB_BITS - 1, 0)
        key = (value >> shift) << shift  # the bucket's lower bound
        self.buckets[key] = self.buckets.get(key, 0) + 1

    def reset(self) -> None:
        """Forget every sample (a measurement window begins)."""
        self.buckets.clear()
        self.count = self.total = self.max = self.min = self.sumsq = 0

    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def stddev(self) -> float:
        """The sample standard deviation (0 below two samples), as fio's ``stddev``."""
        n = self.count
        if n < 2:
            return 0.0
        return math.sqrt(max(self.sumsq * n - self.total * self.total, 0) / (n * (n - 1)))

    def bins(self) -> list[tuple[int, int]]:
        """(value, count) of each non-empty bucket, by value: the bucket's middle, as fio's bins."""
        out = []
        for key in sorted(self.buckets):
            width = 1 << max(key.bit_length() - self.SUB_BITS - 1, 0)
            out.append((key + (width - 1) // 2, self.buckets[key]))
        return out

    def percentile(self, pct: float) -> float:
        """The value at percentile ``pct`` (fio's rank: the smallest with at least pct % at or below)."""
        if not self.count:
            return 0.0
        rank = max(1, -(-self.count * pct // 100))
        seen = 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= rank:
                width = 1 << max(key.bit_length() - self.SUB_BITS - 1, 0)
                return min(key + (width - 1) / 2, self.max)
        return float(self.max)  # pragma: no cover (rank <= count)
