"""The calibration benchmark: the published strict/lazy bandwidth table, side by side with the model.

Runs the eight configurations of ``shared/reference/calibration.md`` (fio randwrite, 16 jobs x
iodepth 16 x 64 KiB, VFIO NVMe behind virtio-iommu) through the whole stack with the default
cost model, and prints each row's published bandwidth (percent of the host), the model's, the
difference and whether it is within the tolerance (3 percentage points), with the latency the
model predicts (not calibrated).  Exit status 1 when a row is outside the tolerance.

    python benchmarks/calibration.py                 # the calibration machine (4 vCPUs): 8 rows x 5 runs
    python benchmarks/calibration.py --smp 1,2,4,8   # how the rows move with the vCPU count (4 is the fit)
    python benchmarks/calibration.py --workers 1     # the same table, every machine in this process in turn

Each row also shows where its time goes: the busy fraction over the window of the guest's
request_lock, the VMM's virtio-iommu handler (under the BQL), the vCPUs (mean) and the NVMe's
link, and the bottleneck (the saturated one).

The last line is the wall time and the number of worker processes; every line before it is the
same whatever ``--workers`` is (each machine is a deterministic simulation of its own).

What the rows are, and what serialises the syncs on 4 vCPUs: viommu_sim/_calibration.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from viommu_sim._calibration import CALIBRATION_SMP, JOB, REPETITIONS, TOLERANCE_PP, run, table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--smp", type=_smp_list, default=[CALIBRATION_SMP],
                    help=f"guest vCPU counts, comma-separated (default: the calibration's {CALIBRATION_SMP})")
    ap.add_argument("--runtime", type=float, default=JOB["runtime"], help="measured simulated seconds per row")
    ap.add_argument("--ramp-time", type=float, default=JOB["ramp_time"], help="simulated seconds before measuring")
    ap.add_argument("--repetitions", type=int, default=REPETITIONS, help="runs per row, averaged (machine seeds 0..N-1)")
    ap.add_argument("--workers", type=int, default=None,
                    help="worker processes (default: one per CPU; 1: sequential, in this process)")
    ap.add_argument("--detail", choices=("full", "fast"), default="fast",
                    help="level of detail (MachineConfig.detail; default fast: the same results, faster)")
    args = ap.parse_args()
    status = 0
    for smp in args.smp:
        t0 = time.perf_counter()
        entries = run(smp, {"runtime": args.runtime, "ramp_time": args.ramp_time}, repetitions=args.repetitions,
                      workers=args.workers, detail=args.detail)
        wall = time.perf_counter() - t0
        print(f"fio randwrite 16 jobs x iodepth 16 x 64 KiB, {smp} vCPU(s), ramp {args.ramp_time} s + "
              f"{args.runtime} s simulated per run, {args.repetitions} runs per row, detail {args.detail}; "
              f"bandwidth: the mean over the "
              f"runs, relative to the first row's (range: single runs)")
        print(table(entries))
        worst = max(abs(e["delta_pp"]) for e in entries)
        inside = sum(e["within"] for e in entries)
        print(f"{inside}/{len(entries)} rows within +-{TOLERANCE_PP:.0f} pp (largest difference {worst:.1f} pp)")
        if smp != CALIBRATION_SMP:
            print(f"(a prediction for {smp} vCPUs: the published table was fitted on {CALIBRATION_SMP})")
        elif inside != len(entries):
            status = 1
        workers = args.workers or os.cpu_count() or 1
        print(f"wall: {wall:.1f} s, {workers} worker process{'es' if workers > 1 else ''}")
        print()
    return status


def _smp_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --smp {text!r} (vCPU counts, e.g. 1,2,4,8)") from None
    if not values or any(not 1 <= v <= 255 for v in values):
        raise argparse.ArgumentTypeError(f"invalid --smp {text!r} (each from 1 to 255)")
    return values


if __name__ == "__main__":
    sys.exit(main())
