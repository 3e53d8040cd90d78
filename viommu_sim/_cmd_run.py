"""``viommu-sim run``: boot the guest and run a fio-like job through the whole stack.

The machine is given by the boot flags (plus ``--flush-queue`` and ``--map-batching``),
the job by fio-like flags, or both by ``--scenario FILE.toml`` with tables
``[machine]`` (MachineConfig options), ``[job]`` (rw, bs, iodepth, numjobs,
rwmixread, ios, runtime, ramp_time, size, contig_pages) and ``[cost]`` (CostModel parameters, ps).
Flags given on the command line override the file.  Prints a human summary, or
with ``--json`` one JSON object (``viommu_sim._workload.run_scenario``'s result).

fio's habits (``viommu_sim._job``, ``_fio_jobfile``, ``_fio_output``): the job flags take fio's
spellings (``--ramp_time``, ``--readwrite``, ``--opt=value``) and value syntax (``64K``, ``10%``,
``20ms``); a positional job file (``viommu-sim run job.fio``) runs every job section side by side
on one machine, the command line's job options being the defaults beneath the file's, as in fio;
``--output-format=json|json+|terse`` prints fio's schema (one entry per section), ``normal`` (the
default) the summary.  ``--json`` stays this command's own object, not fio's schema.

``--repeat N`` runs the same machine and job with the seeds ``seed .. seed+N-1`` and reports each
figure's mean with its 95 % confidence interval (Student t, ``viommu_sim._stats``); with
``--json`` the object has ``repeat``, ``seeds``, ``mean``, ``stddev``, ``ci95`` (``[lo, hi]`` per
figure) and every run's own result under ``runs``.

``--trace PATH`` (``--trace-format``, ``--trace-events``, see ``_tracing``) records the whole run,
boot included; with ``--trace -`` the summary goes to standard error.  It traces one run only, so
``--repeat`` above 1 refuses it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

import attrs

from models import ConfigError, CostModel, describe_guest_kernel, machine_options
from models.guest import dma_domain_policy, virtio_iommu_map_batching

from ._fio_jobfile import load_jobfile
from ._fio_output import fio_json, terse_line
from ._job import JOB_KEYS, JOB_OPTIONS, LENGTH_KEYS, job_options
from ._options import (
    RUN_DEFAULTS,
    UsageError,
    add_job_flags,
    add_machine_flags,
    given_machine_options,
    load_toml,
    preset_of,
)
from ._stats import flat_figures, summarise
from ._tracing import TraceOutput, add_trace_flags
from ._workload import RunReport, legacy_result, run_jobs, run_scenario

#: how the summary names a saturated resource
_BOTTLENECK = {
    "vmm": "the VMM's virtio-iommu handling (under the BQL)",
    "request_lock": "the virtio-iommu driver's request_lock (kick + spin)",
    "nvme_link": "the NVMe's bandwidth",
    "vcpu_max": "the guest's vCPUs",
    "none": "none of these is 90% busy: the rate is set by latency (service times x the I/Os in flight)",
}

#: ``--output-format``'s choices (fio's names)
_FORMATS = ("normal", "json", "json+", "terse")

#: the most runs one ``--repeat`` may ask for
MAX_REPEAT = 1000

#: a run is "long" (worth a progress bar) from this many I/Os or simulated seconds
_LONG_IOS = 20_000
_LONG_RUNTIME_S = 0.5


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run a fio-like workload through the whole stack and print its figures")
    add_machine_flags(p, "machine", "device", "guest", "policy", "simulation", defaults=RUN_DEFAULTS)
    add_job_flags(p)
    p.add_argument("--scenario", metavar="FILE.toml", help="machine, job and cost from a TOML file")
    p.add_argument("jobfile", nargs="?", metavar="JOBFILE",
                   help="a fio job file: [global] and one section per job, all run at once on one machine "
                        "(the command line's job options are defaults beneath the file's)")
    p.add_argument("--json", action="store_true",
                   help="print this command's own JSON object (not fio's schema: see --output-format)")
    p.add_argument("--output-format", choices=_FORMATS, default="normal", metavar="FORMAT",
                   help="normal (the summary), json or json+ (fio's JSON schema, json+ with latency bins), "
                        "terse (fio's terse v3 lines) (default normal)")
    p.add_argument("--repeat", type=_repeat, default=1, metavar="N",
                   help="run seeds SEED..SEED+N-1 and report each figure's mean and 95%% confidence interval "
                        "(default 1)")
    add_trace_flags(p)
    p.set_defaults(handler=run)


def _repeat(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r} (an integer from 1 to {MAX_REPEAT})") from None
    if not 1 <= value <= MAX_REPEAT:
        raise argparse.ArgumentTypeError(f"invalid value {text!r} (an integer from 1 to {MAX_REPEAT})")
    return value


def _load_scenario(path: str) -> dict[str, dict[str, Any]]:
    """The file's [machine], [job] and [cost] tables; any other key is an error naming it."""
    data = load_toml(path)  # bounded, UTF-8, one line for every way it is unreadable
    known = {
        "machine": {s.toml_key for s in machine_options()},
        "job": set(JOB_KEYS),
        "cost": {a.name for a in attrs.fields(CostModel)},
    }
    out: dict[str, dict[str, Any]] = {"machine": {}, "job": {}, "cost": {}}
    for table, body in data.items():
        if table not in known:
            raise UsageError(f"{path}: unknown key {table!r} (tables: machine, job, cost)")
        if not isinstance(body, dict):
            raise UsageError(f"{path}: {table!r} must be a table ([{table}])")
        for key, value in body.items():
            name = key.replace("-", "_")
            if name not in known[table]:
                raise UsageError(f"{path}: unknown key {table}.{key}")
            out[table][name] = value
    return out


def scenario_from_args(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The file's tables (if any) with the flags given on the command line on top."""
    sc = _load_scenario(args.scenario) if args.scenario else {"machine": {}, "job": {}, "cost": {}}
    # the command's defaults, then the preset, the scenario file, the explicit flags
    sc["machine"] = {**RUN_DEFAULTS, **preset_of(args), **sc["machine"], **given_machine_options(args, with_preset=False)}
    job = sc["job"]
    cli_length = False
    for option in JOB_OPTIONS:
        value = getattr(args, option.name, None) if option.cli else None
        if value is None:
            continue
        if option.name in LENGTH_KEYS and not cli_length:  # the command line's length replaces the file's
            cli_length = True
            for key in LENGTH_KEYS:
                job.pop(key, None)
        job[option.name] = value
    return sc


def _sections(args: argparse.Namespace, sc: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                                               dict[str, str], list[dict[str, str]]]:
    """The job of each section to run, fio's "global options" and each job's "job options" (as given).

    Without a job file: the one job of the flags (and ``--scenario``).  With one: each section's
    options over the file's [global] ones over the command line's (fio's order); a section's length
    (ios, runtime, number_ios) replaces the one beneath it.  Each job is checked here, so a bad one
    is one line naming the file and section."""
    given: dict[str, str] = dict(getattr(args, "fio_given", {}))
    base = sc["job"]
    as_given = {k: given.get(k, str(v)) for k, v in base.items()}
    if not args.jobfile:
        return [base], {}, [as_given]
    jf = load_jobfile(args.jobfile)
    jobs = []
    for section in jf.sections:
        own = {**section.global_options, **section.options}
        job: dict[str, Any] = dict(base)
        if any(k in own for k in LENGTH_KEYS):
            for key in LENGTH_KEYS:
                job.pop(key, None)
        job.update(own)
        job.setdefault("name", section.name) if "name" in own else job.update(name=section.name)
        try:
            job_options(job)
        except ConfigError as exc:
            raise UsageError(f"{args.jobfile}: [{section.name}] {exc}") from None
        jobs.append(job)
    return jobs, {**as_given, **jf.global_options}, [dict(s.options) for s in jf.sections]


def _summary(r: dict[str, Any]) -> str:
    m, j, lat, st = r["machine"], r["job"], r["latency_us"], r["stale_window_us"]
    iw, u = r["invalidation_window_us"], r["utilisation"]
    ios = max(r["ios"], 1)
    if m["viommu"] == "none":
        iommu = "no vIOMMU"
    else:
        policy = dma_domain_policy(m["guest_kernel"], m["iommu_policy"], flush_queue=m["flush_queue"])
        fq = policy.fq_options
        if fq is not None:
            kind = "lazy, " + ("single flush queue" if fq.single_queue else "per-CPU flush queues")
        elif policy.ref is not None:
            kind = f"policy {policy.ref} ({policy.type} domain)"
        else:
            kind = "strict" if m["iommu_policy"] == "strict" else "lazy falls back to strict (no deferred flush)"
        if ":" in m["map_batching"]:
            batching = f"by policy {m['map_batching']}"
        else:
            batching = "on" if virtio_iommu_map_batching(m["guest_kernel"], m["map_batching"]) else "off"
        iommu = f"virtio-iommu, Linux {describe_guest_kernel(m['guest_kernel'])} {kind}, map batching {batching}"
    reqs = " ".join(f"{k}={v}" for k, v in r["requests"].items() if v)
    return "\n".join([
        f"{j['rw']}: bs={j['bs']} iodepth={j['iodepth']} numjobs={j['numjobs']}"
        + (f" rwmixread={j['rwmixread']}" if j["rw"] == "randrw" else "")
        + f" contig_pages={j['contig_pages']}; smp={m['smp']} nvme={m['nvme']}, {iommu}",
        f"  ios={r['ios']} errors={r['errors']} simulated time={r['sim_time_s'] * 1e3:.3f} ms"
        + (f" (after a ramp of {j['ramp_time'] * 1e3:.3f} ms)" if j["ramp_time"] else ""),
        f"  IOPS={r['iops']:.1f}  BW={r['bandwidth_mib_s']:.1f} MiB/s",
        f"  lat (us): mean={lat['mean']:.3f} p50={lat['p50']:.3f} p99={lat['p99']:.3f} max={lat['max']:.3f}",
        f"  virtio-iommu: kicks={r['kicks']} ({r['kicks'] / ios:.2f} per I/O), requests: {reqs or 'none'}",
        f"  host VFIO: map ioctls={r['host_map_calls']} unmap ioctls={r['host_unmap_calls']}",
        f"  IOTLB flushes={r['iotlb_flushes']}  stale window (us): mean={st['mean']:.3f} p50={st['p50']:.3f} "
        f"p99={st['p99']:.3f} max={st['max']:.3f} (unmap -> UNMAP done at the device)",
        f"  invalidation window (us): mean={iw['mean']:.3f} p50={iw['p50']:.3f} p99={iw['p99']:.3f} "
        f"max={iw['max']:.3f} (unmap -> its IOTLB invalidation done, IOVA free again)",
        f"  busy: vCPUs {u['vcpu_mean']:.0%} (max {u['vcpu_max']:.0%}), request_lock {u['request_lock']:.0%}, "
        f"VMM handler {u['vmm']:.0%}, NVMe link {u['nvme_link']:.0%}; bottleneck: {_BOTTLENECK[u['bottleneck']]}",
    ]) + "\n"


def _progress_bar(job: dict[str, Any]) -> Any:
    """A rich progress bar on stderr for a long run when stderr is a terminal; else None."""
    if not sys.stderr.isatty():
        return None
    runtime = job.get("runtime")
    ios = job.get("ios")
    long_run = (isinstance(ios, int) and ios >= _LONG_IOS) or (
        ios is None and isinstance(runtime, (int, float)) and runtime >= _LONG_RUNTIME_S)
    if not long_run:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("run"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True)


def _repeat_summary(summary: dict[str, Any]) -> str:
    n = summary["repeat"]
    seeds = summary["seeds"]
    first = dict(summary["runs"][0])
    head = _summary(first).splitlines()[0]
    lines = [head, f"  {n} runs, seeds {seeds[0]}..{seeds[-1]}: mean, [95% confidence interval] (Student t), stddev"]
    for path, mean, sd, lo, hi in flat_figures(summary):
        lines.append(f"  {path:<22} {mean:14.3f}  [{lo:.3f}, {hi:.3f}]  sd={sd:.3f}")
    return "\n".join(lines) + "\n"


def _run_one(sc: dict[str, dict[str, Any]], machine: dict[str, Any], sinks: Any = ()) -> dict[str, Any]:
    bar = _progress_bar(sc["job"])
    if bar is None:
        return run_scenario(machine, sc["job"], sc["cost"], sinks=sinks)
    task_id = bar.add_task("run", total=None)

    def callback(done: int, total: int) -> None:
        bar.update(task_id, completed=done, total=total)

    with bar:
        return run_scenario(machine, sc["job"], sc["cost"], progress=callback, sinks=sinks)


def _run_jobs(sc: dict[str, dict[str, Any]], jobs: list[dict[str, Any]], sinks: Any) -> RunReport:
    bar = _progress_bar(jobs[0])
    if bar is None:
        return run_jobs(sc["machine"], jobs, sc["cost"], sinks=sinks)
    task_id = bar.add_task("run", total=None)

    def callback(done: int, total: int) -> None:
        bar.update(task_id, completed=done, total=total)

    with bar:
        return run_jobs(sc["machine"], jobs, sc["cost"], progress=callback, sinks=sinks)


def _fio_output(args: argparse.Namespace, report: RunReport, global_given: dict[str, str],
                job_given: list[dict[str, str]]) -> str:
    fmt = args.output_format
    if fmt in ("json", "json+"):
        return json.dumps(fio_json(report, global_given, job_given, plus=fmt == "json+"), indent=2) + "\n"
    if fmt == "terse":
        return "".join(terse_line(job) + "\n" for job in report.jobs)
    if args.json:
        return json.dumps(legacy_result(report)) + "\n"
    if len(report.jobs) == 1:
        return _summary(legacy_result(report))
    return "".join(f"[{job.opts.name}]\n" + _summary(legacy_result(report, i)) for i, job in enumerate(report.jobs))


def run(args: argparse.Namespace) -> int:
    sc = scenario_from_args(args)
    fio = args.jobfile is not None or args.output_format != "normal"
    if args.json and args.output_format != "normal":
        raise UsageError(f"--json and --output-format={args.output_format}: give one (--json is not fio's schema)")
    if fio:
        if args.repeat != 1:
            raise UsageError("--repeat works with the summary and --json, not with a job file or --output-format")
        jobs, global_given, job_given = _sections(args, sc)
        if args.json and len(jobs) > 1:
            raise UsageError(f"--json prints one job and {args.jobfile} has {len(jobs)}: use --output-format=json")
        with TraceOutput(args) as trace:  # --trace -: the report goes to standard error
            report = _run_jobs(sc, jobs, trace.sinks)
            sys.stdout.write(_fio_output(args, report, global_given, job_given))
        return 0
    if args.repeat == 1:
        with TraceOutput(args) as trace:  # --trace -: the summary goes to standard error
            result = _run_one(sc, sc["machine"], trace.sinks)
            sys.stdout.write(json.dumps(result) + "\n" if args.json else _summary(result))
        return 0
    if args.trace is not None:
        raise UsageError(f"--trace with --repeat {args.repeat}: a trace records one run (drop --repeat)")
    base = sc["machine"].get("seed", 0)
    if not isinstance(base, int) or isinstance(base, bool) or base < 0 or base + args.repeat - 1 > 2**64 - 1:
        raise UsageError(f"--repeat {args.repeat}: seeds from {base!r} do not fit 0..2**64-1")
    seeds = [base + i for i in range(args.repeat)]
    results = [_run_one(sc, {**sc["machine"], "seed": s}) for s in seeds]
    summary = summarise(results, seeds)
    sys.stdout.write(json.dumps(summary) + "\n" if args.json else _repeat_summary(summary))
    return 0
