"""fio's output formats of a run: ``json``, ``json+`` and ``terse`` (version 3), from a ``RunReport``.

They follow fio's stat.c (``show_run_stats`` / ``show_thread_status_json`` /
``add_ddir_status_json`` / ``add_ddir_lat_json`` / ``show_thread_status_terse_all``) and the field
list of fio's HOWTO ("Terse output"), so fio's own tooling reads them: the top level has
``"fio version"``, ``"timestamp"``, ``"timestamp_ms"``, ``"time"``, ``"global options"`` and
``"jobs"``; each job ``"jobname"``, ``"groupid"``, ``"error"``, ``"job options"`` (the options as
given, strings) and one object per data direction (``read``, ``write``, ``trim``, ``sync``) with
``io_bytes``, ``io_kbytes``, ``bw_bytes``, ``bw`` (KiB/s), ``iops``, ``runtime`` (ms), ``total_ios``,
``short_ios``, ``drop_ios`` and ``slat_ns``/``clat_ns``/``lat_ns`` (``min``, ``max``, ``mean``,
``stddev``, ``N``; ``clat_ns.percentile`` at fio's default ``percentile_list``, ``json+`` adds
``clat_ns.bins``: value in ns -> count).

What the model has and fio's names for it:

* one job entry per job section (its ``numjobs`` clones together, as fio's ``group_reporting``);
  every section runs at once, so all are in group 0;
* each completed I/O counts in its own direction (randrw and rw split into read and write);
  errored I/Os count in ``total_ios`` but not in ``io_bytes``;
* the latency measured is from the slot's submission (``nvme_queue_rq``) to its completion: it is
  both ``clat_ns`` and ``lat_ns``; the submission latency is not separated (``slat_ns`` is all 0);
* ``bw_*``/``iops_*`` statistics are one sample: the whole window (fio samples every 500 ms);
* ``iodepth_level`` is 100 % at the job's ``iodepth`` (each slot refills at once, as libaio's
  ``io_submit`` after ``io_getevents``), CPU usage and page faults are 0 (fio's own process);
* the simulation has no wall clock: ``timestamp`` is 0 (the epoch), so equal runs print equal text;
* a ``viommu_sim`` object at the top level carries what fio has no place for: the machine's counters
  over the run's window (kicks, requests by type, host map/unmap ioctls, IOTLB flushes, stale and
  invalidation windows, utilisation and bottleneck) and the machine echoed; each job's
  ``viommu_sim`` has its vCPUs, the bytes it addressed, its errors and the ``run --json`` figures.
"""

from __future__ import annotations

from typing import Any

from sim import PS_PER_S

from . import __version__
from ._histogram import LatencyHistogram
from ._workload import Direction, JobReport, RunReport

#: the fio release whose output these follow
FIO_VERSION = "fio-3.42"
#: fio's default ``percentile_list``
PERCENTILES = (1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95,
               99.99)
#: the terse line's percentile fields (fio's FIO_IO_U_LIST_MAX_LEN; the unused ones print "0%=0")
_TERSE_PERCENTILES = 20
#: fio's latency buckets: upper bounds of latency_ns, latency_us (and latency_ms, whose last is ">=2000")
_LAT_BOUNDS = (2, 4, 10, 20, 50, 100, 250, 500, 750, 1000)
_LAT_MS_BOUNDS = (*_LAT_BOUNDS, 2000)
#: fio's iodepth levels
_DEPTHS = ("1", "2", "4", "8", "16", "32", ">=64")
_EPOCH = "Thu Jan  1 00:00:00 1970"


def _lat(h: LatencyHistogram | None, *, percentiles: bool = False, bins: bool = False) -> dict[str, Any]:
    if h is None or not h.count:
        return {"min": 0, "max": 0, "mean": 0.0, "stddev": 0.0, "N": 0}
    out: dict[str, Any] = {"min": h.min, "max": h.max, "mean": round(h.mean(), 6), "stddev": round(h.stddev(), 6),
                           "N": h.count}
    if percentiles:
        out["percentile"] = {f"{p:f}": round(h.percentile(p)) for p in PERCENTILES}
        if bins:
            out["bins"] = {str(value): count for value, count in h.bins()}
    return out


def _direction(d: Direction | None, window_ps: int, *, bins: bool) -> dict[str, Any]:
    ios = d.ios if d is not None else 0
    nbytes = d.bytes if d is not None else 0
    runtime_ps = window_ps if ios else 0
    bw_bytes = nbytes * PS_PER_S // runtime_ps if runtime_ps else 0
    iops = round(ios * PS_PER_S / runtime_ps, 6) if runtime_ps else 0.0
    h = d.latency if d is not None else None
    bw = bw_bytes // 1024
    one = 1 if ios else 0
    return {
        "io_bytes": nbytes, "io_kbytes": nbytes >> 10, "bw_bytes": bw_bytes, "bw": bw, "iops": iops,
        "runtime": round(runtime_ps / 10**9), "total_ios": ios, "short_ios": 0, "drop_ios": 0,
        "slat_ns": _lat(None), "clat_ns": _lat(h, percentiles=True, bins=bins), "lat_ns": _lat(h),
        "bw_min": bw, "bw_max": bw, "bw_agg": 100.0 if ios else 0.0, "bw_mean": float(bw), "bw_dev": 0.0,
        "bw_samples": one, "iops_min": round(iops), "iops_max": round(iops), "iops_mean": iops, "iops_stddev": 0.0,
        "iops_samples": one,
    }


def _buckets(job: JobReport) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """latency_ns, latency_us, latency_ms: percent of the job's I/Os below each bound (fio's buckets)."""
    ns = dict.fromkeys(map(str, _LAT_BOUNDS), 0)
    us = dict.fromkeys(map(str, _LAT_BOUNDS), 0)
    ms = {**dict.fromkeys(map(str, _LAT_MS_BOUNDS), 0), ">=2000": 0}
    total = job.read.ios + job.write.ios
    for d in (job.read, job.write):
        for value, count in d.latency.bins():
            bounds: tuple[int, ...]
            if value < 1000:
                table, v, bounds = ns, float(value), _LAT_BOUNDS
            elif value < 10**6:
                table, v, bounds = us, value / 1000, _LAT_BOUNDS
            else:
                table, v, bounds = ms, value / 10**6, _LAT_MS_BOUNDS
            table[next((str(b) for b in bounds if v < b), ">=2000")] += count

    def pct(table: dict[str, int]) -> dict[str, float]:
        return {k: round(100 * v / total, 2) if total else 0.0 for k, v in table.items()}
    return pct(ns), pct(us), pct(ms)


def _depth_key(iodepth: int) -> str:
    return next((d for d in _DEPTHS[:-1] if iodepth <= int(d)), ">=64")


def fio_job(job: JobReport, given: dict[str, str], *, bins: bool) -> dict[str, Any]:
    """One entry of ``jobs``: fio's keys, then ``viommu_sim``."""
    lat_ns, lat_us, lat_ms = _buckets(job)
    depth = {d: 0.0 for d in _DEPTHS}
    if job.read.ios + job.write.ios:
        depth[_depth_key(job.opts.iodepth)] = 100.0
    return {
        "jobname": job.opts.name, "groupid": 0, "job_start": 0, "error": 0,
        "job options": dict(given),
        "read": _direction(job.read, job.window_ps, bins=bins),
        "write": _direction(job.write, job.window_ps, bins=bins),
        "trim": _direction(None, job.window_ps, bins=bins),
        "sync": {"total_ios": 0, "lat_ns": _lat(None)},
        "job_runtime": round(job.window_ps / 10**9), "usr_cpu": 0.0, "sys_cpu": 0.0, "ctx": 0, "majf": 0,
        "minf": 0, "iodepth_level": depth, "iodepth_submit": dict(depth), "iodepth_complete": dict(depth),
        "latency_ns": lat_ns, "latency_us": lat_us, "latency_ms": lat_ms,
        "latency_depth": job.opts.iodepth, "latency_target": 0, "latency_percentile": 100.0,
        "latency_window": 0,
        "viommu_sim": {"cpus": list(job.cpus), "size": job.size, "numjobs": job.opts.numjobs,
                       "rw": job.opts.rw, "errors": job.read.errors + job.write.errors, **job.summary},
    }


def fio_json(report: RunReport, global_given: dict[str, str], job_given: list[dict[str, str]], *,
             plus: bool = False) -> dict[str, Any]:
    """fio's ``--output-format=json`` (``json+`` with ``plus``) object of a run."""
    return {
        "fio version": FIO_VERSION, "timestamp": 0, "timestamp_ms": 0, "time": _EPOCH,
        "global options": dict(global_given),
        "jobs": [fio_job(job, given, bins=plus) for job, given in zip(report.jobs, job_given)],
        "viommu_sim": {"version": __version__, "window_s": round(report.window_ps / PS_PER_S, 9),
                       **report.counters, "machine": report.machine},
    }


def _terse_lat(h: LatencyHistogram | None) -> list[str]:
    if h is None or not h.count:
        return ["0", "0", "0.000000", "0.000000"]
    return [str(h.min // 1000), str(h.max // 1000), f"{h.mean() / 1000:f}", f"{h.stddev() / 1000:f}"]


def _terse_direction(d: Direction, window_ps: int) -> list[str]:
    j = _direction(d, window_ps, bins=False)
    h = d.latency if d.ios else None
    pcts = [f"{p:f}%={round(d.latency.percentile(p)) // 1000}" for p in PERCENTILES] if h else []
    pcts = (pcts or [f"{p:f}%=0" for p in PERCENTILES]) + ["0%=0"] * (_TERSE_PERCENTILES - len(PERCENTILES))
    bw = [str(j["bw_min"]), str(j["bw_max"]), f"{j['bw_agg']:f}%", f"{j['bw_mean']:f}", f"{j['bw_dev']:f}"]
    return [str(j["io_kbytes"]), str(j["bw"]), str(int(j["iops"])), str(j["runtime"]), *_terse_lat(None),
            *_terse_lat(h), *pcts, *_terse_lat(h), *bw]


def terse_line(job: JobReport) -> str:
    """fio's terse version 3 line of a job (HOWTO's "Terse output"; no disk utilisation fields)."""
    j = fio_job(job, {}, bins=False)
    lat_u = list(j["latency_us"].values())
    lat_u[0] = round(lat_u[0] + sum(j["latency_ns"].values()), 2)  # fio's terse folds ns into its first bucket
    fields = ["3", FIO_VERSION, job.opts.name, "0", "0",
              *_terse_direction(job.read, job.window_ps), *_terse_direction(job.write, job.window_ps),
              "0.000000%", "0.000000%", "0", "0", "0",
              *(f"{v:3.1f}%" for v in j["iodepth_level"].values()),
              *(f"{v:3.2f}%" for v in lat_u),
              *(f"{v:3.2f}%" for v in j["latency_ms"].values())]
    return ";".join(fields)
