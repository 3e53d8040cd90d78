"""A PCI function's configuration space: the type-0 header, write masks, BARs and their sizing.

PCI Local Bus Specification 3.0, 6.1-6.2 (the header, COMMAND and STATUS) and
6.2.5 (base address registers); the register names are those of Linux
include/uapi/linux/pci_regs.h.

Writes follow QEMU hw/pci/pci.c: each byte has a write mask (``wmask``) and a
write-1-to-clear mask (``w1cmask``); ``pci_default_write_config`` applies
``new = (old & ~wmask) | (val & wmask)`` then clears ``val & w1cmask``, so
read-only fields stay read-only whatever the guest writes.  The defaults are
``pci_init_wmask``/``pci_init_w1cmask``: cache line, interrupt line and COMMAND
(I/O, memory, bus master, SERR, INTx disable) writable; the STATUS error bits
RW1C; everything from 0x40 up writable until a capability claims it.

BARs (``pci_register_bar``): power-of-two sizes; the BAR's write mask is
``~(size-1)`` (plus the enable bit for the ROM), so writing all-ones reads back
the size mask with the type bits; a 64-bit BAR spans two registers.  A BAR
decodes only while COMMAND enables its space and holds a usable address
(``pci_bar_address``: not 0, a 32-bit BAR may not reach 0xFFFFFFFF, I/O below
64 KiB).
"""

from __future__ import annotations

import enum
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

import attrs

# -- register offsets and bits (include/uapi/linux/pci_regs.h) -------------------------
PCI_VENDOR_ID = 0x00
PCI_DEVICE_ID = 0x02
PCI_COMMAND = 0x04
PCI_STATUS = 0x06
PCI_REVISION_ID = 0x08
PCI_CLASS_PROG = 0x09
PCI_CACHE_LINE_SIZE = 0x0C
PCI_HEADER_TYPE = 0x0E
PCI_BASE_ADDRESS_0 = 0x10
PCI_SUBSYSTEM_VENDOR_ID = 0x2C
PCI_SUBSYSTEM_ID = 0x2E
PCI_ROM_ADDRESS = 0x30
PCI_CAPABILITY_LIST = 0x34
PCI_INTERRUPT_LINE = 0x3C
PCI_INTERRUPT_PIN = 0x3D
PCI_CONFIG_HEADER_SIZE = 0x40
PCI_CONFIG_SPACE_SIZE = 0x100
PCIE_CONFIG_SPACE_SIZE = 0x1000

PCI_COMMAND_IO = 0x1
PCI_COMMAND_MEMORY = 0x2
PCI_COMMAND_MASTER = 0x4
PCI_COMMAND_SERR = 0x100
PCI_COMMAND_INTX_DISABLE = 0x400

PCI_STATUS_INTERRUPT = 0x8
PCI_STATUS_CAP_LIST = 0x10
#: RW1C status bits: master data parity, signalled/received target abort, received
#: master abort, signalled system error, detected parity error
PCI_STATUS_W1C = 0x0100 | 0x0800 | 0x1000 | 0x2000 | 0x4000 | 0x8000

PCI_HEADER_TYPE_MULTIFUNCTION = 0x80

PCI_BASE_ADDRESS_SPACE_IO = 0x1
PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x4
PCI_BASE_ADDRESS_MEM_PREFETCH = 0x8
PCI_ROM_ADDRESS_ENABLE = 0x1
PCI_ROM_ADDRESS_MASK = 0xFFFF_F800
#: index of the expansion ROM in a function's BAR list
ROM_SLOT = 6

#: the sizes of a config-space (and port I/O) access
CONFIG_ACCESS_SIZES = (1, 2, 4)


class PciAccessError(ValueError):
    """A malformed config/MMIO/IO access (bad size, alignment or range) or a bad device definition."""


def value_mask(size: int) -> int:
    """All-ones of ``size`` bytes: what a master abort reads back."""
    return (1 << (8 * size)) - 1


def bar_register(index: int) -> int:
    """The config offset of BAR ``index`` (0-5) or of the expansion ROM (``ROM_SLOT``)."""
    return PCI_ROM_ADDRESS if index == ROM_SLOT else PCI_BASE_ADDRESS_0 + 4 * index


class ConfigSpace:
    """One function's configuration bytes with QEMU's per-byte write and W1C masks."""

    __slots__ = ("size", "_data", "_wmask", "_w1cmask")

    def __init__(self, size: int) -> None:
        if size not in (PCI_CONFIG_SPACE_SIZE, PCIE_CONFIG_SPACE_SIZE):
            raise PciAccessError(f"config space is 256 (PCI) or 4096 (PCIe) bytes, not {size}")
        self.size = size
        self._data = bytearray(size)
        self._wmask = bytearray(size)
        self._w1cmask = bytearray(size)
        # pci_init_wmask / pci_init_w1cmask
        self._wmask[PCI_CACHE_LINE_SIZE] = 0xFF
        self._wmask[PCI_INTERRUPT_LINE] = 0xFF
        self.set_wmask(PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER
                       | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE)
        self.set_w1cmask(PCI_STATUS, 2, PCI_STATUS_W1C)
        self._wmask[PCI_CONFIG_HEADER_SIZE:] = b"\xff" * (size - PCI_CONFIG_HEADER_SIZE)

    def _check(self, offset: int, size: int, sizes: tuple[int, ...] | None = None) -> None:
        if (size < 1 if sizes is None else size not in sizes) or offset < 0 or offset + size > self.size:
            raise PciAccessError(f"config access of {size} byte(s) at 0x{offset:x} outside {self.size}-byte space")

    def header_u16(self, offset: int) -> int:
        """The 16-bit header register at ``offset`` (one the model names, e.g. PCI_COMMAND): no
        bounds check, for the registers a device model consults on every access."""
        data = self._data
        return data[offset] | data[offset + 1] << 8

    def read(self, offset: int, size: int) -> int:
        """Little-endian value of ``size`` bytes at ``offset``."""
        self._check(offset, size)
        return int.from_bytes(self._data[offset : offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        """A guest write: only writable bits change; W1C bits written as 1 clear."""
        self._check(offset, size, CONFIG_ACCESS_SIZES)
        if not 0 <= value <= value_mask(size):
            raise PciAccessError(f"value 0x{value:x} does not fit a {size}-byte config write")
        data, wmask, w1c = self._data, self._wmask, self._w1cmask
        for i in range(size):
            b = (value >> (8 * i)) & 0xFF
            pos = offset + i
            new = (data[pos] & ~wmask[pos]) | (b & wmask[pos])
            data[pos] = new & ~(b & w1c[pos]) & 0xFF

    def store(self, offset: int, size: int, value: int) -> None:
        """A device-side store: sets the bytes regardless of the masks."""
        self._check(offset, size)
        self._data[offset : offset + size] = (value & value_mask(size)).to_bytes(size, "little")

    def read_bytes(self, offset: int, size: int) -> bytes:
        self._check(offset, size)
        return bytes(self._data[offset : offset + size])

    def store_bytes(self, offset: int, data: bytes) -> None:
        """Device-side store of raw bytes (a structure's packed form), regardless of the masks."""
        self._check(offset, len(data))
        self._data[offset : offset + len(data)] = data

    def set_wmask(self, offset: int, size: int, mask: int) -> None:
        self._check(offset, size)
        self._wmask[offset : offset + size] = (mask & value_mask(size)).to_bytes(size, "little")

    def set_w1cmask(self, offset: int, size: int, mask: int) -> None:
        self._check(offset, size)
        self._w1cmask[offset : offset + size] = (mask & value_mask(size)).to_bytes(size, "little")

    def wmask(self, offset: int, size: int) -> int:
        self._check(offset, size)
        return int.from_bytes(self._wmask[offset : offset + size], "little")

    def w1cmask(self, offset: int, size: int) -> int:
        self._check(offset, size)
        return int.from_bytes(self._w1cmask[offset : offset + size], "little")

    def clear_masks(self, offset: int, size: int) -> None:
        """Make ``size`` bytes read-only (a capability claiming them)."""
        if offset < 0 or offset + size > self.size:
            raise PciAccessError(f"range 0x{offset:x}+{size} outside {self.size}-byte space")
        self._wmask[offset : offset + size] = bytes(size)
        self._w1cmask[offset : offset + size] = bytes(size)


class BarKind(enum.Enum):
    MEM32 = "mem32"
    MEM64 = "mem64"
    IO = "io"
    ROM = "rom"


class BarHandler(Protocol):
    """What sits behind a BAR: offsets are relative to the BAR's base."""

    def mmio_read(self, offset: int, size: int) -> int: ...

    def mmio_write(self, offset: int, size: int, value: int) -> Coroutine[Any, Any, None] | None: ...


@attrs.define
class Bar:
    """One implemented BAR (or the ROM) of a function."""

    index: int
    kind: BarKind
    size: int
    prefetchable: bool = False
    handler: BarHandler | None = None

    @property
    def register(self) -> int:
        return bar_register(self.index)

    def decoded_address(self, config: ConfigSpace) -> int | None:
        """Where the BAR decodes now per ``config``, or None (disabled in COMMAND or unusable address)."""
        cmd = config.read(PCI_COMMAND, 2)
        reg = config.read(self.register, 4)
        if self.kind is BarKind.IO:
            addr = reg & ~(self.size - 1) & 0xFFFF_FFFC
            if not cmd & PCI_COMMAND_IO or addr == 0 or addr + self.size > 0x1_0000:
                return None
            return addr
        if not cmd & PCI_COMMAND_MEMORY:
            return None
        if self.kind is BarKind.ROM:
            if not reg & PCI_ROM_ADDRESS_ENABLE:
                return None
            addr = reg & PCI_ROM_ADDRESS_MASK & ~(self.size - 1)
        elif self.kind is BarKind.MEM64:
            addr = config.read(self.register, 8) & ~0xF & ~(self.size - 1)
        else:
            addr = reg & ~0xF & ~(self.size - 1)
        if addr == 0:
            return None
        limit = (1 << 64) - 1 if self.kind is BarKind.MEM64 else 0xFFFF_FFFF  # pci_bar_address wrap checks
        if addr + self.size > limit:
            return None
        return addr


def declare_bar(config: ConfigSpace, bars: Sequence[Bar | None], index: int, size: int, kind: BarKind,
                prefetchable: bool) -> Bar:
    """``pci_register_bar``: check BAR ``index`` against ``bars`` and set its type bits and write mask.

    Returns the new ``Bar``; the caller stores it in its BAR list.
    """
    if size <= 0 or size & (size - 1):
        raise PciAccessError(f"BAR size must be a power of two, not {size}")
    if kind is BarKind.ROM:
        if index != ROM_SLOT or size < 0x800:
            raise PciAccessError(f"the expansion ROM is slot {ROM_SLOT} and at least 2 KiB")
    elif not 0 <= index <= 5 or (kind is BarKind.MEM64 and index == 5):
        raise PciAccessError(f"BAR index {index} cannot hold a {kind.value} BAR")
    if kind is BarKind.IO and size < 4 or kind in (BarKind.MEM32, BarKind.MEM64) and size < 16:
        raise PciAccessError(f"{kind.value} BAR of {size} bytes is too small")
    if kind is BarKind.MEM32 and size > 1 << 31:
        raise PciAccessError(f"a 32-bit BAR cannot be {size} bytes")
    slots = (index, index + 1) if kind is BarKind.MEM64 else (index,)
    if any(bars[s] is not None for s in slots) or (
        index > 0 and kind is not BarKind.ROM and (prev := bars[index - 1]) is not None
        and prev.kind is BarKind.MEM64
    ):
        raise PciAccessError(f"BAR {index} overlaps a BAR already declared")
    bar = Bar(index, kind, size, prefetchable and kind in (BarKind.MEM32, BarKind.MEM64))
    reg = bar.register
    if kind is BarKind.ROM:
        config.store(reg, 4, 0)
        config.set_wmask(reg, 4, ~(size - 1) | PCI_ROM_ADDRESS_ENABLE)
    elif kind is BarKind.IO:
        config.store(reg, 4, PCI_BASE_ADDRESS_SPACE_IO)
        config.set_wmask(reg, 4, ~(size - 1))
    else:
        type_bits = (PCI_BASE_ADDRESS_MEM_TYPE_64 if kind is BarKind.MEM64 else 0) | (
            PCI_BASE_ADDRESS_MEM_PREFETCH if bar.prefetchable else 0)
        config.store(reg, 4, type_bits)
        if kind is BarKind.MEM64:
            config.set_wmask(reg, 8, ~(size - 1))
        else:
            config.set_wmask(reg, 4, ~(size - 1))
    return bar
