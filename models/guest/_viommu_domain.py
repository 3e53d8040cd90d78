"""The virtio-iommu driver's domains and endpoints: Linux drivers/iommu/virtio-iommu.c, 6.7 and 6.12.

* ``ViommuDomain`` is ``struct viommu_domain``: the id and geometry fixed when the first
  endpoint attaches (``viommu_domain_finalise``), the map flags, and the driver's internal
  mapping tree (``viommu_add_mapping`` / ``viommu_del_mappings``), kept so that
  ``viommu_replay_mappings`` can resend it and UNMAP never splits a MAP.
* ``ViommuEndpoint`` is ``struct viommu_endpoint``: the device, its endpoint ids (the fwspec),
  the reserved regions its PROBE reported, its domain.
* ``to_viommu_domain`` / ``to_viommu_endpoint`` are the driver's ``container_of``: the IOMMU
  core hands the driver back its own objects through the ``IommuOps`` seam, typed as the
  core knows them.
* ``add_resv_mem`` (``viommu_add_resv_mem``) parses one RESV_MEM probe property;
  ``resv_regions`` is ``viommu_get_resv_regions`` (a software MSI window when none is MSI).

The mapping tree is keyed by start address; dma-iommu never maps overlapping IOVA ranges,
so "the first overlapping mapping starts below the range" is checked on the predecessor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sortedcontainers import SortedDict

from .._errno import EINVAL, EOVERFLOW
from .._viommu_wire import RESV_MEM_T_MSI, RESV_MEM_T_RESERVED, ProbeResvMem
from .._wire import U64
from ._device import GuestDevice
from ._iommu_core import IommuDriverDomain
from ._iova import IOMMU_RESV_MSI, IOMMU_RESV_RESERVED, IOMMU_RESV_SW_MSI, ResvRegion

if TYPE_CHECKING:
    from ._viommu_driver import ViommuDriver

#: MSI_IOVA_BASE / MSI_IOVA_LENGTH: the software MSI window added when PROBE gave no MSI region
MSI_IOVA_BASE = 0x800_0000
MSI_IOVA_LENGTH = 0x10_0000


class ViommuDomain:
    """``struct viommu_domain``: id and geometry (set at finalise), map flags, the mapping tree."""

    def __init__(self) -> None:
        self.viommu: ViommuDriver | None = None
        self.id: int | None = None
        self.pgsize_bitmap = 0
        self.aperture = (0, U64)
        self.map_flags = 0
        self.nr_endpoints = 0
        #: the internal tree: virt_start -> (virt_end, phys_start, flags)
        self.mappings: SortedDict[int, tuple[int, int, int]] = SortedDict()

    def __repr__(self) -> str:
        return f"<ViommuDomain {self.id} endpoints={self.nr_endpoints} mappings={len(self.mappings)}>"

    def del_mappings(self, iova: int, end: int) -> int:
        """``viommu_del_mappings``: remove every mapping starting in [iova, end] in full (stop at one
        starting below ``iova``); bytes removed."""
        maps = self.mappings
        i = maps.bisect_right(iova) - 1
        if i >= 0 and maps.peekitem(i)[0] < iova and maps.peekitem(i)[1][0] >= iova:
            return 0  # would split a mapping created by one MAP
        unmapped = 0
        for start in list(maps.irange(iova, end)):
            m_end = maps.pop(start)[0]
            unmapped += m_end - start + 1
        return unmapped


class ViommuEndpoint:
    """``struct viommu_endpoint``: the device, its endpoint ids (fwspec), reserved regions, domain."""

    def __init__(self, dev: GuestDevice, ids: tuple[int, ...]) -> None:
        self.dev = dev
        self.ids = ids
        #: PROBE's RESV_MEM regions, sorted by start
        self.resv_regions: list[ResvRegion] = []
        self.domain: ViommuDomain | None = None

    def __repr__(self) -> str:
        return f"<ViommuEndpoint {self.dev.name} ids={self.ids}>"


def add_resv_mem(endpoint: ViommuEndpoint, reply: bytes, offset: int, length: int,
                 warn: Callable[[str], object]) -> int:
    """``viommu_add_resv_mem``: one RESV_MEM property into the sorted region list; 0 or -errno.
    ``warn`` gets the dev_warn text for an unknown subtype (kept as a reserved region)."""
    if offset + ProbeResvMem.SIZE > len(reply):
        return -EINVAL
    mem = ProbeResvMem.unpack(reply, offset)
    size = (mem.end - mem.start + 1) & U64
    if size < ((mem.end - mem.start) & U64):  # end - start + 1 wrapped to 0
        return -EOVERFLOW
    if length < ProbeResvMem.SIZE:
        return -EINVAL
    if mem.subtype == RESV_MEM_T_MSI:
        region = ResvRegion(mem.start, size, IOMMU_RESV_MSI)
    else:
        if mem.subtype != RESV_MEM_T_RESERVED:
            warn(f"unknown resv mem subtype {mem.subtype:#x}")
        region = ResvRegion(mem.start, size, IOMMU_RESV_RESERVED)
    pos = next((i for i, r in enumerate(endpoint.resv_regions) if r.start > region.start),
               len(endpoint.resv_regions))
    endpoint.resv_regions.insert(pos, region)
    return 0


def resv_regions(endpoint: ViommuEndpoint) -> list[ResvRegion]:
    """``viommu_get_resv_regions``: the PROBE regions, plus a software MSI window if none is MSI."""
    regions = list(endpoint.resv_regions)
    if not any(r.type == IOMMU_RESV_MSI for r in regions):
        regions.append(ResvRegion(MSI_IOVA_BASE, MSI_IOVA_LENGTH, IOMMU_RESV_SW_MSI))
    return regions


def to_viommu_domain(domain: IommuDriverDomain) -> ViommuDomain:
    """``to_viommu_domain``: the driver's domain behind the core's ``iommu_domain``."""
    if not isinstance(domain, ViommuDomain):
        raise TypeError(f"{domain!r} is not a virtio-iommu domain")
    return domain


def to_viommu_endpoint(dev_priv: object) -> ViommuEndpoint:
    """``dev_iommu_priv_get``: the driver's endpoint the core keeps for a device."""
    if not isinstance(dev_priv, ViommuEndpoint):
        raise TypeError(f"{dev_priv!r} is not a virtio-iommu endpoint")
    return dev_priv
