"""Linux 6.7's scan of the PCI root bus: what the guest kernel learns about each function.

drivers/pci/probe.c ``pci_scan_child_bus_extend``: slot by slot, a function is
absent when its first dword reads 0xffffffff, 0, 0x0000ffff or 0xffff0000;
function 0 without header bit 7 ends the slot; functions found at fn > 0 are
multifunction.  ``pci_setup_device`` reads identity, class, subsystem and the
interrupt pin and line; ``__pci_read_base`` sizes each BAR again with decode
off (except host bridges, ``mmio_always_on``) and keeps the firmware's address;
``pci_find_capability`` and ``pci_find_next_ext_capability`` walk the
capability lists.  Everything goes through config space (the untimed ``*_sync``
accesses).  Linux never reassigns here, so the records carry the layout the
firmware (``_firmware.py``) chose; ``enumerate_bus`` runs both, in that order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from .._interrupts import q35_intx_gsi
from .._memory import GuestMemory
from .._pci import format_bdf
from .._pci_caps import PCI_CAP_ID_EXP, PCI_EXT_CAP_ID_ACS
from .._pci_config import (
    PCI_BASE_ADDRESS_MEM_PREFETCH,
    PCI_BASE_ADDRESS_MEM_TYPE_64,
    PCI_BASE_ADDRESS_SPACE_IO,
    PCI_CAPABILITY_LIST,
    PCI_COMMAND,
    PCI_COMMAND_IO,
    PCI_COMMAND_MEMORY,
    PCI_CONFIG_SPACE_SIZE,
    PCI_HEADER_TYPE,
    PCI_HEADER_TYPE_MULTIFUNCTION,
    PCI_INTERRUPT_LINE,
    PCI_INTERRUPT_PIN,
    PCI_REVISION_ID,
    PCI_ROM_ADDRESS_MASK,
    PCI_STATUS,
    PCI_STATUS_CAP_LIST,
    PCI_SUBSYSTEM_ID,
    PCI_SUBSYSTEM_VENDOR_ID,
    PCIE_CONFIG_SPACE_SIZE,
    ROM_SLOT,
    bar_register,
)
from ._firmware import ABSENT_IDS, CPU_PHYS_BITS, firmware_setup

if TYPE_CHECKING:
    from .._seams import CpuBus  # the guest's view of the host bridge

_PCI_FIND_CAP_TTL = 48
_PCI_EXT_CAP_TTL = (PCIE_CONFIG_SPACE_SIZE - PCI_CONFIG_SPACE_SIZE) // 8


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
        return bar_register(self.index)


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


def _linux_read_bases(bus: CpuBus, bdf: int, mmio_always_on: bool) -> tuple[BarInfo, ...]:
    """``pci_read_bases`` / ``__pci_read_base`` for the six BARs and the ROM."""
    cmd = bus.config_read_sync(bdf, PCI_COMMAND, 2)
    decode = cmd & (PCI_COMMAND_IO | PCI_COMMAND_MEMORY)
    if decode and not mmio_always_on:
        bus.config_write_sync(bdf, PCI_COMMAND, 2, cmd & ~decode)
    bars: list[BarInfo] = []
    index = 0
    while index <= ROM_SLOT:
        reg = bar_register(index)
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


def _capabilities(bus: CpuBus, bdf: int) -> tuple[tuple[int, int], ...]:
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


def _ext_capabilities(bus: CpuBus, bdf: int) -> tuple[tuple[int, int], ...]:
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


def _read_device(bus: CpuBus, bdf: int, multifunction: bool) -> PciDeviceInfo:
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


def scan_root_bus(bus: CpuBus) -> tuple[PciDeviceInfo, ...]:
    """Linux's scan of bus 0 (``pci_scan_slot`` for devfn 0, 8, ... 248), in discovery order."""
    devices: list[PciDeviceInfo] = []
    for devfn in range(0, 256, 8):
        for fn in range(8):
            bdf = devfn | fn
            if bus.config_read_sync(bdf, 0, 4) in ABSENT_IDS:
                if fn == 0:
                    break
                continue
            header = bus.config_read_sync(bdf, PCI_HEADER_TYPE, 1)
            multifunction = fn > 0 or bool(header & PCI_HEADER_TYPE_MULTIFUNCTION)
            devices.append(_read_device(bus, bdf, multifunction))
            if fn == 0 and not multifunction:
                break
    return tuple(devices)


def enumerate_bus(bus: CpuBus, memory: GuestMemory, phys_bits: int = CPU_PHYS_BITS) -> tuple[PciDeviceInfo, ...]:
    """Firmware assignment followed by the guest kernel's scan: the guest's view of the bus."""
    firmware_setup(bus, memory, phys_bits)
    return scan_root_bus(bus)
