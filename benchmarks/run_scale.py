"""Long ``viommu-sim run`` workloads: simulation speed, and memory that does not grow with run length.

Runs one fio-like job (default: randrw, 4 KiB, 4 jobs x iodepth 16, Linux 6.12 lazy,
the VFIO NVMe, at ``run``'s default level of detail, fast) for N and for 4N I/Os, each in a fresh child process, and prints per
run: wall time, simulated I/Os per wall second, and the child's peak RSS
(``resource.getrusage``: ``ru_maxrss``).  A boot-only child (1 I/O) gives the
baseline, and each run's CPU per I/O beyond it is also printed in the unit of issue 12: the CPU of
one SimPy timer wake-up, measured in this process on ``benchmarks/kernel_vs_simpy.py``'s workload.  Memory is bounded because the workload keeps latencies in a fixed-size
histogram and addresses at most ``size`` bytes (4 MiB here) of the namespace; the last
line prints the peak-RSS growth from N to 4N (target: a few MiB at most, i.e. not
proportional to N).

    python benchmarks/run_scale.py              # N = 50,000 and 200,000 (about 2 minutes on 2 cores)
    python benchmarks/run_scale.py --ios 250000 # N = 250,000 and 1,000,000 (about 8 minutes)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: at ``run``'s default level of detail (fast: the same results as full, tests/test_detail_equivalence.py)
MACHINE: dict[str, Any] = {"guest_kernel": "6.12", "iommu_policy": "lazy", "detail": "fast"}
JOB: dict[str, Any] = {"rw": "randrw", "bs": 4096, "numjobs": 4, "iodepth": 16, "size": "4M"}


def child(ios: int, machine: dict[str, Any], job: dict[str, Any]) -> None:
    """Run the job once and print one JSON line: wall and CPU time, result figures, peak RSS."""
    from viommu_sim._workload import run_scenario

    t0, c0 = time.perf_counter(), time.process_time()
    r = run_scenario(machine, {**job, "ios": ios})
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"ios": r["ios"], "wall_s": wall, "cpu_s": cpu, "iops": r["iops"], "kicks": r["kicks"],
                      "sim_time_s": r["sim_time_s"], "peak_rss_mib": peak_kib / 1024}))


def measure(ios: int, *, machine: dict[str, Any] | None = None, job: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``ios`` I/Os of ``job`` on ``machine`` (default: this module's) in a fresh child process."""
    spec = json.dumps({"machine": MACHINE if machine is None else machine, "job": JOB if job is None else job})
    out = subprocess.run([sys.executable, __file__, "--child", str(ios), "--spec", spec], capture_output=True,
                         text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def simpy_wakeup_cpu() -> float:
    """CPU seconds of one SimPy timer wake-up (``kernel_vs_simpy.simpy_wakeup_cpu``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from kernel_vs_simpy import simpy_wakeup_cpu as measure

    return measure()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--ios", type=int, default=50_000, help="N: the shorter run's I/Os (the longer is 4N)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        spec = json.loads(args.spec) if args.spec else {"machine": MACHINE, "job": JOB}
        child(args.child, spec["machine"], spec["job"])
        return
    print(f"job: {JOB}, machine: {MACHINE}")
    unit = simpy_wakeup_cpu()
    print(f"unit: one SimPy timer wake-up = {unit * 1e6:.3f} us CPU (this process)")
    base = measure(1)
    print(f"boot only (1 I/O): wall {base['wall_s']:.2f} s, peak RSS {base['peak_rss_mib']:.1f} MiB")
    rows = []
    for n in (args.ios, 4 * args.ios):
        r = measure(n)
        rows.append(r)
        rate = r["ios"] / r["wall_s"]
        per_io = (r["cpu_s"] - base["cpu_s"]) / max(r["ios"], 1)
        print(f"N={r['ios']:>9,}: wall {r['wall_s']:7.1f} s, {rate:7.0f} simulated I/Os per wall second, "
              f"simulated {r['sim_time_s']:.3f} s at {r['iops']:.0f} IOPS, peak RSS {r['peak_rss_mib']:.1f} MiB; "
              f"CPU per I/O {per_io * 1e6:.1f} us = {per_io / unit:.0f} SimPy wake-ups")
    growth = rows[1]["peak_rss_mib"] - rows[0]["peak_rss_mib"]
    print(f"peak RSS growth from N to 4N: {growth:+.1f} MiB "
          f"({growth * 1024 / (rows[1]['ios'] - rows[0]['ios']) * 1024:+.1f} bytes per extra I/O)")


if __name__ == "__main__":
    main()
