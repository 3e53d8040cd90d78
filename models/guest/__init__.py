"""The Linux-like guest that runs on the platform of ``models``.

Firmware's PCI resource assignment (SeaBIOS) and the guest's boot (initcall
order, ``iommu_subsys_init``, the PCI root-bus scan, built-in drivers in link
order, async and deferred probe); the kernel the drivers share (CPUs, printk,
page allocator); the IOMMU core (probe, groups, domains, attach) and dma-iommu
(IOVA allocator, flush queues or strict invalidation); the virtio-pci driver
core with its split-ring ``DriverQueue``; the virtio-iommu, NVMe, ahci,
intel-agp, e1000e and i801 drivers; ``lspci`` and the sysfs views it reads (with the
kernel build's module index); and the raw virtio-iommu driver
that sends any request (``viommu-sim replay``).

The guest sees the machine only as a ``models.MachineView`` (config cycles and
MMIO on a ``CpuBus``, guest RAM, interrupt routing); the platform never imports
this package.
"""

from ._boot import boot as boot
from ._device import DmaMapOps as DmaMapOps, GuestDevice as GuestDevice
from ._dma_iommu import DmaApi as DmaApi
from ._flush_queue import (
    FlushQueue as FlushQueue,
    StrictInvalidation as StrictInvalidation,
    dma_domain_policy as dma_domain_policy,
    virtio_iommu_map_batching as virtio_iommu_map_batching,
)
from ._iommu_core import IommuCore as IommuCore, IommuOps as IommuOps
from ._kernel import GuestKernel as GuestKernel
from ._kmem_consts import PAGE_SIZE as PAGE_SIZE
from ._lspci import LspciOptions as LspciOptions, PciIds as PciIds, lspci as lspci, lspci_listing as lspci_listing
from ._lspci_modules import (
    DEBIAN_6_12_BUILD as DEBIAN_6_12_BUILD,
    SEED_BUILD as SEED_BUILD,
    KernelBuild as KernelBuild,
    KernelModule as KernelModule,
    PciDeviceId as PciDeviceId,
    kernel_build as kernel_build,
)
from ._mm import OutOfMemory as OutOfMemory, PageAllocator as PageAllocator
from ._nvme_pci import NvmeDriver as NvmeDriver
from ._pci_scan import PciDeviceInfo as PciDeviceInfo, enumerate_bus as enumerate_bus
from ._map_policy import (
    MAP_QUEUE as MAP_QUEUE,
    MAP_SEND_SYNC as MAP_SEND_SYNC,
    BatchPerOperation as BatchPerOperation,
    MapSubmissionPolicy as MapSubmissionPolicy,
    SyncPerRange as SyncPerRange,
)
from ._policy_api import (
    POLICY_API_VERSION as POLICY_API_VERSION,
    Action as Action,
    ArmTimer as ArmTimer,
    FlushIotlbAll as FlushIotlbAll,
    FreeIova as FreeIova,
    InvalidationCounters as InvalidationCounters,
    InvalidationPolicy as InvalidationPolicy,
    InvalidationStats as InvalidationStats,
    IotlbSync as IotlbSync,
    PolicyContext as PolicyContext,
)
from ._raw_requests import (
    OPS as OPS,
    ReplayRequest as ReplayRequest,
    encode_request as encode_request,
    writable_size as writable_size,
)
from ._raw_viommu import raw_viommu_platform as raw_viommu_platform
from ._sysfs import (
    SysfsIommuGroup as SysfsIommuGroup,
    SysfsPciDevice as SysfsPciDevice,
    iommu_groups as iommu_groups,
    pci_devices as pci_devices,
    render_iommu_groups as render_iommu_groups,
)
from ._viommu_driver import ViommuDriver as ViommuDriver
from ._virtqueue_driver import DriverQueue as DriverQueue

__all__ = sorted(
    [
        "DmaApi", "DmaMapOps", "DriverQueue", "FlushQueue", "GuestDevice", "GuestKernel", "IommuCore", "IommuOps",
        "NvmeDriver", "OPS", "OutOfMemory", "PAGE_SIZE", "PageAllocator", "PciDeviceInfo", "PciIds", "ReplayRequest",
        "StrictInvalidation", "ViommuDriver", "boot", "dma_domain_policy", "encode_request", "enumerate_bus", "lspci",
        "raw_viommu_platform", "virtio_iommu_map_batching", "writable_size",
        # lspci and sysfs as the booted guest shows them (_lspci, _lspci_modules, _sysfs)
        "DEBIAN_6_12_BUILD", "KernelBuild", "KernelModule", "LspciOptions", "PciDeviceId", "SEED_BUILD",
        "SysfsIommuGroup", "SysfsPciDevice", "iommu_groups", "kernel_build", "lspci_listing", "pci_devices",
        "render_iommu_groups",
        # the invalidation-policy API (_policy_api)
        "Action", "ArmTimer", "FlushIotlbAll", "FreeIova", "InvalidationCounters", "InvalidationPolicy",
        "InvalidationStats", "IotlbSync", "POLICY_API_VERSION", "PolicyContext",
        # the MAP-submission policy API (_map_policy)
        "BatchPerOperation", "MAP_QUEUE", "MAP_SEND_SYNC", "MapSubmissionPolicy", "SyncPerRange",
    ]
)

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("models.guest._"):
        try:
            _obj.__module__ = "models.guest"
        except (AttributeError, TypeError):
            pass
del _name, _obj
