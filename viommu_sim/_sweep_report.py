"""The sweep's tables: ``results.csv`` (one row per run) and ``summary.csv`` (one row per point).

A *run* is one point of the matrix at one seed; a *point* of the summary is policy x guest kernel
x iodepth, over the seeds that have run.  Both tables name what each point's policy really is:
``effective_policy`` is the invalidation the guest's DMA domain gets (``dma_domain_policy``:
a lazy domain on a kernel whose virtio-iommu has no deferred flush, 6.7 and earlier, falls back
to strict), and ``fallback`` says why when it differs from the policy asked for ("" otherwise).

``results.csv``: the axes, ``effective_policy``, ``fallback``, every metric of the run's summary
flattened (``latency_us.p99``, ``requests.MAP``, ...), then every machine option (``machine.smp``,
...), changed cost parameter (``cost.NAME``) and job option (``job.rw``, ``job.bs`` in bytes, ...)
the run used, as the runner echoed them (the axes' own options are not repeated).

``summary.csv``: policy, guest kernel, iodepth, ``effective_policy``, ``fallback``, ``runs`` (the
seeds finished), then for bandwidth, IOPS and mean and p99 latency the mean over the seeds, the
sample standard deviation and the Student-t 95 % confidence interval of the mean
(``_stats.mean_ci``: ``NAME.mean``, ``NAME.stddev``, ``NAME.ci95_lo``, ``NAME.ci95_hi``; one
seed has no interval: lo = hi = mean).  Rows and columns are in a fixed order and the cells are
the journal's values, so a local and a Dask run of one matrix give byte-identical files.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from models.guest import dma_domain_policy

from ._stats import mean_ci

if TYPE_CHECKING:
    from ._sweep import Matrix, Point

Summary = dict[str, Any]

#: the figures ``summary.csv`` summarises over a point's seeds, as paths into a run's summary
SUMMARY_FIGURES = ("bandwidth_mib_s", "iops", "latency_us.mean", "latency_us.p99")
#: the statistics of each figure, as column suffixes
SUMMARY_STATS = ("mean", "stddev", "ci95_lo", "ci95_hi")
#: decimals kept in summary.csv (the runs' figures have three)
_DIGITS = 4
#: the machine and job options that are sweep axes: their columns are the axes themselves
_AXIS_ECHOES = {"machine": ("iommu_policy", "guest_kernel", "seed", "cost"), "job": ("iodepth",)}


def effective_policy(policy: str, guest_kernel: str, flush_queue: str = "auto") -> tuple[str, str]:
    """``(effective_policy, fallback)`` of a point: the invalidation its DMA domain gets and, when
    that is not the policy asked for, why (e.g. a lazy domain on Linux 6.7)."""
    domain = dma_domain_policy(guest_kernel, policy, flush_queue=flush_queue)
    if domain.requested_type == domain.type:
        return policy, ""
    return "strict", f"{policy} -> strict (Linux {guest_kernel}'s virtio-iommu has no deferred flush, 6.8+ has)"


def point_policies(matrix: Matrix) -> dict[tuple[str, str], tuple[str, str]]:
    """``effective_policy`` of every policy x guest kernel of the matrix."""
    flush_queue = str(matrix.machine.get("flush_queue", "auto"))
    return {(p, k): effective_policy(p, k, flush_queue) for p, k in itertools.product(matrix.policy, matrix.guest_kernel)}


def flatten(summary: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys joined by "." (``{"latency_us": {"p99": 1}}`` -> ``{"latency_us.p99": 1}``)."""
    flat: dict[str, Any] = {}
    for name, value in summary.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def cell(value: Any) -> str:
    """A CSV cell: "" for None, true/false, ``repr`` of a float, JSON for a list or table."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return repr(value) if isinstance(value, float) else str(value)
    return json.dumps(value, separators=(",", ":"))


def _options(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The machine, cost and job columns of one run, from the options its summary echoes."""
    out: dict[str, Any] = {}
    machine = summary.get("machine")
    if isinstance(machine, Mapping):
        out.update({f"machine.{k}": v for k, v in machine.items() if k not in _AXIS_ECHOES["machine"]})
        cost = machine.get("cost")
        if isinstance(cost, Mapping):
            out.update({f"cost.{k}": v for k, v in cost.items()})
    if isinstance(summary.get("cost"), Mapping):
        out.update({f"cost.{k}": v for k, v in summary["cost"].items()})
    job = summary.get("job")
    if isinstance(job, Mapping):
        out.update({f"job.{k}": v for k, v in job.items() if k not in _AXIS_ECHOES["job"]})
    return out


#: summary keys that echo the inputs: they become the option columns, after the metrics
_ECHOED = ("machine", "job", "cost")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def render_csv(matrix: Matrix, pts: Sequence[Point], done: Mapping[str, Summary], axes: Sequence[str]) -> str:
    """``results.csv``: one row per finished run in point order (see the module docstring); the
    metric and option columns in first-seen order."""
    policies = point_policies(matrix)
    rows = []
    for p in pts:
        if p.key in done:
            summary = done[p.key]
            metrics = flatten({k: v for k, v in summary.items() if k not in _ECHOED})
            rows.append((p, metrics, _options(summary)))
    metric_cols: dict[str, None] = {}
    option_cols: dict[str, None] = {}
    for _, metrics, options in rows:
        metric_cols.update(dict.fromkeys(c for c in metrics if c not in axes))
        option_cols.update(dict.fromkeys(options))
    header = [*axes, "effective_policy", "fallback", *metric_cols, *option_cols]
    body = [[*(cell(getattr(p, a)) for a in axes), *policies[p.policy, p.guest_kernel],
             *(cell(metrics.get(c)) for c in metric_cols), *(cell(options.get(c)) for c in option_cols)]
            for p, metrics, options in rows]
    return _table(header, body)


def figure(summary: Mapping[str, Any], path: str) -> float | None:
    """The number at ``path`` (keys joined by ".") of a run's summary, or None."""
    value: Any = summary
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def point_stats(pts: Sequence[Point], done: Mapping[str, Summary], policy: str, kernel: str, depth: int,
                path: str) -> tuple[float, float, float, float, int] | None:
    """(mean, stddev, lo, hi, runs) of one figure over the finished seeds of one point, or None."""
    values = [v for p in pts if (p.policy, p.guest_kernel, p.iodepth) == (policy, kernel, depth) and p.key in done
              for v in [figure(done[p.key], path)] if v is not None]
    if not values:
        return None
    mean, sd, lo, hi = mean_ci(values)
    return round(mean, _DIGITS), round(sd, _DIGITS), round(lo, _DIGITS), round(hi, _DIGITS), len(values)


def render_summary(matrix: Matrix, pts: Sequence[Point], done: Mapping[str, Summary]) -> str:
    """``summary.csv``: one row per policy x guest kernel x iodepth with a finished run, in point
    order (see the module docstring)."""
    policies = point_policies(matrix)
    header = ["policy", "guest_kernel", "iodepth", "effective_policy", "fallback", "runs",
              *(f"{f}.{s}" for f in SUMMARY_FIGURES for s in SUMMARY_STATS)]
    body = []
    for policy, kernel, depth in itertools.product(matrix.policy, matrix.guest_kernel, matrix.iodepth):
        runs = sum(1 for p in pts if (p.policy, p.guest_kernel, p.iodepth) == (policy, kernel, depth) and p.key in done)
        if not runs:
            continue
        cells = []
        for path in SUMMARY_FIGURES:
            stats = point_stats(pts, done, policy, kernel, depth, path)
            cells.extend([cell(v) for v in stats[:4]] if stats else [""] * len(SUMMARY_STATS))
        body.append([policy, kernel, str(depth), *policies[policy, kernel], str(runs), *cells])
    return _table(header, body)


def _size(n: Any) -> str:
    """A byte count as fio writes it: 4096 -> 4k, 1048576 -> 1M."""
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        for suffix, shift in (("G", 30), ("M", 20), ("k", 10)):
            if n % (1 << shift) == 0:
                return f"{n >> shift}{suffix}"
    return str(n)


def job_title(done: Mapping[str, Summary], pts: Sequence[Point]) -> str:
    """The job and machine the sweep ran, for the chart's title: e.g. ``randread bs=4k numjobs=1
    ios=1000, smp=4 nvme=vfio`` (from the first finished run's echo; "" before any)."""
    first = next((done[p.key] for p in pts if p.key in done), None)
    if first is None:
        return ""
    job = first.get("job") if isinstance(first.get("job"), Mapping) else {}
    machine = first.get("machine") if isinstance(first.get("machine"), Mapping) else {}
    assert isinstance(job, Mapping) and isinstance(machine, Mapping)
    parts = [str(job.get("rw", "?")), f"bs={_size(job.get('bs'))}", f"numjobs={job.get('numjobs', '?')}"]
    if job.get("rw") == "randrw":
        parts.append(f"rwmixread={job.get('rwmixread')}")
    parts.append(f"runtime={job['runtime']}s" if job.get("runtime") else f"ios={job.get('ios', '?')}")
    if job.get("ramp_time"):
        parts.append(f"ramp_time={job['ramp_time']}s")
    title = " ".join(parts) + f", smp={machine.get('smp', '?')} nvme={machine.get('nvme', '?')}"
    if machine.get("flavor", "qemu") != "qemu":
        title += f" flavor={machine['flavor']}"
    return title
