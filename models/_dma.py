"""Device DMA ports: every device access to memory is translated at the moment it happens.

A PCI device model reads and writes "bus addresses" (IOVAs) through a port;
the port decides what those addresses mean, page by page, when the access is
made — never earlier — so a stale, missing or read-only mapping has the effect
it has on a real machine:

* ``ViommuDmaPort`` — an emulated device behind the virtio-iommu: QEMU's DMA
  goes through the device's IOMMU memory region, i.e. ``virtio_iommu_translate``
  per access (hw/virtio/virtio-iommu.c); a failed translation is reported by the
  vIOMMU on its event queue and the access fails (``MEMTX_ERROR``).
* ``HostIommuDmaPort`` — a passed-through (VFIO) device: its DMA never reaches
  QEMU; the *host* IOMMU translates it with the page table VFIO programmed
  (from the vIOMMU's MAP/UNMAP notifications, or all guest RAM 1:1 while the
  endpoint bypasses).  A miss is a host IOMMU fault (logged on the host, e.g.
  DMAR/AMD-Vi fault messages); the guest's vIOMMU never hears of it.
* ``DirectDmaPort`` — no vIOMMU: bus address = guest-physical address.

All ports refuse DMA while the function's bus-master bit is off (PCI command
register bit 2) and raise ``DmaFault``.  A port behind an IOMMU traces every access
(source "dma", event "dma_access": initiator, bdf, iova, size, access, and the
first piece's ``paddr`` or the ``fault`` reason) when its simulator is tracing.

An access through the virtio-iommu that lands outside the mapping that translated
it (the qemu flavour mirrors QEMU, whose IOTLB entry is a whole granule: a 2 KiB
mapping lets a 4 KiB DMA through, an off-granule phys_start shifts it, a physical
range past 2^64 wraps to 0) is traced as a warning, event "dma_escape" with the
bytes outside the mapping (``outside``) and the mapping's bounds; the port counts
them in ``escaped_bytes``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import attrs

from ._memory import PAGE_SIZE, GuestMemory, MemoryAccessError

if TYPE_CHECKING:
    from sim import Simulator, Tracer

DMA_READ = 1
DMA_WRITE = 2


class DmaFault(Exception):
    """A device access refused by the IOMMU or the bus; ``access`` is DMA_READ or DMA_WRITE."""

    def __init__(self, iova: int, access: int, reason: str) -> None:
        self.iova = iova
        self.access = access
        self.reason = reason
        kind = "read" if access == DMA_READ else "write"
        super().__init__(f"device {kind} at IOVA 0x{iova:x} faulted: {reason}")


@attrs.frozen
class HostIommuFault:
    """One fault the host IOMMU logged for an assigned device."""

    time: int
    bdf: int
    iova: int
    access: int
    reason: str


@attrs.frozen(kw_only=True)
class DmaPortStats:
    """A DMA port's counters at one instant (``statistics()`` of a port)."""

    #: completed reads and writes (a refused access is not counted)
    reads: int
    writes: int
    #: bytes they moved, in both directions
    bytes: int


class _Port:
    """Common part: page splitting, bus-master gate, memory access, counters."""

    def __init__(self, memory: GuestMemory, initiator: str, bus_master: Callable[[], bool]) -> None:
        self.memory = memory
        self.initiator = initiator
        self.bus_master = bus_master
        self._reads = 0
        self._writes = 0
        self._bytes = 0
        self.bdf: int | None = None
        #: set by the IOMMU ports (``_traced``): their accesses are traced
        self._tracer: Tracer | None = None

    def statistics(self) -> DmaPortStats:
        """A snapshot of the port's counters."""
        return DmaPortStats(reads=self._reads, writes=self._writes, bytes=self._bytes)

    def _traced(self, sim: Simulator, bdf: int) -> None:
        self.bdf = bdf
        self._tracer = sim.tracer("dma", initiator=self.initiator, bdf=bdf)

    def _trace(self, iova: int, size: int, access: int, paddr: int | None, fault: str | None) -> None:
        tracer = self._tracer
        if tracer is not None and tracer.enabled:
            where = {"fault": fault} if fault is not None else {"paddr": paddr}
            tracer("dma_access", iova=iova, size=size, access="read" if access == DMA_READ else "write", **where)

    def _checked_pieces(self, iova: int, size: int, access: int) -> list[tuple[int, int]]:
        try:
            pieces = self._pieces(iova, size, access)
        except DmaFault as exc:
            self._trace(iova, size, access, None, exc.reason)
            raise
        self._trace(iova, size, access, pieces[0][0] if pieces else None, None)
        return pieces

    def _translate(self, iova: int, access: int) -> tuple[int, int]:
        """(guest-physical address, bytes valid from it) or raise DmaFault."""
        raise NotImplementedError

    def _landed(self, iova: int, paddr: int, size: int, access: int) -> None:
        """Called for each piece after ``_translate``: ``size`` bytes at ``iova`` go to ``paddr``."""

    def _pieces(self, iova: int, size: int, access: int) -> list[tuple[int, int]]:
        if not self.bus_master():
            raise DmaFault(iova, access, "bus mastering is disabled")
        out: list[tuple[int, int]] = []
        pos, end = iova, iova + size
        while pos < end:
            paddr, valid = self._translate(pos, access)
            n = min(valid, end - pos)
            self._landed(pos, paddr, n, access)
            out.append((paddr, n))
            pos += n
        return out

    def dma_read(self, iova: int, size: int) -> bytes:
        data = bytearray()
        for paddr, n in self._checked_pieces(iova, size, DMA_READ):
            try:
                data += self.memory.dma_read(paddr, n, self.initiator)
            except MemoryAccessError as exc:
                raise DmaFault(iova, DMA_READ, str(exc)) from None
        self._reads += 1
        self._bytes += size
        return bytes(data)

    def dma_write(self, iova: int, data: bytes) -> None:
        pieces = self._checked_pieces(iova, len(data), DMA_WRITE)
        pos = 0
        for paddr, n in pieces:
            try:
                self.memory.dma_write(paddr, data[pos : pos + n], self.initiator)
            except MemoryAccessError as exc:
                raise DmaFault(iova + pos, DMA_WRITE, str(exc)) from None
            pos += n
        self._writes += 1
        self._bytes += len(data)


    def dma_locate(self, iova: int, size: int, access: int) -> list[tuple[int, int]]:
        """The access ``dma_read``/``dma_write`` would make, without moving bytes: translated,
        checked, traced and counted alike; its (guest-physical address, length) pieces.  The
        transaction-level NVMe queues (``MachineConfig.detail`` fast, models/_nvme_dma.py) hand the
        entry over as an object at the address the access reaches."""
        pieces = self._checked_pieces(iova, size, access)
        if access == DMA_READ:
            self._reads += 1
        else:
            self._writes += 1
        self._bytes += size
        return pieces


class DirectDmaPort(_Port):
    """No IOMMU: bus addresses are guest-physical addresses."""

    def _translate(self, iova: int, access: int) -> tuple[int, int]:
        return iova, PAGE_SIZE - (iova & (PAGE_SIZE - 1))


class ViommuDmaPort(_Port):
    """An emulated device behind the virtio-iommu (``translate`` at every access)."""

    def __init__(self, memory: GuestMemory, viommu: Any, endpoint: int, initiator: str,
                 bus_master: Callable[[], bool]) -> None:
        super().__init__(memory, initiator, bus_master)
        self.viommu = viommu
        self.endpoint = endpoint
        self._traced(viommu.sim, endpoint)
        #: bytes of accesses that landed outside the mapping that translated them (``dma_escape``)
        self.escaped_bytes = 0
        self._mapping: Any = None

    def _translate(self, iova: int, access: int) -> tuple[int, int]:
        t = self.viommu.translate(self.endpoint, iova, access)
        if not t.ok:
            raise DmaFault(iova, access, f"virtio-iommu fault: {t.fault_description}")
        self._mapping = t.mapping
        # the entry covers the naturally aligned block addr_mask + 1 around iova
        valid = (t.addr_mask + 1) - (iova & t.addr_mask)
        return t.paddr, valid

    def _landed(self, iova: int, paddr: int, size: int, access: int) -> None:
        m = self._mapping
        if m is None:
            return
        # the mapping's physical range, unwrapped: [phys_start, phys_start + length)
        lo = m.phys_start
        hi = lo + (m.virt_end - m.virt_start) + 1
        outside = size - max(0, min(paddr + size, hi) - max(paddr, lo))
        if outside:
            self.escaped_bytes += outside
            tracer = self._tracer
            if tracer is not None and tracer.enabled:
                tracer("dma_escape", iova=iova, size=size, paddr=paddr, outside=outside,
                       access="read" if access == DMA_READ else "write", virt_start=m.virt_start,
                       virt_end=m.virt_end, phys_start=m.phys_start)


class HostIommuDmaPort(_Port):
    """A VFIO-assigned device: the host IOMMU translates with the container's page table."""

    def __init__(self, memory: GuestMemory, host: Any, bdf: int, initiator: str, bus_master: Callable[[], bool],
                 now: Callable[[], int]) -> None:
        super().__init__(memory, initiator, bus_master)
        self.host = host
        self.endpoint = bdf
        self.now = now
        self._traced(host.sim, bdf)
        self.faults: list[HostIommuFault] = []

    def _translate(self, iova: int, access: int) -> tuple[int, int]:
        m = self.host.container(self.endpoint).lookup(iova)
        reason = None
        if m is None:
            reason = "no host IOMMU mapping"
        elif access & DMA_WRITE and m.readonly:
            reason = "write to a read-only host IOMMU mapping"
        if reason is not None:
            self.faults.append(HostIommuFault(self.now(), self.endpoint, iova, access, reason))
            raise DmaFault(iova, access, f"host IOMMU fault: {reason}")
        assert m is not None
        return m.paddr + (iova - m.iova), m.last + 1 - iova
