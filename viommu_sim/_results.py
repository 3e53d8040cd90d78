"""What a run reports: the models' counters across the measured window, and the result dict.

Every figure comes from counters the models keep (no trace sinks): the guest virtio-iommu
driver's kicks, requests by type and stale-window sums, the VFIO container's map and unmap
ioctls, and the NVMe domain's invalidation statistics.  ``WindowCounters`` reads them, by
typed attribute access, when the window opens and when it closes; ``delta()`` is their
difference in the result's shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from models import MachineConfig
from models.guest import DmaApi

if TYPE_CHECKING:
    from models import Machine, VfioContainer
    from models.guest import GuestKernel, InvalidationPolicy, ViommuDriver

REQUEST_TYPES = ("ATTACH", "DETACH", "MAP", "UNMAP", "PROBE")


@attrs.frozen(kw_only=True)
class CounterSnapshot:
    """The counters a run reports, at one instant (zero for a model the machine does not have)."""

    kicks: int = 0
    #: requests sent, by type, in ``REQUEST_TYPES`` order
    requests: tuple[int, ...] = (0,) * len(REQUEST_TYPES)
    unmaps: int = 0
    stale_total_ps: int = 0
    #: the largest stale window since the window's start
    stale_max_ps: int = 0
    stale_p50_ps: int = 0
    stale_p99_ps: int = 0
    host_map_calls: int = 0
    host_unmap_calls: int = 0
    iotlb_flushes: int = 0
    #: IOVA ranges released after their invalidation, the sum of their windows, the largest since the start
    released: int = 0
    release_total_ps: int = 0
    release_max_ps: int = 0
    release_p50_ps: int = 0
    release_p99_ps: int = 0
    #: busy time (ps) so far of each vCPU, request_lock, the virtio-iommu handler (BQL), the NVMe data link
    cpu_busy_ps: tuple[int, ...] = ()
    request_lock_busy_ps: int = 0
    vmm_busy_ps: int = 0
    link_busy_ps: int = 0
    #: when the snapshot was taken
    at_ps: int = 0


class WindowCounters:
    """The model counters of the NVMe's I/O path, read at the window's start and end."""

    def __init__(self, kernel: GuestKernel, machine: Machine) -> None:
        self.kernel = kernel
        self.machine = machine
        self.viommu: ViommuDriver | None = kernel.boot.viommu
        nvme_fn = machine.nvme_pci
        assert nvme_fn is not None  # run_scenario refuses nvme="none"
        self.container: VfioContainer | None = (
            machine.host.containers.get(nvme_fn.bdf) if machine.host is not None else None)
        dma = kernel.devices[nvme_fn.bdf].dma
        self.cookie = dma.cookie if isinstance(dma, DmaApi) else None
        self.invalidation: InvalidationPolicy | None = self.cookie.invalidation if self.cookie is not None else None
        if self.viommu is not None:
            self.viommu.reset_stale_max()  # the job's own maximum
        if self.cookie is not None:
            self.cookie.reset_release_max()
        self.start = self._read()
        self.end: CounterSnapshot | None = None

    def stop(self) -> None:
        """Take the end snapshot now (the window closed)."""
        if self.end is None:
            self.end = self._read()

    def _read(self) -> CounterSnapshot:
        fields: dict[str, Any] = {}
        if self.viommu is not None:
            v = self.viommu.statistics()
            fields.update(kicks=v.kicks, unmaps=v.unmaps_completed, stale_total_ps=v.stale_total_ps,
                          stale_max_ps=v.stale_max_ps, stale_p50_ps=v.stale_p50_ps, stale_p99_ps=v.stale_p99_ps,
                          requests=v.requests)
        if self.container is not None:
            c = self.container.statistics()
            fields.update(host_map_calls=c.map_calls, host_unmap_calls=c.unmap_calls)
        if self.invalidation is not None:
            fields.update(iotlb_flushes=self.invalidation.statistics().invalidations_finished)
        if self.cookie is not None:
            rel = self.cookie.release_statistics()
            fields.update(released=rel.released, release_total_ps=rel.total_ps, release_max_ps=rel.max_ps,
                          release_p50_ps=rel.p50_ps, release_p99_ps=rel.p99_ps)
        fields.update(cpu_busy_ps=tuple(cpu.busy_ps() for cpu in self.kernel.cpus), at_ps=self.kernel.sim.now)
        if self.viommu is not None:
            fields.update(request_lock_busy_ps=self.viommu.request_lock_statistics().busy_ps)
        if self.machine.viommu is not None:
            fields.update(vmm_busy_ps=self.machine.viommu.handler_busy_ps())
        if self.machine.nvme is not None:
            fields.update(link_busy_ps=self.machine.nvme.link_busy_ps())
        return CounterSnapshot(**fields)

    def delta(self) -> dict[str, Any]:
        """The window's counters in the result's shape (``kicks``, ``requests``, ..., ``stale_window_us``)."""
        a, b = self.start, self.end if self.end is not None else self._read()
        unmaps = b.unmaps - a.unmaps
        stale_total = b.stale_total_ps - a.stale_total_ps
        released = b.released - a.released
        release_total = b.release_total_ps - a.release_total_ps
        return {
            "kicks": b.kicks - a.kicks,
            "requests": {t: end - start for t, start, end in zip(REQUEST_TYPES, a.requests, b.requests)},
            "host_map_calls": b.host_map_calls - a.host_map_calls,
            "host_unmap_calls": b.host_unmap_calls - a.host_unmap_calls,
            "iotlb_flushes": b.iotlb_flushes - a.iotlb_flushes,
            "stale_window_us": {
                "mean": round(stale_total / unmaps / 1e6, 3) if unmaps else 0.0,
                "p50": round(b.stale_p50_ps / 1e6, 3),
                "p99": round(b.stale_p99_ps / 1e6, 3),
                "max": round(b.stale_max_ps / 1e6, 3),
            },
            "utilisation": utilisation(a, b),
            # policy side: unmap -> the invalidation covering it completed and the IOVA was freed
            "invalidation_window_us": {
                "mean": round(release_total / released / 1e6, 3) if released else 0.0,
                "p50": round(b.release_p50_ps / 1e6, 3),
                "p99": round(b.release_p99_ps / 1e6, 3),
                "max": round(b.release_max_ps / 1e6, 3),
            },
        }


#: utilisation at or above which a resource counts as saturated (the run's bottleneck)
SATURATED = 0.9


def utilisation(a: CounterSnapshot, b: CounterSnapshot) -> dict[str, Any]:
    """Busy fraction over the window of each serialising resource: the busiest vCPU and the vCPUs'
    mean, request_lock (held across every kick and spin), the VMM's virtio-iommu handler (BQL), the
    NVMe data link.  ``bottleneck`` is the first saturated one (>= 90 %) in causal order, else
    "none": the VMM's handler (it runs inside request_lock), then request_lock (its waiters spin,
    which keeps their vCPUs busy too), the NVMe link, and last the vCPUs themselves."""
    span = b.at_ps - a.at_ps
    def frac(x: int) -> float:
        return round(min(x / span, 1.0), 3) if span > 0 else 0.0
    cpus = [frac(e - s) for s, e in zip(a.cpu_busy_ps, b.cpu_busy_ps)]
    out: dict[str, Any] = {
        "vcpu_max": max(cpus, default=0.0),
        "vcpu_mean": round(sum(cpus) / len(cpus), 3) if cpus else 0.0,
        "request_lock": frac(b.request_lock_busy_ps - a.request_lock_busy_ps),
        "vmm": frac(b.vmm_busy_ps - a.vmm_busy_ps),
        "nvme_link": frac(b.link_busy_ps - a.link_busy_ps),
    }
    saturated = [k for k in ("vmm", "request_lock", "nvme_link", "vcpu_max") if out[k] >= SATURATED]
    out["bottleneck"] = saturated[0] if saturated else "none"
    return out


#: the machine options a result echoes, in its order
_ECHOED = ("smp", "memory", "nvme", "aw_bits", "seed", "viommu", "flavor", "iommu_policy", "guest_kernel",
           "flush_queue", "map_batching", "initcall_blacklist", "modules", "host_iommu_pgsizes")


def machine_echo(config: MachineConfig, cost: dict[str, Any]) -> dict[str, Any]:
    """The result's ``machine``: the options the run used, and the cost overrides it was given."""
    echo: dict[str, Any] = {name: getattr(config, name) for name in _ECHOED}
    echo["initcall_blacklist"] = list(config.initcall_blacklist)
    echo["modules"] = list(config.modules)
    echo["cost"] = dict(sorted(cost.items()))
    return echo
