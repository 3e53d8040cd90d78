"""Assemble a machine from a ``MachineConfig``: guest RAM, interrupts, the q35 root bus, the devices.

``build_machine`` gives the machine at power-on: BARs unassigned, decode off.
The guest's firmware and kernel bring the bus up through config space
(``models.guest._pci_scan.enumerate_bus``).  With ``devices=True`` (the default) the
device models are plugged in as QEMU's command line would:

* ``-device virtio-iommu``: a ``VirtioIommu`` behind 00:03.0's virtio-pci
  transport, covering every other function of the root bus (QEMU's VIOT PCI
  range node: endpoint id = BDF);
* ``-device vfio-pci`` (``nvme=vfio``): the host model (``HostVfio``) gets a
  container for the NVMe's BDF (``realize_vfio``), and the controller's DMA is
  translated by the host IOMMU (``HostIommuDmaPort``);
* QEMU's own NVMe (``nvme=emulated``): its DMA goes through the vIOMMU's
  ``translate`` (``ViommuDmaPort``);
* no vIOMMU (``viommu=none``): DMA addresses are guest-physical.

The machine owns what QEMU keeps outside the devices and wires the devices to it:

* QEMU's big lock (``Machine.bql``, system/cpus.c ``qemu_mutex_lock_iothread``):
  handed to the virtio-iommu, which holds it while it handles a kick in a vCPU's
  exit, and to the virtio-pci transport, whose register writes wait for it;
* the VFIO wiring (hw/vfio/pci.c ``vfio_realize`` -> ``pci_device_set_iommu_device``,
  hw/vfio/listener.c ``vfio_listener_region_add``): ``realize_vfio`` makes the
  function's container and hands the vIOMMU a ``HostIommuDevice`` whose listener is
  the container's memory listener on the function's DMA address space, so the
  vIOMMU's IOMMU notifier for that endpoint reaches the host container and the
  vIOMMU never sees the host model.
"""

from __future__ import annotations

import functools
from typing import Any

from sim import Lock, Simulator

from ._config import MachineConfig
from ._dma import DirectDmaPort, HostIommuDmaPort, ViommuDmaPort
from ._host import HostVfio
from ._iommu_notify import HostIommuDevice
from ._interrupts import InterruptController
from ._memory import GuestMemory
from ._nvme import NvmeController
from ._nvme_dma import DirectEntries
from ._pci import PciBus, PciFunction, format_bdf
from ._q35 import VirtioPciFunction, q35_functions
from ._viommu import VirtioIommu
from ._virtio_pci import VirtioBackend, VirtioPciTransport


def realize_vfio(host: HostVfio, bdf: int) -> HostIommuDevice:
    """vfio-pci realize behind a vIOMMU: the function's container, and what the vIOMMU is handed.

    The container starts with all guest RAM mapped (its address space is system
    memory); the returned value carries the host IOMMU's page sizes and reserved
    ranges (``set_iommu_device``) and the container's listener on the function's DMA
    address space, which registers VFIO's IOMMU notifier when that space becomes the
    vIOMMU's region.
    """
    container = host.add_device(bdf)
    return HostIommuDevice(container.name, host.pgsizes, tuple(host.host_reserved_ranges()),
                           functools.partial(host.set_translated, bdf))


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
        #: QEMU's big lock, held by a device while it handles a kick inside a vCPU's exit
        self.bql = Lock("bql")
        self.host: HostVfio | None = None
        self.viommu: VirtioIommu | None = None
        self.transport: VirtioPciTransport | None = None
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
            vfio = {bdf: realize_vfio(self.host, bdf) for bdf in vfio_bdfs} if self.host is not None else {}
            self.viommu = VirtioIommu(sim, config, endpoints=endpoints, vfio_endpoints=vfio, bql=self.bql)
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
            # the transaction level hands queue entries over as objects (models/_nvme_dma.py DirectEntries)
            direct = DirectEntries(self.memory, port.dma_locate) if config.detail == "fast" else None
            self.nvme = NvmeController(sim, config.nvme if config.nvme == "emulated" else "vfio", cost, port,
                                       nvme_fn.msix_notify, nvme_fn.check_dma_allowed, direct=direct)
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

    def plug_virtio_backend(self, backend: VirtioBackend) -> VirtioPciTransport:
        """Create the virtio-pci transport for ``backend`` behind 00:03.0's BAR4; it waits for the machine's BQL."""
        fn = self.viommu_pci
        if fn is None:
            raise LookupError("this machine has no virtio-iommu-pci function (viommu=none)")
        transport = VirtioPciTransport(self.sim, self.memory, backend, fn.name, bql=self.bql)
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
