"""Finding a virtio-pci modern device's register regions from config space (``vp_modern_probe``).

Linux's drivers/virtio/virtio_pci_modern_dev.c walks the vendor-specific
capabilities (cap id 0x09) looking for the first of each ``cfg_type`` (COMMON,
NOTIFY, ISR, DEVICE), reads ``bar``/``offset``/``length`` of each and, for the
notify capability, ``notify_off_multiplier``; the BAR addresses are the ones
enumeration assigned.  ``PciVirtioRegs`` then turns ``read(cfg, off, size)``
into MMIO on the bus (timed: each access is a trapped exit on the real
machine), which is the ``VirtioRegs`` protocol the driver core uses.
"""

from __future__ import annotations

from .._seams import CpuBus
from ._pci_scan import PciDeviceInfo

PCI_CAP_ID_VNDR = 0x09
#: virtio_pci_cap.cfg_type values (virtio spec 4.1.4)
CFG_TYPES = {1: "common", 2: "notify", 3: "isr", 4: "device"}


class VirtioPciProbeError(Exception):
    """The function lacks a capability the modern driver needs (Linux: -ENODEV)."""


class PciVirtioRegs:
    """Register access to one virtio-pci modern function through its BAR."""

    def __init__(self, bus: CpuBus, info: PciDeviceInfo) -> None:
        self.bus = bus
        self.info = info
        self.regions: dict[str, tuple[int, int]] = {}  # cfg -> (guest-physical base, length)
        self.notify_off_multiplier = 0

    async def probe(self) -> None:
        """Walk the vendor capabilities in config space (``vp_modern_probe`` / ``virtio_pci_find_capability``)."""
        bdf = self.info.bdf
        for cap_id, pos in self.info.capabilities:
            if cap_id != PCI_CAP_ID_VNDR:
                continue
            cfg_type = await self.bus.config_read(bdf, pos + 3, 1)
            name = CFG_TYPES.get(cfg_type)
            if name is None or name in self.regions:
                continue  # Linux uses the first capability of each type
            bar_index = await self.bus.config_read(bdf, pos + 4, 1)
            offset = await self.bus.config_read(bdf, pos + 8, 4)
            length = await self.bus.config_read(bdf, pos + 12, 4)
            bar = self.info.bar(bar_index)
            if bar is None or offset + length > bar.size:
                raise VirtioPciProbeError(f"virtio-pci {self.info.slot_name}: bad {name} capability")
            self.regions[name] = (bar.address + offset, length)
            if name == "notify":
                self.notify_off_multiplier = await self.bus.config_read(bdf, pos + 16, 4)
        missing = [n for n in ("common", "notify", "isr", "device") if n not in self.regions]
        if missing:
            raise VirtioPciProbeError(f"virtio-pci {self.info.slot_name}: no {', '.join(missing)} capability")

    def _addr(self, cfg: str, offset: int, size: int) -> int:
        base, length = self.regions[cfg]
        if offset + size > length:
            raise VirtioPciProbeError(f"{cfg} access at {offset:#x}+{size} beyond its {length:#x}-byte region")
        return base + offset

    async def read(self, cfg: str, offset: int, size: int) -> int:
        return await self.bus.mmio_read(self._addr(cfg, offset, size), size)

    async def write(self, cfg: str, offset: int, size: int, value: int) -> None:
        await self.bus.mmio_write(self._addr(cfg, offset, size), size, value)
