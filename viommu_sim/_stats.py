"""Statistics over repeated runs: the mean, the sample standard deviation and a 95 % confidence
interval of each figure, as a measurement campaign reports them.

``run --repeat N`` runs the same machine and job with the simulation seeds ``seed .. seed+N-1``
(everything random in a run -- offsets, buffer layouts, media times -- comes from streams of that
one seed) and summarises the runs' figures.  The interval is Student's t for the mean of N
independent runs: ``mean ± t(0.975, N-1) · s / √N`` with ``s`` the sample standard deviation
(``scipy.stats.t``); with N = 1 there is no interval (``lo = hi = mean``).  Only numeric figures
are summarised; the options echoed (``machine``, ``job``) are the same in every run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from scipy import stats as _scipy_stats

#: the figures a repeated run summarises, as paths into a result (nested keys joined by ".")
SUMMARISED = (
    "iops", "bandwidth_mib_s", "latency_us.mean", "latency_us.p50", "latency_us.p99", "latency_us.max",
    "kicks", "host_map_calls", "host_unmap_calls", "iotlb_flushes", "stale_window_us.mean",
    "stale_window_us.max", "invalidation_window_us.mean", "invalidation_window_us.max", "sim_time_s", "ios",
    "errors",
)

#: decimals kept for a summarised figure (the runs' own precision, one more for the mean)
_DIGITS = 4


def _get(result: dict[str, Any], path: str) -> float:
    value: Any = result
    for key in path.split("."):
        value = value[key]
    return float(value)


def _put(out: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        out = out.setdefault(key, {})
    out[keys[-1]] = value


def t_quantile(confidence: float, df: int) -> float:
    """Student's t quantile for a two-sided ``confidence`` interval with ``df`` degrees of freedom."""
    return float(_scipy_stats.t.ppf(0.5 + confidence / 2, df))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, sample standard deviation, lo, hi) of ``values``; no interval for a single value."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, 0.0, mean, mean
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def _r(x: float) -> float:
    return round(x, _DIGITS)


def summarise(results: Sequence[dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """The repeated run's JSON: ``repeat``, ``seeds``, ``mean``, ``stddev``, ``ci95`` (``[lo, hi]`` per
    figure, nested as in a single result), the options echoed once, and every run's own result."""
    if not results:
        raise ValueError("no runs to summarise")
    out: dict[str, Any] = {"repeat": len(results), "seeds": list(seeds)}
    mean: dict[str, Any] = {}
    stddev: dict[str, Any] = {}
    ci95: dict[str, Any] = {}
    for path in SUMMARISED:
        m, sd, lo, hi = mean_ci([_get(r, path) for r in results])
        _put(mean, path, _r(m))
        _put(stddev, path, _r(sd))
        _put(ci95, path, [_r(lo), _r(hi)])
    out.update(mean=mean, stddev=stddev, ci95=ci95)
    first = results[0]
    out["machine"] = {k: v for k, v in first["machine"].items() if k != "seed"}
    out["job"] = first["job"]
    out["runs"] = list(results)
    return out


def flat_figures(summary: dict[str, Any]) -> Iterator[tuple[str, float, float, float, float]]:
    """(path, mean, stddev, lo, hi) of each summarised figure, in ``SUMMARISED`` order."""
    for path in SUMMARISED:
        lo, hi = _get_pair(summary["ci95"], path)
        yield path, _get(summary["mean"], path), _get(summary["stddev"], path), lo, hi


def _get_pair(tree: dict[str, Any], path: str) -> tuple[float, float]:
    value: Any = tree
    for key in path.split("."):
        value = value[key]
    return float(value[0]), float(value[1])
