"""The guest's IOMMU core: Linux drivers/iommu/iommu.c, as a virtio-iommu guest (6.7 / 6.12) uses it.

* ``subsys_init`` is ``iommu_subsys_init`` (subsys_initcall): the default domain
  type line and the DMA invalidation policy line (``iommu.strict=1`` on the
  command line for ``iommu_policy="strict"``; lazy is the x86 Kconfig default).
* ``probe_device`` is ``really_probe -> dma_configure -> acpi_iommu_configure_id
  -> viot_iommu_configure`` then ``iommu_probe_device``: the VIOT fwspec (endpoint
  id = BDF, QEMU's PCI range node), ``-EPROBE_DEFER`` while no virtio-iommu is
  registered, and for the virtio-iommu function itself "we're not translating
  ourself" (ignored: the device keeps direct DMA).  Under
  ``iommu_probe_device_lock``: ``ops->probe_device`` (PROBE), ``pci_device_group``
  (``_groups.py``), "Adding to iommu group N" with the bound driver's name, then
  a new group's default domain (``iommu_setup_default_domain``: DMA-FQ when lazy,
  DMA when strict) attached, or an ATTACH to the existing group's domain.  Then
  ``probe_finalize`` -> ``iommu_setup_dma_ops`` -> ``iommu_dma_init_domain``
  (``_dma_iommu.py``) and ``dev.dma`` is the device's ``DmaApi``.
* ``map`` / ``map_sg`` / ``unmap`` / ``unmap_fast`` are ``iommu_map`` (``__iommu_map``
  chunked by ``iommu_pgsize`` over the domain's ``pgsize_bitmap``, then
  ``ops->iotlb_sync_map`` when the driver has one), ``iommu_map_sg`` (one
  ``__iommu_map`` per physically contiguous run, one ``iotlb_sync_map``),
  ``iommu_unmap`` (``__iommu_unmap`` + ``iommu_iotlb_sync``) and
  ``iommu_unmap_fast`` (no sync).

``q35_host_bridge_windows`` derives the PCI host bridge MEM windows the guest
reads from QEMU's q35 ``PCI0._CRS``; dma-iommu reserves them in every DMA domain.

Not modelled: identity/blocked/unmanaged domains, DETACH on release, devices
behind bridges, iommu.passthrough / iommu.forcedac.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Protocol

import attrs

from sim import Lock

from .._errno import EINVAL, EPROBE_DEFER
from .._memory import IOAPIC_BASE, Q35_PCIEXBAR_BASE, Q35_PCIEXBAR_SIZE, FOUR_GIB, GIB, GuestMemory
from .._pci_ids import VIRTIO_IOMMU_PCI_ID
from ._device import GuestDevice
from ._flush_queue import dma_domain_policy
from ._groups import IommuGroups, PciFunctionInfo, adding_message
from ._iova import DmaDevice, ResvRegion
from ._pci_scan import PciDeviceInfo

if TYPE_CHECKING:
    from ._dma_iommu import DmaCookie
    from ._kernel import GuestKernel

# -- IOMMU protection flags (include/linux/iommu.h)
IOMMU_READ = 1 << 0
IOMMU_WRITE = 1 << 1
IOMMU_CACHE = 1 << 2
IOMMU_NOEXEC = 1 << 3
IOMMU_MMIO = 1 << 4
IOMMU_PRIV = 1 << 5

#: QEMU q35's default 64-bit PCI hole size (hw/pci-host/q35.c Q35_PCI_HOST_HOLE64_SIZE_DEFAULT)
Q35_PCI_HOLE64_SIZE = 1 << 35
#: the legacy VGA window every QEMU PC _CRS lists (hw/i386/acpi-build.c build_dsdt)
VGA_WINDOW = (0x000A_0000, 0x000B_FFFF)

TRACE_SOURCE = "guest/iommu"


def q35_host_bridge_windows(memory: GuestMemory, devices: Iterable[PciDeviceInfo]) -> list[tuple[int, int]]:
    """PCI0's MEM windows as QEMU (>= 7.1) builds q35's ``_CRS``: inclusive (start, end) bus addresses.

    * the legacy VGA window 0xA0000-0xBFFFF;
    * the 32-bit PCI hole ``mch->pci_hole`` = [end of low RAM, IOAPIC - 1] ("pci hole goes
      from end-of-low-ram to io-apic", hw/pci-host/q35.c) minus MMCONFIG, which build_dsdt
      excludes (``crs_range_insert`` of the MCFG range before ``crs_replace_with_free_ranges``):
      on a guest with >= 2.75 GiB that is [0x80000000, 0xAFFFFFFF] and [0xC0000000, 0xFEBFFFFF];
    * the 64-bit hole of ``q35_host_get_pci_hole64_start/end_value`` (``pci_hole64_fix``): from
      the lowest 64-bit BAR the firmware put above 4 GiB (or the 1 GiB-aligned end of RAM when
      there is none) to the larger of the highest such BAR's end and start + 32 GiB rounded up
      to 1 GiB.

    dma-iommu reserves these windows (``iova_reserve_pci_windows``); with them, the MSI window
    and the IOAPIC hole the top free 32-bit IOVA block is 0xFEF00000-0xFFFFFFFF (linux-guest.md §4.1).
    """
    windows = [VGA_WINDOW]
    low_end = memory.below_4g
    mcfg_lo, mcfg_hi = Q35_PCIEXBAR_BASE, Q35_PCIEXBAR_BASE + Q35_PCIEXBAR_SIZE - 1
    hole_lo, hole_hi = low_end, IOAPIC_BASE - 1
    if hole_lo < mcfg_lo:
        windows.append((hole_lo, min(hole_hi, mcfg_lo - 1)))
    if hole_hi > mcfg_hi:
        windows.append((max(hole_lo, mcfg_hi + 1), hole_hi))
    lob: int | None = None
    upb = 0
    for info in devices:
        for bar in info.bars:
            if bar.kind != "mem64" or bar.address + bar.size <= FOUR_GIB:
                continue
            start = max(bar.address, FOUR_GIB)  # pci_dev_get_w64 clips at 4 GiB
            lob = start if lob is None else min(lob, start)
            upb = max(upb, bar.address + bar.size - 1)
    if lob is None:
        lob = -(-memory.above_4g_end // GIB) * GIB  # pc_pci_hole64_start: ROUND_UP(above-4g end, 1 GiB)
        upb = 0
    end = max(upb + 1, -(-(lob + Q35_PCI_HOLE64_SIZE) // GIB) * GIB)
    windows.append((lob, end - 1))
    return windows


def iommu_pgsize(pgsize_bitmap: int, iova: int, paddr: int, size: int) -> tuple[int, int]:
    """``iommu_pgsize``: (page size, count) of the next ``map_pages``/``unmap_pages`` chunk.

    The largest supported size allowed by ``size`` and the alignment of ``iova | paddr``; the
    count is cut at the next larger page boundary when the rest could use that larger size.
    """
    addr_merge = paddr | iova
    pgsizes = pgsize_bitmap & ((1 << size.bit_length()) - 1)  # GENMASK(__fls(size), 0)
    if addr_merge:
        pgsizes &= ((addr_merge & -addr_merge) << 1) - 1  # GENMASK(__ffs(addr_merge), 0)
    if not pgsizes:
        raise ValueError(f"no page size of {pgsize_bitmap:#x} fits iova {iova:#x} pa {paddr:#x} size {size:#x}")
    idx = pgsizes.bit_length() - 1
    pgsize = 1 << idx
    bigger = pgsize_bitmap & ~((pgsize << 1) - 1)
    if bigger:
        nxt = bigger & -bigger
        if not (iova ^ paddr) & (nxt - 1):
            offset = nxt - (addr_merge & (nxt - 1))
            if offset + nxt <= size:
                size = offset
    return pgsize, size >> idx


class IommuDriverDomain(Protocol):
    """The driver's half of ``struct iommu_domain`` (``struct viommu_domain`` for virtio-iommu)."""

    @property
    def id(self) -> int | None: ...

    @property
    def pgsize_bitmap(self) -> int: ...

    @property
    def aperture(self) -> tuple[int, int]: ...


class IommuOps(Protocol):
    """``struct iommu_ops`` + ``struct iommu_domain_ops``: what the core asks of the
    registered IOMMU driver.  Endpoints (``dev_iommu_priv``) are the driver's own
    objects, opaque to the core; each call that may talk to the device takes the vCPU
    it runs on.  Ints are 0 or a negative errno, except ``unmap_pages`` (bytes unmapped)."""

    @property
    def has_iotlb_sync_map(self) -> bool: ...

    @property
    def has_flush_iotlb_all(self) -> bool: ...

    async def probe_device(self, cpu: int, dev: GuestDevice) -> object | int: ...

    def release_device(self, endpoint: object) -> None: ...

    def get_resv_regions(self, endpoint: object) -> list[ResvRegion]: ...

    def domain_alloc(self) -> IommuDriverDomain: ...

    def domain_free(self, domain: IommuDriverDomain) -> None: ...

    async def attach(self, cpu: int, domain: IommuDriverDomain, endpoint: object) -> int: ...

    async def map_pages(self, cpu: int, domain: IommuDriverDomain, iova: int, paddr: int, pgsize: int,
                        pgcount: int, prot: int) -> int: ...

    async def unmap_pages(self, cpu: int, domain: IommuDriverDomain, iova: int, pgsize: int, pgcount: int) -> int: ...

    async def iotlb_sync_map(self, cpu: int, domain: IommuDriverDomain, iova: int, size: int) -> int: ...

    async def iotlb_sync(self, cpu: int, domain: IommuDriverDomain) -> None: ...

    async def flush_iotlb_all(self, cpu: int, domain: IommuDriverDomain) -> None: ...


class IommuDomain:
    """``struct iommu_domain`` of a default (DMA or DMA-FQ) domain and its driver domain."""

    def __init__(self, group_id: int, priv: IommuDriverDomain, requested_type: str) -> None:
        self.group_id = group_id
        #: the driver's domain (``struct viommu_domain``)
        self.priv = priv
        #: "DMA-FQ" or "DMA"; iommu_dma_init_domain may downgrade DMA-FQ to DMA
        self.type = requested_type
        #: dma-iommu's ``iova_cookie`` (``iommu_get_dma_cookie`` at allocation, set up later)
        self.cookie: DmaCookie | None = None

    def __repr__(self) -> str:
        return f"<IommuDomain {self.id} group {self.group_id} {self.type}>"

    @property
    def id(self) -> int | None:
        return self.priv.id

    @property
    def pgsize_bitmap(self) -> int:
        return self.priv.pgsize_bitmap

    @property
    def aperture(self) -> tuple[int, int]:
        return self.priv.aperture


@attrs.define
class _Group:
    """``struct iommu_group``: its default domain and the members' driver endpoints."""

    id: int
    domain: IommuDomain | None = None


class IommuCore:
    """``drivers/iommu/iommu.c`` for one guest.  Creating it installs it as ``kernel.iommu``."""

    def __init__(self, kernel: GuestKernel) -> None:
        self.kernel = kernel
        self._trace = kernel.sim.tracer(TRACE_SOURCE)
        kernel.iommu = self
        #: the registered IOMMU driver (``iommu_device_register``): the virtio-iommu driver
        self._ops: IommuOps | None = None
        self.policy = dma_domain_policy(kernel.config.guest_kernel, kernel.config.iommu_policy)
        self._probe_lock = Lock("iommu_probe_device_lock")
        self._groups: IommuGroups | None = None
        self._group: dict[int, _Group] = {}
        #: per BDF: the driver's endpoint (``dev_iommu_priv``) and dma-iommu's device state (``dev->iommu``)
        self.endpoints: dict[int, object] = {}
        self.dma_devices: dict[int, DmaDevice] = {}

    # -- initcalls and registration ------------------------------------------------------
    def subsys_init(self) -> None:
        """``iommu_subsys_init``: the two policy lines."""
        self.kernel.log("iommu: Default domain type: Translated")
        if self.kernel.config.iommu_policy == "strict":
            self.kernel.log("iommu: DMA domain TLB invalidation policy: strict mode (set via kernel command line)")
        else:
            self.kernel.log("iommu: DMA domain TLB invalidation policy: lazy mode")

    def register(self, ops: IommuOps) -> None:
        """``iommu_device_register``.  Its ``bus_iommu_probe`` finds no VIOT fwspec yet (fwspecs are
        made at driver probe), so it probes nothing."""
        if self._ops is not None:
            raise RuntimeError("an IOMMU driver is already registered; this model has one virtio-iommu")
        self._ops = ops

    @property
    def ops(self) -> IommuOps:
        """The registered driver (``dev->iommu->iommu_dev->ops``)."""
        if self._ops is None:
            raise RuntimeError("no IOMMU driver has registered")
        return self._ops

    @property
    def registered(self) -> bool:
        return self._ops is not None

    # -- machine knowledge: VIOT and _CRS ---------------------------------------------------
    def viot_iommu_bdf(self) -> int | None:
        """The virtio-iommu-pci function VIOT names (None: no VIOT, the machine has no vIOMMU)."""
        for bdf in sorted(self.kernel.devices):
            info = self.kernel.devices[bdf].info
            if (info.vendor_id, info.device_id) == VIRTIO_IOMMU_PCI_ID:
                return bdf
        return None

    def host_bridge_windows(self) -> list[tuple[int, int]]:
        """``kernel.host_bridge_windows``, derived from the machine (q35 _CRS) when still empty."""
        kernel = self.kernel
        if not kernel.host_bridge_windows:
            infos = [kernel.devices[bdf].info for bdf in sorted(kernel.devices)]
            kernel.host_bridge_windows = q35_host_bridge_windows(kernel.machine.memory, infos)
        return kernel.host_bridge_windows

    @property
    def groups(self) -> IommuGroups:
        if self._groups is None:
            self._groups = IommuGroups(
                PciFunctionInfo(bdf=d.bdf, multifunction=d.info.multifunction, pcie_type=d.info.pcie_type,
                                acs_cap=d.info.acs_cap, acs_ctrl=d.info.acs_ctrl)
                for d in self.kernel.devices.values() if not d.bdf >> 8
            )
        return self._groups

    def domain_of(self, dev: GuestDevice) -> IommuDomain | None:
        """The default domain of ``dev``'s group."""
        if dev.iommu_group is None:
            return None
        return self._group[dev.iommu_group].domain

    # -- probe ---------------------------------------------------------------------------
    async def probe_device(self, dev: GuestDevice, cpu: int) -> int:
        """``dma_configure`` for a PCI device whose driver is binding: 0, or a negative errno
        (``-EPROBE_DEFER`` while the virtio-iommu has not registered)."""
        from ._dma_iommu import DirectDma, iommu_setup_dma_ops  # dma-iommu sits on top of the core

        kernel = self.kernel
        viot = self.viot_iommu_bdf()
        if viot is None or dev.bdf == viot:
            # no VIOT: no IOMMU; or "We're not translating ourself" (-EINVAL, ignored by acpi_dma_configure)
            dev.dma = DirectDma(kernel, dev)
            return 0
        if self._ops is None:
            self._trace("iommu_probe_device_defer", bdf=dev.bdf)
            return -EPROBE_DEFER
        if dev.iommu_group is None:
            async with self._probe_lock:
                ret = await self._probe_locked(dev, cpu)
            if ret:
                return ret
        domain = self.domain_of(dev)
        assert domain is not None
        # probe_finalize -> iommu_setup_dma_ops -> iommu_dma_init_domain
        resv = self.ops.get_resv_regions(self.endpoints[dev.bdf])
        iommu_setup_dma_ops(kernel, dev, domain, self.dma_devices[dev.bdf], resv, self.host_bridge_windows())
        return 0

    #: the name drivers/base/dd.c's really_probe calls it by
    dma_configure = probe_device

    async def _probe_locked(self, dev: GuestDevice, cpu: int) -> int:
        """``__iommu_probe_device`` under ``iommu_probe_device_lock``."""
        ops = self.ops
        endpoint = await ops.probe_device(cpu, dev)  # iommu_init_device -> viommu_probe_device (PROBE)
        if isinstance(endpoint, int):
            self._trace("iommu_probe_device", bdf=dev.bdf, ret=endpoint)
            return endpoint
        assignment = self.groups.probe_device(dev.bdf)
        group = self._group.setdefault(assignment.group_id, _Group(assignment.group_id))
        dev.iommu_group = assignment.group_id
        self.kernel.dev_info(dev, adding_message(assignment.group_id))  # iommu_group_alloc_device
        if group.domain is None:
            domain = IommuDomain(group.id, ops.domain_alloc(), self.policy.requested_type)
        else:
            domain = group.domain
        ret = await ops.attach(cpu, domain.priv, endpoint)
        self._trace("iommu_probe_device", bdf=dev.bdf, group=group.id, new_group=assignment.created,
                    domain=domain.id, ret=ret)
        if ret:
            # error path: iommu_deinit_device -> ops->release_device; the group forgets the device
            dev.iommu_group = None
            if self.groups.release_device(dev.bdf) is not None:
                del self._group[group.id]
            if group.domain is None:
                ops.domain_free(domain.priv)
            ops.release_device(endpoint)
            return ret
        group.domain = domain
        self.endpoints[dev.bdf] = endpoint
        # iommu_dma_set_pci_32bit_workaround (pci_32bit_workaround = !iommu.forcedac)
        self.dma_devices[dev.bdf] = DmaDevice(pci_32bit_workaround=True)
        dev.iommu_probed = True
        return 0

    # -- the IOMMU API used by dma-iommu ----------------------------------------------------
    async def _map_range(self, cpu: int, domain: IommuDomain, iova: int, paddr: int, size: int, prot: int) -> int:
        """``__iommu_map``: ``map_pages`` chunks; a failure unmaps what was mapped (``iommu_unmap``)."""
        bitmap = domain.pgsize_bitmap
        min_pagesz = bitmap & -bitmap
        if (iova | paddr | size) & (min_pagesz - 1):
            self.kernel.log(f"iommu: unaligned: iova {iova:#x} pa 0x{paddr:016x} size {size:#x} "
                            f"min_pagesz {min_pagesz:#x}")
            return -EINVAL
        orig_iova, orig_size = iova, size
        ret = 0
        while size:
            pgsize, count = iommu_pgsize(bitmap, iova, paddr, size)
            ret = await self.ops.map_pages(cpu, domain.priv, iova, paddr, pgsize, count, prot)
            if ret:
                break
            iova += pgsize * count
            paddr += pgsize * count
            size -= pgsize * count
        if ret:
            await self.unmap(cpu, domain, orig_iova, orig_size - size)
        return ret

    async def map(self, cpu: int, domain: IommuDomain, iova: int, paddr: int, size: int, prot: int) -> int:
        """``iommu_map``: 0 or a negative errno."""
        if self.kernel.sim.tracing:
            self._trace("iommu_map", cpu=cpu, domain=domain.id, iova=iova, paddr=paddr, size=size, prot=prot)
        ret = await self._map_range(cpu, domain, iova, paddr, size, prot)
        if not ret and self.ops.has_iotlb_sync_map:
            ret = await self.ops.iotlb_sync_map(cpu, domain.priv, iova, size)
            if ret:
                await self.unmap(cpu, domain, iova, size)
        return ret

    async def map_sg(self, cpu: int, domain: IommuDomain, iova: int, entries: list[tuple[int, int]],
                     prot: int) -> int:
        """``iommu_map_sg``: one ``__iommu_map`` per physically contiguous run of ``entries``
        ((physical address, length) in IOVA order), one ``iotlb_sync_map``; bytes mapped or -errno."""
        if self.kernel.sim.tracing:
            self._trace("iommu_map_sg", cpu=cpu, domain=domain.id, iova=iova, nents=len(entries), prot=prot)
        mapped = 0
        start = length = 0
        ret = 0
        for phys, n in entries + [(-1, 0)]:  # the sentinel flushes the last run
            if length and phys != start + length:
                ret = await self._map_range(cpu, domain, iova + mapped, start, length, prot)
                if ret:
                    break
                mapped += length
                length = 0
            if length:
                length += n
            else:
                start, length = phys, n
        if not ret and self.ops.has_iotlb_sync_map:
            ret = await self.ops.iotlb_sync_map(cpu, domain.priv, iova, mapped)
        if ret:
            await self.unmap(cpu, domain, iova, mapped)
            return ret
        return mapped

    async def unmap_fast(self, cpu: int, domain: IommuDomain, iova: int, size: int) -> int:
        """``iommu_unmap_fast``: ``__iommu_unmap`` without the IOTLB sync; bytes unmapped."""
        bitmap = domain.pgsize_bitmap
        min_pagesz = bitmap & -bitmap
        if (iova | size) & (min_pagesz - 1):
            self.kernel.log(f"iommu: unaligned: iova {iova:#x} size {size:#x} min_pagesz {min_pagesz:#x}")
            return 0
        if self.kernel.sim.tracing:
            self._trace("iommu_unmap", cpu=cpu, domain=domain.id, iova=iova, size=size)
        unmapped = 0
        while unmapped < size:
            pgsize, count = iommu_pgsize(bitmap, iova, iova, size - unmapped)
            n = await self.ops.unmap_pages(cpu, domain.priv, iova, pgsize, count)
            if not n:
                break
            iova += n
            unmapped += n
        return unmapped

    async def iotlb_sync(self, cpu: int, domain: IommuDomain) -> None:
        """``iommu_iotlb_sync`` -> ``ops->iotlb_sync``."""
        await self.ops.iotlb_sync(cpu, domain.priv)

    async def flush_iotlb_all(self, cpu: int, domain: IommuDomain) -> None:
        """``iommu_flush_iotlb_all`` (the flush queue's ``fq_flush_iotlb``)."""
        if not self.ops.has_flush_iotlb_all:
            raise RuntimeError(f"Linux {self.kernel.config.guest_kernel} virtio-iommu has no flush_iotlb_all")
        await self.ops.flush_iotlb_all(cpu, domain.priv)

    async def unmap(self, cpu: int, domain: IommuDomain, iova: int, size: int) -> int:
        """``iommu_unmap``: unmap then ``iommu_iotlb_sync``; bytes unmapped."""
        unmapped = await self.unmap_fast(cpu, domain, iova, size)
        await self.iotlb_sync(cpu, domain)
        return unmapped
