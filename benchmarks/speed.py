"""Issue 12's speed targets in one run: CPU per unit of work, in SimPy timer wake-ups measured alongside.

The unit is the CPU time (``time.process_time``) of one SimPy timer wake-up, measured in this
process on the workload of ``benchmarks/kernel_vs_simpy.py`` (100 processes x 2,000 timeouts;
the run's CPU divided by its 200,000 wake-ups), so the figures do not depend on the machine's
speed.  Each figure is the median over ``--repetitions`` runs, the runs of the different figures
interleaved so that a change in the machine's load touches all of them alike:

(a) one full-stack 4 KiB I/O with the vIOMMU on: machine {guest_kernel 6.12, iommu_policy lazy},
    job randread 4k, iodepth 32, numjobs 4; the CPU of a run of N I/Os minus that of the same run
    with 1 I/O (the boot), over N (target <= 60 wake-ups);
(b) the same with ``viommu: none`` (target <= 25);
(c) one replayed MAP or UNMAP: ``viommu-sim replay`` (the CLI, in this process, output to
    /dev/null) of a JSONL stream of the ATTACH of the NVMe then N alternating MAP/UNMAP requests,
    minus the same stream with the ATTACH alone, over N (target <= 30);
(d) the kernel's throughput against SimPy's on the same wake-ups, ``await sleep(d)`` (target >= 1.5);
(e) with ``--million``: 1,000,000 I/Os with the vIOMMU on through ``benchmarks/run_scale.py``'s
    child (a fresh process), wall time and peak RSS (target < 60 s wall).

``--detail full|fast`` is passed to ``run_scenario`` as the option ``detail`` when the job or the
machine options have one (the transaction-level path of issue 12); without it the default path
is measured and the header says so.  The last line counts the targets met.

    python benchmarks/speed.py            # about 1-2 minutes on 2 cores
    python benchmarks/speed.py --quick    # a smoke run: tiny sizes, 1 repetition
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernel_vs_simpy import WAKEUPS, durations, run_kernel, run_simpy  # noqa: E402

from models import machine_options  # noqa: E402
from viommu_sim._job import JOB_OPTIONS  # noqa: E402
from viommu_sim._workload import run_scenario  # noqa: E402

MACHINE: dict[str, Any] = {"guest_kernel": "6.12", "iommu_policy": "lazy"}
JOB: dict[str, Any] = {"rw": "randread", "bs": "4k", "iodepth": 32, "numjobs": 4}
#: the VFIO NVMe of the default machine (00:04.0), the endpoint the replayed stream attaches
NVME_ENDPOINT = 0x20
IOVA, PHYS = 1 << 32, 0x1_0000_0000

#: the targets of issue 12 (wake-ups per unit of work; the kernel ratio and the wall time)
TARGET_IO_VIOMMU = 60.0
TARGET_IO_NONE = 25.0
TARGET_REPLAY = 30.0
TARGET_KERNEL_RATIO = 1.5
TARGET_MILLION_S = 60.0


def cpu(fn: Callable[[], object]) -> float:
    """CPU seconds of one call of ``fn`` (collected garbage first, outside the measurement)."""
    gc.collect()
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def detail_option(detail: str | None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(header text, machine extra, job extra) for ``--detail``: where ``run_scenario`` takes it."""
    if detail is None:
        return "detail: default", {}, {}
    if any(o.name == "detail" for o in JOB_OPTIONS):
        return f"detail: {detail} (job option)", {}, {"detail": detail}
    if any(s.name == "detail" for s in machine_options()):
        return f"detail: {detail} (machine option)", {"detail": detail}, {}
    return "detail: default (no --detail option yet)", {}, {}


def scenario(machine: dict[str, Any], job: dict[str, Any], ios: int) -> Callable[[], object]:
    return lambda: run_scenario(machine, {**job, "ios": ios})


def replay_file(directory: str, name: str, pairs: int) -> str:
    """A JSONL stream: ATTACH the NVMe to domain 1, then ``pairs`` x (MAP page i, UNMAP page i)."""
    lines = [f'{{"op": "attach", "domain": 1, "endpoint": {NVME_ENDPOINT}}}']
    for i in range(pairs):
        va, pa = IOVA + i * 4096, PHYS + i * 4096
        lines.append(f'{{"op": "map", "domain": 1, "virt_start": {va}, "virt_end": {va + 4095}, '
                     f'"phys_start": {pa}, "flags": 3}}')
        lines.append(f'{{"op": "unmap", "domain": 1, "virt_start": {va}, "virt_end": {va + 4095}}}')
    path = os.path.join(directory, name)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def replay(path: str) -> Callable[[], object]:
    """``viommu-sim replay PATH`` in this process, its output to /dev/null."""
    from viommu_sim.cli import main as cli_main

    def go() -> None:
        with open(os.devnull, "w", encoding="utf-8") as null, contextlib.redirect_stdout(null):
            rc = cli_main(["replay", path])
        if rc:
            raise SystemExit(f"viommu-sim replay {path} exited {rc}")
    return go


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--detail", choices=("full", "fast"), help="level of detail of run_scenario (when it has one)")
    ap.add_argument("--ios", type=int, default=8000, help="N of (a): I/Os per run with the vIOMMU on")
    ap.add_argument("--ios-none", type=int, default=16000, help="N of (b): I/Os per run with viommu none")
    ap.add_argument("--requests", type=int, default=8000, help="N of (c): replayed MAP+UNMAP requests (even)")
    ap.add_argument("--repetitions", type=int, default=5, help="runs per figure; the median is reported")
    ap.add_argument("--million", action="store_true", help="also (e): 1,000,000 I/Os in a child (minutes today)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 1 repetition")
    args = ap.parse_args(argv)
    if args.quick:
        args.ios, args.ios_none, args.requests, args.repetitions = 40, 40, 40, 1
    header, m_extra, j_extra = detail_option(args.detail)
    machine, job = {**MACHINE, **m_extra}, {**JOB, **j_extra}
    none = {**machine, "viommu": "none"}
    durs = durations()
    with tempfile.TemporaryDirectory() as tmp:
        attach_only = replay_file(tmp, "attach.jsonl", 0)
        stream = replay_file(tmp, "stream.jsonl", args.requests // 2)
        nreq = 2 * (args.requests // 2)
        # one callable per measured quantity; every repetition runs them all, in this order
        work: dict[str, Callable[[], object]] = {
            "simpy": lambda: run_simpy(durs), "kernel": lambda: run_kernel(durs),
            "on_1": scenario(machine, job, 1), "on_n": scenario(machine, job, args.ios),
            "none_1": scenario(none, job, 1), "none_n": scenario(none, job, args.ios_none),
            "replay_0": replay(attach_only), "replay_n": replay(stream),
        }
        for key in ("on_1", "none_1", "replay_0"):  # warm-up: imports, caches, the machine's data files
            work[key]()
        samples: dict[str, list[float]] = {k: [] for k in work}
        per: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        for _ in range(args.repetitions):
            t = {k: cpu(fn) for k, fn in work.items()}
            for k, v in t.items():
                samples[k].append(v)
            per["a"].append((t["on_n"] - t["on_1"]) / args.ios)
            per["b"].append((t["none_n"] - t["none_1"]) / args.ios_none)
            per["c"].append((t["replay_n"] - t["replay_0"]) / max(nreq, 1))
    unit = statistics.median(samples["simpy"]) / WAKEUPS
    ratio = statistics.median(s / k for s, k in zip(samples["simpy"], samples["kernel"]))
    med = {k: statistics.median(v) for k, v in per.items()}

    print(f"speed (issue 12), {header}; CPU time (process_time), median of {args.repetitions}; "
          f"unit: one SimPy timer wake-up = {unit * 1e6:.3f} us CPU ({WAKEUPS:,} wake-ups in "
          f"{statistics.median(samples['simpy']):.3f} s)")
    rows = [
        ("a", f"full-stack I/O, vIOMMU on (6.12 lazy, randread 4k, 4 x iodepth 32), N={args.ios}", TARGET_IO_VIOMMU,
         samples["on_1"]),
        ("b", f"full-stack I/O, viommu none (same job), N={args.ios_none}", TARGET_IO_NONE, samples["none_1"]),
        ("c", f"replayed MAP or UNMAP (CLI replay, JSONL), N={nreq}", TARGET_REPLAY, samples["replay_0"]),
    ]
    met = 0
    total = 0
    for key, label, target, base in rows:
        w = med[key] / unit
        ok = w <= target
        met += ok
        total += 1
        print(f"({key}) {label}: {w:7.1f} wake-ups (target <= {target:.0f}) {verdict(ok)}  "
              f"[{med[key] * 1e6:.1f} us CPU per unit; baseline run {statistics.median(base):.3f} s]")
    ok = ratio >= TARGET_KERNEL_RATIO
    met += ok
    total += 1
    print(f"(d) kernel/simpy throughput ratio, await sleep(d): {ratio:.2f} (target >= {TARGET_KERNEL_RATIO}) "
          f"{verdict(ok)}  [kernel {statistics.median(samples['kernel']):.3f} s CPU]")
    if args.million:
        from run_scale import measure  # a fresh child process: its peak RSS is the run's own
        r = measure(1_000_000, job=job, machine=machine)
        ok = r["wall_s"] < TARGET_MILLION_S
        met += ok
        total += 1
        print(f"(e) 1,000,000 I/Os, vIOMMU on: {r['wall_s']:.1f} s wall (target < {TARGET_MILLION_S:.0f} s) "
              f"{verdict(ok)}  [peak RSS {r['peak_rss_mib']:.1f} MiB, {r['ios'] / r['wall_s']:,.0f} I/Os per s]")
    print(f"speed: {met}/{total} targets met ({header})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
