"""Message-signalled interrupts of a PCI function: the MSI capability, MSI-X table and PBA in a BAR.

PCI Local Bus Specification 3.0, 6.8: MSI (6.8.1) and MSI-X (6.8.2).

MSI follows QEMU hw/pci/msi.c (``msi_init``, ``msi_notify``,
``msi_write_config``): 32- or 64-bit message address, optional per-vector
mask with pending bits; enabling MSI turns INTx off, and unmasking a pending
vector delivers it.  Only vector 0 is signalled (multiple-message enable is
writable but unused, as for the devices modelled).

MSI-X follows hw/pci/msix.c (``msix_init``, ``msix_notify``,
``msix_handle_mask_update``, ``msix_write_config``, ``msix_table_mmio_write``):
table and PBA inside a BAR, accessed as dwords or qwords; every vector starts
masked (``msix_mask_all``); the function mask and a vector's control mask hold
a message back and set its pending bit, and unmasking delivers it.

Messages are memory writes issued by the function (``MsiHost.write_message``),
so the function decides whether they reach the interrupt controller.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import ClassVar, Protocol

import attrs

from sim import Simulator

from ._pci_caps import PCI_CAP_ID_MSI, PCI_CAP_ID_MSIX, CapabilityChain
from ._pci_config import Bar, BarKind, ConfigSpace, PciAccessError, value_mask

PCI_MSI_FLAGS_ENABLE = 0x0001
PCI_MSI_FLAGS_QSIZE = 0x0070
PCI_MSI_FLAGS_64BIT = 0x0080
PCI_MSI_FLAGS_MASKBIT = 0x0100
PCI_MSIX_FLAGS_MASKALL = 0x4000
PCI_MSIX_FLAGS_ENABLE = 0x8000
PCI_MSIX_ENTRY_CTRL_MASKBIT = 0x1
MSIX_CAP_LENGTH = 12


class MsiHost(Protocol):
    """The function an MSI or MSI-X capability belongs to."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> ConfigSpace: ...

    @property
    def sim(self) -> Simulator: ...

    @property
    def interrupt_pin(self) -> int: ...

    def set_intx(self, level: bool) -> None: ...

    def write_message(self, address: int, data: int) -> None: ...


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


class Msi:
    """One function's MSI capability at config offset ``cap`` (``size`` bytes)."""

    def __init__(self, host: MsiHost, cap: int, size: int, is64: bool, maskable: bool) -> None:
        self.host = host
        self.cap = cap
        self.size = size
        self.is64 = is64
        self.maskable = maskable

    @classmethod
    def create(cls, host: MsiHost, chain: CapabilityChain, offset: int | None, *, vectors: int, is64: bool,
               maskable: bool) -> Msi:
        """``msi_init``: add the capability to ``chain`` and open its writable fields."""
        if vectors not in (1, 2, 4, 8, 16, 32):
            raise PciAccessError(f"MSI supports 1..32 vectors in powers of two, not {vectors}")
        size = (0x18 if maskable else 0x0E) if is64 else (0x14 if maskable else 0x0A)
        off = chain.add(PCI_CAP_ID_MSI, size, offset)
        cfg = chain.config
        flags = (vectors.bit_length() - 1) << 1 | (PCI_MSI_FLAGS_64BIT if is64 else 0) | (
            PCI_MSI_FLAGS_MASKBIT if maskable else 0)
        cfg.store(off + 2, 2, flags)
        cfg.set_wmask(off + 2, 2, PCI_MSI_FLAGS_QSIZE | PCI_MSI_FLAGS_ENABLE)
        cfg.set_wmask(off + 4, 4, 0xFFFF_FFFC)
        if is64:
            cfg.set_wmask(off + 8, 4, 0xFFFF_FFFF)
        msi = cls(host, off, size, is64, maskable)
        cfg.set_wmask(msi.data_off, 2, 0xFFFF)
        if maskable:
            cfg.set_wmask(msi.mask_off, 4, (1 << vectors) - 1)
        return msi

    @property
    def data_off(self) -> int:
        return self.cap + (0xC if self.is64 else 0x8)

    @property
    def mask_off(self) -> int:
        return self.data_off + 4

    @property
    def pending_off(self) -> int:
        return self.data_off + 8

    def overlaps(self, offset: int, end: int) -> bool:
        """Does the config range ``[offset, end)`` touch the capability?"""
        return offset < self.cap + self.size and end > self.cap

    def notify(self) -> None:
        """``msi_notify`` for vector 0: pending while masked, delivered otherwise."""
        host, cfg = self.host, self.host.config
        if not cfg.read(self.cap + 2, 2) & PCI_MSI_FLAGS_ENABLE:
            if host.sim.tracing:
                host.sim.trace(host.name, "msi_disabled")
            return
        if self.maskable and cfg.read(self.mask_off, 4) & 1:
            cfg.store(self.pending_off, 4, cfg.read(self.pending_off, 4) | 1)
            return
        self._send()

    def config_written(self) -> None:
        """``msi_write_config``: enabling turns INTx off; unmasking a pending vector delivers it."""
        host, cfg = self.host, self.host.config
        if not cfg.read(self.cap + 2, 2) & PCI_MSI_FLAGS_ENABLE:
            return
        if host.interrupt_pin:
            host.set_intx(False)
        if self.maskable and not cfg.read(self.mask_off, 4) & 1 and cfg.read(self.pending_off, 4) & 1:
            cfg.store(self.pending_off, 4, cfg.read(self.pending_off, 4) & ~1)
            self._send()

    def _send(self) -> None:
        cfg = self.host.config
        address = cfg.read(self.cap + 4, 4)
        if self.is64:
            address |= cfg.read(self.cap + 8, 4) << 32
        self.host.write_message(address, cfg.read(self.data_off, 2))


class Msix:
    """One function's MSI-X capability at ``cap``: the table and PBA it places in BARs."""

    def __init__(self, host: MsiHost, cap: int, vectors: int, table_bar: int, table_offset: int, pba_bar: int,
                 pba_offset: int) -> None:
        self.host = host
        self.cap = cap
        self.vectors = vectors
        self.table_bar = table_bar
        self.table_offset = table_offset
        self.pba_bar = pba_bar
        self.pba_offset = pba_offset
        self.table = bytearray(MsixEntry(0, 0).pack() * vectors)  # msix_mask_all: every vector starts masked
        self.pba = bytearray((vectors + 63) // 64 * 8)
        self.function_masked = True

    @classmethod
    def create(cls, host: MsiHost, chain: CapabilityChain, bars: Sequence[Bar | None], offset: int | None, *,
               vectors: int, table_bar: int, table_offset: int, pba_bar: int, pba_offset: int) -> Msix:
        """``msix_init``: table and PBA inside implemented memory BARs, then the capability in ``chain``."""
        if not 1 <= vectors <= 2048:
            raise PciAccessError(f"MSI-X supports 1..2048 vectors, not {vectors}")
        table_len = vectors * MsixEntry.SIZE
        pba_len = (vectors + 63) // 64 * 8
        for bar_i, off_i, length in ((table_bar, table_offset, table_len), (pba_bar, pba_offset, pba_len)):
            bar = bars[bar_i] if 0 <= bar_i <= 5 else None
            if bar is None or bar.kind is BarKind.IO or off_i & 7 or off_i + length > bar.size:
                raise PciAccessError(f"MSI-X structure at BAR{bar_i}+0x{off_i:x} ({length} B) does not fit")
        if table_bar == pba_bar and table_offset < pba_offset + pba_len and pba_offset < table_offset + table_len:
            raise PciAccessError("MSI-X table and PBA overlap")
        off = chain.add(PCI_CAP_ID_MSIX, MSIX_CAP_LENGTH, offset)
        cfg = chain.config
        cfg.store(off + 2, 2, vectors - 1)
        cfg.set_wmask(off + 2, 2, PCI_MSIX_FLAGS_MASKALL | PCI_MSIX_FLAGS_ENABLE)
        cfg.store(off + 4, 4, table_offset | table_bar)
        cfg.store(off + 8, 4, pba_offset | pba_bar)
        return cls(host, off, vectors, table_bar, table_offset, pba_bar, pba_offset)

    # -- where the structures sit ---------------------------------------------------------
    def in_table(self, bar: int, offset: int) -> bool:
        return bar == self.table_bar and self.table_offset <= offset < self.table_offset + len(self.table)

    def in_pba(self, bar: int, offset: int) -> bool:
        return bar == self.pba_bar and self.pba_offset <= offset < self.pba_offset + len(self.pba)

    def control_touched(self, offset: int, end: int) -> bool:
        """Does the config range ``[offset, end)`` cover the Message Control byte with the enable bits?"""
        return offset <= self.cap + 3 and end > self.cap + 3

    # -- vectors -------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return bool(self.host.config.read(self.cap + 2, 2) & PCI_MSIX_FLAGS_ENABLE)

    def entry(self, vector: int) -> MsixEntry:
        """Table entry ``vector`` as the guest programmed it."""
        if not 0 <= vector < self.vectors:
            raise PciAccessError(f"{self.host!r} has no MSI-X vector {vector}")
        return MsixEntry.unpack(self.table[vector * MsixEntry.SIZE : (vector + 1) * MsixEntry.SIZE])

    def pending(self, vector: int) -> bool:
        if not 0 <= vector < self.vectors:
            raise PciAccessError(f"{self.host!r} has no MSI-X vector {vector}")
        return bool(self.pba[vector >> 3] >> (vector & 7) & 1)

    def notify(self, vector: int) -> None:
        """``msix_notify``: the pending bit is set while the vector is masked."""
        host = self.host
        if not 0 <= vector < self.vectors:
            if host.sim.tracing:
                host.sim.trace(host.name, "msix_bad_vector", vector=vector, vectors=self.vectors)
            return
        if self._masked(vector):
            self.pba[vector >> 3] |= 1 << (vector & 7)
            if host.sim.tracing:
                host.sim.trace(host.name, "msix_pending", vector=vector)
            return
        entry = self.entry(vector)
        host.write_message(entry.address, entry.data)

    def _masked(self, vector: int) -> bool:
        return self.function_masked or self.entry(vector).masked

    def _mask_update(self, vector: int, was_masked: bool) -> None:
        """``msix_handle_mask_update``: unmasking a vector with its pending bit set delivers it."""
        if was_masked and not self._masked(vector) and self.pending(vector):
            self.pba[vector >> 3] &= ~(1 << (vector & 7)) & 0xFF
            self.notify(vector)

    def control_written(self, was_masked: bool) -> None:
        """``msix_write_config``: the function mask follows ENABLE and MASKALL; enabling turns INTx off."""
        host = self.host
        ctrl = host.config.read(self.cap + 2, 2)
        self.function_masked = not ctrl & PCI_MSIX_FLAGS_ENABLE or bool(ctrl & PCI_MSIX_FLAGS_MASKALL)
        if not ctrl & PCI_MSIX_FLAGS_ENABLE:
            return
        if host.interrupt_pin:
            host.set_intx(False)
        if self.function_masked == was_masked:
            return
        for vector in range(self.vectors):
            self._mask_update(vector, was_masked or self.entry(vector).masked)

    # -- BAR accesses (offsets relative to the table or PBA) -----------------------------------
    def table_read(self, offset: int, size: int) -> int:
        if size not in (4, 8) or offset & 3 or offset + size > len(self.table):
            self._bad_access(offset, size)
            return value_mask(size)
        return int.from_bytes(self.table[offset : offset + size], "little")

    def table_write(self, offset: int, size: int, value: int) -> None:
        if size not in (4, 8) or offset & 3 or offset + size > len(self.table):
            self._bad_access(offset, size)
            return
        for part in range(size // 4):  # an 8-byte access is two dword accesses (msix .impl max 4)
            off = offset + 4 * part
            vector = off // MsixEntry.SIZE
            was_masked = self._masked(vector)
            self.table[off : off + 4] = ((value >> (32 * part)) & 0xFFFF_FFFF).to_bytes(4, "little")
            self._mask_update(vector, was_masked)

    def pba_read(self, offset: int, size: int) -> int:
        if size not in (4, 8) or offset & 3 or offset + size > len(self.pba):
            self._bad_access(offset, size)
            return value_mask(size)
        return int.from_bytes(self.pba[offset : offset + size], "little")

    def _bad_access(self, offset: int, size: int) -> None:
        host = self.host
        if host.sim.tracing:
            host.sim.trace(host.name, "msix_bad_access", offset=offset, size=size)
