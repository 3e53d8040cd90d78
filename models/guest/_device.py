"""The guest's view of one PCI device (Linux ``struct pci_dev`` / ``struct device``, reduced).

Holds what the driver core, the IOMMU core and dma-iommu hang on a device:
its enumeration record, the bound driver's name (dev_printk prefix), its
IOMMU group and domain, and its DMA masks (``dma_set_mask_and_coherent``).
"""

from __future__ import annotations

from typing import Protocol

from ._pci_scan import PciDeviceInfo
from ._printk import pci_name


class DmaMapOps(Protocol):
    """``struct dma_map_ops`` as drivers call it (``dma_map_page``, ``dma_map_sg``,
    ``dma_alloc_coherent``, ...): dma-iommu's ops behind an IOMMU, the direct ops without.
    ``cpu`` is the vCPU the caller runs on (per-CPU IOVA caches and flush queues)."""

    async def map_page(self, cpu: int, paddr: int, size: int, direction: int) -> int: ...

    async def unmap_page(self, cpu: int, iova: int, size: int, direction: int) -> None: ...

    async def map_sg(self, cpu: int, segments: list[tuple[int, int]], direction: int) -> list[int]: ...

    async def unmap_sg(self, cpu: int, iovas: list[int], segments: list[tuple[int, int]], direction: int) -> None: ...

    async def alloc_coherent(self, cpu: int, size: int) -> tuple[int, list[int]]: ...

    async def free_coherent(self, cpu: int, size: int, iova: int, pages: list[int]) -> None: ...


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
        #: the device's DMA ops (set at dma_configure: dma-iommu's or the direct ones)
        self.dma: DmaMapOps | None = None
        self.iommu_probed = False

    def __repr__(self) -> str:
        return f"<GuestDevice {self.name} driver={self.driver}>"

    @property
    def dma_ops(self) -> DmaMapOps:
        """``get_dma_ops(dev)``: the ops ``dma_configure`` installed (an error before it ran)."""
        if self.dma is None:
            raise RuntimeError(f"{self.name}: DMA API used before dma_configure")
        return self.dma

    @property
    def prefix_driver(self) -> str:
        return self.driver or "pci"

    def set_dma_mask(self, bits: int) -> None:
        """``dma_set_mask_and_coherent(dev, DMA_BIT_MASK(bits))``."""
        self.dma_mask_bits = bits
        self.coherent_dma_mask_bits = bits
