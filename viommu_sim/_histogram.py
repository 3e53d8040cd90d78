"""The job's latency histogram: bounded memory whatever the run length, fio's percentile rank.

A ``sim.Histogram`` of latencies in ns: besides percentiles it keeps what fio's stat.c reports of a
latency (``clat_ns``): min, max, mean, the sample standard deviation (fio's ``stddev``, n - 1 in
the denominator) and N, all exact, and its buckets (``json+``'s ``bins``: each bucket's middle
value in ns and its count).  This module adds the run result's ``latency_us`` shape.
"""

from __future__ import annotations

from sim import Histogram


class LatencyHistogram(Histogram):
    """Latencies in ns (``sim.Histogram``: exact below 512 ns, else 256 buckets per power of two)."""

    __slots__ = ()

    def summary_us(self) -> dict[str, float]:
        """``latency_us`` of the run's result: mean, p50, p99 and max in us, rounded to ns."""
        return {
            "mean": round(self.total / self.count / 1000, 3) if self.count else 0.0,
            "p50": round(self.percentile(50) / 1000, 3),
            "p99": round(self.percentile(99) / 1000, 3),
            "max": round(self.max / 1000, 3),
        }
