"""The guest kernel: CPUs, printk, memory, devices, and the pieces drivers reach for.

A deliberately small object that the driver models share (the Linux globals
they use): the machine they run on (for MMIO, config space and interrupts),
``printk``, the page allocator, the enumerated devices, the IOMMU core, and
per-CPU execution.  Code that runs "on a CPU" is a sim task that carries its
CPU number explicitly (``cpu`` arguments), because dma-iommu's per-CPU IOVA
caches and flush queues depend on it.

The boot sequence (initcall order, async and deferred probe) lives in
``_boot.py``.
"""

from __future__ import annotations

from typing import Any

from sim import Simulator

from .._memory import GIB
from ._device import GuestDevice
from ._mm import PageAllocator
from ._printk import Printk

#: memory the early boot has already used before drivers allocate (kernel image, memmap, ...):
#: an estimate, it only shifts the physical addresses of DMA buffers
EARLY_BOOT_RESERVED = 256 * (1 << 20)


class GuestKernel:
    """Shared state of one booted (or booting) guest."""

    def __init__(self, machine: Any) -> None:
        self.machine = machine
        self.sim: Simulator = machine.sim
        self.config = machine.config
        self.cost = machine.cost
        self.ncpus: int = machine.config.smp
        self.printk = Printk()
        mem = machine.memory
        self.mm = PageAllocator.for_ram(mem.below_4g, mem.above_4g_end, EARLY_BOOT_RESERVED)
        self.devices: dict[int, GuestDevice] = {}
        #: the IOMMU core (set when the iommu subsystem initialises)
        self.iommu: Any = None
        #: PCI host bridge memory windows as inclusive (start, end) bus addresses (from enumeration)
        self.host_bridge_windows: list[tuple[int, int]] = []

    def log(self, text: str) -> None:
        self.printk.log(self.sim.now, text)

    def dev_info(self, dev: GuestDevice | tuple[str, str], text: str) -> None:
        if isinstance(dev, GuestDevice):
            self.printk.dev_info(self.sim.now, dev.prefix_driver, dev.name, text)
        else:
            self.printk.dev_info(self.sim.now, dev[0], dev[1], text)

    def device(self, bdf: int) -> GuestDevice:
        return self.devices[bdf]


__all__ = ["GIB", "GuestDevice", "GuestKernel"]
