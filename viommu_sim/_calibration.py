"""The calibration: the published strict/lazy bandwidth table against the model with its default costs.

The published measurement (J.-P. Brucker on the Linux IOMMU list, 2023-08-02, in reply to
N. Schnelle's single-flush-queue RFC; see ``shared/reference/calibration.md``): an NVMe drive
assigned with VFIO to a KVM guest behind virtio-iommu, fio randwrite, 16 jobs x iodepth 16 x 64 KiB,
libaio, direct I/O; bandwidth relative to the same disk used by the host.

Each row of the table is one machine of the model (``ROWS``); every row runs the same fio job
(``JOB``) with ``ramp_time`` (the queue of 256 I/Os fills the disk's backlog at the start; fio's
own ramp_time serves the same purpose) and the bandwidth is taken over ``runtime`` after it.  The
calibration machine is **the default machine** (4 vCPUs; the guest's vCPU count is not published).

What serialises the syncs on several vCPUs is the guest's ``request_lock``: every kick, QEMU's
handling of it under the BQL in the kicking vCPU's thread, the VFIO ioctls of its IOMMU notifiers
and the guest's spin until the used entries arrive all happen inside it.  It is a spinlock, and in a
KVM guest without paravirtual spinlocks (QEMU's CPU models do not offer ``kvm-pv-unhalt`` by
default) Linux's ``virt_spin_lock`` makes it test-and-set and unfair: a CPU that leaves it after
``viommu_add_req`` takes it back for ``viommu_sync_req`` before a spinning CPU sees the release
(``models/guest/_spinlock.py``), so a strict UNMAP pays its own kick on any vCPU count and the lock
saturates: the strict/lazy gap of the table.  Each row reports where its time goes: the busy
fraction of request_lock, the VMM's handler (BQL), the vCPUs and the NVMe link over the window.

Fitted to this table: ``viommu_notify_ps``, ``vfio_map_ioctl_ps``, ``vfio_unmap_ioctl_ps``,
``host_iotlb_inval_ps`` (CostModel) and the job's ``contig_pages`` default (how physically
contiguous fio's buffers are: not published either).  Everything else keeps its documented
first estimate.  Latency is not calibrated: ``run`` reports what the model predicts.
"""

from __future__ import annotations

import concurrent.futures
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ._workload import run_scenario

#: the fio job of the measurement; ``runtime``/``ramp_time`` are the simulation's window (seconds)
JOB: dict[str, Any] = {"rw": "randwrite", "bs": "64k", "numjobs": 16, "iodepth": 16,
                       "runtime": 0.1, "ramp_time": 0.1}
#: the calibration machine: the default machine's 4 vCPUs (see the module note)
CALIBRATION_SMP = 4
#: runs per row (machine seeds 0..REPETITIONS-1), averaged: the measurement averaged 30 or more runs
REPETITIONS = 5
#: the tolerance of the issue: each row within this many percentage points of the published figure
TOLERANCE_PP = 3.0


def _options(options: Mapping[str, Any]) -> dict[str, Any]:
    return dict(options)


def _costs(costs: Mapping[str, int]) -> dict[str, int]:
    return dict(costs)


@attrs.frozen
class Row:
    """One configuration of the table: its label, the published figure and the model's machine."""

    label: str
    published_pct: float
    machine: dict[str, Any] = attrs.field(converter=_options)
    #: cost overrides of this row (the host row only: a bare-metal machine has no interrupt injection)
    cost: dict[str, int] = attrs.field(factory=dict, converter=_costs)


_VIOMMU = {"viommu": "on", "guest_kernel": "6.12"}
#: the published table (percent of the host's bandwidth), each row as a machine of the model
ROWS: tuple[Row, ...] = (
    Row("host (no virtualisation)", 100.0, {"viommu": "none"}, {"irq_delivery_ps": 0}),
    Row("guest, no vIOMMU", 99.9, {"viommu": "none"}),
    Row("virtio-iommu lazy, single queue, +map", 99.9,
        {**_VIOMMU, "iommu_policy": "lazy", "flush_queue": "single", "map_batching": "on"}),
    Row("virtio-iommu lazy, per-CPU queues, +map", 99.9,
        {**_VIOMMU, "iommu_policy": "lazy", "flush_queue": "percpu", "map_batching": "on"}),
    Row("virtio-iommu lazy, single queue", 92.2,
        {**_VIOMMU, "iommu_policy": "lazy", "flush_queue": "single", "map_batching": "off"}),
    Row("virtio-iommu lazy, per-CPU queues", 91.5,
        {**_VIOMMU, "iommu_policy": "lazy", "flush_queue": "percpu", "map_batching": "off"}),
    Row("virtio-iommu strict, +map", 92.7, {**_VIOMMU, "iommu_policy": "strict", "map_batching": "on"}),
    Row("virtio-iommu strict", 81.3, {**_VIOMMU, "iommu_policy": "strict", "map_batching": "off"}),
)


def _run_row(args: tuple[Row, int, int, dict[str, Any], str]) -> dict[str, Any]:
    row, smp, seed, job, detail = args
    return run_scenario({**row.machine, "smp": smp, "seed": seed, "detail": detail}, job, row.cost)


def run(smp: int = CALIBRATION_SMP, job: dict[str, Any] | None = None, *, repetitions: int = REPETITIONS,
        workers: int | None = None, rows: Sequence[Row] = ROWS, detail: str = "fast") -> list[dict[str, Any]]:
    """Run every row ``repetitions`` times (machine seeds 0, 1, ...: each repetition lays out fio's
    buffers anew, as each run of the real benchmark did) on ``smp`` vCPUs, in a process pool of
    ``workers`` processes (None: one per CPU; 1: in this process, one after the other), at the
    level of detail ``detail`` (``MachineConfig.detail``; the transaction level by default: same results).

    One dict per row, in table order: label, published_pct, model_pct (mean bandwidth relative to
    the first row's), min_pct / max_pct (single repetitions), delta_pp, within (``|delta| <=
    TOLERANCE_PP``), bandwidth_mib_s, latency_us (mean over repetitions of mean and p99),
    kicks_per_io, maps_per_io, busy (mean busy fraction of request_lock, vmm, vcpu_mean, nvme_link)
    and bottleneck (the one saturated in most repetitions, or "none")."""
    job = {**JOB, **(job or {})}
    tasks = [(row, smp, seed, job, detail) for row in rows for seed in range(repetitions)]
    if workers == 1:
        results = [_run_row(t) for t in tasks]
    else:
        # Each task is a machine of its own (a fresh Simulator, seeded by the row's machine), so where
        # and in which order it runs cannot change its result: the pool's table is the sequential one
        # (test_the_process_pool_gives_the_sequential_results).  The costlier rows (vIOMMU on) are
        # submitted first so that the pool does not end waiting on one long run.
        order = sorted(range(len(tasks)), key=lambda i: (tasks[i][0].machine.get("viommu") == "none", i))
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {i: pool.submit(_run_row, tasks[i]) for i in order}
            results = [futures[i].result() for i in range(len(tasks))]
    per_row = [results[i * repetitions:(i + 1) * repetitions] for i in range(len(rows))]
    base = statistics.fmean(r["bandwidth_mib_s"] for r in per_row[0])
    out = []
    for row, reps in zip(rows, per_row):
        bws = [r["bandwidth_mib_s"] for r in reps]
        pct = 100.0 * statistics.fmean(bws) / base if base else 0.0
        ios = max(sum(r["ios"] for r in reps), 1)
        out.append({
            "label": row.label,
            "published_pct": row.published_pct,
            "model_pct": round(pct, 1),
            "min_pct": round(100.0 * min(bws) / base, 1) if base else 0.0,
            "max_pct": round(100.0 * max(bws) / base, 1) if base else 0.0,
            "delta_pp": round(round(pct, 1) - row.published_pct, 1),
            "within": abs(round(pct, 1) - row.published_pct) <= TOLERANCE_PP,
            "bandwidth_mib_s": round(statistics.fmean(bws), 1),
            "latency_us": {k: round(statistics.fmean(r["latency_us"][k] for r in reps), 1) for k in ("mean", "p99")},
            "kicks_per_io": round(sum(r["kicks"] for r in reps) / ios, 2),
            "maps_per_io": round(sum(r["requests"]["MAP"] for r in reps) / ios, 2),
            "busy": {k: round(statistics.fmean(r["utilisation"][k] for r in reps), 2)
                     for k in ("request_lock", "vmm", "vcpu_mean", "nvme_link")},
            "bottleneck": statistics.mode(r["utilisation"]["bottleneck"] for r in reps),
        })
    return out


def table(entries: list[dict[str, Any]]) -> str:
    """The side-by-side table as text (published, model mean and range, difference, predicted latency)."""
    width = max(len(e["label"]) for e in entries)
    lines = [f"{'configuration':<{width}}  published   model  (range)        delta  ok    MiB/s  "
             f"latency mean / p99 us  kicks/io  MAP/io   busy: lock  VMM  vCPU  link  bottleneck"]
    for e in entries:
        lat, busy = e["latency_us"], e["busy"]
        rng = f"({e['min_pct']:.1f}-{e['max_pct']:.1f})"
        lines.append(f"{e['label']:<{width}}  {e['published_pct']:8.1f}%  {e['model_pct']:5.1f}%  {rng:<13s}  "
                     f"{e['delta_pp']:+5.1f}  {'yes' if e['within'] else 'NO ':3s}  {e['bandwidth_mib_s']:7.1f}  "
                     f"{lat['mean']:10.0f} / {lat['p99']:<8.0f}  {e['kicks_per_io']:8.2f}  {e['maps_per_io']:6.2f}"
                     f"   {busy['request_lock']:9.0%} {busy['vmm']:4.0%} {busy['vcpu_mean']:5.0%} "
                     f"{busy['nvme_link']:5.0%}  {e['bottleneck']}")
    return "\n".join(lines)
