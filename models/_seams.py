"""The typed seams between the models: what crosses from one room to another.

A model reaches another only through one of these: the guest reaches the
platform as a ``MachineView`` (config cycles and MMIO on a ``CpuBus``, guest
RAM, interrupt routing on ``InterruptRouting``), a device model reaches memory
through a ``DmaPort`` and raises interrupts on an ``InterruptSink``; what
sits behind a BAR is a ``BarHandler`` (beside the BAR in ``_pci_config``).  They are Protocols, so a test double
or a second implementation (a faster level of detail) fits without inheriting
anything, and ``mypy --strict`` follows the MAP path across every joint.

They mirror the real boundaries: a vCPU's config/MMIO access is a VM exit
into QEMU's memory dispatch (``address_space_rw`` on the PCI address space);
a device's DMA is ``pci_dma_rw`` through its bus-master address space (the
IOMMU memory region when a vIOMMU translates it); an interrupt is an MSI
write or an INTx level change routed to the guest's IOAPIC/LAPIC.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sim import Simulator

    from ._config import MachineConfig
    from ._cost import CostModel
    from ._memory import GuestMemory

#: an interrupt handler the guest registers: called when the vector / line fires
InterruptHandler = Callable[[], None]


class CpuBus(Protocol):
    """The PCI host bridge as a vCPU sees it: config cycles, MMIO and port I/O.

    The ``async`` forms charge the VM-exit and dispatch cost in simulated time;
    the ``_sync`` forms act at once (firmware enumeration, which the model runs
    before simulated time matters) and return the in-exit work a write started,
    if any, for the caller to await.
    """

    async def config_read(self, bdf: int, offset: int, size: int) -> int: ...

    async def config_write(self, bdf: int, offset: int, size: int, value: int) -> None: ...

    async def mmio_read(self, addr: int, size: int) -> int: ...

    async def mmio_write(self, addr: int, size: int, value: int) -> None: ...

    def config_read_sync(self, bdf: int, offset: int, size: int) -> int: ...

    def config_write_sync(self, bdf: int, offset: int, size: int, value: int) -> Coroutine[Any, Any, None] | None: ...


class InterruptRouting(Protocol):
    """The guest's side of the interrupt controller: installing and ending handlers
    (``request_irq`` for MSI/MSI-X vectors, the IOAPIC pin of an INTx line, EOI)."""

    def register_msi(self, vector: int, handler: InterruptHandler) -> None: ...

    def unregister_msi(self, vector: int) -> None: ...

    def register_intx(self, gsi: int, handler: InterruptHandler) -> None: ...

    def eoi(self, gsi: int) -> None: ...


class InterruptSink(Protocol):
    """The device's side: an MSI write (address/data) or an INTx level change."""

    def deliver_msi(self, address: int, data: int, source: str) -> bool: ...

    def set_intx(self, gsi: int, source: int, level: bool) -> None: ...


class MachineView(Protocol):
    """What the guest kernel sees of the machine it boots on."""

    @property
    def sim(self) -> Simulator: ...

    @property
    def config(self) -> MachineConfig: ...

    @property
    def cost(self) -> CostModel: ...

    @property
    def memory(self) -> GuestMemory: ...

    @property
    def bus(self) -> CpuBus: ...

    @property
    def irq(self) -> InterruptRouting: ...


class DmaPort(Protocol):
    """A device's bus-master address space: every access translated when it happens
    (``pci_dma_read``/``pci_dma_write``); a refused access raises ``DmaFault``."""

    def dma_read(self, iova: int, size: int) -> bytes: ...

    def dma_write(self, iova: int, data: bytes) -> None: ...
