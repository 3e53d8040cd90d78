"""PCI functions and the q35 root bus: config space, BARs, MSI, MSI-X, INTx.

Config space follows QEMU hw/pci/pci.c: each byte has a write mask (``wmask``)
and a write-1-to-clear mask (``w1cmask``); ``pci_default_write_config`` applies
``new = (old & ~wmask) | (val & wmask)`` then clears ``val & w1cmask``, so
read-only fields stay read-only whatever the guest writes.  Defaults are
``pci_init_wmask``/``pci_init_w1cmask``: cache line, interrupt line and COMMAND
(I/O, memory, bus master, SERR, INTx disable) writable; the STATUS error bits
RW1C; everything from 0x40 up writable until a capability claims it.

Capabilities: ``pci_add_capability`` places a standard capability at a given
offset or the first free run at or after 0x40, and links it at the *head* of
the list (so the chain is the reverse of creation order) and sets STATUS.CAP_LIST;
``pcie_add_capability`` appends extended capabilities from 0x100.

BARs (``pci_register_bar``): power-of-two sizes; the BAR's write mask is
``~(size-1)`` (plus the enable bit for the ROM), so writing all-ones reads back
the size mask with the type bits; a 64-bit BAR spans two registers.  A BAR
decodes only while COMMAND enables its space and holds a usable address
(``pci_bar_address``: not 0, a 32-bit BAR may not reach 0xFFFFFFFF, I/O below
64 KiB).  The bus remaps after each config write touching a BAR or COMMAND
(``pci_update_mappings``).

MSI follows hw/pci/msi.c (64-bit, optional per-vector mask with pending bits);
MSI-X hw/pci/msix.c (table and PBA inside a BAR, vector-control mask, function
mask, pending bit set while masked, delivered on unmask).  Messages are memory
writes issued by the function, so they are dropped while bus mastering is off
(QEMU sends them through the function's bus-master address space).

Timing: config accesses cost ``cost.config_access_ps`` (always a VM exit);
trapped MMIO and port I/O ``cost.vmexit_mmio_ps``; BARs of a ``passthrough``
function (VFIO) cost ``mmio_read_passthrough_ps``/``mmio_write_passthrough_ps``
except their MSI-X table and PBA, which VFIO traps.  The access reaches the
device after that delay; a write handler may return a coroutine -- the work done
inside the exit (QEMU runs e.g. virtio-iommu requests in the vCPU thread) --
which the bus awaits before the access returns.  The ``*_sync`` twins apply no
time and hand such a coroutine back to the caller.
"""

from __future__ import annotations

import bisect
import enum
import struct
from collections.abc import Coroutine
from typing import Any, Callable, ClassVar, Protocol

import attrs

from sim import Simulator, Timer

from ._cost import CostModel
from ._interrupts import InterruptController, q35_intx_gsi

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

PCI_CAP_ID_PM = 0x01
PCI_CAP_ID_MSI = 0x05
PCI_CAP_ID_VNDR = 0x09
PCI_CAP_ID_EXP = 0x10
PCI_CAP_ID_MSIX = 0x11
PCI_CAP_ID_SATA = 0x12
PCI_EXT_CAP_ID_ERR = 0x01
PCI_EXT_CAP_ID_DSN = 0x03
PCI_EXT_CAP_ID_ACS = 0x0D

PCI_EXP_FLAGS = 0x02
PCI_EXP_DEVCAP = 0x04
PCI_EXP_DEVCTL = 0x08
PCI_EXP_DEVSTA = 0x0A
PCI_EXP_DEVCAP2 = 0x24
PCI_EXP_SIZEOF_V1 = 0x14
PCI_EXP_SIZEOF_V2 = 0x3C
PCI_EXP_TYPE_RC_END = 0x9

PCI_MSI_FLAGS_ENABLE = 0x0001
PCI_MSI_FLAGS_QSIZE = 0x0070
PCI_MSI_FLAGS_64BIT = 0x0080
PCI_MSI_FLAGS_MASKBIT = 0x0100
PCI_MSIX_FLAGS_MASKALL = 0x4000
PCI_MSIX_FLAGS_ENABLE = 0x8000
PCI_MSIX_ENTRY_CTRL_MASKBIT = 0x1
MSIX_CAP_LENGTH = 12

_CONFIG_SIZES = (1, 2, 4)
_MMIO_SIZES = (1, 2, 4, 8)


class PciAccessError(ValueError):
    """A malformed config/MMIO/IO access (bad size, alignment or range) or a bad device definition."""


def format_bdf(bdf: int) -> str:
    """``00:1f.2``: bus, device, function as lspci writes them."""
    return f"{bdf >> 8:02x}:{(bdf >> 3) & 0x1F:02x}.{bdf & 7}"


def make_bdf(bus: int, dev: int, fn: int) -> int:
    if not (0 <= bus <= 0xFF and 0 <= dev <= 31 and 0 <= fn <= 7):
        raise PciAccessError(f"not a PCI address: bus {bus} device {dev} function {fn}")
    return bus << 8 | dev << 3 | fn


def _mask(size: int) -> int:
    return (1 << (8 * size)) - 1


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

    def read(self, offset: int, size: int) -> int:
        """Little-endian value of ``size`` bytes at ``offset``."""
        self._check(offset, size)
        return int.from_bytes(self._data[offset : offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        """A guest write: only writable bits change; W1C bits written as 1 clear."""
        self._check(offset, size, _CONFIG_SIZES)
        if not 0 <= value <= _mask(size):
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
        self._data[offset : offset + size] = (value & _mask(size)).to_bytes(size, "little")

    def read_bytes(self, offset: int, size: int) -> bytes:
        self._check(offset, size)
        return bytes(self._data[offset : offset + size])

    def store_bytes(self, offset: int, data: bytes) -> None:
        """Device-side store of raw bytes (a structure's packed form), regardless of the masks."""
        self._check(offset, len(data))
        self._data[offset : offset + len(data)] = data

    def set_wmask(self, offset: int, size: int, mask: int) -> None:
        self._check(offset, size)
        self._wmask[offset : offset + size] = (mask & _mask(size)).to_bytes(size, "little")

    def set_w1cmask(self, offset: int, size: int, mask: int) -> None:
        self._check(offset, size)
        self._w1cmask[offset : offset + size] = (mask & _mask(size)).to_bytes(size, "little")

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
        return PCI_ROM_ADDRESS if self.index == ROM_SLOT else PCI_BASE_ADDRESS_0 + 4 * self.index


@attrs.frozen
class MsixEntry:
    """One MSI-X table entry (PCI Local Bus 3.0, 6.8.2): message address, data, vector control."""

    FORMAT: ClassVar[str] = "<QII"
    SIZE: ClassVar[int] = 16

    address: int
    data: int
    vector_control: int = PCI_MSIX_ENTRY_CTRL_MASKBIT

    @property
    def masked(self) -> bool:
        return bool(self.vector_control & PCI_MSIX_ENTRY_CTRL_MASKBIT)

    def pack(self) -> bytes:
        return struct.pack(self.FORMAT, self.address, self.data, self.vector_control)

    @classmethod
    def unpack(cls, data: bytes | bytearray) -> MsixEntry:
        return cls(*struct.unpack(cls.FORMAT, data))


@attrs.define
class _Msi:
    cap: int
    size: int
    is64: bool
    maskable: bool

    @property
    def data_off(self) -> int:
        return self.cap + (0xC if self.is64 else 0x8)

    @property
    def mask_off(self) -> int:
        return self.data_off + 4

    @property
    def pending_off(self) -> int:
        return self.data_off + 8


@attrs.define
class _Msix:
    cap: int
    vectors: int
    table_bar: int
    table_offset: int
    pba_bar: int
    pba_offset: int
    table: bytearray
    pba: bytearray
    function_masked: bool = True

    def in_table(self, bar: int, offset: int) -> bool:
        return bar == self.table_bar and self.table_offset <= offset < self.table_offset + len(self.table)

    def in_pba(self, bar: int, offset: int) -> bool:
        return bar == self.pba_bar and self.pba_offset <= offset < self.pba_offset + len(self.pba)


class PciFunction:
    """One PCI function: its config space, BARs, interrupt sources and the handlers behind its BARs.

    Device models reach the guest only through this object: ``msix_notify``,
    ``msi_notify``, ``set_intx``; and they ask ``check_dma_allowed()`` before DMA.
    """

    def __init__(
        self,
        bdf: int,
        name: str,
        *,
        vendor_id: int,
        device_id: int,
        class_code: int,
        revision: int = 0,
        subsystem: tuple[int, int] = (0x1AF4, 0x1100),
        multifunction: bool = False,
        interrupt_pin: int = 0,
        express: bool = False,
        passthrough: bool = False,
    ) -> None:
        if not 0 <= bdf <= 0xFFFF:
            raise PciAccessError(f"bdf must be 0..0xffff, not {bdf!r}")
        if not 0 <= interrupt_pin <= 4:
            raise PciAccessError(f"interrupt pin must be 0 (none) or 1..4 (INTA..INTD), not {interrupt_pin}")
        self.bdf = bdf
        self.name = name
        self.passthrough = passthrough
        self.config = ConfigSpace(PCIE_CONFIG_SPACE_SIZE if express else PCI_CONFIG_SPACE_SIZE)
        cfg = self.config
        cfg.store(PCI_VENDOR_ID, 2, vendor_id)
        cfg.store(PCI_DEVICE_ID, 2, device_id)
        cfg.store(PCI_REVISION_ID, 1, revision)
        cfg.store(PCI_CLASS_PROG, 3, class_code)
        cfg.store(PCI_HEADER_TYPE, 1, PCI_HEADER_TYPE_MULTIFUNCTION if multifunction else 0)
        cfg.store(PCI_SUBSYSTEM_VENDOR_ID, 2, subsystem[0])
        cfg.store(PCI_SUBSYSTEM_ID, 2, subsystem[1])
        cfg.store(PCI_INTERRUPT_PIN, 1, interrupt_pin)
        self.bars: list[Bar | None] = [None] * (ROM_SLOT + 1)
        # bytes claimed by the header and capabilities (QEMU PCIDevice.used)
        self._used = bytearray(cfg.size)
        self._used[:PCI_CONFIG_HEADER_SIZE] = b"\xff" * PCI_CONFIG_HEADER_SIZE
        self._last_ext_cap = 0
        self._msi: _Msi | None = None
        self._msix: _Msix | None = None
        self._intx_level = False
        self._bus: PciBus | None = None
        #: called with the new state when the guest flips COMMAND.bus-master (a device model's hook)
        self.on_bus_master: Callable[[bool], None] | None = None

    def __repr__(self) -> str:
        return f"<PciFunction {format_bdf(self.bdf)} {self.name}>"

    # -- identity / state --------------------------------------------------------------
    @property
    def slot(self) -> int:
        return (self.bdf >> 3) & 0x1F

    @property
    def command(self) -> int:
        return self.config.read(PCI_COMMAND, 2)

    @property
    def bus_master(self) -> bool:
        return bool(self.command & PCI_COMMAND_MASTER)

    @property
    def memory_enabled(self) -> bool:
        return bool(self.command & PCI_COMMAND_MEMORY)

    @property
    def io_enabled(self) -> bool:
        return bool(self.command & PCI_COMMAND_IO)

    @property
    def interrupt_pin(self) -> int:
        return self.config.read(PCI_INTERRUPT_PIN, 1)

    @property
    def sim(self) -> Simulator:
        return self._attached().sim

    def _attached(self) -> PciBus:
        if self._bus is None:
            raise RuntimeError(f"{self!r} is not on a bus yet (PciBus.add_function)")
        return self._bus

    def check_dma_allowed(self) -> bool:
        """May this function master the bus now?  False (and traced) while COMMAND.BME is clear.

        Device models call it before every DMA; QEMU disables the function's
        bus-master address space in the same situation, so the access goes nowhere.
        """
        if self.bus_master:
            return True
        sim = self.sim
        if sim.tracing:
            sim.trace(self.name, "dma_blocked", bdf=format_bdf(self.bdf), reason="bus master disabled")
        return False

    # -- building: BARs --------------------------------------------------------------------
    def add_bar(self, index: int, size: int, kind: BarKind, *, prefetchable: bool = False) -> Bar:
        """Declare BAR ``index`` (``ROM_SLOT`` for the expansion ROM), as ``pci_register_bar``."""
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
        if any(self.bars[s] is not None for s in slots) or (
            index > 0 and kind is not BarKind.ROM and (prev := self.bars[index - 1]) is not None
            and prev.kind is BarKind.MEM64
        ):
            raise PciAccessError(f"BAR {index} overlaps a BAR already declared")
        bar = Bar(index, kind, size, prefetchable and kind in (BarKind.MEM32, BarKind.MEM64))
        self.bars[index] = bar
        cfg, reg = self.config, bar.register
        if kind is BarKind.ROM:
            cfg.store(reg, 4, 0)
            cfg.set_wmask(reg, 4, ~(size - 1) | PCI_ROM_ADDRESS_ENABLE)
        elif kind is BarKind.IO:
            cfg.store(reg, 4, PCI_BASE_ADDRESS_SPACE_IO)
            cfg.set_wmask(reg, 4, ~(size - 1))
        else:
            type_bits = (PCI_BASE_ADDRESS_MEM_TYPE_64 if kind is BarKind.MEM64 else 0) | (
                PCI_BASE_ADDRESS_MEM_PREFETCH if bar.prefetchable else 0)
            cfg.store(reg, 4, type_bits)
            if kind is BarKind.MEM64:
                cfg.set_wmask(reg, 8, ~(size - 1))
            else:
                cfg.set_wmask(reg, 4, ~(size - 1))
        return bar

    def set_bar_handler(self, bar_index: int, handler: BarHandler | None) -> None:
        """Plug the model behind BAR ``bar_index`` (MSI-X table/PBA accesses stay with the function)."""
        bar = self.bars[bar_index] if 0 <= bar_index <= ROM_SLOT else None
        if bar is None:
            raise PciAccessError(f"{self!r} has no BAR {bar_index}")
        bar.handler = handler

    def bar_address(self, index: int) -> int | None:
        """Where BAR ``index`` decodes now, or None (disabled in COMMAND or unusable address)."""
        bar = self.bars[index]
        if bar is None:
            return None
        cfg, cmd = self.config, self.command
        reg = cfg.read(bar.register, 4)
        if bar.kind is BarKind.IO:
            addr = reg & ~(bar.size - 1) & 0xFFFF_FFFC
            if not cmd & PCI_COMMAND_IO or addr == 0 or addr + bar.size > 0x1_0000:
                return None
            return addr
        if not cmd & PCI_COMMAND_MEMORY:
            return None
        if bar.kind is BarKind.ROM:
            if not reg & PCI_ROM_ADDRESS_ENABLE:
                return None
            addr = reg & PCI_ROM_ADDRESS_MASK & ~(bar.size - 1)
        elif bar.kind is BarKind.MEM64:
            addr = cfg.read(bar.register, 8) & ~0xF & ~(bar.size - 1)
        else:
            addr = reg & ~0xF & ~(bar.size - 1)
        if addr == 0:
            return None
        limit = (1 << 64) - 1 if bar.kind is BarKind.MEM64 else 0xFFFF_FFFF  # pci_bar_address wrap checks
        if addr + bar.size > limit:
            return None
        return addr

    # -- building: capabilities -----------------------------------------------------------
    def add_capability(self, cap_id: int, size: int, offset: int | None = None) -> int:
        """``pci_add_capability``: place (first free run >= 0x40 if ``offset`` is None), link at the head."""
        used = self._used
        if offset is None:
            start = PCI_CONFIG_HEADER_SIZE
            for i in range(PCI_CONFIG_HEADER_SIZE, PCI_CONFIG_SPACE_SIZE):
                if used[i]:
                    start = i + 1
                elif i - start + 1 == size:
                    offset = start
                    break
            else:
                raise PciAccessError(f"{self!r}: no room for a {size}-byte capability")
        if offset < PCI_CONFIG_HEADER_SIZE or offset + size > PCI_CONFIG_SPACE_SIZE or offset & 3:
            raise PciAccessError(f"capability offset 0x{offset:x} must be dword-aligned in 0x40..0xff")
        if any(used[offset : offset + size]):
            raise PciAccessError(f"{self!r}: capability 0x{cap_id:02x} at 0x{offset:x} overlaps another")
        cfg = self.config
        cfg.store(offset, 1, cap_id)
        cfg.store(offset + 1, 1, cfg.read(PCI_CAPABILITY_LIST, 1))
        cfg.store(PCI_CAPABILITY_LIST, 1, offset)
        cfg.store(PCI_STATUS, 2, cfg.read(PCI_STATUS, 2) | PCI_STATUS_CAP_LIST)
        aligned = (size + 3) & ~3
        used[offset : offset + aligned] = b"\xff" * aligned
        cfg.clear_masks(offset, size)
        return offset

    def add_ext_capability(self, cap_id: int, version: int, offset: int, size: int) -> int:
        """``pcie_add_capability``: an extended capability at ``offset`` appended to the chain from 0x100."""
        cfg = self.config
        if cfg.size != PCIE_CONFIG_SPACE_SIZE:
            raise PciAccessError(f"{self!r} is conventional PCI: no extended capabilities")
        if offset < PCI_CONFIG_SPACE_SIZE or offset & 3 or offset + size > cfg.size:
            raise PciAccessError(f"extended capability offset 0x{offset:x} must be dword-aligned in 0x100..0xfff")
        if self._last_ext_cap == 0 and offset != PCI_CONFIG_SPACE_SIZE:
            raise PciAccessError("the first extended capability must sit at 0x100")
        if any(self._used[offset : offset + size]):
            raise PciAccessError(f"{self!r}: extended capability at 0x{offset:x} overlaps another")
        cfg.store(offset, 4, cap_id | version << 16)
        if self._last_ext_cap:
            prev = self._last_ext_cap
            cfg.store(prev, 4, cfg.read(prev, 4) & 0x000F_FFFF | offset << 20)
        self._last_ext_cap = offset
        self._used[offset : offset + size] = b"\xff" * size
        cfg.clear_masks(offset, size)
        return offset

    def add_pm(self, offset: int | None, pmc: int, pmcsr: int = 0, *, pme_enable: bool = False) -> int:
        """Power Management capability (8 bytes): PMC read-only, PMCSR power state writable."""
        off = self.add_capability(PCI_CAP_ID_PM, 8, offset)
        cfg = self.config
        cfg.store(off + 2, 2, pmc)
        cfg.store(off + 4, 2, pmcsr)
        cfg.set_wmask(off + 4, 2, 0x0003 | (0x0100 if pme_enable else 0))
        if pme_enable:
            cfg.set_w1cmask(off + 4, 2, 0x8000)
        return off

    def add_msi(self, offset: int | None, *, vectors: int = 1, is64: bool = True, maskable: bool = False) -> int:
        """MSI capability as ``msi_init``: 64-bit or 32-bit address, optional per-vector masking."""
        if self._msi is not None:
            raise PciAccessError(f"{self!r} already has an MSI capability")
        if vectors not in (1, 2, 4, 8, 16, 32):
            raise PciAccessError(f"MSI supports 1..32 vectors in powers of two, not {vectors}")
        size = (0x18 if maskable else 0x0E) if is64 else (0x14 if maskable else 0x0A)
        off = self.add_capability(PCI_CAP_ID_MSI, size, offset)
        cfg = self.config
        flags = (vectors.bit_length() - 1) << 1 | (PCI_MSI_FLAGS_64BIT if is64 else 0) | (
            PCI_MSI_FLAGS_MASKBIT if maskable else 0)
        cfg.store(off + 2, 2, flags)
        cfg.set_wmask(off + 2, 2, PCI_MSI_FLAGS_QSIZE | PCI_MSI_FLAGS_ENABLE)
        cfg.set_wmask(off + 4, 4, 0xFFFF_FFFC)
        if is64:
            cfg.set_wmask(off + 8, 4, 0xFFFF_FFFF)
        msi = _Msi(off, size, is64, maskable)
        cfg.set_wmask(msi.data_off, 2, 0xFFFF)
        if maskable:
            cfg.set_wmask(msi.mask_off, 4, (1 << vectors) - 1)
        self._msi = msi
        return off

    def add_msix(self, offset: int | None, *, vectors: int, table_bar: int, table_offset: int,
                 pba_bar: int, pba_offset: int) -> int:
        """MSI-X capability as ``msix_init``: table and PBA inside implemented BARs."""
        if self._msix is not None:
            raise PciAccessError(f"{self!r} already has an MSI-X capability")
        if not 1 <= vectors <= 2048:
            raise PciAccessError(f"MSI-X supports 1..2048 vectors, not {vectors}")
        table_len = vectors * MsixEntry.SIZE
        pba_len = (vectors + 63) // 64 * 8
        for bar_i, off_i, length in ((table_bar, table_offset, table_len), (pba_bar, pba_offset, pba_len)):
            bar = self.bars[bar_i] if 0 <= bar_i <= 5 else None
            if bar is None or bar.kind is BarKind.IO or off_i & 7 or off_i + length > bar.size:
                raise PciAccessError(f"MSI-X structure at BAR{bar_i}+0x{off_i:x} ({length} B) does not fit")
        if table_bar == pba_bar and table_offset < pba_offset + pba_len and pba_offset < table_offset + table_len:
            raise PciAccessError("MSI-X table and PBA overlap")
        off = self.add_capability(PCI_CAP_ID_MSIX, MSIX_CAP_LENGTH, offset)
        cfg = self.config
        cfg.store(off + 2, 2, vectors - 1)
        cfg.set_wmask(off + 2, 2, PCI_MSIX_FLAGS_MASKALL | PCI_MSIX_FLAGS_ENABLE)
        cfg.store(off + 4, 4, table_offset | table_bar)
        cfg.store(off + 8, 4, pba_offset | pba_bar)
        table = bytearray(MsixEntry(0, 0).pack() * vectors)  # msix_mask_all: every vector starts masked
        self._msix = _Msix(off, vectors, table_bar, table_offset, pba_bar, pba_offset, table, bytearray(pba_len))
        return off

    def add_express(self, offset: int, *, version: int, port_type: int, devcap: int = 0, devcap2: int = 0) -> int:
        """PCI Express capability (v1: 0x14 B, v2: 0x3C B); DEVCTL error-reporting enables writable."""
        if version not in (1, 2):
            raise PciAccessError(f"PCIe capability version is 1 or 2, not {version}")
        if self.config.size != PCIE_CONFIG_SPACE_SIZE:
            raise PciAccessError(f"{self!r} has a 256-byte config space: create it with express=True")
        off = self.add_capability(PCI_CAP_ID_EXP, PCI_EXP_SIZEOF_V1 if version == 1 else PCI_EXP_SIZEOF_V2, offset)
        cfg = self.config
        cfg.store(off + PCI_EXP_FLAGS, 2, version | port_type << 4)
        cfg.store(off + PCI_EXP_DEVCAP, 4, devcap)
        cfg.set_wmask(off + PCI_EXP_DEVCTL, 2, 0x000F)  # pcie_cap_deverr_init: CERE|NFERE|FERE|URRE
        cfg.set_w1cmask(off + PCI_EXP_DEVSTA, 2, 0x000F)
        if version == 2:
            cfg.store(off + PCI_EXP_DEVCAP2, 4, devcap2)
        return off

    def add_acs(self, offset: int, capability: int) -> int:
        """ACS extended capability (8 B): control bits writable where the capability has them."""
        off = self.add_ext_capability(PCI_EXT_CAP_ID_ACS, 1, offset, 8)
        self.config.store(off + 4, 2, capability)
        self.config.set_wmask(off + 6, 2, capability & 0x7F)
        return off

    # -- guest config accesses ---------------------------------------------------------------
    def config_read(self, offset: int, size: int) -> int:
        self._config_read_hook(offset, size)
        return self.config.read(offset, size)

    def config_write(self, offset: int, size: int, value: int) -> Coroutine[Any, Any, None] | None:
        """``pci_default_write_config`` plus the reactions of the touched registers."""
        cfg = self.config
        old_cmd = self.command
        was_msix_masked = self._msix.function_masked if self._msix is not None else True
        cfg.write(offset, size, value)
        end = offset + size
        changed = old_cmd ^ self.command
        if changed & PCI_COMMAND_MASTER and self.on_bus_master is not None:
            self.on_bus_master(bool(self.command & PCI_COMMAND_MASTER))
        if changed & PCI_COMMAND_INTX_DISABLE and self.interrupt_pin:
            self._drive_intx()
        if self._bus is not None and (
            changed & (PCI_COMMAND_IO | PCI_COMMAND_MEMORY)
            or offset < PCI_BASE_ADDRESS_0 + 24 and end > PCI_BASE_ADDRESS_0
            or offset < PCI_ROM_ADDRESS + 4 and end > PCI_ROM_ADDRESS
        ):
            self._bus.remap()
        msi = self._msi
        if msi is not None and offset < msi.cap + msi.size and end > msi.cap:
            self._msi_config_written()
        msix = self._msix
        if msix is not None and offset <= msix.cap + 3 and end > msix.cap + 3:
            self._msix_control_written(was_msix_masked)
        return self._config_write_hook(offset, size, value)

    def _config_read_hook(self, offset: int, size: int) -> None:
        """Subclasses refresh bytes that mirror device state before a guest read."""

    def _config_write_hook(self, offset: int, size: int, value: int) -> Coroutine[Any, Any, None] | None:
        """Subclasses react to writes of device-specific registers."""
        return None

    # -- BAR accesses (offset relative to the BAR) -----------------------------------------------
    def bar_traps(self, index: int, offset: int) -> bool:
        """Does an access here exit to the hypervisor (True) or go straight to the device (passthrough)?"""
        if not self.passthrough:
            return True
        msix = self._msix
        return msix is not None and (msix.in_table(index, offset) or msix.in_pba(index, offset))

    def bar_read(self, index: int, offset: int, size: int) -> int:
        msix = self._msix
        if msix is not None:
            if msix.in_table(index, offset):
                return self._msix_table_read(offset - msix.table_offset, size)
            if msix.in_pba(index, offset):
                return self._msix_pba_read(offset - msix.pba_offset, size)
        bar = self.bars[index]
        assert bar is not None
        if bar.handler is None:
            self._trace_unbacked(index, offset, size, "read")
            return _mask(size)
        return bar.handler.mmio_read(offset, size) & _mask(size)

    def bar_write(self, index: int, offset: int, size: int, value: int) -> Coroutine[Any, Any, None] | None:
        msix = self._msix
        if msix is not None:
            if msix.in_table(index, offset):
                self._msix_table_write(offset - msix.table_offset, size, value)
                return None
            if msix.in_pba(index, offset):
                return None  # the PBA is read-only
        bar = self.bars[index]
        assert bar is not None
        if bar.handler is None:
            self._trace_unbacked(index, offset, size, "write")
            return None
        return bar.handler.mmio_write(offset, size, value)

    def _trace_unbacked(self, index: int, offset: int, size: int, kind: str) -> None:
        sim = self.sim
        if sim.tracing:
            sim.trace(self.name, "bar_unbacked", bar=index, offset=offset, size=size, access=kind)

    # -- MSI ----------------------------------------------------------------------------------------
    def msi_notify(self) -> None:
        """Signal MSI vector 0 (``msi_notify``): pending while masked, delivered otherwise."""
        msi = self._msi
        if msi is None:
            raise PciAccessError(f"{self!r} has no MSI capability")
        cfg = self.config
        if not cfg.read(msi.cap + 2, 2) & PCI_MSI_FLAGS_ENABLE:
            if self.sim.tracing:
                self.sim.trace(self.name, "msi_disabled")
            return
        if msi.maskable and cfg.read(msi.mask_off, 4) & 1:
            cfg.store(msi.pending_off, 4, cfg.read(msi.pending_off, 4) | 1)
            return
        self._send_msi_message()

    def _send_msi_message(self) -> None:
        msi = self._msi
        assert msi is not None
        cfg = self.config
        address = cfg.read(msi.cap + 4, 4)
        if msi.is64:
            address |= cfg.read(msi.cap + 8, 4) << 32
        self._send_message(address, cfg.read(msi.data_off, 2))

    def _msi_config_written(self) -> None:
        msi = self._msi
        assert msi is not None
        cfg = self.config
        if not cfg.read(msi.cap + 2, 2) & PCI_MSI_FLAGS_ENABLE:
            return
        if self.interrupt_pin:
            self.set_intx(False)
        if msi.maskable and not cfg.read(msi.mask_off, 4) & 1 and cfg.read(msi.pending_off, 4) & 1:
            cfg.store(msi.pending_off, 4, cfg.read(msi.pending_off, 4) & ~1)
            self._send_msi_message()

    # -- MSI-X -------------------------------------------------------------------------------------
    def msix_notify(self, vector: int) -> None:
        """Signal MSI-X ``vector`` (``msix_notify``): the pending bit is set while it is masked."""
        msix = self._msix
        if msix is None:
            raise PciAccessError(f"{self!r} has no MSI-X capability")
        if not 0 <= vector < msix.vectors:
            if self.sim.tracing:
                self.sim.trace(self.name, "msix_bad_vector", vector=vector, vectors=msix.vectors)
            return
        if self._msix_masked(vector):
            msix.pba[vector >> 3] |= 1 << (vector & 7)
            if self.sim.tracing:
                self.sim.trace(self.name, "msix_pending", vector=vector)
            return
        entry = self.msix_entry(vector)
        self._send_message(entry.address, entry.data)

    def msix_entry(self, vector: int) -> MsixEntry:
        """Table entry ``vector`` as the guest programmed it."""
        msix = self._msix
        if msix is None or not 0 <= vector < msix.vectors:
            raise PciAccessError(f"{self!r} has no MSI-X vector {vector}")
        return MsixEntry.unpack(msix.table[vector * MsixEntry.SIZE : (vector + 1) * MsixEntry.SIZE])

    def msix_pending(self, vector: int) -> bool:
        msix = self._msix
        if msix is None or not 0 <= vector < msix.vectors:
            raise PciAccessError(f"{self!r} has no MSI-X vector {vector}")
        return bool(msix.pba[vector >> 3] >> (vector & 7) & 1)

    @property
    def msix_enabled(self) -> bool:
        msix = self._msix
        return msix is not None and bool(self.config.read(msix.cap + 2, 2) & PCI_MSIX_FLAGS_ENABLE)

    def _msix_masked(self, vector: int) -> bool:
        msix = self._msix
        assert msix is not None
        return msix.function_masked or self.msix_entry(vector).masked

    def _msix_mask_update(self, vector: int, was_masked: bool) -> None:
        """``msix_handle_mask_update``: unmasking a vector with its pending bit set delivers it."""
        if was_masked and not self._msix_masked(vector) and self.msix_pending(vector):
            msix = self._msix
            assert msix is not None
            msix.pba[vector >> 3] &= ~(1 << (vector & 7)) & 0xFF
            self.msix_notify(vector)

    def _msix_control_written(self, was_masked: bool) -> None:
        msix = self._msix
        assert msix is not None
        ctrl = self.config.read(msix.cap + 2, 2)
        msix.function_masked = not ctrl & PCI_MSIX_FLAGS_ENABLE or bool(ctrl & PCI_MSIX_FLAGS_MASKALL)
        if not ctrl & PCI_MSIX_FLAGS_ENABLE:
            return
        if self.interrupt_pin:
            self.set_intx(False)
        if msix.function_masked == was_masked:
            return
        for vector in range(msix.vectors):
            self._msix_mask_update(vector, was_masked or self.msix_entry(vector).masked)

    def _msix_table_read(self, offset: int, size: int) -> int:
        msix = self._msix
        assert msix is not None
        if size not in (4, 8) or offset & 3 or offset + size > len(msix.table):
            self._msix_bad_access(offset, size)
            return _mask(size)
        return int.from_bytes(msix.table[offset : offset + size], "little")

    def _msix_table_write(self, offset: int, size: int, value: int) -> None:
        msix = self._msix
        assert msix is not None
        if size not in (4, 8) or offset & 3 or offset + size > len(msix.table):
            self._msix_bad_access(offset, size)
            return
        for part in range(size // 4):  # an 8-byte access is two dword accesses (msix .impl max 4)
            off = offset + 4 * part
            vector = off // MsixEntry.SIZE
            was_masked = self._msix_masked(vector)
            msix.table[off : off + 4] = ((value >> (32 * part)) & 0xFFFF_FFFF).to_bytes(4, "little")
            self._msix_mask_update(vector, was_masked)

    def _msix_pba_read(self, offset: int, size: int) -> int:
        msix = self._msix
        assert msix is not None
        if size not in (4, 8) or offset & 3 or offset + size > len(msix.pba):
            self._msix_bad_access(offset, size)
            return _mask(size)
        return int.from_bytes(msix.pba[offset : offset + size], "little")

    def _msix_bad_access(self, offset: int, size: int) -> None:
        if self.sim.tracing:
            self.sim.trace(self.name, "msix_bad_access", offset=offset, size=size)

    def _send_message(self, address: int, data: int) -> None:
        """The MSI/MSI-X memory write; dropped while bus mastering is disabled."""
        bus = self._attached()
        if not self.bus_master:
            if bus.sim.tracing:
                bus.sim.trace(self.name, "msi_blocked", address=address, data=data, reason="bus master disabled")
            return
        bus.irq.deliver_msi(address, data, self.name)

    # -- INTx ---------------------------------------------------------------------------------------
    def set_intx(self, level: bool) -> None:
        """Drive the function's interrupt pin (STATUS.INTx follows; COMMAND.INTx-disable gates the line)."""
        if not self.interrupt_pin:
            raise PciAccessError(f"{self!r} has no interrupt pin")
        self._intx_level = bool(level)
        status = self.config.read(PCI_STATUS, 2)
        self.config.store(PCI_STATUS, 2, status | PCI_STATUS_INTERRUPT if level else status & ~PCI_STATUS_INTERRUPT)
        self._drive_intx()

    def _drive_intx(self) -> None:
        bus = self._bus
        if bus is None:
            return  # PciBus.add_function drives the line once the function is plugged
        effective = self._intx_level and not self.command & PCI_COMMAND_INTX_DISABLE
        bus.irq.set_intx(q35_intx_gsi(self.slot, self.interrupt_pin), self.bdf, effective)


@attrs.frozen
class _Window:
    start: int
    end: int  # exclusive
    function: PciFunction
    bar: int


class PciBus:
    """The q35 root bus (bus 0): config space by BDF, memory and I/O decode of the BARs."""

    def __init__(self, sim: Simulator, cost: CostModel, irq: InterruptController) -> None:
        self.sim = sim
        self.cost = cost
        self.irq = irq
        self._functions: dict[int, PciFunction] = {}
        self._mem: list[_Window] = []
        self._mem_starts: list[int] = []
        self._io: list[_Window] = []
        self._io_starts: list[int] = []

    # -- topology -------------------------------------------------------------------------------
    def add_function(self, fn: PciFunction) -> None:
        if fn.bdf >> 8:
            raise PciAccessError(f"{fn!r}: only the root bus (bus 0) is modelled")
        if fn.bdf in self._functions:
            raise PciAccessError(f"{format_bdf(fn.bdf)} is already taken by {self._functions[fn.bdf]!r}")
        if fn._bus is not None:
            raise PciAccessError(f"{fn!r} is already on a bus")
        fn._bus = self
        self._functions[fn.bdf] = fn
        self.remap()
        if fn.interrupt_pin:
            fn._drive_intx()

    @property
    def functions(self) -> list[PciFunction]:
        """Every function, in BDF order."""
        return [self._functions[b] for b in sorted(self._functions)]

    def function(self, bdf: int) -> PciFunction | None:
        return self._functions.get(bdf)

    def remap(self) -> None:
        """Rebuild the decode tables from the BARs (``pci_update_mappings``)."""
        mem: list[_Window] = []
        io: list[_Window] = []
        for fn in self.functions:
            for bar in fn.bars:
                if bar is None:
                    continue
                addr = fn.bar_address(bar.index)
                if addr is not None:
                    (io if bar.kind is BarKind.IO else mem).append(_Window(addr, addr + bar.size, fn, bar.index))
        mem.sort(key=lambda w: (w.start, w.function.bdf, w.bar))
        io.sort(key=lambda w: (w.start, w.function.bdf, w.bar))
        self._mem, self._mem_starts = mem, [w.start for w in mem]
        self._io, self._io_starts = io, [w.start for w in io]

    @staticmethod
    def _lookup(windows: list[_Window], starts: list[int], addr: int, size: int) -> _Window | None:
        i = bisect.bisect_right(starts, addr) - 1
        while i >= 0:
            w = windows[i]
            if addr < w.end:
                return w if addr + size <= w.end else None
            i -= 1
        return None

    def decode_mmio(self, addr: int, size: int) -> tuple[PciFunction, int, int] | None:
        """(function, BAR index, offset) claiming ``[addr, addr+size)``, or None."""
        w = self._lookup(self._mem, self._mem_starts, addr, size)
        return None if w is None else (w.function, w.bar, addr - w.start)

    def decode_io(self, port: int, size: int) -> tuple[PciFunction, int, int] | None:
        w = self._lookup(self._io, self._io_starts, port, size)
        return None if w is None else (w.function, w.bar, port - w.start)

    # -- validation ----------------------------------------------------------------------------------
    @staticmethod
    def _check_config(bdf: int, offset: int, size: int) -> None:
        if not 0 <= bdf <= 0xFFFF:
            raise PciAccessError(f"bdf must be 0..0xffff, not {bdf!r}")
        if size not in _CONFIG_SIZES or offset % size or not 0 <= offset <= PCIE_CONFIG_SPACE_SIZE - size:
            raise PciAccessError(f"config access of {size} byte(s) at 0x{offset:x}: must be 1/2/4 bytes, "
                                 "naturally aligned, inside 4 KiB")

    @staticmethod
    def _check_space(addr: int, size: int, value: int | None, sizes: tuple[int, ...], limit: int, what: str) -> None:
        if size not in sizes or not 0 <= addr <= limit - size:
            raise PciAccessError(f"{what} access of {size} byte(s) at 0x{addr:x}: size must be one of {sizes}, "
                                 f"inside 0..0x{limit - 1:x}")
        if value is not None and not 0 <= value <= _mask(size):
            raise PciAccessError(f"value 0x{value:x} does not fit a {size}-byte {what} write")

    def _abort(self, kind: str, addr: int, size: int) -> None:
        if self.sim.tracing:
            self.sim.trace("pci", "master_abort", access=kind, addr=addr, size=size)

    # -- untimed accesses ------------------------------------------------------------------------------
    def config_read_sync(self, bdf: int, offset: int, size: int) -> int:
        self._check_config(bdf, offset, size)
        fn = self._functions.get(bdf)
        if fn is None or offset >= fn.config.size:
            if fn is None:
                self._abort("config_read", bdf << 12 | offset, size)
            return _mask(size)
        return fn.config_read(offset, size)

    def config_write_sync(self, bdf: int, offset: int, size: int, value: int) -> Coroutine[Any, Any, None] | None:
        """A config write; returns in-exit work (a coroutine) for the caller to await, if any."""
        self._check_config(bdf, offset, size)
        fn = self._functions.get(bdf)
        if fn is None or offset >= fn.config.size:
            if fn is None:
                self._abort("config_write", bdf << 12 | offset, size)
            return None
        return fn.config_write(offset, size, value)

    def mmio_read_sync(self, addr: int, size: int) -> int:
        self._check_space(addr, size, None, _MMIO_SIZES, 1 << 64, "MMIO")
        hit = self.decode_mmio(addr, size)
        if hit is None:
            self._abort("mmio_read", addr, size)
            return _mask(size)
        fn, bar, off = hit
        return fn.bar_read(bar, off, size)

    def mmio_write_sync(self, addr: int, size: int, value: int) -> Coroutine[Any, Any, None] | None:
        self._check_space(addr, size, value, _MMIO_SIZES, 1 << 64, "MMIO")
        hit = self.decode_mmio(addr, size)
        if hit is None:
            self._abort("mmio_write", addr, size)
            return None
        fn, bar, off = hit
        return fn.bar_write(bar, off, size, value)

    def io_read_sync(self, port: int, size: int) -> int:
        self._check_space(port, size, None, _CONFIG_SIZES, 1 << 16, "I/O")
        hit = self.decode_io(port, size)
        if hit is None:
            self._abort("io_read", port, size)
            return _mask(size)
        fn, bar, off = hit
        return fn.bar_read(bar, off, size)

    def io_write_sync(self, port: int, size: int, value: int) -> Coroutine[Any, Any, None] | None:
        self._check_space(port, size, value, _CONFIG_SIZES, 1 << 16, "I/O")
        hit = self.decode_io(port, size)
        if hit is None:
            self._abort("io_write", port, size)
            return None
        fn, bar, off = hit
        return fn.bar_write(bar, off, size, value)

    # -- timed accesses (from a vCPU task) -----------------------------------------------------------------
    def _mmio_cost(self, addr: int, size: int, write: bool) -> int:
        hit = self.decode_mmio(addr, size)
        if hit is not None and not hit[0].bar_traps(hit[1], hit[2]):
            return self.cost.mmio_write_passthrough_ps if write else self.cost.mmio_read_passthrough_ps
        return self.cost.vmexit_mmio_ps

    async def config_read(self, bdf: int, offset: int, size: int) -> int:
        self._check_config(bdf, offset, size)
        await Timer(self.cost.config_access_ps)
        return self.config_read_sync(bdf, offset, size)

    async def config_write(self, bdf: int, offset: int, size: int, value: int) -> None:
        self._check_config(bdf, offset, size)
        await Timer(self.cost.config_access_ps)
        work = self.config_write_sync(bdf, offset, size, value)
        if work is not None:
            await work

    async def mmio_read(self, addr: int, size: int) -> int:
        self._check_space(addr, size, None, _MMIO_SIZES, 1 << 64, "MMIO")
        await Timer(self._mmio_cost(addr, size, write=False))
        return self.mmio_read_sync(addr, size)

    async def mmio_write(self, addr: int, size: int, value: int) -> None:
        self._check_space(addr, size, value, _MMIO_SIZES, 1 << 64, "MMIO")
        await Timer(self._mmio_cost(addr, size, write=True))
        work = self.mmio_write_sync(addr, size, value)
        if work is not None:
            await work

    async def io_read(self, port: int, size: int) -> int:
        self._check_space(port, size, None, _CONFIG_SIZES, 1 << 16, "I/O")
        await Timer(self.cost.vmexit_mmio_ps)
        return self.io_read_sync(port, size)

    async def io_write(self, port: int, size: int, value: int) -> None:
        self._check_space(port, size, value, _CONFIG_SIZES, 1 << 16, "I/O")
        await Timer(self.cost.vmexit_mmio_ps)
        work = self.io_write_sync(port, size, value)
        if work is not None:
            await work
