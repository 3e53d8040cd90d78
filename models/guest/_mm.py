"""Guest physical page allocation: a small, deterministic stand-in for the buddy allocator.

What matters to the IOMMU path is which guest-physical pages back a DMA buffer
(they become ``phys_start`` of MAP requests) and that the choice is
reproducible.  Linux hands out ZONE_NORMAL memory (above 4 GiB on a large
guest) for kernel allocations; this model does the same:

* pages come from one zone: RAM above 4 GiB when the guest has any, else the
  low RAM above 16 MiB (ZONE_DMA32 / ZONE_DMA are left alone);
* ``alloc_pages(order)`` returns a naturally aligned block of ``2**order``
  pages; freed blocks of the same order are reused last-in first-out (the
  per-CPU page lists of the real allocator behave LIFO too), otherwise blocks
  are carved upward from a bump pointer that starts ``reserved_bytes`` into
  the zone (memory the early boot already used);
* ``kmalloc(size)`` for size >= one page returns whole pages (page-aligned,
  like a kmalloc-4k object); smaller objects are packed into slab pages of
  their power-of-two size class.

Not modelled: fragmentation, zones other than the one above, NUMA.
"""

from __future__ import annotations

from ._kmem_consts import KMALLOC_MIN, PAGE_SHIFT, PAGE_SIZE


class OutOfMemory(MemoryError):
    """The zone has no room for the requested block."""


class PageAllocator:
    """Deterministic page and kmalloc allocator over one zone of guest RAM."""

    def __init__(self, zone_start: int, zone_end: int, reserved_bytes: int = 0) -> None:
        if zone_start & (PAGE_SIZE - 1) or zone_end <= zone_start:
            raise ValueError(f"bad zone [{zone_start:#x}, {zone_end:#x})")
        self.zone_start = zone_start
        self.zone_end = zone_end
        self._next = zone_start + (reserved_bytes & ~(PAGE_SIZE - 1))
        self._free: dict[int, list[int]] = {}
        self._slabs: dict[int, list[int]] = {}  # size class -> free objects (LIFO)
        self.allocated_pages = 0

    @classmethod
    def for_ram(cls, below_4g: int, above_4g_end: int, reserved_bytes: int) -> PageAllocator:
        """The zone Linux would use for kernel allocations on this RAM layout."""
        four_g = 1 << 32
        if above_4g_end > four_g:
            return cls(four_g, above_4g_end, reserved_bytes)
        return cls(16 << 20, below_4g, reserved_bytes)

    def alloc_pages(self, order: int = 0) -> int:
        """A naturally aligned block of ``2**order`` pages; returns its physical address."""
        if not 0 <= order <= 10:
            raise ValueError(f"order {order} outside 0..10 (MAX_ORDER)")
        free = self._free.get(order)
        if free:
            addr = free.pop()
        else:
            size = PAGE_SIZE << order
            addr = (self._next + size - 1) & ~(size - 1)
            if addr + size > self.zone_end:
                raise OutOfMemory(f"no {size}-byte block left in [{self.zone_start:#x}, {self.zone_end:#x})")
            self._next = addr + size
        self.allocated_pages += 1 << order
        return addr

    def free_pages(self, addr: int, order: int = 0) -> None:
        self._free.setdefault(order, []).append(addr)
        self.allocated_pages -= 1 << order

    def kmalloc(self, size: int) -> int:
        """Physical address of a ``size``-byte kernel object (page-aligned from 4 KiB up)."""
        if size <= 0:
            raise ValueError(f"kmalloc({size})")
        if size >= PAGE_SIZE:
            order = max(0, (size - 1).bit_length() - PAGE_SHIFT)
            return self.alloc_pages(order)
        cls = max(KMALLOC_MIN, 1 << (size - 1).bit_length())
        objs = self._slabs.setdefault(cls, [])
        if not objs:
            page = self.alloc_pages(0)
            # objects are handed out in ascending address order within a fresh slab page
            objs.extend(range(page + PAGE_SIZE - cls, page - 1, -cls))
        return objs.pop()

    def kfree(self, addr: int, size: int) -> None:
        if size >= PAGE_SIZE:
            self.free_pages(addr, max(0, (size - 1).bit_length() - PAGE_SHIFT))
            return
        cls = max(KMALLOC_MIN, 1 << (size - 1).bit_length())
        self._slabs.setdefault(cls, []).append(addr)
