"""``viommu-sim sweep``: run the workload over a policy x guest kernel x iodepth x seed matrix.

Writes ``results.csv``, ``summary.csv``, ``chart.png`` and a resumable journal into ``--out`` (see
``_sweep``); points run on a local process pool (``--workers``, at most ``MAX_WORKERS``), or on a
Dask cluster with ``--scheduler`` (an address ``PROTOCOL://HOST:PORT``, checked before anything
runs; the connection attempt gives up after ``CONNECT_TIMEOUT_S``).  Progress goes to stderr, the
written files to stdout.  Every bad flag or matrix value is one line and exit 2 before any point runs.

The default matrix answers the question a sweep is for: lazy against strict on guest 6.12 (where
lazy has its flush queue; on 6.7 lazy falls back to strict and the two would be one line), at
iodepths 1 to 64, over three seeds so that each point has a confidence interval.

SIGTERM and SIGHUP stop a sweep as Ctrl-C does: the worker processes are stopped, the journal
keeps every finished point (a rerun resumes), the CSVs and chart are written for them, and the
exit status is 130.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from ._job import RW_MODES
from ._sweep import Matrix, Point, SweepError, SweepFailed, load_matrix, run_sweep
from ._sweep_signals import SweepInterrupted, stop_on_signals

#: the axes when neither a flag nor --matrix gives them
DEFAULT_AXES: dict[str, list[Any]] = {"policy": ["lazy", "strict"], "guest_kernel": ["6.12"],
                                      "iodepth": [1, 4, 16, 64], "seed": [0, 1, 2]}


#: the most local worker processes: four per CPU (more only add memory and start-up time)
MAX_WORKERS = 4 * (os.cpu_count() or 1)
#: how long ``--scheduler`` may take to connect, in seconds
CONNECT_TIMEOUT_S = 5
#: a Dask scheduler address: a protocol distributed speaks, a host, a port
_ADDRESS = re.compile(r"^(?:tcp|tls|ucx|ws|wss)://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]{1,253}):\d{1,5}$")


def _short(text: str) -> str:
    """``repr(text)``, cut to about 60 characters for a one-line message."""
    return repr(text) if len(text) <= 60 else repr(text[:54]) + "..."


def _workers(text: str) -> int:
    value = _positive(text)
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"invalid value {text!r} (at most {MAX_WORKERS}: four per CPU)")
    return value


def _scheduler(text: str) -> str:
    if not _ADDRESS.match(text) or not 0 < int(text.rsplit(":", 1)[1]) < 65536:
        raise argparse.ArgumentTypeError(f"invalid address {_short(text)} (PROTOCOL://HOST:PORT, e.g. tcp://10.0.0.1:8786)")
    return text


def _positive(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {_short(text)} (a positive integer)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {_short(text)} (a positive integer)")
    return value


def _list(item: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        values = [v.strip() for v in text.split(",")]
        if not all(values):
            raise argparse.ArgumentTypeError(f"invalid list {_short(text)} (comma-separated values, e.g. 1,16)")
        return [item(v) for v in values]

    return parse


def _seed(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {_short(text)} (a non-negative integer)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid seed {_short(text)} (a non-negative integer)")
    return value


_DESCRIPTION = """\
Run the fio-like workload over a matrix of IOMMU policy x guest kernel x iodepth x seed and
write, into --out: results.csv (one row per run), summary.csv (per policy, kernel and iodepth:
mean, standard deviation and 95 % confidence interval over the seeds of bandwidth, IOPS and mean
and p99 latency), chart.png (bandwidth and latency against iodepth, with the intervals as error
bars) and points.jsonl (the journal: rerun the same command to resume an interrupted sweep).
A lazy policy on a guest kernel without deferred flush (6.7 and earlier) falls back to strict;
the CSVs (effective_policy, fallback) and the chart's legend say so."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sweep", help="run the workload over a policy x kernel x iodepth x seed matrix",
                       description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory: results.csv, summary.csv, chart.png, points.jsonl (rerun to resume)")
    p.add_argument("--matrix", metavar="FILE.toml",
                   help="matrix file: [axes] policy/guest_kernel/iodepth/seeds, fixed [machine], [job], [cost]")
    a = p.add_argument_group("axes (a flag replaces the --matrix file's axis)")
    a.add_argument("--policy", type=_list(str), metavar="P[,P]", help="IOMMU policies (default lazy,strict)")
    a.add_argument("--guest-kernel", type=_list(str), metavar="V[,V]",
                   help="guest Linux versions: 6.8 or later behaves as 6.12, 5.14 to 6.7 as 6.7 (default 6.12; "
                   "6.7,6.12 shows both side by side)")
    a.add_argument("--iodepth", type=_list(_positive), metavar="N[,N]", help="fio iodepths (default 1,4,16,64)")
    seeds = a.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=_positive, metavar="N",
                       help="N seeds: 0 .. N-1, each a run's one simulation seed (default 3)")
    seeds.add_argument("--seed-list", type=_list(_seed), metavar="S[,S]", help="these seeds")
    j = p.add_argument_group("job (a flag replaces the --matrix file's [job] value)")
    j.add_argument("--ios", type=_positive, metavar="N", help="I/Os per run (default 1000)")
    j.add_argument("--rw", metavar="MODE", help=f"fio rw pattern: {'|'.join(RW_MODES)} (default randread)")
    j.add_argument("--bs", metavar="SIZE", help="block size, fio's syntax: 4096, 4k, 64K, 1M (default 4k)")
    j.add_argument("--numjobs", type=_positive, metavar="N", help="fio numjobs (default 1)")
    r = p.add_argument_group("execution")
    r.add_argument("--workers", type=_workers, metavar="N",
                   help=f"local worker processes (default: CPU count, here {os.cpu_count()}; at most {MAX_WORKERS}); "
                   "1 runs in-process")
    r.add_argument("--scheduler", type=_scheduler, metavar="ADDRESS",
                   help="run on this Dask distributed scheduler (e.g. tcp://10.0.0.1:8786) instead")
    r.add_argument("--detail", choices=("full", "fast"), default="fast",
                   help="level of detail of each run: rings and requests as bytes in guest memory (full) or "
                   "handed over as objects, same timing and results (fast) (default fast)")
    p.set_defaults(handler=run)


def build_matrix(args: argparse.Namespace) -> Matrix:
    seed = list(range(args.seeds)) if args.seeds else args.seed_list
    axes = {"policy": args.policy, "guest_kernel": args.guest_kernel, "iodepth": args.iodepth, "seed": seed}
    job_flags = {name: getattr(args, name) for name in ("rw", "bs", "numjobs", "ios")
                 if getattr(args, name) is not None}
    if args.matrix:
        m = load_matrix(args.matrix, **axes)
        return Matrix(policy=m.policy, guest_kernel=m.guest_kernel, iodepth=m.iodepth, seed=m.seed,
                      machine=m.machine, job={**m.job, **job_flags}, cost=m.cost, detail=args.detail)
    given = {n: DEFAULT_AXES[n] if v is None else v for n, v in axes.items()}
    return Matrix(policy=given["policy"], guest_kernel=given["guest_kernel"], iodepth=given["iodepth"],
                  seed=given["seed"], job=job_flags, detail=args.detail)


def _reporter() -> tuple[Callable[[int, int, Point | None], None], Callable[[], None]]:
    """A progress callback for stderr (a rich bar on a terminal if rich is installed) and its closer."""
    if sys.stderr.isatty():
        try:
            from rich.console import Console
            from rich.progress import Progress
        except ImportError:
            pass
        else:
            bar = Progress(console=Console(stderr=True))
            task = bar.add_task("sweep", total=None)
            bar.start()

            def rich_progress(done: int, total: int, point: Point | None) -> None:
                bar.update(task, completed=done, total=total, description=point.key if point else "sweep")

            return rich_progress, bar.stop

    def plain(done: int, total: int, point: Point | None) -> None:
        if point is None:
            print(f"sweep: {total} points, {done} already done", file=sys.stderr, flush=True)
        else:
            print(f"sweep: [{done}/{total}] {point.key}", file=sys.stderr, flush=True)

    return plain, lambda: None


def run(args: argparse.Namespace) -> int:
    try:
        matrix = build_matrix(args)
        progress, close = _reporter()
        try:
            with stop_on_signals():
                result = run_sweep(matrix, args.out, workers=args.workers, scheduler=args.scheduler,
                                   progress=progress, connect_timeout=CONNECT_TIMEOUT_S)
        finally:
            close()
    except SweepError as exc:
        print(f"viommu-sim sweep: error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, SweepFailed) else 2
    except SweepInterrupted as stop:
        print(f"viommu-sim sweep: interrupted by {stop.how}: {stop.done} of {stop.total} points done; "
              "rerun to resume", file=sys.stderr)
        return 130
    print(result.csv)
    print(result.summary)
    if result.chart:
        print(result.chart)
    else:
        print("sweep: no chart.png: matplotlib is not installed (pip install 'viommu-sim[plot]')", file=sys.stderr)
    return 0
