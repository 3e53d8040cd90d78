"""PCI functions and the q35 root bus: what a function is, where its BARs decode, INTx and DMA gating.

QEMU hw/pci/pci.c: a function (``PCIDevice``) owns its config space
(``_pci_config.py``: header, write masks, BAR sizing), its capability lists
(``_pci_caps.py``) and its MSI/MSI-X state (``_pci_msi.py``); this module puts
them together and reacts to guest config writes as ``pci_default_write_config``
does.  The bus remaps after each config write touching a BAR or COMMAND
(``pci_update_mappings``); COMMAND.INTx-disable gates the pin, routed as ICH9
does (``q35_intx_gsi``).  MSI and MSI-X messages are memory writes issued by the
function, so they are dropped while bus mastering is off (QEMU sends them
through the function's bus-master address space); device models ask
``check_dma_allowed()`` before DMA for the same reason.

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
from collections.abc import Coroutine
from typing import Any, Callable

import attrs

from sim import Simulator, Timer

from ._cost import CostModel
from ._interrupts import q35_intx_gsi
from ._seams import InterruptSink
from ._pci_caps import CapabilityChain
from ._pci_ids import PCI_SUBDEVICE_ID_QEMU, PCI_SUBVENDOR_ID_REDHAT_QUMRANET
from ._pci_config import (
    CONFIG_ACCESS_SIZES,
    PCI_BASE_ADDRESS_0,
    PCI_CLASS_PROG,
    PCI_COMMAND,
    PCI_COMMAND_INTX_DISABLE,
    PCI_COMMAND_IO,
    PCI_COMMAND_MASTER,
    PCI_COMMAND_MEMORY,
    PCI_CONFIG_SPACE_SIZE,
    PCI_DEVICE_ID,
    PCI_HEADER_TYPE,
    PCI_HEADER_TYPE_MULTIFUNCTION,
    PCI_INTERRUPT_PIN,
    PCI_REVISION_ID,
    PCI_ROM_ADDRESS,
    PCI_STATUS,
    PCI_STATUS_INTERRUPT,
    PCI_SUBSYSTEM_ID,
    PCI_SUBSYSTEM_VENDOR_ID,
    PCI_VENDOR_ID,
    PCIE_CONFIG_SPACE_SIZE,
    ROM_SLOT,
    Bar,
    BarHandler,
    BarKind,
    ConfigSpace,
    PciAccessError,
    declare_bar,
    value_mask,
)
from ._pci_msi import Msi, Msix, MsixEntry

_MMIO_SIZES = (1, 2, 4, 8)


def format_bdf(bdf: int) -> str:
    """``00:1f.2``: bus, device, function as lspci writes them."""
    return f"{bdf >> 8:02x}:{(bdf >> 3) & 0x1F:02x}.{bdf & 7}"


def make_bdf(bus: int, dev: int, fn: int) -> int:
    if not (0 <= bus <= 0xFF and 0 <= dev <= 31 and 0 <= fn <= 7):
        raise PciAccessError(f"not a PCI address: bus {bus} device {dev} function {fn}")
    return bus << 8 | dev << 3 | fn


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
        subsystem: tuple[int, int] = (PCI_SUBVENDOR_ID_REDHAT_QUMRANET, PCI_SUBDEVICE_ID_QEMU),
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
        self._caps = CapabilityChain(cfg, self)
        self._msi: Msi | None = None
        self._msix: Msix | None = None
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
        return self.config.header_u16(PCI_COMMAND)

    @property
    def bus_master(self) -> bool:
        return bool(self.config.header_u16(PCI_COMMAND) & PCI_COMMAND_MASTER)

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
        bar = declare_bar(self.config, self.bars, index, size, kind, prefetchable)
        self.bars[index] = bar
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
        return None if bar is None else bar.decoded_address(self.config)

    # -- building: capabilities (``_pci_caps.py``, ``_pci_msi.py``) -------------------------------
    def add_capability(self, cap_id: int, size: int, offset: int | None = None) -> int:
        """``pci_add_capability``: place (first free run >= 0x40 if ``offset`` is None), link at the head."""
        return self._caps.add(cap_id, size, offset)

    def add_ext_capability(self, cap_id: int, version: int, offset: int, size: int) -> int:
        """``pcie_add_capability``: an extended capability at ``offset`` appended to the chain from 0x100."""
        return self._caps.add_ext(cap_id, version, offset, size)

    def add_pm(self, offset: int | None, pmc: int, pmcsr: int = 0, *, pme_enable: bool = False) -> int:
        """Power Management capability (8 bytes): PMC read-only, PMCSR power state writable."""
        return self._caps.add_pm(offset, pmc, pmcsr, pme_enable=pme_enable)

    def add_express(self, offset: int, *, version: int, port_type: int, devcap: int = 0, devcap2: int = 0) -> int:
        """PCI Express capability (v1: 0x14 B, v2: 0x3C B); DEVCTL error-reporting enables writable."""
        return self._caps.add_express(offset, version=version, port_type=port_type, devcap=devcap, devcap2=devcap2)

    def add_acs(self, offset: int, capability: int) -> int:
        """ACS extended capability (8 B): control bits writable where the capability has them."""
        return self._caps.add_acs(offset, capability)

    def add_msi(self, offset: int | None, *, vectors: int = 1, is64: bool = True, maskable: bool = False) -> int:
        """MSI capability as ``msi_init``: 64-bit or 32-bit address, optional per-vector masking."""
        if self._msi is not None:
            raise PciAccessError(f"{self!r} already has an MSI capability")
        self._msi = Msi.create(self, self._caps, offset, vectors=vectors, is64=is64, maskable=maskable)
        return self._msi.cap

    def add_msix(self, offset: int | None, *, vectors: int, table_bar: int, table_offset: int,
                 pba_bar: int, pba_offset: int) -> int:
        """MSI-X capability as ``msix_init``: table and PBA inside implemented BARs."""
        if self._msix is not None:
            raise PciAccessError(f"{self!r} already has an MSI-X capability")
        self._msix = Msix.create(self, self._caps, self.bars, offset, vectors=vectors, table_bar=table_bar,
                                 table_offset=table_offset, pba_bar=pba_bar, pba_offset=pba_offset)
        return self._msix.cap

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
        if msi is not None and msi.overlaps(offset, end):
            msi.config_written()
        msix = self._msix
        if msix is not None and msix.control_touched(offset, end):
            msix.control_written(was_msix_masked)
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
                return msix.table_read(offset - msix.table_offset, size)
            if msix.in_pba(index, offset):
                return msix.pba_read(offset - msix.pba_offset, size)
        bar = self.bars[index]
        assert bar is not None
        if bar.handler is None:
            self._trace_unbacked(index, offset, size, "read")
            return value_mask(size)
        return bar.handler.mmio_read(offset, size) & value_mask(size)

    def bar_write(self, index: int, offset: int, size: int, value: int) -> Coroutine[Any, Any, None] | None:
        msix = self._msix
        if msix is not None:
            if msix.in_table(index, offset):
                msix.table_write(offset - msix.table_offset, size, value)
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

    # -- MSI and MSI-X -------------------------------------------------------------------------
    def msi_notify(self) -> None:
        """Signal MSI vector 0 (``msi_notify``): pending while masked, delivered otherwise."""
        if self._msi is None:
            raise PciAccessError(f"{self!r} has no MSI capability")
        self._msi.notify()

    def msix_notify(self, vector: int) -> None:
        """Signal MSI-X ``vector`` (``msix_notify``): the pending bit is set while it is masked."""
        if self._msix is None:
            raise PciAccessError(f"{self!r} has no MSI-X capability")
        self._msix.notify(vector)

    def msix_entry(self, vector: int) -> MsixEntry:
        """Table entry ``vector`` as the guest programmed it."""
        if self._msix is None:
            raise PciAccessError(f"{self!r} has no MSI-X vector {vector}")
        return self._msix.entry(vector)

    def msix_pending(self, vector: int) -> bool:
        if self._msix is None:
            raise PciAccessError(f"{self!r} has no MSI-X vector {vector}")
        return self._msix.pending(vector)

    @property
    def msix_enabled(self) -> bool:
        return self._msix is not None and self._msix.enabled

    def write_message(self, address: int, data: int) -> None:
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

    def __init__(self, sim: Simulator, cost: CostModel, irq: InterruptSink) -> None:
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
        if size not in CONFIG_ACCESS_SIZES or offset % size or not 0 <= offset <= PCIE_CONFIG_SPACE_SIZE - size:
            raise PciAccessError(f"config access of {size} byte(s) at 0x{offset:x}: must be 1/2/4 bytes, "
                                 "naturally aligned, inside 4 KiB")

    @staticmethod
    def _check_space(addr: int, size: int, value: int | None, sizes: tuple[int, ...], limit: int, what: str) -> None:
        if size not in sizes or not 0 <= addr <= limit - size:
            raise PciAccessError(f"{what} access of {size} byte(s) at 0x{addr:x}: size must be one of {sizes}, "
                                 f"inside 0..0x{limit - 1:x}")
        if value is not None and not 0 <= value <= value_mask(size):
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
            return value_mask(size)
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
            return value_mask(size)
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
        self._check_space(port, size, None, CONFIG_ACCESS_SIZES, 1 << 16, "I/O")
        hit = self.decode_io(port, size)
        if hit is None:
            self._abort("io_read", port, size)
            return value_mask(size)
        fn, bar, off = hit
        return fn.bar_read(bar, off, size)

    def io_write_sync(self, port: int, size: int, value: int) -> Coroutine[Any, Any, None] | None:
        self._check_space(port, size, value, CONFIG_ACCESS_SIZES, 1 << 16, "I/O")
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
        self._check_space(port, size, None, CONFIG_ACCESS_SIZES, 1 << 16, "I/O")
        await Timer(self.cost.vmexit_mmio_ps)
        return self.io_read_sync(port, size)

    async def io_write(self, port: int, size: int, value: int) -> None:
        self._check_space(port, size, value, CONFIG_ACCESS_SIZES, 1 << 16, "I/O")
        await Timer(self.cost.vmexit_mmio_ps)
        work = self.io_write_sync(port, size, value)
        if work is not None:
            await work
