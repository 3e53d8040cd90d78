"""The guest's view of one PCI device (Linux ``struct pci_dev`` / ``struct device``, reduced).

Holds what the driver core, the IOMMU core and dma-iommu hang on a device:
its enumeration record, the bound driver's name (dev_printk prefix), its
IOMMU group and domain, and its DMA masks (``dma_set_mask_and_coherent``).
"""

from __future__ import annotations

from typing import Any

from ._pci_scan import PciDeviceInfo
from ._printk import pci_name


class GuestDevice:
    """One PCI function as the guest kernel sees it."""

    def __init__(self, info: PciDeviceInfo) -> None:
        self.info = info
        self.bdf = info.bdf
        #: "0000:00:04.0" (dev_name)
        self.name = pci_name(info.bdf)
        #: bound driver's name, the dev_printk prefix ("pci" before any driver binds)
        self.driver: str | None = None
        #: dma_mask / coherent_dma_mask in bits (Linux default for PCI: 32)
        self.dma_mask_bits = 32
        self.coherent_dma_mask_bits = 32
        #: set by the IOMMU core when the device is IOMMU-probed
        self.iommu_group: int | None = None
        self.dma: Any = None  # dma-iommu ops for this device, or None (direct DMA)
        self.iommu_probed = False

    def __repr__(self) -> str:
        return f"<GuestDevice {self.name} driver={self.driver}>"

    @property
    def prefix_driver(self) -> str:
        return self.driver or "pci"

    def set_dma_mask(self, bits: int) -> None:
        """``dma_set_mask_and_coherent(dev, DMA_BIT_MASK(bits))``."""
        self.dma_mask_bits = bits
        self.coherent_dma_mask_bits = bits
