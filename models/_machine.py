"""Assemble a machine from a ``MachineConfig``: guest RAM, interrupts, the q35 root bus and its functions.

``build_machine`` gives the machine at power-on: BARs unassigned, decode off.
The guest's firmware and kernel bring the bus up through config space
(``models._pci_enum.enumerate_bus``).  Device models plug in afterwards:
the NVMe controller with ``machine.nvme_pci.set_bar_handler(0, controller)``,
the virtio-iommu with ``machine.plug_virtio_backend(device)``.
"""

from __future__ import annotations

from typing import Any

from sim import Simulator

from ._config import MachineConfig
from ._interrupts import InterruptController
from ._memory import GuestMemory
from ._pci import PciBus, PciFunction, format_bdf
from ._q35 import VirtioPciFunction, q35_functions


class Machine:
    """One simulated VM.  Later layers attach ``viommu``, ``nvme`` and ``host``."""

    def __init__(self, sim: Simulator, config: MachineConfig) -> None:
        self.sim = sim
        self.config = config
        self.cost = config.cost
        self.memory = GuestMemory(config.memory)
        self.irq = InterruptController(sim, self.cost)
        self.bus = PciBus(sim, self.cost, self.irq)
        for fn in q35_functions(config):
            self.bus.add_function(fn)

    @property
    def functions(self) -> list[PciFunction]:
        """Every PCI function, in BDF order."""
        return self.bus.functions

    def function(self, bdf: int) -> PciFunction:
        fn = self.bus.function(bdf)
        if fn is None:
            raise LookupError(f"no PCI function at {format_bdf(bdf)} on this machine")
        return fn

    @property
    def viommu_pci(self) -> VirtioPciFunction | None:
        """The virtio-iommu-pci function (absent with ``viommu="none"``)."""
        for fn in self.bus.functions:
            if isinstance(fn, VirtioPciFunction):
                return fn
        return None

    @property
    def nvme_pci(self) -> PciFunction | None:
        """The NVMe function, passed-through or emulated (absent with ``nvme="none"``)."""
        for fn in self.bus.functions:
            if fn.name == "nvme":
                return fn
        return None

    def plug_virtio_backend(self, backend: Any) -> Any:
        """Create the virtio-pci transport for ``backend`` (a VirtioBackend) behind 00:03.0's BAR4."""
        fn = self.viommu_pci
        if fn is None:
            raise LookupError("this machine has no virtio-iommu-pci function (viommu=none)")
        from ._virtio_pci import VirtioPciTransport  # written by the virtio layer; imported on first use

        transport = VirtioPciTransport(self.sim, self.memory, backend, fn.name)
        fn.plug(transport)
        return transport


def build_machine(config: MachineConfig, sim: Simulator) -> Machine:
    """The machine ``config`` describes, at power-on, running on ``sim``."""
    return Machine(sim, config)
