"""The virtio-iommu's state: endpoints, domains, mappings, reserved regions, and DMA translation.

Follows the state half of QEMU's hw/virtio/virtio-iommu.c: the per-BDF
``IOMMUDevice`` made by ``virtio_iommu_find_add_as`` (with the host IOMMU's
properties ``virtio_iommu_set_iommu_device`` learns for an assigned function), the
endpoint and domain records (``virtio_iommu_get_endpoint``/``_put_endpoint``,
``virtio_iommu_get_domain``/``_put_domain``,
``virtio_iommu_detach_endpoint_from_domain``), the address-space switch between
the IOMMU region and the bypass alias (``virtio_iommu_switch_address_space``), the
IOMMU-notifier side (``virtio_iommu_notify_map``/``_unmap``, ``virtio_iommu_replay``,
``virtio_iommu_notify_flag_changed``), the reserved-region list
(``resv_region_list_insert``) and ``virtio_iommu_translate``.  Virtio spec: "IOMMU
Device", "Device operations" and "Fault reporting".

The request handlers (models/_viommu_requests.py) change this state; the device
(models/_viommu.py) adds the virtqueues, config space and the event queue that
``report_fault`` writes to.  The device knows an assigned (VFIO) function only by
its ``HostIommuDevice`` (models/_iommu_notify.py): the host's page sizes and
reserved ranges, and the listener the machine connected to the function's DMA
address space.

Mappings are a SortedDict per domain keyed by ``virt_start`` (QEMU: a GLib tree);
translate uses the mapping that contains the address (see the flavour notes in
models/_viommu_requests.py).

Endpoints are keyed by the function's 16-bit requester id everywhere (the device
records, translate, the IOMMU regions and, through their notifiers, the VFIO
containers), so no id aliases a function: an id with bits 16..31 set names none.

The flavour's row of models/_viommu_flavours.py sets what differs between VMMs
here: the config values (page_size_mask, input and domain range, probe_size,
bypass), which reserved regions an endpoint has, whether an unattached endpoint
bypasses, whether a failed translation reports a fault on the eventq, and
whether an endpoint id that names no function still gets a record (cloud-
hypervisor's ATTACH accepts any id: such a record has a device of its own that
no DMA reaches and no address-space switch follows).
"""

from __future__ import annotations

import abc
from typing import Iterable, Mapping as MappingOf, Sequence

import attrs
from sortedcontainers import SortedDict

from sim import Simulator

from ._config import ConfigError, MachineConfig
from ._cost import CostModel
from ._iommu_notify import (
    IOMMU_NONE,
    IOMMU_RO,
    IOMMU_WO,
    HostIommuDevice,
    IommuMemoryRegion,
    NotifierFlag,
    NotifierRefused,
)
from ._memory import HOST_PAGE_SIZE
from ._viommu_flavours import FLAVOURS, Flavour
from ._viommu_wire import (
    F_INPUT_RANGE,
    FAULT_F_ADDRESS,
    FAULT_F_READ,
    FAULT_F_WRITE,
    FAULT_R_DOMAIN,
    FAULT_R_MAPPING,
    FAULT_R_UNKNOWN,
    MAP_F_MMIO,
    MAP_F_READ,
    MAP_F_WRITE,
    RESV_MEM_T_MSI,
    RESV_MEM_T_RESERVED,
    FaultEvent,
    describe_fault,
)
from ._wire import U32, U64

VIOMMU_PROBE_SIZE = 512


@attrs.frozen(order=True)
class ReservedRegion:
    """QEMU's ReservedRegion of one endpoint: [start, end] inclusive, a virtio ``RESV_MEM_T_*`` subtype.

    This is the platform side, what the device reports in a PROBE RESV_MEM property.
    The guest's ``ResvRegion`` (models/guest/_iova.py) is Linux's struct
    iommu_resv_region (start + length, an ``IOMMU_RESV_*`` type), a different value
    the guest driver builds from that property.
    """

    start: int
    end: int
    subtype: int


#: q35/pc: the machine's reserved-regions property, the MSI window (hw/i386/pc.c)
X86_RESERVED_REGIONS = (ReservedRegion(0xFEE0_0000, 0xFEEF_FFFF, RESV_MEM_T_MSI),)


def insert_resv_region(regions: Sequence[ReservedRegion], new: ReservedRegion) -> list[ReservedRegion]:
    """resv_region_list_insert: ``new`` wins; overlapped regions are trimmed, split or dropped."""
    out: list[ReservedRegion] = []
    for r in regions:
        if r.end < new.start or r.start > new.end:
            out.append(r)
            continue
        if r.start < new.start:
            out.append(ReservedRegion(r.start, new.start - 1, r.subtype))
        if r.end > new.end:
            out.append(ReservedRegion(new.end + 1, r.end, r.subtype))
    out.append(new)
    return sorted(out)


def _largest_max_iova(hosts: Iterable[HostIommuDevice]) -> int:
    """crosvm ``iova_max_addr``: the largest assigned function's last usable IOVA, else 2^64 - 1.

    A host's usable ranges are the complement of its reserved ranges; its last
    usable IOVA is below a reserved range that runs to 2^64 - 1, else 2^64 - 1
    (crosvm ``VfioPciDevice::get_max_iova``).
    """
    ends = [min((lo - 1 for lo, hi in h.reserved_ranges if hi == U64), default=U64) for h in hosts]
    return max(ends, default=U64)


@attrs.frozen
class Mapping:
    """One MAP: [virt_start, virt_end] (inclusive) -> phys_start, with MAP flags."""

    virt_start: int
    virt_end: int
    phys_start: int
    flags: int


class IommuDevice:
    """QEMU's per-BDF IOMMUDevice: the IOMMU region and reserved regions of one function.

    ``host`` is set for an assigned function (QEMU ``set_iommu_device``).
    """

    def __init__(self, bdf: int, mr: IommuMemoryRegion, resv: list[ReservedRegion],
                 host: HostIommuDevice | None, *, phantom: bool = False) -> None:
        self.bdf = bdf
        self.mr = mr
        self.resv = resv
        self.host = host
        #: an endpoint id that names no function (cloud-hypervisor records it anyway)
        self.phantom = phantom
        #: whether the IOMMU region (not the bypass alias) is the device's DMA address space
        self.translated = False

    @property
    def vfio(self) -> bool:
        """Is the function assigned through VFIO?"""
        return self.host is not None


class Endpoint:
    """An endpoint record (created by ATTACH); ``id`` is its function's requester id, ``dev.bdf``."""

    def __init__(self, ep_id: int, dev: IommuDevice) -> None:
        if ep_id != dev.bdf:
            raise ValueError(f"endpoint {ep_id:#x} is not the requester id {dev.bdf:#x} of its function")
        self.id = ep_id
        self.dev = dev
        self.domain: Domain | None = None


class Domain:
    """A domain: bypass flag, mappings keyed by ``virt_start``, endpoints newest first."""

    def __init__(self, domain_id: int, bypass: bool) -> None:
        self.id = domain_id
        self.bypass = bypass
        self.mappings: SortedDict[int, Mapping] = SortedDict()
        self.endpoints: list[Endpoint] = []

    def first_overlap(self, start: int, end: int) -> Mapping | None:
        """The lowest mapping m with ``m.virt_start <= end and start <= m.virt_end``.

        That is GLib ``interval_cmp`` == 0, also for an inverted query.
        """
        maps = self.mappings
        i = maps.bisect_right(start) - 1
        if i >= 0:
            m: Mapping = maps.peekitem(i)[1]
            if m.virt_end >= start and m.virt_start <= end:
                return m
        if i + 1 < len(maps):
            m = maps.peekitem(i + 1)[1]
            if m.virt_start <= end:
                return m
        return None

    def overlapping(self, start: int, end: int) -> list[Mapping]:
        """Every mapping overlapping [start, end], ascending; O(log n + k)."""
        first = self.first_overlap(start, end)
        if first is None:
            return []
        maps = self.mappings
        out = [first]
        i = maps.index(first.virt_start) + 1
        while i < len(maps):
            m: Mapping = maps.peekitem(i)[1]
            if m.virt_start > end:
                break
            out.append(m)
            i += 1
        return out

    def lookup(self, addr: int) -> Mapping | None:
        """The mapping containing ``addr``."""
        i = self.mappings.bisect_right(addr) - 1
        if i < 0:
            return None
        m: Mapping = self.mappings.peekitem(i)[1]
        return m if addr <= m.virt_end else None


@attrs.frozen
class Translation:
    """Result of translate(): QEMU's IOMMUTLBEntry as the access uses it, plus the fault it reported.

    ``paddr`` is where the access at the translated address lands (include/exec/memory.h
    ``address_space_translate_iommu``: ``(translated_addr & ~addr_mask) | (addr &
    addr_mask)``), valid up to the end of the ``addr_mask + 1`` block.  ``mapping`` is
    the mapping that translated it (None for identity, bypass, MSI and faults), so a
    DMA port can tell the bytes that land outside it.
    """

    ok: bool
    paddr: int
    perm: int
    addr_mask: int
    fault_reason: int | None = None
    fault: FaultEvent | None = None
    mapping: Mapping | None = None
    #: the fault record's flags: READ/WRITE for an access the mapping does not permit, and ADDRESS
    fault_flags: int = 0

    @property
    def fault_description(self) -> str:
        """The fault in words ("" if the access translated): its reason and, for R_MAPPING, whether
        the page was not mapped or the access not permitted (``describe_fault``)."""
        return "" if self.fault_reason is None else describe_fault(self.fault_reason, self.fault_flags)


class ViommuState(abc.ABC):
    """The IOMMU state of a virtio-iommu and the operations QEMU's handlers build on.

    ``endpoints`` are the BDFs of the functions on the device's primary bus (each gets
    an IOMMU memory region); ``vfio_endpoints`` maps the assigned ones to what their
    host IOMMU device brings.  ``report_fault`` is the device's (the event queue).
    """

    def __init__(
        self,
        sim: Simulator,
        config: MachineConfig,
        *,
        endpoints: Iterable[int],
        vfio_endpoints: MappingOf[int, HostIommuDevice] | None = None,
        reserved_regions: Sequence[ReservedRegion] = X86_RESERVED_REGIONS,
        boot_bypass: bool = True,
        name: str = "virtio-iommu",
    ) -> None:
        self.sim = sim
        self.name = name
        self._trace = sim.tracer(name)
        self.flavor = config.flavor
        self.flavour: Flavour = FLAVOURS[config.flavor]
        flavour = self.flavour
        self.cost: CostModel = config.cost
        self.boot_bypass = boot_bypass
        self.page_size_mask = U64 & ~(HOST_PAGE_SIZE - 1)  # granule=host on a 4 KiB host
        if flavour.page_size_mask is not None:
            self.page_size_mask = flavour.page_size_mask
        #: the device feature bits offered (VirtioIommu.device_features)
        self.features_offered = flavour.offered(config.aw_bits)
        #: whether MAP/UNMAP check ``input_range`` in a peer flavour (cloud-hypervisor: only when offered)
        self.input_range_checked = bool(self.features_offered >> F_INPUT_RANGE & 1)
        self.input_range = (0, (1 << config.aw_bits) - 1)
        if flavour.input_range == "aw-below-64" and config.aw_bits == 64:
            self.input_range = (0, 0)  # not offered: cloud-hypervisor's config reads zeroes
        elif flavour.input_range == "vfio-iova-max":
            self.input_range = (0, _largest_max_iova((vfio_endpoints or {}).values()))
        self.domain_range = (0, U32) if flavour.domain_range else (0, 0)
        self.probe_size = flavour.probe_size
        #: ``config.bypass``; ``own_bypass`` is a flag of the device's own that decides instead when not
        #: None (cloud-hypervisor ``IommuMapping::bypass``, crosvm: never)
        self.bypass = 0
        self.own_bypass: bool | None = None
        self._boot_bypass()
        self.domains: dict[int, Domain] = {}
        self.endpoints: dict[int, Endpoint] = {}
        self.devices: dict[int, IommuDevice] = {}
        self.faults_reported = 0
        self.faults_dropped = 0
        #: host time (ps) the notifiers of the request being processed cost
        self._host_ps = 0
        self._mr_bdf: dict[str, int] = {}

        bdfs = sorted(set(endpoints))
        vfio = dict(vfio_endpoints or {})
        for bdf in bdfs:
            if not 0 <= bdf <= 0xFFFF:
                raise ValueError(f"endpoint {bdf:#x} is not a 16-bit BDF")
        for bdf in sorted(vfio):
            if bdf not in bdfs:
                raise ValueError(f"VFIO endpoint {bdf:#x} is not on the vIOMMU's bus")
        for index, bdf in enumerate(bdfs):
            self._add_device(index, bdf, vfio.get(bdf), reserved_regions)
        self._trace("virtio_iommu_freeze_granule", page_size_mask=self.page_size_mask)

    # -- set-up ----------------------------------------------------------------------
    def _boot_bypass(self) -> None:
        """``config.bypass`` and the device's own bypass flag as at system reset (QEMU: boot-bypass)."""
        flavour = self.flavour
        self.bypass = int(self.boot_bypass) if flavour.config_bypass is None else flavour.config_bypass
        self.own_bypass = flavour.unattached_bypass

    def _add_device(self, index: int, bdf: int, host: HostIommuDevice | None,
                    machine_resv: Sequence[ReservedRegion]) -> None:
        """virtio_iommu_find_add_as (+ set_iommu_device for an assigned function)."""
        mr_name = f"virtio-iommu-memory-region-{index}-{bdf & 0xFF}"
        mr = IommuMemoryRegion(mr_name, sim=self.sim, replay=self._replay, flags_changed=self._flags_changed)
        self._mr_bdf[mr_name] = bdf
        self._trace("virtio_iommu_init_iommu_mr", iommu_mr=mr_name)
        resv: list[ReservedRegion] = []
        if host is not None:
            if self.flavour.page_size_mask is None:
                self._update_page_size_mask(host.name, host.page_size_mask)
            if self.flavour.host_reserved:
                resv = [ReservedRegion(lo, hi, RESV_MEM_T_RESERVED) for lo, hi in host.reserved_ranges]
        for r in machine_resv:
            resv = insert_resv_region(resv, r)
        dev = self.devices[bdf] = IommuDevice(bdf, mr, resv, host)
        self._switch_address_space(dev)

    def _update_page_size_mask(self, name: str, new_mask: int) -> None:
        """set_iommu_device (QEMU >= 9.1): AND the host IOMMU's page sizes into page_size_mask (§5.8)."""
        old = self.page_size_mask
        self._trace("virtio_iommu_update_page_size_mask", name=name, old=old, new=new_mask)
        if old & new_mask == 0:
            raise ConfigError(
                "host_iommu_pgsizes",
                f"virtio-iommu reports a page size mask {new_mask:#x} incompatible with "
                f"currently supported mask {old:#x}",
            )
        self.page_size_mask = old & new_mask

    # -- domains and endpoints --------------------------------------------------------------
    def _get_endpoint(self, ep_id: int) -> Endpoint | None:
        """virtio_iommu_get_endpoint: existing record, or a new one if the id is a function's requester id.

        QEMU's virtio_iommu_mr drops bits 16..31 before the device lookup; here the
        whole id must be the BDF, so one function has one record (module docstring).
        """
        ep = self.endpoints.get(ep_id)
        if ep is not None:
            return ep
        dev = self.devices.get(ep_id)
        if dev is None:
            if self.flavour.endpoint_checks:
                return None
            dev = self._phantom_device(ep_id)
        ep = self.endpoints[ep_id] = Endpoint(ep_id, dev)
        self._trace("virtio_iommu_get_endpoint", ep_id=ep_id)
        return ep

    def _phantom_device(self, ep_id: int) -> IommuDevice:
        """A record for an endpoint id that names no function (cloud-hypervisor ATTACH: any id)."""
        name = f"virtio-iommu-phantom-{ep_id:#x}"
        mr = IommuMemoryRegion(name, sim=self.sim, replay=self._replay, flags_changed=self._flags_changed)
        self._mr_bdf[name] = ep_id
        return IommuDevice(ep_id, mr, [], None, phantom=True)

    def _put_endpoint(self, ep: Endpoint) -> None:
        if ep.domain is not None:
            self._detach_endpoint_from_domain(ep)
        del self.endpoints[ep.id]
        self._trace("virtio_iommu_put_endpoint", ep_id=ep.id)

    def _get_domain(self, domain_id: int, bypass: bool) -> Domain | None:
        domain = self.domains.get(domain_id)
        if domain is not None:
            return domain if domain.bypass == bypass else None
        domain = self.domains[domain_id] = Domain(domain_id, bypass)
        self._trace("virtio_iommu_get_domain", domain_id=domain_id)
        return domain

    def _put_domain(self, domain: Domain) -> None:
        """virtio_iommu_put_domain: detach every endpoint, drop the mappings silently."""
        del self.domains[domain.id]
        for ep in list(domain.endpoints):
            self._detach_endpoint_from_domain(ep)
        domain.mappings.clear()
        self._trace("virtio_iommu_put_domain", domain_id=domain.id)

    def _detach_endpoint_from_domain(self, ep: Endpoint) -> None:
        domain = ep.domain
        if domain is None:
            return
        self._trace("virtio_iommu_detach_endpoint_from_domain", domain_id=domain.id, ep_id=ep.id)
        for m in domain.mappings.values():
            self._notify_unmap(ep.dev.mr, m.virt_start, m.virt_end)
        domain.endpoints.remove(ep)
        ep.domain = None
        self._switch_address_space(ep.dev)

    def _bypassed(self, bdf: int) -> bool:
        """virtio_iommu_device_bypassed."""
        ep = self.endpoints.get(bdf)
        if ep is None or ep.domain is None:
            return bool(self.bypass) if self.own_bypass is None else self.own_bypass
        return ep.domain.bypass

    def _switch_address_space(self, dev: IommuDevice) -> None:
        """virtio_iommu_switch_address_space: IOMMU region or bypass alias; an assigned function's listener follows."""
        if dev.phantom:
            return
        on = not self._bypassed(dev.bdf)
        self._trace(
            "virtio_iommu_switch_address_space", bus=dev.bdf >> 8, slot=(dev.bdf >> 3) & 0x1F,
            fn=dev.bdf & 7, on=on,
        )
        if on == dev.translated:
            return
        dev.translated = on
        if dev.host is not None:
            self._host_ps += dev.host.listener(dev.mr if on else None)

    # -- notifiers ------------------------------------------------------------------------
    def _notify_map(self, mr: IommuMemoryRegion, virt_start: int, virt_end: int, paddr: int, flags: int) -> None:
        """virtio_iommu_notify_map: skipped without a MAP notifier, for MMIO or no permission."""
        perm = (IOMMU_RO if flags & MAP_F_READ else 0) | (IOMMU_WO if flags & MAP_F_WRITE else 0)
        if not mr.notify_flags & NotifierFlag.MAP or flags & MAP_F_MMIO or not perm:
            return
        if self.sim.tracing:
            self._trace("virtio_iommu_notify_map", mr=mr.name, virt_start=virt_start, virt_end=virt_end,
                        paddr=paddr, flags=flags)
        self._host_ps += mr.notify_range(NotifierFlag.MAP, virt_start, virt_end, paddr, perm)

    def _notify_unmap(self, mr: IommuMemoryRegion, virt_start: int, virt_end: int) -> None:
        """virtio_iommu_notify_unmap: sent for every removed mapping if the region has UNMAP notifiers."""
        if not mr.notify_flags & NotifierFlag.UNMAP:
            return
        if self.sim.tracing:
            self._trace("virtio_iommu_notify_unmap", mr=mr.name, virt_start=virt_start, virt_end=virt_end)
        self._host_ps += mr.notify_range(NotifierFlag.UNMAP, virt_start, virt_end, 0, IOMMU_NONE)

    def _replay(self, mr: IommuMemoryRegion) -> None:
        """virtio_iommu_replay: MAP every mapping of the endpoint's domain to all notifiers of ``mr``."""
        ep = self.endpoints.get(self._mr_bdf[mr.name])
        if ep is None or ep.domain is None:
            return
        for m in ep.domain.mappings.values():
            self._trace("virtio_iommu_remap", name=mr.name, virt_start=m.virt_start, virt_end=m.virt_end,
                        phys_start=m.phys_start)
            self._notify_map(mr, m.virt_start, m.virt_end, m.phys_start, m.flags)

    def _flags_changed(self, mr: IommuMemoryRegion, old: NotifierFlag, new: NotifierFlag) -> None:
        """virtio_iommu_notify_flag_changed: dev-iotlb notifiers are refused."""
        if new & NotifierFlag.DEVIOTLB_UNMAP:
            raise NotifierRefused("Virtio-iommu does not support dev-iotlb yet")
        if old == NotifierFlag.NONE:
            self._trace("virtio_iommu_notify_flag_add", name=mr.name)
        elif new == NotifierFlag.NONE:
            self._trace("virtio_iommu_notify_flag_del", name=mr.name)

    # -- DMA translation ------------------------------------------------------------------
    def translate(self, endpoint: int, iova: int, access: int) -> Translation:
        """One DMA access of ``endpoint`` (BDF) at ``iova``; ``access`` 1 = read, 2 = write, 3 = both.

        Functions not behind this vIOMMU, and functions whose address space is the bypass
        alias, get the identity without a translate call (QEMU never reaches
        virtio_iommu_translate for them).  A failed translation reports a fault on the
        eventq.  ``endpoint`` is a requester id (16 bits); anything wider is refused.

        A mapping hit gives QEMU's entry (``translated_addr = addr - virt_start +
        phys_start``, ``addr_mask`` of the granule) as address_space_translate_iommu
        applies it: the access keeps its offset in the granule and may run to the
        granule's end, past a mapping smaller than a granule or not aligned to one (only
        the qemu flavour accepts those MAPs).
        """
        if not 0 <= endpoint <= 0xFFFF:
            raise ValueError(f"endpoint {endpoint:#x} is not a 16-bit requester id")
        mask = (self.page_size_mask & -self.page_size_mask) - 1
        dev = self.devices.get(endpoint)
        if dev is None or not dev.translated:
            return Translation(True, iova, access, mask)
        sim = self.sim
        if sim.tracing:
            sim.trace(self.name, "virtio_iommu_translate", name=dev.mr.name, rid=endpoint, iova=iova, flag=access)
        ep = self.endpoints.get(endpoint)
        if ep is None:
            return self._fault(endpoint, iova, FAULT_R_UNKNOWN, FAULT_F_ADDRESS, mask)
        for r in dev.resv:
            if r.start <= iova <= r.end:
                if r.subtype == RESV_MEM_T_MSI:
                    return Translation(True, iova, access, mask)
                return self._fault(endpoint, iova, FAULT_R_MAPPING, FAULT_F_ADDRESS, mask)
        domain = ep.domain
        if domain is None:
            return self._fault(endpoint, iova, FAULT_R_DOMAIN, FAULT_F_ADDRESS, mask)
        if domain.bypass:
            return Translation(True, iova, access, mask)
        m = domain.lookup(iova)
        if m is None:
            return self._fault(endpoint, iova, FAULT_R_MAPPING, FAULT_F_ADDRESS, mask)
        flags = FAULT_F_READ if access & IOMMU_RO and not m.flags & MAP_F_READ else 0
        flags |= FAULT_F_WRITE if access & IOMMU_WO and not m.flags & MAP_F_WRITE else 0
        if flags:
            return self._fault(endpoint, iova, FAULT_R_MAPPING, flags | FAULT_F_ADDRESS, mask)
        translated = (iova - m.virt_start + m.phys_start) & U64
        if sim.tracing:
            sim.trace(self.name, "virtio_iommu_translate_out", virt_addr=iova, phys_addr=translated, sid=endpoint)
        return Translation(True, (translated & ~mask) | (iova & mask), access, mask, mapping=m)

    def _fault(self, endpoint: int, iova: int, reason: int, flags: int, mask: int) -> Translation:
        fault = FaultEvent(reason, flags, endpoint, iova)
        if not self.flavour.reports_faults:  # cloud-hypervisor and crosvm never write their eventq
            self._trace("virtio_iommu_fault_unreported", reason=reason, flags=flags, endpoint=endpoint, addr=iova)
            return Translation(False, iova, IOMMU_NONE, mask, reason, fault_flags=flags)
        self._report_fault(fault)
        return Translation(False, iova, IOMMU_NONE, mask, reason, fault, fault_flags=flags)

    @abc.abstractmethod
    def _report_fault(self, fault: FaultEvent) -> None:
        """virtio_iommu_report_fault: the device puts ``fault`` on its event queue."""

    # -- introspection ------------------------------------------------------------------
    def mappings(self, domain_id: int) -> list[Mapping]:
        """The mappings of a domain, ascending (empty if the domain does not exist)."""
        domain = self.domains.get(domain_id)
        return [] if domain is None else list(domain.mappings.values())

    def domain_of(self, endpoint: int) -> int | None:
        ep = self.endpoints.get(endpoint)
        return None if ep is None or ep.domain is None else ep.domain.id
