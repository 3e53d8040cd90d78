"""The job's latency histogram: bounded memory whatever the run length, fio's percentile rank.

Besides percentiles it keeps what fio's stat.c reports of a latency (``clat_ns``): min, max, mean,
the sample standard deviation (fio's ``stddev``, n - 1 in the denominator) and N, all exact, and
its buckets (``json+``'s ``bins``: each bucket's middle value in ns and its count).
"""

from __future__ import annotations

import math


class LatencyHistogram:
    """Latencies in ns, in log-linear buckets: exact below 512 ns, else 256 buckets per power of two
    (a reported percentile is the middle of its bucket: within 0.2 % of the true value).  Count, sum
    and max are exact.  Bounded: at most ~14,000 buckets whatever the number of samples."""

    SUB_BITS = 8

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.max = 0
        self.min = 0
        #: the sum of squared samples (exact: the standard deviation has no rounding drift)
        self.sumsq = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.total += ns
        self.sumsq += ns * ns
        if ns > self.max:
            self.max = ns
        if ns < self.min or self.count == 1:
            self.min = ns
        shift = max(ns.bit_length() - self.SUB_BITS - 1, 0)
        key = (ns >> shift) << shift  # the bucket's lower bound
        self.buckets[key] = self.buckets.get(key, 0) + 1

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

    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def stddev(self) -> float:
        """The sample standard deviation in ns (0 below two samples), as fio's ``stddev``."""
        n = self.count
        if n < 2:
            return 0.0
        return math.sqrt(max(self.sumsq * n - self.total * self.total, 0) / (n * (n - 1)))

    def bins(self) -> list[tuple[int, int]]:
        """(value in ns, count) of each non-empty bucket, by value: the bucket's middle, as fio's bins."""
        out = []
        for key in sorted(self.buckets):
            width = 1 << max(key.bit_length() - self.SUB_BITS - 1, 0)
            out.append((key + (width - 1) // 2, self.buckets[key]))
        return out

    def summary_us(self) -> dict[str, float]:
        """``latency_us`` of the run's result: mean, p50, p99 and max in us, rounded to ns."""
        return {
            "mean": round(self.total / self.count / 1000, 3) if self.count else 0.0,
            "p50": round(self.percentile(50) / 1000, 3),
            "p99": round(self.percentile(99) / 1000, 3),
            "max": round(self.max / 1000, 3),
        }
