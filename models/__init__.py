"""The platform of viommu-sim's VM: what QEMU, KVM and the host provide.

Guest memory (q35's RAM split), the PCI bus and the q35 functions, the
virtio-pci transport and the split virtqueue, the virtio-iommu device and its
IOMMU notifiers, host VFIO and the host IOMMU, the NVMe controller with its DMA
engine, the DMA ports that decide what a device's bus address means, the cost
model, and ``build_machine``, which assembles them from one ``MachineConfig``.

The models reach each other only through the typed seams of ``_seams``
(``MachineView``, ``CpuBus``, ``InterruptRouting``, ``InterruptSink``,
``DmaPort``): config cycles, MMIO, guest memory, DMA and interrupts, and
through the simulation kernel (``sim``).  The Linux-like guest that runs on
this platform is the subpackage ``models.guest``; the platform never imports it.
"""

from ._config import (
    GROUPS as GROUPS,
    PRESETS as PRESETS,
    ConfigError as ConfigError,
    MachineConfig as MachineConfig,
    OptionSpec as OptionSpec,
    describe_guest_kernel as describe_guest_kernel,
    guest_kernel_behaviour as guest_kernel_behaviour,
    machine_config as machine_config,
    machine_options as machine_options,
    parse_size as parse_size,
    preset_options as preset_options,
)
from ._cost import CostModel as CostModel
from ._dma import (
    DirectDmaPort as DirectDmaPort,
    DmaFault as DmaFault,
    HostIommuDmaPort as HostIommuDmaPort,
    ViommuDmaPort as ViommuDmaPort,
)
from ._errno import ENOMEM as ENOMEM
from ._host import HostVfio as HostVfio, MapFaultHook as MapFaultHook, VfioContainer as VfioContainer
from ._iommu_notify import HostIommuDevice as HostIommuDevice
from ._machine import Machine as Machine, build_machine as build_machine, realize_vfio as realize_vfio
from ._memory import GuestMemory as GuestMemory, MemoryAccessError as MemoryAccessError
from ._nvme import NvmeController as NvmeController
from ._nvme_ident import PM173X as PM173X, QEMU_NVME as QEMU_NVME, NvmeIdentity as NvmeIdentity
from ._pci import PciBus as PciBus, PciFunction as PciFunction, format_bdf as format_bdf, make_bdf as make_bdf
from ._seams import (
    CpuBus as CpuBus,
    DmaPort as DmaPort,
    InterruptRouting as InterruptRouting,
    InterruptSink as InterruptSink,
    MachineView as MachineView,
)
from ._viommu import VirtioIommu as VirtioIommu
from ._viommu_ordering import (
    ORDERING_API_VERSION as ORDERING_API_VERSION,
    OrderingPlanError as OrderingPlanError,
    PendingRequest as PendingRequest,
    RequestBatch as RequestBatch,
    RequestOrderingPolicy as RequestOrderingPolicy,
)
from ._viommu_state import ReservedRegion as ReservedRegion
from ._virtio_pci import UsedIrqHook as UsedIrqHook, VirtioPciTransport as VirtioPciTransport
from ._wire import U32 as U32, U64 as U64

__all__ = sorted(
    [
        "ConfigError", "CostModel", "CpuBus", "DirectDmaPort", "DmaFault", "DmaPort", "ENOMEM", "GROUPS", "GuestMemory",
        "HostIommuDevice", "HostIommuDmaPort", "HostVfio", "InterruptRouting", "InterruptSink", "Machine",
        "MachineConfig", "MachineView", "MapFaultHook", "MemoryAccessError", "NvmeController", "NvmeIdentity",
        "ORDERING_API_VERSION", "OptionSpec", "OrderingPlanError", "PRESETS", "PendingRequest", "PM173X", "PciBus", "PciFunction", "QEMU_NVME", "RequestBatch", "RequestOrderingPolicy", "ReservedRegion", "U32", "U64",
        "UsedIrqHook", "VfioContainer", "ViommuDmaPort", "VirtioIommu", "VirtioPciTransport", "build_machine",
        "describe_guest_kernel", "format_bdf", "guest_kernel_behaviour", "machine_config", "machine_options",
        "make_bdf", "parse_size", "preset_options", "realize_vfio",
    ]
)

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("models._"):
        try:
            _obj.__module__ = "models"
        except (AttributeError, TypeError):
            pass
del _name, _obj
