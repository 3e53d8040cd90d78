"""Guest RAM of a q35 machine: layout, sparseness, bounds, byte order."""

import pytest

from models._memory import FOUR_GIB, GIB, MIB, GuestMemory, MemoryAccessError, RamRegion, q35_ram_layout


def test_q35_layout_splits_64g_at_2g():
    """A 64 GiB guest has 2 GiB below 4 GiB and the other 62 GiB from 4 GiB up (pc_q35_init)."""
    assert q35_ram_layout(64 * GIB) == (
        RamRegion("ram-below-4g", 0, 0x8000_0000),
        RamRegion("ram-above-4g", FOUR_GIB, FOUR_GIB + 62 * GIB),
    )


def test_q35_layout_keeps_2g_guest_below_4g():
    """A 2 GiB guest fits under the 0xB0000000 limit: no RAM above 4 GiB."""
    assert q35_ram_layout(2 * GIB) == (RamRegion("ram-below-4g", 0, 2 * GIB),)


def test_q35_layout_limit_is_0xb0000000():
    """Below 0xB0000000 bytes RAM stays low; from there on the low part stops at 2 GiB."""
    assert q35_ram_layout(0xB000_0000 - MIB) == (RamRegion("ram-below-4g", 0, 0xB000_0000 - MIB),)
    assert q35_ram_layout(0xB000_0000) == (
        RamRegion("ram-below-4g", 0, 0x8000_0000),
        RamRegion("ram-above-4g", FOUR_GIB, FOUR_GIB + 0x3000_0000),
    )


def test_sparse_64g_guest_touches_no_pages_until_written():
    """Reads of never-written RAM return zeros and allocate nothing; writes allocate whole 4 KiB pages."""
    mem = GuestMemory(64 * GIB)
    assert mem.touched_pages == 0
    assert mem.read(FOUR_GIB + 40 * GIB, 8192) == bytes(8192)
    assert mem.touched_pages == 0
    mem.write(0x1FFE, b"\x01\x02\x03\x04")  # straddles two pages
    assert mem.touched_pages == 2
    assert mem.read(0x1FFE, 4) == b"\x01\x02\x03\x04"


def test_memory_access_error_names_the_address():
    """An access into the PCI hole raises MemoryAccessError whose message names the address."""
    mem = GuestMemory(64 * GIB)
    with pytest.raises(MemoryAccessError, match="0x80000000") as info:
        mem.read(0x8000_0000, 4)
    assert (info.value.addr, info.value.size) == (0x8000_0000, 4)
    with pytest.raises(MemoryAccessError, match="0x7ffffffe"):
        mem.write(0x7FFF_FFFE, b"\x00" * 4)  # runs off the end of low RAM


def test_typed_accessors_are_little_endian():
    """write_u32 stores the low byte first; read_u16/u64 read it back the same way."""
    mem = GuestMemory(2 * GIB)
    mem.write_u32(0x1000, 0x1122_3344)
    assert mem.read(0x1000, 4) == b"\x44\x33\x22\x11"
    assert mem.read_u16(0x1002) == 0x1122
    mem.write_u64(0x2000, 0x0102_0304_0506_0708)
    assert mem.read_u64(0x2000) == 0x0102_0304_0506_0708


def test_dma_observer_sees_device_accesses_only():
    """dma_read/dma_write report (kind, addr, size, initiator); CPU accesses do not."""
    mem = GuestMemory(2 * GIB)
    seen = []
    mem.dma_observer = lambda kind, addr, size, who: seen.append((kind, addr, size, who))
    mem.write(0x3000, b"cpu")
    mem.dma_write(0x4000, b"abcd", "nvme")
    assert mem.dma_read(0x4000, 2, "nvme") == b"ab"
    assert seen == [("write", 0x4000, 4, "nvme"), ("read", 0x4000, 2, "nvme")]
