"""The ICH9 AHCI host bus adapter's generic host control registers (ABAR, BAR5) — enough for a driver to bind.

QEMU hw/ide/ahci.c: CAP = (ports - 1) | (32 command slots - 1) << 8 | Gen1 speed | NCQ | AHCI-only | 64-bit;
PI = all six ports; VS = AHCI 1.0; GHC.AE is always set (AHCI mode only) and GHC.HR, written 1, resets the
HBA and reads back 0 once done (immediately, in QEMU).  Port registers, FIS and command processing (the
attached drives) are not modelled: port registers read as 0.
"""

from __future__ import annotations

from typing import Any, Coroutine

#: hw/ide/ahci.h: AHCI_NUM_PORTS for ICH9
ICH9_AHCI_PORTS = 6
HOST_CAP, HOST_GHC, HOST_IRQ_STAT, HOST_PORTS_IMPL, HOST_VERSION = 0x00, 0x04, 0x08, 0x0C, 0x10
HOST_CAP_64 = 1 << 31
HOST_CAP_NCQ = 1 << 30
HOST_CAP_AHCI = 1 << 18
GEN1 = 1 << 20
GHC_HR = 1 << 0
GHC_IE = 1 << 1
GHC_AE = 1 << 31


class AhciHba:
    """BAR5 handler of the ICH9 AHCI function."""

    def __init__(self, ports: int = ICH9_AHCI_PORTS) -> None:
        self.ports = ports
        self.cap = (ports - 1) | (32 - 1) << 8 | GEN1 | HOST_CAP_NCQ | HOST_CAP_AHCI | HOST_CAP_64
        self.ghc = GHC_AE
        self.resets = 0

    def mmio_read(self, offset: int, size: int) -> int:
        value = {
            HOST_CAP: self.cap,
            HOST_GHC: self.ghc,
            HOST_IRQ_STAT: 0,
            HOST_PORTS_IMPL: (1 << self.ports) - 1,
            HOST_VERSION: 0x0001_0000,
        }.get(offset & ~3, 0)
        return (value >> (8 * (offset & 3))) & ((1 << (8 * size)) - 1)

    def mmio_write(self, offset: int, size: int, value: int) -> Coroutine[Any, Any, None] | None:
        if offset == HOST_GHC:
            if value & GHC_HR:
                self.resets += 1  # ahci_reset(): done at once, HR reads back 0
            self.ghc = GHC_AE | (value & GHC_IE)
        return None
