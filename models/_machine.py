"""Assemble a machine from a ``MachineConfig``: guest RAM, interrupts, the q35 root bus, the devices.

``build_machine`` gives the machine at power-on: BARs unassigned, decode off.
The guest's firmware and kernel bring the bus up through config space
(``models._pci_enum.enumerate_bus``).  With ``devices=True`` (the default) the
device models are plugged in as QEMU's command line would:

* ``-device virtio-iommu``: a ``VirtioIommu`` behind 00:03.0's virtio-pci
  transport, covering every other function of the root bus (QEMU's VIOT PCI
  range node: endpoint id = BDF);
* ``-device vfio-pci`` (``nvme=vfio``): the host model (``HostVfio``) gets a
  container for the NVMe's BDF, and the controller's DMA is translated by the
  host IOMMU (``HostIommuDmaPort``);
* QEMU's own NVMe (``nvme=emulated``): its DMA goes through the vIOMMU's
  ``translate`` (``ViommuDmaPort``);
* no vIOMMU (``viommu=none``): DMA addresses are guest-physical.
"""

from __future__ import annotations

from typing import Any

from sim import Simulator

from ._config import MachineConfig
from ._dma import DirectDmaPort, HostIommuDmaPort, ViommuDmaPort
from ._host import HostVfio
from ._interrupts import InterruptController
from ._memory import GuestMemory
from ._nvme import NvmeController
from ._pci import PciBus, PciFunction, format_bdf
from ._q35 import VirtioPciFunction, q35_functions
from ._viommu import VirtioIommu


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
        self.host: HostVfio | None = None
        self.viommu: VirtioIommu | None = None
        self.transport: Any = None
        self.nvme: NvmeController | None = None

    def plug_devices(self) -> None:
        """Create the device models the configuration asks for (once)."""
        sim, config, cost = self.sim, self.config, self.cost
        viommu_fn = self.viommu_pci
        nvme_fn = self.nvme_pci
        vfio_bdfs = [nvme_fn.bdf] if nvme_fn is not None and config.nvme == "vfio" else []
        if vfio_bdfs:
            self.host = HostVfio(cost, config.host_iommu_pgsizes, sim=sim, memory=self.memory)
        if viommu_fn is not None:
            endpoints = [fn.bdf for fn in self.functions if fn is not viommu_fn]
            self.viommu = VirtioIommu(sim, config, endpoints=endpoints, vfio_endpoints=vfio_bdfs, host=self.host)
            self.transport = self.plug_virtio_backend(self.viommu)
        if nvme_fn is not None:
            initiator = f"nvme@{format_bdf(nvme_fn.bdf)}"
            port: Any
            if self.viommu is None:
                port = DirectDmaPort(self.memory, initiator, nvme_fn.check_dma_allowed)
            elif config.nvme == "vfio":
                assert self.host is not None
                port = HostIommuDmaPort(self.memory, self.host, nvme_fn.bdf, initiator, nvme_fn.check_dma_allowed,
                                        lambda: sim.now)
            else:
                port = ViommuDmaPort(self.memory, self.viommu, nvme_fn.bdf, initiator, nvme_fn.check_dma_allowed)
            self.nvme = NvmeController(sim, config.nvme if config.nvme == "emulated" else "vfio", cost, port,
                                       nvme_fn.msix_notify, nvme_fn.check_dma_allowed)
            nvme_fn.set_bar_handler(0, self.nvme)
            nvme = self.nvme
            nvme_fn.on_bus_master = lambda on: nvme.bus_master_changed() if on else None
            self.nvme_dma = port

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


def build_machine(config: MachineConfig, sim: Simulator, *, devices: bool = True) -> Machine:
    """The machine ``config`` describes, at power-on, running on ``sim``.

    ``devices=False`` leaves the virtio-iommu and NVMe models unplugged (bare
    PCI functions), for tests of the platform alone.
    """
    machine = Machine(sim, config)
    if devices:
        machine.plug_devices()
    return machine
