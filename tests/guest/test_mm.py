"""The guest page allocator: natural alignment, LIFO reuse, zone choice."""

import pytest

from models.guest._mm import OutOfMemory, PageAllocator

GIB = 1 << 30


def test_large_guest_allocates_above_4g_from_the_reserved_offset():
    """A 64 GiB guest's kernel pages come from ZONE_NORMAL above 4 GiB."""
    mm = PageAllocator.for_ram(below_4g=2 * GIB, above_4g_end=66 * GIB, reserved_bytes=0x1000_0000)
    assert [hex(mm.alloc_pages(0)) for _ in range(2)] == ["0x110000000", "0x110001000"]


def test_small_guest_allocates_from_low_ram():
    """Without RAM above 4 GiB the zone is low RAM above 16 MiB."""
    mm = PageAllocator.for_ram(below_4g=1 * GIB, above_4g_end=4 * GIB, reserved_bytes=0)
    assert mm.alloc_pages(0) == 16 << 20


def test_blocks_are_naturally_aligned_and_freed_blocks_reused_lifo():
    """An order-2 block is 16 KiB aligned; the last freed block of an order is reused first."""
    mm = PageAllocator(0x1000_0000, 0x2000_0000)
    a = mm.alloc_pages(0)
    b = mm.alloc_pages(2)
    c = mm.alloc_pages(0)
    assert (a, b, c) == (0x1000_0000, 0x1000_4000, 0x1000_8000)
    mm.free_pages(a)
    mm.free_pages(c)
    assert [mm.alloc_pages(0), mm.alloc_pages(0)] == [c, a]


def test_kmalloc_page_sized_objects_are_page_aligned_and_small_ones_share_a_slab():
    """kmalloc(4096) is a page; kmalloc(512) objects are packed into one slab page."""
    mm = PageAllocator(0x1000_0000, 0x2000_0000)
    page = mm.kmalloc(4096)
    small = [mm.kmalloc(512) for _ in range(3)]
    assert page % 4096 == 0
    assert small == [0x1000_1000, 0x1000_1200, 0x1000_1400]


def test_exhausted_zone_raises_out_of_memory():
    """Running out of the zone is an explicit error, not a wrap-around."""
    mm = PageAllocator(0x1000_0000, 0x1000_2000)
    mm.alloc_pages(1)
    with pytest.raises(OutOfMemory):
        mm.alloc_pages(0)
