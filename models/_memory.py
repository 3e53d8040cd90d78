"""Guest physical memory of a q35 machine: sparse, little-endian, bounds-checked.

Layout follows QEMU's ``pc_q35_init`` (hw/i386/pc_q35.c): when the guest has at
least 0xB0000000 bytes of RAM, the low part stops at 2 GiB (``lowmem =
0x80000000``), otherwise at 0xB0000000; the rest is mapped from 4 GiB up
("above_4g_mem").  The hole between low RAM and 4 GiB holds MMCONFIG
(PCIEXBAR 0xB0000000, 256 MiB), the 32-bit PCI MMIO window, the IOAPIC
(0xFEC00000), the local APIC / MSI window (0xFEE00000) and the BIOS.

RAM is stored as 4 KiB pages created on first write, so a 64 GiB guest costs
nothing until touched; never-written RAM reads as zeros.  An access that is not
RAM raises ``MemoryAccessError`` naming the address; the PCI bus, not this
module, decides what MMIO addresses mean.

Device (DMA) accesses go through ``dma_read``/``dma_write`` so the machine can
observe them; CPU accesses use ``read``/``write`` directly.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

import attrs

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = PAGE_SIZE - 1
#: the host's page size (QEMU ``qemu_real_host_page_size()``, the host IOMMU's pinning unit): an x86-64 host's
HOST_PAGE_SIZE = PAGE_SIZE

GIB = 1 << 30
MIB = 1 << 20
FOUR_GIB = 4 * GIB

#: q35 fixed addresses (hw/i386/pc_q35.c, hw/pci-host/q35.c, include/hw/i386/apic.h)
Q35_PCIEXBAR_BASE = 0xB000_0000
Q35_PCIEXBAR_SIZE = 256 * MIB
IOAPIC_BASE = 0xFEC0_0000
MSI_WINDOW_BASE = 0xFEE0_0000
MSI_WINDOW_END = 0xFEEF_FFFF


class MemoryAccessError(Exception):
    """An access to guest-physical space that is backed by nothing."""

    def __init__(self, addr: int, size: int, what: str = "access") -> None:
        self.addr = addr
        self.size = size
        super().__init__(f"guest-physical {what} of {size} byte(s) at 0x{addr:x} hits no RAM")


@attrs.frozen
class RamRegion:
    """One contiguous RAM range in guest-physical space: [start, end)."""

    name: str
    start: int
    end: int

    def __contains__(self, addr: int) -> bool:
        return self.start <= addr < self.end


def q35_ram_layout(ram_size: int) -> tuple[RamRegion, ...]:
    """Split ``ram_size`` bytes into below-4G and above-4G RAM as pc_q35_init does."""
    if ram_size <= 0:
        raise ValueError(f"memory size must be positive, not {ram_size}")
    lowmem = 0x8000_0000 if ram_size >= 0xB000_0000 else 0xB000_0000
    below = min(ram_size, lowmem)
    above = ram_size - below
    regions = [RamRegion("ram-below-4g", 0, below)]
    if above:
        regions.append(RamRegion("ram-above-4g", FOUR_GIB, FOUR_GIB + above))
    return tuple(regions)


DmaObserver = Callable[[str, int, int, str], None]


class GuestMemory:
    """Sparse guest RAM.  ``read``/``write`` raise MemoryAccessError outside RAM."""

    def __init__(self, ram_size: int) -> None:
        self.ram_size = ram_size
        self.regions = q35_ram_layout(ram_size)
        self._pages: dict[int, bytearray] = {}
        #: called as observer(kind, addr, size, initiator) for each DMA access
        self.dma_observer: DmaObserver | None = None
        #: transaction-level virtqueues by descriptor-table address (models/_virtq_direct.py): the
        #: direct access a driver offers the device that enables a queue there (TLM-2.0's DMI)
        self.direct_rings: dict[int, Any] = {}
        #: transaction-level NVMe queue entries by guest-physical address (models/_nvme_dma.py)
        self.direct_entries: dict[int, Any] = {}
        # the two RAM ranges as plain ints, for the bounds check of every access
        self._low_end = self.regions[0].end
        high = self.regions[1] if len(self.regions) > 1 else None
        self._high_start = high.start if high is not None else -1
        self._high_end = high.end if high is not None else -1

    # -- layout -----------------------------------------------------------
    @property
    def below_4g(self) -> int:
        return self.regions[0].end

    @property
    def above_4g_end(self) -> int:
        return self.regions[-1].end if len(self.regions) > 1 else FOUR_GIB

    def is_ram(self, addr: int, size: int = 1) -> bool:
        for r in self.regions:
            if r.start <= addr and addr + size <= r.end:
                return True
        return False

    def _check(self, addr: int, size: int, what: str) -> None:
        end = addr + size
        if size < 0 or addr < 0 or not (end <= self._low_end or self._high_start <= addr and end <= self._high_end):
            raise MemoryAccessError(addr, size, what)

    @property
    def touched_pages(self) -> int:
        return len(self._pages)

    # -- raw bytes ----------------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        end = addr + size
        if size < 0 or addr < 0 or not (end <= self._low_end or self._high_start <= addr and end <= self._high_end):
            raise MemoryAccessError(addr, size, "read")
        pages = self._pages
        off = addr & PAGE_MASK
        if off + size <= PAGE_SIZE:  # the common case: within one page
            page = pages.get(addr >> PAGE_SHIFT)
            return bytes(size) if page is None else bytes(page[off : off + size])
        out = bytearray()
        pos = addr
        end = addr + size
        while pos < end:
            off = pos & PAGE_MASK
            n = min(PAGE_SIZE - off, end - pos)
            page = pages.get(pos >> PAGE_SHIFT)
            out += bytes(n) if page is None else page[off : off + n]
            pos += n
        return bytes(out)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        end = addr + size
        if addr < 0 or not (end <= self._low_end or self._high_start <= addr and end <= self._high_end):
            raise MemoryAccessError(addr, size, "write")
        pages = self._pages
        off = addr & PAGE_MASK
        if off + size <= PAGE_SIZE:  # the common case: within one page
            pfn = addr >> PAGE_SHIFT
            page = pages.get(pfn)
            if page is None:
                page = pages[pfn] = bytearray(PAGE_SIZE)
            page[off : off + size] = data
            return
        pos = addr
        i = 0
        while i < size:
            off = pos & PAGE_MASK
            n = min(PAGE_SIZE - off, size - i)
            pfn = pos >> PAGE_SHIFT
            page = pages.get(pfn)
            if page is None:
                page = pages[pfn] = bytearray(PAGE_SIZE)
            page[off : off + n] = data[i : i + n]
            pos += n
            i += n

    def fill(self, addr: int, size: int, byte: int = 0) -> None:
        self.write(addr, bytes([byte]) * size)

    # -- typed little-endian accessors ---------------------------------------
    def read_u8(self, addr: int) -> int:
        return self.read(addr, 1)[0]

    def read_u16(self, addr: int) -> int:
        return int(struct.unpack("<H", self.read(addr, 2))[0])

    def read_u32(self, addr: int) -> int:
        return int(struct.unpack("<I", self.read(addr, 4))[0])

    def read_u64(self, addr: int) -> int:
        return int(struct.unpack("<Q", self.read(addr, 8))[0])

    def write_u8(self, addr: int, value: int) -> None:
        self.write(addr, struct.pack("<B", value))

    def write_u16(self, addr: int, value: int) -> None:
        self.write(addr, struct.pack("<H", value))

    def write_u32(self, addr: int, value: int) -> None:
        self.write(addr, struct.pack("<I", value))

    def write_u64(self, addr: int, value: int) -> None:
        self.write(addr, struct.pack("<Q", value))

    # -- device accesses (observable) -----------------------------------------
    def dma_read(self, addr: int, size: int, initiator: str) -> bytes:
        data = self.read(addr, size)
        if self.dma_observer is not None:
            self.dma_observer("read", addr, size, initiator)
        return data

    def dma_write(self, addr: int, data: bytes | bytearray, initiator: str) -> None:
        self.write(addr, data)
        if self.dma_observer is not None:
            self.dma_observer("write", addr, len(data), initiator)
