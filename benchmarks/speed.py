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

The targets are measured at ``--detail`` (default ``fast``: what ``run`` and ``sweep`` use; ``full``
to measure the byte level against them), and (a)-(c) are measured at the other level too in the
same repetitions and printed beneath as a reference (not a target): the two levels give identical
results (tests/test_detail_equivalence.py), so the ratio between them is what the transaction
level saves.  The last line counts the targets met.

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


def replay(path: str, detail: str) -> Callable[[], object]:
    """``viommu-sim replay --detail DETAIL PATH`` in this process, its output to /dev/null."""
    from viommu_sim.cli import main as cli_main

    def go() -> None:
        with open(os.devnull, "w", encoding="utf-8") as null, contextlib.redirect_stdout(null):
            rc = cli_main(["replay", "--detail", detail, path])
        if rc:
            raise SystemExit(f"viommu-sim replay {path} exited {rc}")
    return go


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--detail", choices=("full", "fast"), default="fast",
                    help="level of detail the targets are measured at (default fast, as run and sweep)")
    ap.add_argument("--ios", type=int, default=8000, help="N of (a): I/Os per run with the vIOMMU on")
    ap.add_argument("--ios-none", type=int, default=16000, help="N of (b): I/Os per run with viommu none")
    ap.add_argument("--requests", type=int, default=8000, help="N of (c): replayed MAP+UNMAP requests (even)")
    ap.add_argument("--repetitions", type=int, default=5, help="runs per figure; the median is reported")
    ap.add_argument("--million", action="store_true", help="also (e): 1,000,000 I/Os in a child (minutes today)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 1 repetition")
    args = ap.parse_args(argv)
    if args.quick:
        args.ios, args.ios_none, args.requests, args.repetitions = 40, 40, 40, 1
    other = "full" if args.detail == "fast" else "fast"
    header = f"detail: {args.detail} (reference: {other})"
    durs = durations()
    with tempfile.TemporaryDirectory() as tmp:
        attach_only = replay_file(tmp, "attach.jsonl", 0)
        stream = replay_file(tmp, "stream.jsonl", args.requests // 2)
        nreq = 2 * (args.requests // 2)
        # one callable per measured quantity; every repetition runs them all, in this order
        work: dict[str, Callable[[], object]] = {"simpy": lambda: run_simpy(durs), "kernel": lambda: run_kernel(durs)}
        for level in (args.detail, other):
            machine = {**MACHINE, "detail": level}
            none = {**machine, "viommu": "none"}
            work |= {
                f"on_1.{level}": scenario(machine, JOB, 1), f"on_n.{level}": scenario(machine, JOB, args.ios),
                f"none_1.{level}": scenario(none, JOB, 1), f"none_n.{level}": scenario(none, JOB, args.ios_none),
                f"replay_0.{level}": replay(attach_only, level), f"replay_n.{level}": replay(stream, level),
            }
        for key in work:  # warm-up: imports, caches, the machine's data files
            if key.startswith(("on_1", "none_1", "replay_0")):
                work[key]()
        samples: dict[str, list[float]] = {k: [] for k in work}
        per: dict[str, list[float]] = {f"{q}.{level}": [] for q in "abc" for level in (args.detail, other)}
        for _ in range(args.repetitions):
            t = {k: cpu(fn) for k, fn in work.items()}
            for k, v in t.items():
                samples[k].append(v)
            for level in (args.detail, other):
                per[f"a.{level}"].append((t[f"on_n.{level}"] - t[f"on_1.{level}"]) / args.ios)
                per[f"b.{level}"].append((t[f"none_n.{level}"] - t[f"none_1.{level}"]) / args.ios_none)
                per[f"c.{level}"].append((t[f"replay_n.{level}"] - t[f"replay_0.{level}"]) / max(nreq, 1))
    unit = statistics.median(samples["simpy"]) / WAKEUPS
    ratio = statistics.median(s / k for s, k in zip(samples["simpy"], samples["kernel"]))
    med = {k: statistics.median(v) for k, v in per.items()}

    print(f"speed (issue 12), {header}; CPU time (process_time), median of {args.repetitions}; "
          f"unit: one SimPy timer wake-up = {unit * 1e6:.3f} us CPU ({WAKEUPS:,} wake-ups in "
          f"{statistics.median(samples['simpy']):.3f} s)")
    rows = [
        ("a", f"full-stack I/O, vIOMMU on (6.12 lazy, randread 4k, 4 x iodepth 32), N={args.ios}", TARGET_IO_VIOMMU,
         "on_1"),
        ("b", f"full-stack I/O, viommu none (same job), N={args.ios_none}", TARGET_IO_NONE, "none_1"),
        ("c", f"replayed MAP or UNMAP (CLI replay, JSONL), N={nreq}", TARGET_REPLAY, "replay_0"),
    ]
    met = 0
    total = 0
    for key, label, target, base in rows:
        w = med[f"{key}.{args.detail}"] / unit
        ok = w <= target
        met += ok
        total += 1
        print(f"({key}) {label}: {w:7.1f} wake-ups (target <= {target:.0f}) {verdict(ok)}  "
              f"[{med[f'{key}.{args.detail}'] * 1e6:.1f} us CPU per unit; baseline run "
              f"{statistics.median(samples[f'{base}.{args.detail}']):.3f} s]")
        ref = med[f"{key}.{other}"] / unit
        print(f"    at detail {other}: {ref:7.1f} wake-ups ({other}/{args.detail} = "
              f"{med[f'{key}.{other}'] / med[f'{key}.{args.detail}']:.2f})")
    ok = ratio >= TARGET_KERNEL_RATIO
    met += ok
    total += 1
    print(f"(d) kernel/simpy throughput ratio, await sleep(d): {ratio:.2f} (target >= {TARGET_KERNEL_RATIO}) "
          f"{verdict(ok)}  [kernel {statistics.median(samples['kernel']):.3f} s CPU]")
    if args.million:
        from run_scale import measure  # a fresh child process: its peak RSS is the run's own
        r = measure(1_000_000, job=JOB, machine={**MACHINE, "detail": args.detail})
        ok = r["wall_s"] < TARGET_MILLION_S
        met += ok
        total += 1
        print(f"(e) 1,000,000 I/Os, vIOMMU on: {r['wall_s']:.1f} s wall (target < {TARGET_MILLION_S:.0f} s) "
              f"{verdict(ok)}  [peak RSS {r['peak_rss_mib']:.1f} MiB, {r['ios'] / r['wall_s']:,.0f} I/Os per s]")
    print(f"speed: {met}/{total} targets met ({header})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
