"""Guest-side PCI enumeration: SeaBIOS's resource assignment, then Linux 6.7's root-bus scan.

Everything goes through config-space reads and writes on the bus (the untimed
``*_sync`` accesses), never through the function objects' attributes.

Firmware (SeaBIOS 1.16.x src/fw/pciinit.c ``pci_setup``):

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

Linux (drivers/pci/probe.c ``pci_scan_child_bus_extend``): slot by slot, a
function is absent when its first dword reads 0xffffffff, 0, 0x0000ffff or
0xffff0000; function 0 without header bit 7 ends the slot; functions found at
fn > 0 are multifunction.  ``__pci_read_base`` sizes each BAR again with decode
off (except host bridges, ``mmio_always_on``) and keeps the firmware's address.
Linux never reassigns here, so the records carry the firmware's layout.
"""

from __future__ import annotations

import attrs

from ._interrupts import q35_intx_gsi
from ._memory import FOUR_GIB, GIB, GuestMemory, Q35_PCIEXBAR_BASE, Q35_PCIEXBAR_SIZE
from ._pci import (
    PCI_BASE_ADDRESS_0,
    PCI_BASE_ADDRESS_MEM_PREFETCH,
    PCI_BASE_ADDRESS_MEM_TYPE_64,
    PCI_BASE_ADDRESS_SPACE_IO,
    PCI_CAP_ID_EXP,
    PCI_CAPABILITY_LIST,
    PCI_COMMAND,
    PCI_COMMAND_IO,
    PCI_COMMAND_MEMORY,
    PCI_COMMAND_SERR,
    PCI_CONFIG_SPACE_SIZE,
    PCI_EXT_CAP_ID_ACS,
    PCI_HEADER_TYPE,
    PCI_HEADER_TYPE_MULTIFUNCTION,
    PCI_INTERRUPT_LINE,
    PCI_INTERRUPT_PIN,
    PCI_REVISION_ID,
    PCI_ROM_ADDRESS,
    PCI_ROM_ADDRESS_MASK,
    PCI_STATUS,
    PCI_STATUS_CAP_LIST,
    PCI_SUBSYSTEM_ID,
    PCI_SUBSYSTEM_VENDOR_ID,
    PCIE_CONFIG_SPACE_SIZE,
    ROM_SLOT,
    PciBus,
    format_bdf,
)

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
_ABSENT = (0xFFFF_FFFF, 0x0000_0000, 0x0000_FFFF, 0xFFFF_0000)
_CLASS_SERIAL_USB = 0x0C03
_PCI_FIND_CAP_TTL = 48
_PCI_EXT_CAP_TTL = (PCIE_CONFIG_SPACE_SIZE - PCI_CONFIG_SPACE_SIZE) // 8


class FirmwareError(RuntimeError):
    """The firmware cannot place the BARs (SeaBIOS panics with this message)."""


@attrs.frozen
class BarInfo:
    """One implemented BAR as the guest sees it after enumeration."""

    index: int  # 0-5, or 6 for the expansion ROM
    kind: str  # "mem32", "mem64", "io" or "rom"
    prefetchable: bool
    address: int
    size: int

    @property
    def register(self) -> int:
        return PCI_ROM_ADDRESS if self.index == ROM_SLOT else PCI_BASE_ADDRESS_0 + 4 * self.index


@attrs.frozen
class PciDeviceInfo:
    """What enumeration learned about one function, all of it read from config space."""

    bdf: int
    vendor_id: int
    device_id: int
    subsystem_vendor_id: int
    subsystem_id: int
    class_code: int  # 24 bits: base, sub, prog-if
    revision: int
    header_type: int  # the raw byte (bit 7 = multifunction)
    multifunction: bool  # pdev->multifunction: fn 0's header bit 7, or any fn > 0
    irq_pin: int
    irq_line: int
    gsi: int | None  # IOAPIC input of the pin per the q35 routing (ACPI _PRT); None without a pin
    bars: tuple[BarInfo, ...]
    capabilities: tuple[tuple[int, int], ...]  # (cap ID, offset) in list order
    ext_capabilities: tuple[tuple[int, int], ...]
    pcie_type: int | None  # PCIe capability device/port type; None for conventional PCI
    acs_cap: int | None
    acs_ctrl: int

    @property
    def slot_name(self) -> str:
        return format_bdf(self.bdf)

    def bar(self, index: int) -> BarInfo | None:
        for bar in self.bars:
            if bar.index == index:
                return bar
        return None


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


def _present_functions(bus: PciBus) -> list[int]:
    """BDFs of bus 0, device-major; functions 1-7 probed only behind a multifunction function 0."""
    found: list[int] = []
    for dev in range(32):
        for fn in range(8):
            bdf = dev << 3 | fn
            if bus.config_read_sync(bdf, 0, 4) in _ABSENT:
                if fn == 0:
                    break
                continue
            found.append(bdf)
            if fn == 0 and not bus.config_read_sync(bdf, PCI_HEADER_TYPE, 1) & PCI_HEADER_TYPE_MULTIFUNCTION:
                break
    return found


def _bar_register(index: int) -> int:
    return PCI_ROM_ADDRESS if index == ROM_SLOT else PCI_BASE_ADDRESS_0 + 4 * index


# -- firmware --------------------------------------------------------------------------------------
def _firmware_size_bar(bus: PciBus, bdf: int, index: int) -> tuple[str, int, bool]:
    """``pci_bios_get_bar``: (region type "io"/"mem"/"prefmem", size, is64)."""
    reg = _bar_register(index)
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


def _map_entries(bus: PciBus, entries: list[_Entry], base: int) -> None:
    """``pci_region_map_entries``: entries back to back from ``base`` (``pci_set_io_region_addr``)."""
    for e in entries:
        reg = _bar_register(e.bar)
        bus.config_write_sync(e.bdf, reg, 4, base & 0xFFFF_FFFF)
        if e.is64:
            bus.config_write_sync(e.bdf, reg + 4, 4, base >> 32)
        base += e.size


def firmware_setup(bus: PciBus, memory: GuestMemory, phys_bits: int = CPU_PHYS_BITS) -> FirmwareLayout:
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
            keep = []
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


def _firmware_init_device(bus: PciBus, bdf: int) -> None:
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


# -- Linux -------------------------------------------------------------------------------------------
def _linux_read_bases(bus: PciBus, bdf: int, mmio_always_on: bool) -> tuple[BarInfo, ...]:
    """``pci_read_bases`` / ``__pci_read_base`` for the six BARs and the ROM."""
    cmd = bus.config_read_sync(bdf, PCI_COMMAND, 2)
    decode = cmd & (PCI_COMMAND_IO | PCI_COMMAND_MEMORY)
    if decode and not mmio_always_on:
        bus.config_write_sync(bdf, PCI_COMMAND, 2, cmd & ~decode)
    bars: list[BarInfo] = []
    index = 0
    while index <= ROM_SLOT:
        reg = _bar_register(index)
        rom = index == ROM_SLOT
        orig = bus.config_read_sync(bdf, reg, 4)
        bus.config_write_sync(bdf, reg, 4, orig | (PCI_ROM_ADDRESS_MASK if rom else 0xFFFF_FFFF))
        sz = bus.config_read_sync(bdf, reg, 4)
        bus.config_write_sync(bdf, reg, 4, orig)
        step, pref = 1, False
        if rom:
            kind, mask = "rom", PCI_ROM_ADDRESS_MASK
        elif orig & PCI_BASE_ADDRESS_SPACE_IO:
            kind, mask = "io", 0xFFFC  # PCI_BASE_ADDRESS_IO_MASK & IO_SPACE_LIMIT
        else:
            kind, mask, pref = "mem32", 0xFFFF_FFF0, bool(orig & PCI_BASE_ADDRESS_MEM_PREFETCH)
        base, szv = orig & mask, sz & mask
        if kind == "mem32" and (orig & 0x6) == PCI_BASE_ADDRESS_MEM_TYPE_64:
            kind, step = "mem64", 2
            hi = bus.config_read_sync(bdf, reg + 4, 4)
            bus.config_write_sync(bdf, reg + 4, 4, 0xFFFF_FFFF)
            szhi = bus.config_read_sync(bdf, reg + 4, 4)
            bus.config_write_sync(bdf, reg + 4, 4, hi)
            base |= hi << 32
            szv |= szhi << 32
            mask |= 0xFFFF_FFFF << 32
        masked = szv & mask
        size = masked & -masked  # pci_size: the lowest writable address bit
        if size:
            bars.append(BarInfo(index, kind, pref, base, size))
        index += step
    if decode and not mmio_always_on:
        bus.config_write_sync(bdf, PCI_COMMAND, 2, cmd)
    return tuple(bars)


def _capabilities(bus: PciBus, bdf: int) -> tuple[tuple[int, int], ...]:
    """The standard capability list (``pci_find_capability``'s walk, TTL 48)."""
    if not bus.config_read_sync(bdf, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST:
        return ()
    caps: list[tuple[int, int]] = []
    pos = bus.config_read_sync(bdf, PCI_CAPABILITY_LIST, 1)
    for _ in range(_PCI_FIND_CAP_TTL):
        pos &= ~3
        if pos < 0x40:
            break
        header = bus.config_read_sync(bdf, pos, 2)
        if header & 0xFF == 0xFF:
            break
        caps.append((header & 0xFF, pos))
        pos = header >> 8
    return tuple(caps)


def _ext_capabilities(bus: PciBus, bdf: int) -> tuple[tuple[int, int], ...]:
    """The extended capability list from 0x100 (``pci_find_next_ext_capability``)."""
    caps: list[tuple[int, int]] = []
    pos = PCI_CONFIG_SPACE_SIZE
    for _ in range(_PCI_EXT_CAP_TTL):
        header = bus.config_read_sync(bdf, pos, 4)
        if header in (0, 0xFFFF_FFFF):
            break
        caps.append((header & 0xFFFF, pos))
        pos = header >> 20
        if pos < PCI_CONFIG_SPACE_SIZE:
            break
    return tuple(caps)


def _read_device(bus: PciBus, bdf: int, multifunction: bool) -> PciDeviceInfo:
    """``pci_setup_device``: identity, class, BARs, subsystem, IRQ pin/line, capabilities."""
    ids = bus.config_read_sync(bdf, 0, 4)
    header = bus.config_read_sync(bdf, PCI_HEADER_TYPE, 1)
    class_rev = bus.config_read_sync(bdf, PCI_REVISION_ID, 4)
    class_code = class_rev >> 8
    bars = _linux_read_bases(bus, bdf, mmio_always_on=class_code >> 8 == 0x0600)
    pin = bus.config_read_sync(bdf, PCI_INTERRUPT_PIN, 1)
    caps = _capabilities(bus, bdf)
    pcie_type = None
    for cap_id, off in caps:
        if cap_id == PCI_CAP_ID_EXP:
            pcie_type = bus.config_read_sync(bdf, off + 2, 2) >> 4 & 0xF
            break
    ext = _ext_capabilities(bus, bdf) if pcie_type is not None else ()
    acs_cap, acs_ctrl = None, 0
    for cap_id, off in ext:
        if cap_id == PCI_EXT_CAP_ID_ACS:
            acs_cap = bus.config_read_sync(bdf, off + 4, 2)
            acs_ctrl = bus.config_read_sync(bdf, off + 6, 2)
            break
    return PciDeviceInfo(
        bdf=bdf,
        vendor_id=ids & 0xFFFF,
        device_id=ids >> 16,
        subsystem_vendor_id=bus.config_read_sync(bdf, PCI_SUBSYSTEM_VENDOR_ID, 2),
        subsystem_id=bus.config_read_sync(bdf, PCI_SUBSYSTEM_ID, 2),
        class_code=class_code,
        revision=class_rev & 0xFF,
        header_type=header,
        multifunction=multifunction,
        irq_pin=pin,
        irq_line=bus.config_read_sync(bdf, PCI_INTERRUPT_LINE, 1),
        gsi=q35_intx_gsi(bdf >> 3 & 0x1F, pin) if pin else None,
        bars=bars,
        capabilities=caps,
        ext_capabilities=ext,
        pcie_type=pcie_type,
        acs_cap=acs_cap,
        acs_ctrl=acs_ctrl,
    )


def scan_root_bus(bus: PciBus) -> tuple[PciDeviceInfo, ...]:
    """Linux's scan of bus 0 (``pci_scan_slot`` for devfn 0, 8, ... 248), in discovery order."""
    devices: list[PciDeviceInfo] = []
    for devfn in range(0, 256, 8):
        for fn in range(8):
            bdf = devfn | fn
            if bus.config_read_sync(bdf, 0, 4) in _ABSENT:
                if fn == 0:
                    break
                continue
            header = bus.config_read_sync(bdf, PCI_HEADER_TYPE, 1)
            multifunction = fn > 0 or bool(header & PCI_HEADER_TYPE_MULTIFUNCTION)
            devices.append(_read_device(bus, bdf, multifunction))
            if fn == 0 and not multifunction:
                break
    return tuple(devices)


def enumerate_bus(bus: PciBus, memory: GuestMemory, phys_bits: int = CPU_PHYS_BITS) -> tuple[PciDeviceInfo, ...]:
    """Firmware assignment followed by the guest kernel's scan: the guest's view of the bus."""
    firmware_setup(bus, memory, phys_bits)
    return scan_root_bus(bus)
