"""PCI config access and MSI-X as the guest's NVMe driver uses them: Linux 6.7 drivers/pci/msi/msi.c.

* ``PciConfigAccess``: ``pci_read_config_*`` / ``pci_write_config_*`` of one function and the
  read-modify-write of PCI_COMMAND that ``pci_enable_resources``, ``__pci_set_master`` and
  ``pci_intx`` do (written only when it changes);
* ``MsixVectors``: ``msix_capability_init`` (``pci_alloc_irq_vectors``), ``pci_free_irq_vectors``,
  and per entry what ``request_irq`` / ``pci_free_irq`` do to the table: a guest IDT vector (the
  lowest free one from 0x21, skipping the syscall gate: Linux's vector matrix is not modelled),
  the message written while the entry is masked, then the unmask.

Which queue an entry serves (``queue_request_irq``) stays with the driver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .._errno import ENODEV, ENOMEM
from .._interrupts import msi_address
from .._pci_caps import PCI_CAP_ID_MSIX
from .._pci_config import PCI_COMMAND, PCI_COMMAND_INTX_DISABLE
from .._pci_msi import PCI_MSIX_ENTRY_CTRL_MASKBIT, PCI_MSIX_FLAGS_ENABLE, PCI_MSIX_FLAGS_MASKALL
from ._device import GuestDevice

if TYPE_CHECKING:
    from .._seams import CpuBus, InterruptRouting
    from ._kernel import GuestKernel

#: first guest IDT vector the model hands to MSI-X entries (FIRST_EXTERNAL_VECTOR + 1); 0x80 is the syscall gate
FIRST_DEVICE_VECTOR, SYSCALL_VECTOR = 0x21, 0x80


class PciConfigAccess:
    """Config-space reads and writes of one PCI function through the bus."""

    def __init__(self, bus: CpuBus, bdf: int) -> None:
        self.bus = bus
        self.bdf = bdf

    async def read(self, off: int, size: int) -> int:
        return await self.bus.config_read(self.bdf, off, size)

    async def write(self, off: int, size: int, value: int) -> None:
        await self.bus.config_write(self.bdf, off, size, value)

    async def update_command(self, set_bits: int = 0, clear_bits: int = 0) -> None:
        """Read-modify-write of PCI_COMMAND, written only when it changes (pci_enable_resources, __pci_set_master)."""
        cmd = await self.read(PCI_COMMAND, 2)
        new = (cmd | set_bits) & ~clear_bits
        if new != cmd:
            await self.write(PCI_COMMAND, 2, new)


class MsixVectors:
    """The MSI-X capability of one function: the enabled entries and the IDT vector behind each."""

    def __init__(self, kernel: GuestKernel, dev: GuestDevice, cfg: PciConfigAccess, name: str) -> None:
        self.kernel = kernel
        self.dev = dev
        self.cfg = cfg
        self.bus: CpuBus = kernel.machine.bus
        self.irq: InterruptRouting = kernel.machine.irq
        #: dev_printk name and trace source of the driver ("nvme0")
        self.name = name
        self._trace = kernel.sim.tracer(f"guest/{name}")
        self.cap = 0
        self.table = 0
        #: entries allocated (0: MSI-X disabled)
        self.nvec = 0
        #: MSI-X entry -> guest IDT vector, for the entries with a handler
        self.vectors: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"<MsixVectors {self.dev.name} nvec={self.nvec} vectors={self.vectors}>"

    def _err(self, text: str) -> None:
        self.kernel.printk.dev_err(self.kernel.sim.now, "nvme", self.name, text)

    def entry_addr(self, entry: int) -> int:
        return self.table + 16 * entry

    async def alloc_irq_vectors(self, maxvec: int) -> int:
        """``msix_capability_init`` for min(maxvec, table size) entries; the count, or -ENODEV without MSI-X."""
        cap = next((off for cid, off in self.dev.info.capabilities if cid == PCI_CAP_ID_MSIX), None)
        if cap is None:
            self._err("MSI-X capability not found (MSI and INTx are not modelled)")
            return -ENODEV
        ctrl = await self.cfg.read(cap + 2, 2)
        await self.cfg.write(cap + 2, 2, ctrl | PCI_MSIX_FLAGS_MASKALL | PCI_MSIX_FLAGS_ENABLE)
        ctrl = await self.cfg.read(cap + 2, 2)
        tsize = (ctrl & 0x7FF) + 1
        table = await self.cfg.read(cap + 4, 4)
        bar = self.dev.info.bar(table & 7)
        if bar is None:
            self._err(f"MSI-X table in unimplemented BAR {table & 7}")
            return -ENODEV
        self.cap, self.table = cap, bar.address + (table & ~7)
        nvec = min(maxvec, tsize)
        for entry in range(nvec):  # msix_setup_msi_descs reads each entry's vector control
            await self.bus.mmio_read(self.entry_addr(entry) + 12, 4)
        await self.cfg.update_command(set_bits=PCI_COMMAND_INTX_DISABLE)  # pci_intx_for_msi(dev, 0)
        for entry in range(tsize):  # msix_mask_all
            await self.bus.mmio_write(self.entry_addr(entry) + 12, 4, PCI_MSIX_ENTRY_CTRL_MASKBIT)
        await self.cfg.write(cap + 2, 2, (ctrl | PCI_MSIX_FLAGS_ENABLE) & ~PCI_MSIX_FLAGS_MASKALL)
        self.nvec = nvec
        self._trace("pci_alloc_irq_vectors", nvec=nvec, table_size=tsize)
        return nvec

    async def disable(self) -> None:
        """The end of ``pci_free_irq_vectors`` (handlers already freed): clear MSI-X Enable, give INTx back."""
        ctrl = await self.cfg.read(self.cap + 2, 2)
        await self.cfg.write(self.cap + 2, 2, ctrl & ~PCI_MSIX_FLAGS_ENABLE)
        await self.cfg.update_command(clear_bits=PCI_COMMAND_INTX_DISABLE)
        self.nvec = 0

    async def request_irq(self, entry: int, cpu: int, handler: Callable[[], None], qid: int) -> int:
        """``request_irq`` on MSI-X ``entry``: a free vector, the message aimed at ``cpu``, unmasked.
        0, or -ENOMEM when no vector is free."""
        vector = None
        for v in range(FIRST_DEVICE_VECTOR, 0x100):
            if v == SYSCALL_VECTOR:
                continue
            try:
                self.irq.register_msi(v, handler)
            except ValueError:
                continue
            vector = v
            break
        if vector is None:
            self._err(f"no free interrupt vector for nvme0q{qid}")
            return -ENOMEM
        self.vectors[entry] = vector
        base = self.entry_addr(entry)
        address = msi_address(cpu)
        await self.bus.mmio_write(base, 4, address & 0xFFFF_FFFF)  # __pci_write_msi_msg, entry masked
        await self.bus.mmio_write(base + 4, 4, address >> 32)
        await self.bus.mmio_write(base + 8, 4, vector)
        await self.bus.mmio_read(base + 8, 4)
        await self.bus.mmio_write(base + 12, 4, 0)  # pci_msix_unmask + flush
        await self.bus.mmio_read(base + 12, 4)
        self._trace("request_irq", queue=qid, entry=entry, vector=vector, cpu=cpu)
        return 0

    async def free_irq(self, entry: int) -> None:
        """``pci_free_irq``: mask the entry and drop the handler."""
        await self.bus.mmio_write(self.entry_addr(entry) + 12, 4, PCI_MSIX_ENTRY_CTRL_MASKBIT)
        self.irq.unregister_msi(self.vectors.pop(entry))
