"""The host side of device assignment: VFIO type1 containers over the host IOMMU.

Models what QEMU's VFIO code does for a device behind a vIOMMU (hw/vfio/listener.c,
formerly hw/vfio/common.c) and what the Linux ``vfio_iommu_type1`` driver does with
the resulting ioctls:

* one container per assigned device (one VFIO group each); while the device's DMA
  address space is plain system memory (vIOMMU bypass) the container maps all guest
  RAM 1:1 (``vfio_listener_region_add`` of the RAM sections);
* when the vIOMMU switches the device to its IOMMU region, the RAM mappings are
  unmapped and an IOMMU notifier (MAP|UNMAP over the whole 64-bit section) is
  registered, which replays the existing guest mappings; switching back reverses it;
* ``vfio_iommu_map_notify`` turns each notifier event into ``VFIO_IOMMU_MAP_DMA`` or
  ``VFIO_IOMMU_UNMAP_DMA``; errors are only logged (``error_report``), never
  reported to the guest;
* the host IOMMU page table of a container is a sorted map of DMA mappings with the
  type1 rules: alignment to the smallest host page size, ``-EEXIST`` on overlap,
  ``dma_entry_limit`` (65535), unmaps that would bisect a mapping refused with
  ``-EINVAL`` (type1v2); pinned pages are counted in 4 KiB units.

Every ioctl returns its cost in ps from the CostModel; callers charge it to the
vIOMMU request that caused it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import attrs
from sortedcontainers import SortedDict

from sim import Simulator

from ._cost import CostModel
from ._errno import EEXIST, EINVAL, ENOSPC, strerror
from ._iommu_notify import IOMMU_NONE, IOMMU_WO, IOTLB_EVENTS, IommuMemoryRegion, IommuNotifier, TlbEntry
from ._memory import HOST_PAGE_SIZE, GuestMemory
from ._wire import U64

#: vfio_iommu_type1 module parameter default
DMA_ENTRY_LIMIT = 65535

#: a fault hook on VFIO_IOMMU_MAP_DMA: called with (container, iova, size, paddr) for a map that passed
#: the argument checks; returns 0, or a negative errno the ioctl then fails with
MapFaultHook = Callable[["VfioContainer", int, int, int], int]


@attrs.frozen
class HostMapping:
    """One VFIO DMA mapping: IOVA range -> guest-physical (host-virtual) range."""

    iova: int
    size: int
    paddr: int
    readonly: bool

    @property
    def last(self) -> int:
        return self.iova + self.size - 1


@attrs.frozen(kw_only=True)
class VfioContainerStats:
    """One VFIO container's counters at one instant (``VfioContainer.statistics()``)."""

    #: ``VFIO_IOMMU_MAP_DMA`` ioctls, failed ones included
    map_calls: int
    #: ``VFIO_IOMMU_UNMAP_DMA`` ioctls, failed ones included
    unmap_calls: int
    #: of those, the ones that failed
    map_errors: int
    unmap_errors: int
    #: host pages pinned now (4 KiB units)
    pinned_pages: int
    #: host IOMMU mappings now
    mappings: int


@attrs.frozen(kw_only=True)
class HostVfioStats:
    """The host's VFIO counters at one instant (``HostVfio.statistics()``)."""

    #: QEMU ``error_report`` lines VFIO logged
    errors: int
    #: host pages pinned now, over all containers (4 KiB units)
    pinned_pages: int


@attrs.define(eq=False)
class VfioGuestIommu(IommuNotifier):
    """VFIOGuestIOMMU: the notifier VFIO registers on an IOMMU region, bound to its container."""

    container: VfioContainer | None = attrs.field(default=None, kw_only=True)


class VfioContainer:
    """A VFIO container with its host IOMMU page table and pinned-page accounting."""

    def __init__(self, host: HostVfio, bdf: int) -> None:
        self.host = host
        self.bdf = bdf
        self.name = f"vfio-{bdf >> 8:02x}:{(bdf >> 3) & 0x1F:02x}.{bdf & 7}"
        self.table: SortedDict[int, HostMapping] = SortedDict()
        # counters (read with statistics())
        self._pinned_pages = 0
        self._map_calls = 0
        self._unmap_calls = 0
        self._map_errors = 0
        self._unmap_errors = 0
        self.giommu: VfioGuestIommu | None = None
        self.giommu_mr: IommuMemoryRegion | None = None
        self.translated = False
        self.ever_translated = False
        #: the host IOMMU's IOTLB: the mapping that translated each 4 KiB IOVA page last, dropped
        #: whenever a mapping leaves the table (a mapping added never overlaps a present one)
        self._iotlb: dict[int, HostMapping] = {}
        #: the mapping that translated last (consecutive pages of one buffer hit it)
        self._last_hit: HostMapping | None = None

    def __repr__(self) -> str:
        return f"<VfioContainer {self.name} mappings={len(self.table)} pinned={self._pinned_pages}>"

    def statistics(self) -> VfioContainerStats:
        """A snapshot of the container's counters."""
        return VfioContainerStats(map_calls=self._map_calls, unmap_calls=self._unmap_calls,
                                  map_errors=self._map_errors, unmap_errors=self._unmap_errors,
                                  pinned_pages=self._pinned_pages, mappings=len(self.table))

    def mappings(self) -> list[HostMapping]:
        return list(self.table.values())

    def lookup(self, iova: int) -> HostMapping | None:
        """The host mapping containing ``iova`` (what the host IOMMU would walk to)."""
        hit = self._last_hit
        if hit is not None and hit.iova <= iova <= hit.last:
            return hit
        hit = self._iotlb.get(iova >> 12)
        if hit is not None and hit.iova <= iova <= hit.last:
            self._last_hit = hit
            return hit
        i = self.table.bisect_right(iova) - 1
        if i < 0:
            return None
        m: HostMapping = self.table.peekitem(i)[1]
        if iova > m.last:
            return None
        self._iotlb[iova >> 12] = self._last_hit = m
        return m

    def _drop_iotlb(self, m: HostMapping) -> None:
        """Invalidate the IOTLB entries of the mapping ``m`` (a large one: the whole IOTLB)."""
        if self._last_hit is m:
            self._last_hit = None
        first, last = m.iova >> 12, m.last >> 12
        if last - first >= 64:
            self._iotlb.clear()
            return
        for page in range(first, last + 1):
            self._iotlb.pop(page, None)

    def _overlapping(self, first: int, last: int) -> list[HostMapping]:
        """The mappings that overlap ``[first, last]``, in IOVA order: the one starting at or below
        ``first`` (if it reaches it), then those starting inside the range."""
        table = self.table
        i = table.bisect_right(first) - 1
        lo = table.peekitem(i)[0] if i >= 0 else first
        out: list[HostMapping] = []
        for key in table.irange(lo, last):
            m: HostMapping = table[key]
            if m.last >= first:
                out.append(m)
        return out

    def dma_map(self, iova: int, size: int, paddr: int, readonly: bool) -> tuple[int, int]:
        """VFIO_IOMMU_MAP_DMA: returns (0 or -errno, cost in ps)."""
        host = self.host
        cost = host.cost
        self._map_calls += 1
        ret = 0
        pg = host.min_page_size
        if size <= 0 or (iova | size | paddr) & (pg - 1) or iova + size - 1 > U64:
            ret = -EINVAL
        elif (injected := host.injected_map_error(self, iova, size, paddr)) != 0:
            ret = injected
        elif self._overlapping(iova, iova + size - 1):
            ret = -EEXIST
        elif len(self.table) >= host.dma_entry_limit:
            ret = -ENOSPC
        if ret:
            self._map_errors += 1
            host.error_report(f"VFIO_MAP_DMA failed: {strerror(-ret)}")
            return ret, cost.vfio_map_ioctl_ps
        pages = size // HOST_PAGE_SIZE
        self.table[iova] = HostMapping(iova, size, paddr, readonly)
        self._pinned_pages += pages
        return 0, cost.vfio_map_ioctl_ps + pages * cost.vfio_map_per_page_ps

    def dma_unmap(self, iova: int, size: int) -> tuple[int, int]:
        """VFIO_IOMMU_UNMAP_DMA (type1v2): returns (0 or -errno, cost in ps)."""
        host = self.host
        cost = host.cost.vfio_unmap_ioctl_ps + host.cost.host_iotlb_inval_ps
        self._unmap_calls += 1
        pg = host.min_page_size
        last = iova + size - 1
        hit = self._overlapping(iova, last) if size > 0 else []
        if size <= 0 or (iova | size) & (pg - 1) or any(m.iova < iova or m.last > last for m in hit):
            self._unmap_errors += 1
            host.error_report(f"VFIO_UNMAP_DMA failed: {strerror(EINVAL)}")
            return -EINVAL, cost
        for m in hit:
            del self.table[m.iova]
            self._drop_iotlb(m)
            self._pinned_pages -= m.size // HOST_PAGE_SIZE
        return 0, cost


class HostVfio:
    """All VFIO containers of the machine plus the host IOMMU's properties.

    ``pgsizes`` is the host IOMMU page-size bitmap VFIO reports (the vIOMMU narrows
    its ``page_size_mask`` with it).  ``usable_iova_ranges`` (inclusive pairs), when
    given, are the IOVA ranges the host kernel reports as usable; their complement
    becomes RESERVED regions in the vIOMMU's PROBE answer for assigned endpoints.
    ``map_fault_hooks`` is where fault injection plugs in (``testbench.fail_host_maps``):
    a hook may make a VFIO_IOMMU_MAP_DMA fail with a negative errno of its choice.
    """

    def __init__(
        self,
        cost: CostModel,
        pgsizes: int,
        *,
        sim: Simulator | None = None,
        memory: GuestMemory | None = None,
        usable_iova_ranges: Sequence[tuple[int, int]] | None = None,
        dma_entry_limit: int = DMA_ENTRY_LIMIT,
    ) -> None:
        if pgsizes <= 0:
            raise ValueError(f"host IOMMU page sizes must be a non-empty bitmap, not {pgsizes:#x}")
        self.cost = cost
        self.pgsizes = pgsizes
        self.sim = sim
        self.memory = memory
        self.usable_iova_ranges = tuple(sorted(usable_iova_ranges)) if usable_iova_ranges is not None else None
        self.dma_entry_limit = dma_entry_limit
        #: fault hooks on VFIO_IOMMU_MAP_DMA, consulted in order; the first non-zero answer fails the map
        self.map_fault_hooks: list[MapFaultHook] = []
        self.containers: dict[int, VfioContainer] = {}
        self._errors = 0

    @property
    def min_page_size(self) -> int:
        return self.pgsizes & -self.pgsizes

    def statistics(self) -> HostVfioStats:
        """A snapshot of the host's VFIO counters."""
        return HostVfioStats(errors=self._errors,
                             pinned_pages=sum(c.statistics().pinned_pages for c in self.containers.values()))

    def container(self, bdf: int) -> VfioContainer:
        return self.containers[bdf]

    def injected_map_error(self, container: VfioContainer, iova: int, size: int, paddr: int) -> int:
        """0, or the negative errno the first fault hook that objects gives this map."""
        for hook in self.map_fault_hooks:
            ret = hook(container, iova, size, paddr)
            if ret:
                return ret
        return 0

    def error_report(self, message: str) -> None:
        """QEMU's error_report: logged on the host, invisible to the guest."""
        self._errors += 1
        if self.sim is not None and self.sim.tracing:
            self.sim.trace("vfio", "error_report", message=message)

    def host_reserved_ranges(self) -> list[tuple[int, int]]:
        """Complement of the usable IOVA ranges in [0, 2^64-1] (QEMU range_inverse_array)."""
        if self.usable_iova_ranges is None:
            return []
        out: list[tuple[int, int]] = []
        nxt = 0
        for lo, hi in self.usable_iova_ranges:
            if lo > nxt:
                out.append((nxt, lo - 1))
            nxt = max(nxt, hi + 1)
        if nxt <= U64:
            out.append((nxt, U64))
        return out

    def add_device(self, bdf: int) -> VfioContainer:
        """vfio-pci realize: a new container; its address space starts as system memory,
        so all guest RAM is mapped 1:1 (and pinned)."""
        if bdf in self.containers:
            raise ValueError(f"endpoint {bdf:#x} already has a VFIO container")
        c = self.containers[bdf] = VfioContainer(self, bdf)
        self._region_add_ram(c)
        return c

    # -- memory listener: the device's DMA address space changed ------------------
    def set_translated(self, bdf: int, mr: IommuMemoryRegion | None) -> int:
        """The vIOMMU switched ``bdf`` to its IOMMU region ``mr`` (or back to RAM when None).

        Returns the ioctl time; the replay of existing mappings on notifier registration
        is charged by the vIOMMU, which performs it.
        """
        c = self.containers[bdf]
        cost = 0
        if mr is not None and not c.translated:
            cost += self._region_del_ram(c)
            if not c.ever_translated:
                cost += self.cost.vfio_attach_ps
            c.translated = c.ever_translated = True
            c.giommu = VfioGuestIommu(
                f"{c.name}-giommu", IOTLB_EVENTS, self.vfio_iommu_map_notify, container=c
            )
            c.giommu_mr = mr
            mr.register_notifier(c.giommu)
        elif mr is None and c.translated:
            if c.giommu is not None and c.giommu_mr is not None:
                c.giommu_mr.unregister_notifier(c.giommu)
            c.translated = False
            c.giommu = c.giommu_mr = None
            cost += c.dma_unmap(0, U64 + 1)[1]
            cost += self._region_add_ram(c)
        return cost

    def _region_add_ram(self, c: VfioContainer) -> int:
        if self.memory is None:
            return 0
        cost = 0
        for r in self.memory.regions:
            cost += c.dma_map(r.start, r.end - r.start, r.start, False)[1]
        return cost

    def _region_del_ram(self, c: VfioContainer) -> int:
        if self.memory is None:
            return 0
        return sum(c.dma_unmap(r.start, r.end - r.start)[1] for r in self.memory.regions)

    # -- the IOMMU notifier callback -----------------------------------------------
    def vfio_iommu_map_notify(self, notifier: IommuNotifier, entry: TlbEntry) -> int:
        """vfio_iommu_map_notify: MAP -> VFIO_IOMMU_MAP_DMA, UNMAP -> VFIO_IOMMU_UNMAP_DMA."""
        assert isinstance(notifier, VfioGuestIommu) and notifier.container is not None
        c = notifier.container
        iova = entry.iova
        size = entry.addr_mask + 1
        sim = self.sim
        if sim is not None and sim.tracing:
            op = "UNMAP" if entry.perm == IOMMU_NONE else "MAP"
            sim.trace("vfio", "vfio_iommu_map_notify", op=op, iova_start=iova, iova_end=iova + entry.addr_mask)
        if entry.perm != IOMMU_NONE:
            if self.memory is not None and not self.memory.is_ram(entry.translated_addr, size):
                self.error_report(f"iommu map to non memory area {entry.translated_addr:x}")
                return 0
            readonly = not entry.perm & IOMMU_WO
            ret, cost = c.dma_map(iova, size, entry.translated_addr, readonly)
            if sim is not None and sim.tracing:
                sim.trace("vfio", "vfio_container_dma_map", iova=iova, size=size,
                          paddr=entry.translated_addr, readonly=readonly, ret=ret)
            if ret:
                self.error_report(
                    f"vfio_container_dma_map({c.name}, 0x{iova:x}, 0x{size:x}, 0x{entry.translated_addr:x})"
                    f" = {ret} ({strerror(-ret)})"
                )
            return cost
        ret, cost = c.dma_unmap(iova, size)
        if sim is not None and sim.tracing:
            sim.trace("vfio", "vfio_container_dma_unmap", iova=iova, size=size, ret=ret)
        if ret:
            self.error_report(
                f"vfio_container_dma_unmap({c.name}, 0x{iova:x}, 0x{size:x}) = {ret} ({strerror(-ret)})"
            )
        return cost
