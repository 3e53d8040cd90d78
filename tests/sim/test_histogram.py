"""sim.Histogram: exact below 512, log-linear above, fio's percentile rank, bounded, resettable."""

from sim import Histogram


def test_small_values_are_exact_and_percentiles_use_fios_rank():
    h = Histogram()
    for v in (5, 1, 3, 2, 4):
        h.add(v)
    assert (h.count, h.total, h.max, h.mean()) == (5, 15, 5, 3.0)
    assert [h.percentile(p) for p in (1, 20, 50, 80, 99, 100)] == [1, 1, 3, 4, 5, 5]


def test_large_values_fall_in_buckets_within_a_fifth_of_a_percent():
    h = Histogram()
    for v in range(1_000_000, 2_000_000, 1000):
        h.add(v)
    p50 = h.percentile(50)
    assert abs(p50 - 1_499_000) / 1_499_000 < 0.002
    assert h.percentile(100) == h.max == 1_999_000
    assert len(h.buckets) <= 257  # one power of two: 256 buckets (+ the boundary)


def test_reset_forgets_everything_and_an_empty_histogram_reports_zero():
    h = Histogram()
    h.add(10**9)
    h.reset()
    assert (h.count, h.total, h.max, h.buckets, h.percentile(99), h.mean()) == (0, 0, 0, {}, 0.0, 0.0)
