"""Interrupt delivery of a q35 machine: MSI/MSI-X messages and INTx lines to the IOAPIC.

MSI and MSI-X are memory writes of ``data`` (4 bytes) to an address in the local
APIC window 0xFEE00000-0xFEEFFFFF.  The x86 format (Intel SDM vol. 3, 11.11.1;
Linux arch/x86/include/asm/msi.h): address bits 19:12 = destination APIC ID,
bit 3 = redirection hint, bit 2 = destination mode; data bits 7:0 = vector,
10:8 = delivery mode, 14 = level, 15 = trigger mode.  Handlers are registered
per vector; the destination CPU is the guest model's business.

INTx: a function's pin reaches the IOAPIC through the ICH9 LPC's PIRQ routing
(QEMU hw/isa/lpc_ich9.c ``ich9_lpc_map_irq`` + ``ich9_pirq_to_gsi``), APIC mode:

* slots 0-24: pin INTx of slot S uses PIRQ ``(S + x) % 4 + 4``, i.e. PIRQE..H
  (``ich9_cc_init``);
* slots 25-29 and 31 follow their chipset-config D<n>IR register, whose reset
  value 0x3210 (``ICH9_CC_DIR_DEFAULT``) maps INTA..D -> PIRQA..D
  (``ich9_cc_update``); slot 30 maps INTx -> PIRQ(E+x);
* PIRQ n drives GSI ``16 + n`` (``ich9_pirq_to_gsi``), no sharing with ISA IRQs.

So 00:02.0 INTA -> GSI 22, 00:03.0 -> 23, 00:04.0 -> 20, 00:1f.x INTA -> 16, as
the reference guest's ``/proc/interrupts`` and lspci show.  The PIC path
(PIRQx_ROUT registers, IRQ 10/11) is not modelled: the guest runs the IOAPIC.

A GSI's level is the wired OR of every source driving it, kept as a sim
``Signal``.  The handler of a GSI runs on each rising edge of that level; a guest
that follows IOAPIC level semantics calls ``eoi(gsi)`` after servicing, which
re-delivers once if the line is still asserted.  Every delivery reaches its
handler ``cost.irq_delivery_ps`` after the event (injection + handler entry).
"""

from __future__ import annotations

from typing import Callable

from sim import Signal, Simulator

from ._cost import CostModel

MSI_ADDR_BASE = 0xFEE0_0000
MSI_ADDR_END = 0xFEEF_FFFF
#: vectors 0-15 are reserved for exceptions; an MSI naming one is illegal (SDM 11.11.2)
FIRST_LEGAL_VECTOR = 16
IOAPIC_PINS = 24
PIRQ_GSI_BASE = 16
#: ICH9 chipset-config D<n>IR reset value (include/hw/southbridge/ich9.h ICH9_CC_DIR_DEFAULT)
ICH9_CC_DIR_DEFAULT = 0x3210

Handler = Callable[[], None]


def msi_address(dest_id: int = 0) -> int:
    """The MSI address a guest programs to reach local APIC ``dest_id`` (physical mode)."""
    if not 0 <= dest_id <= 0xFF:
        raise ValueError(f"APIC destination ID must be 0..255, not {dest_id}")
    return MSI_ADDR_BASE | dest_id << 12


def ich9_pirq(slot: int, pin: int) -> int:
    """PIRQ (0=A .. 7=H) that ``pin`` (1=INTA .. 4=INTD) of root-bus ``slot`` drives."""
    if not 0 <= slot <= 31 or not 1 <= pin <= 4:
        raise ValueError(f"no INTx route for slot {slot} pin {pin} (slot 0..31, pin 1..4)")
    intx = pin - 1
    if slot == 30:
        return intx + 4
    if slot >= 25:
        return (ICH9_CC_DIR_DEFAULT >> (4 * intx)) & 0x7
    return (slot + intx) % 4 + 4


def q35_intx_gsi(slot: int, pin: int) -> int:
    """IOAPIC input (GSI) that ``pin`` of root-bus ``slot`` reaches on q35 (what ACPI _PRT tells the guest)."""
    return PIRQ_GSI_BASE + ich9_pirq(slot, pin)


class InterruptController:
    """The guest's interrupt inputs: MSI vectors and IOAPIC GSI lines."""

    def __init__(self, sim: Simulator, cost: CostModel) -> None:
        self.sim = sim
        self.cost = cost
        self._msi_handlers: dict[int, Handler] = {}
        self._intx_handlers: dict[int, Handler] = {}
        self._lines = [Signal(0, name=f"gsi{g}") for g in range(IOAPIC_PINS)]
        #: per GSI: the sources (PCI BDFs) currently asserting it
        self._asserted: list[set[int]] = [set() for _ in range(IOAPIC_PINS)]
        #: messages delivered per vector, and messages nobody handled
        self.msi_counts: dict[int, int] = {}
        self.spurious = 0

    # -- MSI / MSI-X -------------------------------------------------------------
    def register_msi(self, vector: int, handler: Handler) -> None:
        if not FIRST_LEGAL_VECTOR <= vector <= 0xFF:
            raise ValueError(f"MSI vector must be {FIRST_LEGAL_VECTOR}..255, not {vector}")
        if vector in self._msi_handlers:
            raise ValueError(f"MSI vector {vector} already has a handler")
        self._msi_handlers[vector] = handler

    def unregister_msi(self, vector: int) -> None:
        self._msi_handlers.pop(vector, None)

    def deliver_msi(self, address: int, data: int, source: str) -> bool:
        """A device's 4-byte message write; True if it reached a registered handler."""
        sim = self.sim
        vector = data & 0xFF
        if not MSI_ADDR_BASE <= address <= MSI_ADDR_END:
            if sim.tracing:
                sim.trace("irq", "msi_bad_address", device=source, address=address, data=data)
            self.spurious += 1
            return False
        if vector < FIRST_LEGAL_VECTOR:
            if sim.tracing:
                sim.trace("irq", "msi_illegal_vector", device=source, address=address, vector=vector)
            self.spurious += 1
            return False
        handler = self._msi_handlers.get(vector)
        if sim.tracing:
            sim.trace("irq", "msi", device=source, dest=(address >> 12) & 0xFF, vector=vector,
                      handled=handler is not None)
        if handler is None:
            self.spurious += 1
            return False
        self.msi_counts[vector] = self.msi_counts.get(vector, 0) + 1
        sim.call_at(sim.now + self.cost.irq_delivery_ps, handler)
        return True

    # -- INTx / IOAPIC ---------------------------------------------------------------
    def register_intx(self, gsi: int, handler: Handler) -> None:
        self._check_gsi(gsi)
        if gsi in self._intx_handlers:
            raise ValueError(f"GSI {gsi} already has a handler")
        self._intx_handlers[gsi] = handler

    def line(self, gsi: int) -> Signal:
        """The level of ``gsi`` (1 while any source asserts it)."""
        self._check_gsi(gsi)
        return self._lines[gsi]

    def set_intx(self, gsi: int, source: int, level: bool) -> None:
        """Source ``source`` (a BDF) drives ``gsi`` to ``level``; the line is the OR of all sources."""
        self._check_gsi(gsi)
        asserted = self._asserted[gsi]
        if level:
            asserted.add(source)
        else:
            asserted.discard(source)
        line = self._lines[gsi]
        old = line.value
        new = 1 if asserted else 0
        line.set(new)
        if self.sim.tracing and old != new:
            self.sim.trace("irq", "intx", gsi=gsi, level=new, bdf=source)
        if new and not old:
            self._deliver_intx(gsi)

    def eoi(self, gsi: int) -> None:
        """End of interrupt: a still-asserted level-triggered line is delivered again."""
        self._check_gsi(gsi)
        if self._lines[gsi].value:
            self._deliver_intx(gsi)

    def _deliver_intx(self, gsi: int) -> None:
        handler = self._intx_handlers.get(gsi)
        if handler is None:
            self.spurious += 1
            return
        self.sim.call_at(self.sim.now + self.cost.irq_delivery_ps, handler)

    @staticmethod
    def _check_gsi(gsi: int) -> None:
        if not 0 <= gsi < IOAPIC_PINS:
            raise ValueError(f"GSI must be 0..{IOAPIC_PINS - 1} (the q35 IOAPIC's inputs), not {gsi}")
