"""Guest firmware's PCI resource assignment: SeaBIOS ``pci_setup`` on the q35 root bus.

Everything goes through config-space reads and writes on the bus (the untimed
``*_sync`` accesses), never through the function objects' attributes.

SeaBIOS 1.16.x src/fw/pciinit.c ``pci_setup``:

1. probe bus 0: device-major, functions 1-7 only when function 0 has header
   type bit 7 (``pci_probe_devices``);
2. size every BAR and the ROM (``pci_bios_get_bar``: write all-ones -- the ROM
   mask for the ROM -- read back, restore); memory BARs smaller than 4 KiB count
   as 4 KiB (``PCI_DEVICE_MEM_MIN``);
3. sort each region list (I/O, memory, prefetchable memory) largest alignment
   first, then largest size, equal entries keeping discovery order
   (``pci_region_create_entry``);
4. place I/O at 0xc000 (0x1000 if it needs 16 KiB or more); place the 32-bit
   windows at the *top* of [0xc0000000, 0xfec00000) -- the region with the larger
   alignment highest (``pci_bios_init_root_regions_mem``), entries ascending
   inside a region;
5. with RAM above 4 GiB and at least 36 physical address bits
   (``pci_pad_mem64``), or when the 32-bit window overflows, move every 64-bit
   BAR (except USB controllers) to a 64-bit window just below
   ``1 << min(phys_bits, 46)``: its size is rounded to 1 GiB per region, then
   (when padding) to an eighth of the address space; non-prefetchable first,
   each region 1 GiB-aligned (``pci_bios_map_devices``);
6. per device (``pci_bios_init_device``): interrupt line = the legacy IRQ of
   ``mch_pci_slot_get_irq`` (10, 10, 11, 11 rotated by slot; slots 25-31
   unrotated), the ICH9 SMBus gets I/O 0x700 (``ich9_smbus_setup``), then
   COMMAND |= I/O | memory | SERR.

On the seed's 64 GiB guest with ``-cpu host`` (46 physical bits) this puts the
NVMe BAR0 at 0x3800_0000_0000 and the virtio-iommu's BAR4 at 0x3800_4000_0000,
so the queue-0 doorbell is 0x3800_4000_3000 = 61573724909568 -- the address of the
notify write in the seed's QEMU backtrace.  A 2 GiB guest keeps every BAR below
4 GiB (the reference boot's layout: VGA fd000000, virtio fe000000, ...).
The guest kernel's scan that follows is in ``_pci_scan.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from .._memory import FOUR_GIB, GIB, GuestMemory, Q35_PCIEXBAR_BASE, Q35_PCIEXBAR_SIZE
from .._pci_config import (
    PCI_BASE_ADDRESS_0,
    PCI_BASE_ADDRESS_MEM_PREFETCH,
    PCI_BASE_ADDRESS_MEM_TYPE_64,
    PCI_BASE_ADDRESS_SPACE_IO,
    PCI_COMMAND,
    PCI_COMMAND_IO,
    PCI_COMMAND_MEMORY,
    PCI_COMMAND_SERR,
    PCI_HEADER_TYPE,
    PCI_HEADER_TYPE_MULTIFUNCTION,
    PCI_INTERRUPT_LINE,
    PCI_INTERRUPT_PIN,
    PCI_ROM_ADDRESS_MASK,
    ROM_SLOT,
    bar_register,
)

if TYPE_CHECKING:
    from .._seams import CpuBus  # the guest's view of the host bridge

#: physical address bits of the seed's vCPUs (``-cpu host``); SeaBIOS caps the 64-bit window at 2^46
#: anyway, so any host with >= 46 bits gives the seed's addresses
CPU_PHYS_BITS = 46
SEABIOS_PHYS_BITS_CAP = 46
PCIMEM_END = 0xFEC0_0000  # BUILD_PCIMEM_END: the IOAPIC
PCI_DEVICE_MEM_MIN = 0x1000
#: SeaBIOS PORT_SMB_BASE, where ich9_smbus_setup puts the ICH9 SMBus
PORT_SMB_BASE = 0x700
#: mch_pci_slot_get_irq's legacy IRQs for PIRQ A-D (SeaBIOS pci_irqs)
LEGACY_PCI_IRQS = (10, 10, 11, 11)
#: first config dword of an absent function: what SeaBIOS's probe and Linux's
#: ``pci_bus_generic_read_dev_vendor_id`` both take for "no device here"
ABSENT_IDS = (0xFFFF_FFFF, 0x0000_0000, 0x0000_FFFF, 0xFFFF_0000)
_CLASS_SERIAL_USB = 0x0C03


class FirmwareError(RuntimeError):
    """The firmware cannot place the BARs (SeaBIOS panics with this message)."""


@attrs.frozen
class FirmwareLayout:
    """The windows SeaBIOS used (64-bit window (0, 0) when nothing went above 4 GiB)."""

    io_base: int
    mem32_start: int
    mem32_end: int
    mem64_start: int
    mem64_end: int


@attrs.define
class _Entry:
    bdf: int
    bar: int
    size: int
    is64: bool
    class_word: int


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def _align_down(value: int, align: int) -> int:
    return value // align * align


def _present_functions(bus: CpuBus) -> list[int]:
    """BDFs of bus 0, device-major; functions 1-7 probed only behind a multifunction function 0."""
    found: list[int] = []
    for dev in range(32):
        for fn in range(8):
            bdf = dev << 3 | fn
            if bus.config_read_sync(bdf, 0, 4) in ABSENT_IDS:
                if fn == 0:
                    break
                continue
            found.append(bdf)
            if fn == 0 and not bus.config_read_sync(bdf, PCI_HEADER_TYPE, 1) & PCI_HEADER_TYPE_MULTIFUNCTION:
                break
    return found


def _firmware_size_bar(bus: CpuBus, bdf: int, index: int) -> tuple[str, int, bool]:
    """``pci_bios_get_bar``: (region type "io"/"mem"/"prefmem", size, is64)."""
    reg = bar_register(index)
    old = bus.config_read_sync(bdf, reg, 4)
    region, is64 = "mem", False
    if index == ROM_SLOT:
        mask = PCI_ROM_ADDRESS_MASK
        bus.config_write_sync(bdf, reg, 4, mask)
    else:
        if old & PCI_BASE_ADDRESS_SPACE_IO:
            mask, region = 0xFFFF_FFFC, "io"
        else:
            mask = 0xFFFF_FFF0
            if old & PCI_BASE_ADDRESS_MEM_PREFETCH:
                region = "prefmem"
            is64 = (old & 0x6) == PCI_BASE_ADDRESS_MEM_TYPE_64
        bus.config_write_sync(bdf, reg, 4, 0xFFFF_FFFF)
    val = bus.config_read_sync(bdf, reg, 4)
    bus.config_write_sync(bdf, reg, 4, old)
    if is64:
        hold = bus.config_read_sync(bdf, reg + 4, 4)
        bus.config_write_sync(bdf, reg + 4, 4, 0xFFFF_FFFF)
        high = bus.config_read_sync(bdf, reg + 4, 4)
        bus.config_write_sync(bdf, reg + 4, 4, hold)
        val |= high << 32
        mask |= 0xFFFF_FFFF << 32
        size = (~(val & mask) + 1) & ((1 << 64) - 1)
    else:
        size = (~(val & mask) + 1) & 0xFFFF_FFFF
    return region, size, is64


def _insert_sorted(entries: list[_Entry], entry: _Entry) -> None:
    """Before the first entry with a smaller alignment (= size), or equal alignment and smaller size."""
    for i, pos in enumerate(entries):
        if pos.size < entry.size:
            entries.insert(i, entry)
            return
    entries.append(entry)


def _region_sum(entries: list[_Entry]) -> int:
    return sum(e.size for e in entries)


def _region_align(entries: list[_Entry]) -> int:
    return entries[0].size if entries else 1


def _place_mem32(mem: list[_Entry], pref: list[_Entry], start: int, end: int) -> dict[str, int] | None:
    """``pci_bios_init_root_regions_mem``: bases of the two 32-bit regions, or None if they do not fit."""
    r_end, r_start = ("prefmem", pref), ("mem", mem)
    if _region_align(mem) < _region_align(pref):
        r_end, r_start = r_start, r_end
    end_base = _align_down(end - _region_sum(r_end[1]), _region_align(r_end[1]))
    start_base = _align_down(end_base - _region_sum(r_start[1]), _region_align(r_start[1]))
    if not start <= start_base <= end:
        return None
    return {r_end[0]: end_base, r_start[0]: start_base}


def _map_entries(bus: CpuBus, entries: list[_Entry], base: int) -> None:
    """``pci_region_map_entries``: entries back to back from ``base`` (``pci_set_io_region_addr``)."""
    for e in entries:
        reg = bar_register(e.bar)
        bus.config_write_sync(e.bdf, reg, 4, base & 0xFFFF_FFFF)
        if e.is64:
            bus.config_write_sync(e.bdf, reg + 4, 4, base >> 32)
        base += e.size


def firmware_setup(bus: CpuBus, memory: GuestMemory, phys_bits: int = CPU_PHYS_BITS) -> FirmwareLayout:
    """Assign every BAR and enable decode, as SeaBIOS does before the guest kernel runs."""
    regions: dict[str, list[_Entry]] = {"io": [], "mem": [], "prefmem": []}
    functions = _present_functions(bus)
    for bdf in functions:
        class_word = bus.config_read_sync(bdf, 0x0A, 2)
        index = 0
        while index <= ROM_SLOT:
            region, size, is64 = _firmware_size_bar(bus, bdf, index)
            if size:
                if region != "io" and size < PCI_DEVICE_MEM_MIN:
                    size = PCI_DEVICE_MEM_MIN
                _insert_sorted(regions[region], _Entry(bdf, index, size, is64, class_word))
            index += 2 if is64 else 1

    io_sum = _region_sum(regions["io"])
    if io_sum < 0x4000:
        io_base = 0xC000
    elif io_sum < 0x9000:
        io_base = 0x1000
    else:
        raise FirmwareError("PCI: out of I/O address space")

    mem32_start = Q35_PCIEXBAR_BASE + Q35_PCIEXBAR_SIZE  # mch_mem_addr_setup: above MMCONFIG
    ram_over_4g = memory.above_4g_end - FOUR_GIB
    pad_mem64 = phys_bits >= 36 and ram_over_4g > 0
    bases = None if pad_mem64 else _place_mem32(regions["mem"], regions["prefmem"], mem32_start, PCIMEM_END)
    mem64_start = mem64_end = 0
    if bases is None:
        r64: dict[str, list[_Entry]] = {"mem": [], "prefmem": []}
        for name in ("mem", "prefmem"):
            keep: list[_Entry] = []
            for e in regions[name]:
                (r64[name] if e.is64 and e.class_word != _CLASS_SERIAL_USB else keep).append(e)
            regions[name] = keep
        bases = _place_mem32(regions["mem"], regions["prefmem"], mem32_start, PCIMEM_END)
        if bases is None:
            raise FirmwareError("PCI: out of 32bit address space")
        sum_mem, sum_pref = _region_sum(r64["mem"]), _region_sum(r64["prefmem"])
        mem_base = FOUR_GIB + ram_over_4g
        top = 1 << min(phys_bits, SEABIOS_PHYS_BITS_CAP)
        size = _align_up(sum_mem, GIB) + _align_up(sum_pref, GIB)
        if pad_mem64:
            size = _align_up(size, top >> 3)
        mem_base = max(mem_base, top - size)
        mem_base = _align_up(_align_up(mem_base, _region_align(r64["mem"])), GIB)
        pref_base = _align_up(_align_up(mem_base + sum_mem, _region_align(r64["prefmem"])), GIB)
        mem64_start, mem64_end = mem_base, _align_up(pref_base + sum_pref, GIB)
        _map_entries(bus, r64["mem"], mem_base)
        _map_entries(bus, r64["prefmem"], pref_base)
    _map_entries(bus, regions["io"], io_base)
    _map_entries(bus, regions["mem"], bases["mem"])
    _map_entries(bus, regions["prefmem"], bases["prefmem"])

    for bdf in functions:
        _firmware_init_device(bus, bdf)
    return FirmwareLayout(io_base, mem32_start, PCIMEM_END, mem64_start, mem64_end)


def _firmware_init_device(bus: CpuBus, bdf: int) -> None:
    """``pci_bios_init_device``: legacy IRQ line, device quirks, then I/O + memory decode and SERR."""
    pin = bus.config_read_sync(bdf, PCI_INTERRUPT_PIN, 1)
    if pin:
        slot = bdf >> 3 & 0x1F
        rotate = slot if slot <= 24 else 0
        bus.config_write_sync(bdf, PCI_INTERRUPT_LINE, 1, LEGACY_PCI_IRQS[(pin - 1 + rotate) & 3])
    if bus.config_read_sync(bdf, 0, 4) == 0x2930_8086:  # ICH9 SMBus: ich9_smbus_setup
        bus.config_write_sync(bdf, PCI_BASE_ADDRESS_0 + 16, 4, PORT_SMB_BASE | PCI_BASE_ADDRESS_SPACE_IO)
        bus.config_write_sync(bdf, 0x40, 1, 0x01)  # HOSTC.HST_EN
    cmd = bus.config_read_sync(bdf, PCI_COMMAND, 2)
    bus.config_write_sync(bdf, PCI_COMMAND, 2, cmd | PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_SERR)


