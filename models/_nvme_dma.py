"""The NVMe controller's DMA engine: every access to guest memory, split as an IOMMU sees it.

Models the device side of PCIe DMA as the reference describes it for a device behind
an IOMMU (pci-nvme.md 5.1-5.3): each access -- SQ entry fetch, PRP list / SGL segment
fetch, data, CQ entry post, shadow doorbell -- is issued through the ``DmaPort`` at
the moment it happens, split at 4 KiB IOVA boundaries (the IOMMU's smallest granule),
and only while the PCI command register's Bus Master Enable is set (PCI 3.0 6.2.2;
QEMU hw/pci/pci.c bus_master_enable_region routes a disabled function's DMA to a
disabled address space).  A refused access is a ``DmaFault`` (models._dma), counted
and traced here; what it does to the command is the controller's decision.

``CommandError`` is how any step of a command (a decoder, a data pointer walk, a
faulting transfer) ends the command with an NVMe status (NVMe 1.4 section 4.6.1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sim import Simulator

from ._dma import DMA_READ, DMA_WRITE, DmaFault
from ._memory import PAGE_SIZE, GuestMemory, MemoryAccessError
from ._seams import DmaPort

E = TypeVar("E")

#: the IOMMU's smallest granule: every device access is split at these boundaries (reference 5.1)
DMA_SPLIT = PAGE_SIZE


class CommandError(Exception):
    """A command ends with ``status`` (15-bit, DNR included) and DW0 ``result``.

    Raised by the decoders (identify_data, log_page, map_prp, map_sgl) and the DMA engine.
    """

    def __init__(self, status: int, result: int = 0) -> None:
        self.status = status
        self.result = result
        super().__init__(f"command status 0x{status:04x}")


class DirectEntries:
    """The transaction-level hand-off of queue entries (``MachineConfig.detail`` fast).

    The guest driver leaves each SQ entry it writes as an object in ``GuestMemory.direct_entries``
    at the entry's guest-physical address, and reads CQ entries from there; the controller makes
    the same DMA access as at the byte level (``locate``: translated through the IOMMU, gated,
    traced and counted by the port) and takes or leaves the object at the address it reaches.
    Where no object is (a ring the guest wrote as bytes), the bytes in memory are the entry.
    """

    def __init__(self, memory: GuestMemory, locate: Callable[[int, int, int], list[tuple[int, int]]]) -> None:
        self.memory = memory
        self.entries: dict[int, Any] = memory.direct_entries
        self.locate = locate


class NvmeDma:
    """Split, gated accesses through ``port``; ``faults`` counts the refused ones.

    ``bus_master()`` reads the function's Bus Master Enable bit; ``name`` is the trace source.
    ``direct``: queue entries are handed over as objects (``read_entry``/``write_entry``).
    """

    def __init__(self, sim: Simulator, name: str, port: DmaPort, bus_master: Callable[[], bool],
                 direct: DirectEntries | None = None) -> None:
        self.sim = sim
        self.name = name
        self._trace = sim.tracer(name)
        self.port = port
        self.bus_master = bus_master
        self.direct = direct
        self.faults = 0

    def read_entry(self, iova: int, size: int, decode: Callable[[bytes], E]) -> E:
        """A queue entry of ``size`` bytes at ``iova``: ``decode`` of the bytes read, or at the
        transaction level the object the driver left where the access lands."""
        direct = self.direct
        if direct is None:
            return decode(self.read(iova, size))
        if not self.bus_master():
            raise DmaFault(iova, DMA_READ, "bus master disabled")
        pieces = direct.locate(iova, size, DMA_READ)
        entry = direct.entries.pop(pieces[0][0], None) if len(pieces) == 1 else None
        if entry is not None:
            return entry  # type: ignore[no-any-return]
        try:
            return decode(b"".join(direct.memory.read(paddr, n) for paddr, n in pieces))
        except MemoryAccessError as exc:
            raise DmaFault(iova, DMA_READ, str(exc)) from None

    def write_entry(self, iova: int, entry: Any, encode: Callable[[], bytes], size: int) -> None:
        """Post a queue entry of ``size`` bytes at ``iova``: ``encode()``'s bytes, or at the
        transaction level the object itself where the access lands."""
        direct = self.direct
        if direct is None:
            self.write(iova, encode())
            return
        if not self.bus_master():
            raise DmaFault(iova, DMA_WRITE, "bus master disabled")
        pieces = direct.locate(iova, size, DMA_WRITE)
        paddr = pieces[0][0]
        if len(pieces) == 1 and direct.memory.is_ram(paddr, size):
            direct.entries[paddr] = entry
            return
        data, pos = encode(), 0
        for paddr, n in pieces:
            try:
                direct.memory.write(paddr, data[pos:pos + n])
            except MemoryAccessError as exc:
                raise DmaFault(iova + pos, DMA_WRITE, str(exc)) from None
            pos += n

    def read(self, iova: int, size: int) -> bytes:
        if not self.bus_master():
            raise DmaFault(iova, DMA_READ, "bus master disabled")
        end = iova + size
        if (iova ^ (end - 1)) < DMA_SPLIT:
            return self.port.dma_read(iova, size)
        out = bytearray()
        pos = iova
        while pos < end:
            n = min(DMA_SPLIT - (pos & (DMA_SPLIT - 1)), end - pos)
            out += self.port.dma_read(pos, n)
            pos += n
        return bytes(out)

    def write(self, iova: int, data: bytes) -> None:
        if not self.bus_master():
            raise DmaFault(iova, DMA_WRITE, "bus master disabled")
        size = len(data)
        if (iova ^ (iova + size - 1)) < DMA_SPLIT:
            self.port.dma_write(iova, data)
            return
        done = 0
        while done < size:
            pos = iova + done
            n = min(DMA_SPLIT - (pos & (DMA_SPLIT - 1)), size - done)
            self.port.dma_write(pos, data[done:done + n])
            done += n

    def fault(self, fault: DmaFault, what: str, **fields: int) -> None:
        """Count and trace a refused access; ``what`` names the access (sq_fetch, data_write, ...)."""
        self.faults += 1
        self._trace("dma_fault", what=what, iova=fault.iova, access="read" if fault.access == DMA_READ else "write",
                    reason=fault.reason, **fields)
