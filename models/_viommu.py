"""The virtio-iommu device, as QEMU's hw/virtio/virtio-iommu.c (virtio spec "IOMMU Device").

Decision logic is plain synchronous code: ``process_request``/``handle_request`` take
the bytes of a request's device-readable part and the size of its device-writable
part and return the reply (checks in QEMU's order, see the handlers), ``translate``
decides one DMA access.  The async glue (``queue_notify(0)``) only pops chains,
applies time and publishes replies, like ``virtio_iommu_handle_command``.

Where QEMU versions differ, this models QEMU 9.1/9.2 (the seed's QEMU runs
system/memory.c and hw/vfio/common.c, i.e. 8.1..9.2): DETACH deletes the endpoint
record (1993d634d5), a PROBE whose writable part is short gets DEVERR (704391f94a),
the host IOMMU page sizes narrow ``page_size_mask`` when the VFIO device is realized
(d7c8c95fbc), and a guest (status 0) reset destroys every domain and endpoint (the
virtio ``reset`` hook, removed in 10.0).

Two flavours (``MachineConfig.flavor``):

* ``qemu``: QEMU's behaviour, including its deviations from the spec.
* ``spec``: the spec's device requirements ("IOMMU Device / Device operations"):

  ======================================  ===============================  ==========================================
  case                                    qemu                             spec
  ======================================  ===============================  ==========================================
  ATTACH ``reserved`` != 0                ignored                          INVAL (ATTACH: MUST)
  ATTACH, bypass flag differs from the    endpoint detached first, then    INVAL, nothing changed (ATTACH: SHOULD;
  existing domain                         INVAL (endpoint left detached)   "as if DETACH then ATTACH", atomically)
  ATTACH to the endpoint's own domain     detach + attach: a sole member   no change, OK (the DETACH+ATTACH rule is
                                          destroys and recreates it empty  for "another domain")
  ATTACH/DETACH/PROBE endpoint id         bits 16..31 ignored for the      must be exactly a managed BDF
                                          device lookup
  DETACH of a managed, unattached         NOENT (no endpoint record)       INVAL (DETACH: NOENT only if the endpoint
  endpoint                                                                 doesn't exist; MAY INVAL if not attached)
  MAP start/phys/end+1 off the granule    accepted                         RANGE (MAP: SHOULD)
  MAP outside ``input_range``             accepted                         RANGE ("any mapping request ... outside
                                                                           this range fails"; no status given)
  MAP over a RESV_MEM region of an        accepted                         INVAL (RESV_MEM: SHOULD reject; no status
  endpoint in the domain                                                   given)
  UNMAP that would split a mapping        RANGE after removing the lower   RANGE, nothing removed (UNMAP: SHOULD NOT
                                          fully covered mappings           remove any mapping)
  unknown request type                    UNSUPP tail, used length 4       nothing written, used length 0 (SHOULD NOT
                                                                           write the buffer)
  PROBE writable part < probe_size + 4    DEVERR tail at offset 0, used 4  zero properties, INVAL tail at the end,
                                                                           used = writable size (PROBE: SHOULD INVAL)
  ======================================  ===============================  ==========================================

Simulator choices, the same in both flavours (documented divergences from QEMU):

* QEMU keeps mappings in a GLib AVL tree whose lookups return *some* overlapping
  interval, depending on the tree's shape.  Here mappings are a SortedDict keyed by
  ``virt_start``: translate uses the mapping that contains the address (QEMU's
  ``[addr, addr+1]`` query can pick the next mapping at a boundary) and the qemu
  flavour's non-atomic UNMAP removes fully covered mappings in ascending order until
  it meets the first one it would split (GLib's order depends on the tree shape).
* MAP with ``virt_end < virt_start`` is INVAL.  QEMU stores the inverted interval
  (undefined comparator behaviour) and, for an endpoint with notifiers, its
  power-of-two split would not terminate.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Callable, Iterable, Protocol, Sequence

import attrs
from sortedcontainers import SortedDict

from sim import Lock, Simulator, Timer

from ._config import ConfigError, MachineConfig
from ._host import HostVfio
from ._iommu_notify import (
    IOMMU_NONE,
    IOMMU_RO,
    IOMMU_WO,
    IommuMemoryRegion,
    NotifierFlag,
    NotifierRefused,
)
from ._viommu_wire import (
    ATTACH_F_BYPASS,
    F_BYPASS_CONFIG,
    FAULT_F_ADDRESS,
    FAULT_F_READ,
    FAULT_F_WRITE,
    FAULT_R_DOMAIN,
    FAULT_R_MAPPING,
    FAULT_R_UNKNOWN,
    HEAD_SIZE,
    MAP_F_MASK,
    MAP_F_MMIO,
    MAP_F_READ,
    MAP_F_WRITE,
    QEMU_FEATURES,
    RESV_MEM_T_MSI,
    RESV_MEM_T_RESERVED,
    TAIL_SIZE,
    U32,
    U64,
    VIRTIO_ID_IOMMU,
    AttachReq,
    DetachReq,
    FaultEvent,
    IommuConfig,
    MapReq,
    ProbeReq,
    ProbeResvMem,
    ReqTail,
    ReqType,
    Status,
    UnmapReq,
)
from ._virtqueue import DeviceQueue, VirtqueueError

VIOMMU_PROBE_SIZE = 512
QUEUE_SIZE = 256
REQUESTQ = 0
EVENTQ = 1
HOST_PAGE_SIZE = 4096
CONFIG_BYPASS_OFFSET = 36


@attrs.frozen(order=True)
class ResvRegion:
    """A reserved IOVA region of an endpoint, [start, end] inclusive (PROBE RESV_MEM)."""

    start: int
    end: int
    subtype: int


#: q35/pc: the machine's reserved-regions property, the MSI window (hw/i386/pc.c)
X86_RESERVED_REGIONS = (ResvRegion(0xFEE0_0000, 0xFEEF_FFFF, RESV_MEM_T_MSI),)


def insert_resv_region(regions: Sequence[ResvRegion], new: ResvRegion) -> list[ResvRegion]:
    """resv_region_list_insert: ``new`` wins; overlapped regions are trimmed, split or dropped."""
    out: list[ResvRegion] = []
    for r in regions:
        if r.end < new.start or r.start > new.end:
            out.append(r)
            continue
        if r.start < new.start:
            out.append(ResvRegion(r.start, new.start - 1, r.subtype))
        if r.end > new.end:
            out.append(ResvRegion(new.end + 1, r.end, r.subtype))
    out.append(new)
    return sorted(out)


@attrs.frozen
class Mapping:
    """One MAP: [virt_start, virt_end] (inclusive) -> phys_start, with MAP flags."""

    virt_start: int
    virt_end: int
    phys_start: int
    flags: int


class IommuDevice:
    """QEMU's per-BDF IOMMUDevice: the IOMMU region and reserved regions of one function."""

    def __init__(self, bdf: int, mr: IommuMemoryRegion, resv: list[ResvRegion], vfio: bool) -> None:
        self.bdf = bdf
        self.mr = mr
        self.resv = resv
        self.vfio = vfio
        #: whether the IOMMU region (not the bypass alias) is the device's DMA address space
        self.translated = False


class Endpoint:
    """An endpoint record (created by ATTACH); ``id`` is the full 32-bit request value."""

    def __init__(self, ep_id: int, dev: IommuDevice) -> None:
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
    """Result of translate(): QEMU's IOMMUTLBEntry plus the fault it reported, if any."""

    ok: bool
    paddr: int
    perm: int
    addr_mask: int
    fault_reason: int | None = None
    fault: FaultEvent | None = None


@attrs.frozen
class RequestOutcome:
    """What one request did: its status, the bytes for the writable part, the used length."""

    type: int
    status: Status | None
    reply: bytes
    used_len: int
    host_ps: int


class RequestFramingError(Exception):
    """A chain whose readable or writable part is shorter than the head/tail.

    QEMU calls virtio_error() (device needs reset) and drops the element; the glue
    catches this and calls ``transport.needs_reset(reason)``.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class _Transport(Protocol):
    """What the device uses of VirtioPciTransport (models/_virtio_pci.py)."""

    broken: bool

    def queue(self, index: int) -> DeviceQueue | None: ...
    def has_feature(self, bit: int) -> bool: ...
    def notify_used(self, index: int) -> None: ...
    def needs_reset(self, reason: str) -> None: ...


class VirtioIommu:
    """The virtio-iommu device (a VirtioBackend).

    ``endpoints`` are the BDFs of the functions on the device's primary bus (each gets
    an IOMMU memory region); ``vfio_endpoints`` the ones assigned through ``host``.
    """

    device_id = VIRTIO_ID_IOMMU
    queue_max_sizes = (QUEUE_SIZE, QUEUE_SIZE)

    def __init__(
        self,
        sim: Simulator,
        config: MachineConfig,
        *,
        endpoints: Iterable[int],
        vfio_endpoints: Iterable[int] = (),
        host: HostVfio | None = None,
        reserved_regions: Sequence[ResvRegion] = X86_RESERVED_REGIONS,
        boot_bypass: bool = True,
        name: str = "virtio-iommu",
    ) -> None:
        self.sim = sim
        self.name = name
        self.flavor = config.flavor
        self.cost = config.cost
        self.host = host
        self.boot_bypass = boot_bypass
        self.page_size_mask = U64 & ~(HOST_PAGE_SIZE - 1)  # granule=host on a 4 KiB host
        self.input_range = (0, (1 << config.aw_bits) - 1)
        self.domain_range = (0, U32)
        self.probe_size = VIOMMU_PROBE_SIZE
        self.bypass = int(boot_bypass)
        self.domains: dict[int, Domain] = {}
        self.endpoints: dict[int, Endpoint] = {}
        self.devices: dict[int, IommuDevice] = {}
        self.transport: _Transport | None = None
        self.faults_reported = 0
        self.faults_dropped = 0
        self._host_ps = 0
        self._mr_bdf: dict[str, int] = {}
        #: QEMU's big lock: kicks from several vCPUs are handled one after the other
        self._bql = Lock(f"{name}.bql")
        #: QEMU's big lock as the transport sees it: held while requests are handled in a vCPU's exit
        self.exit_lock = self._bql

        bdfs = sorted(set(endpoints))
        vfio = sorted(set(vfio_endpoints))
        for bdf in bdfs:
            if not 0 <= bdf <= 0xFFFF:
                raise ValueError(f"endpoint {bdf:#x} is not a 16-bit BDF")
        for bdf in vfio:
            if bdf not in bdfs:
                raise ValueError(f"VFIO endpoint {bdf:#x} is not on the vIOMMU's bus")
        if vfio and host is None:
            raise ValueError("VFIO-backed endpoints need a HostVfio")
        for index, bdf in enumerate(bdfs):
            self._add_device(index, bdf, bdf in vfio, reserved_regions)
        self._trace("virtio_iommu_freeze_granule", page_size_mask=self.page_size_mask)

    # -- set-up ----------------------------------------------------------------------
    def _add_device(self, index: int, bdf: int, vfio: bool, machine_resv: Sequence[ResvRegion]) -> None:
        """virtio_iommu_find_add_as (+ set_iommu_device for an assigned function)."""
        mr_name = f"virtio-iommu-memory-region-{index}-{bdf & 0xFF}"
        mr = IommuMemoryRegion(mr_name, sim=self.sim, replay=self._replay, flags_changed=self._flags_changed)
        self._mr_bdf[mr_name] = bdf
        self._trace("virtio_iommu_init_iommu_mr", iommu_mr=mr_name)
        resv: list[ResvRegion] = []
        if vfio:
            assert self.host is not None
            container = self.host.add_device(bdf)
            self._update_page_size_mask(container.name, self.host.pgsizes)
            resv = [ResvRegion(lo, hi, RESV_MEM_T_RESERVED) for lo, hi in self.host.host_reserved_ranges()]
        for r in machine_resv:
            resv = insert_resv_region(resv, r)
        dev = self.devices[bdf] = IommuDevice(bdf, mr, resv, vfio)
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

    # -- VirtioBackend ---------------------------------------------------------------
    def device_features(self) -> int:
        return QEMU_FEATURES

    def attached(self, transport: _Transport) -> None:
        self.transport = transport

    def config(self) -> IommuConfig:
        """virtio_iommu_get_config: the 40-byte structure, regenerated from state."""
        return IommuConfig(
            self.page_size_mask, self.input_range[0], self.input_range[1],
            self.domain_range[0], self.domain_range[1], self.probe_size, self.bypass,
        )

    def config_read(self, offset: int, size: int) -> int:
        if offset < 0 or size <= 0 or offset + size > IommuConfig.SIZE:
            return (1 << (8 * max(size, 0))) - 1
        cfg = self.config()
        self._trace(
            "virtio_iommu_get_config", page_size_mask=cfg.page_size_mask, start=cfg.input_range_start,
            end=cfg.input_range_end, domain_start=cfg.domain_range_start, domain_end=cfg.domain_range_end,
            probe_size=cfg.probe_size, bypass=cfg.bypass,
        )
        return int.from_bytes(cfg.pack()[offset : offset + size], "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        """Store the bytes, then virtio_iommu_set_config: only ``bypass`` has an effect."""
        if offset < 0 or size <= 0 or offset + size > IommuConfig.SIZE:
            return
        buf = bytearray(self.config().pack())
        buf[offset : offset + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        new = buf[CONFIG_BYPASS_OFFSET]
        if new != self.bypass:
            if self.transport is None or not self.transport.has_feature(F_BYPASS_CONFIG):
                self._virtio_error("cannot set config.bypass")
                return
            if new not in (0, 1):
                self._virtio_error(f"invalid config.bypass value '{new}'")
                return
            self.bypass = new
            for dev in self.devices.values():
                self._switch_address_space(dev)
        self._trace("virtio_iommu_set_config", bypass=new)

    def queue_notify(self, index: int) -> Coroutine[Any, Any, None] | None:
        """Queue 0 runs virtio_iommu_handle_command in the kicking vCPU's exit; queue 1 has no handler."""
        if index == REQUESTQ and self.transport is not None:
            return self._handle_command()
        return None

    def set_status(self, status: int) -> None:
        """virtio_iommu_set_status: only traced."""
        self._trace("virtio_iommu_device_status", status=status)

    def reset(self) -> None:
        """Guest virtio reset (QEMU <= 9.2 ``virtio_iommu_device_reset``): drop every domain and endpoint.

        ``config.bypass`` is sticky across device reset.  Host work caused here is not
        charged (the reset runs inside the status write).
        """
        self._trace("virtio_iommu_device_reset")
        for domain_id in sorted(self.domains):
            self._put_domain(self.domains[domain_id])
        for ep_id in sorted(self.endpoints):
            self._put_endpoint(self.endpoints[ep_id])
        self._host_ps = 0

    def system_reset(self) -> None:
        """virtio_iommu_system_reset then the device reset: ``bypass`` back to boot-bypass."""
        self._trace("virtio_iommu_system_reset")
        self.bypass = int(self.boot_bypass)
        for dev in self.devices.values():
            self._switch_address_space(dev)
        self.reset()

    # -- the request queue (glue) ------------------------------------------------------
    async def _handle_command(self) -> None:
        """virtio_iommu_handle_command: pop every available chain, answer each in ring order.

        One used entry and one interrupt decision per request (virtqueue_push then
        virtio_notify).  A malformed chain breaks the device (virtio_error) and stops the loop.
        """
        async with self._bql:
            await Timer(self.cost.viommu_notify_ps)
            await self._drain_requests()

    async def _drain_requests(self) -> None:
        t = self.transport
        assert t is not None
        self._trace("virtio_iommu_handle_command", vq=REQUESTQ)
        queue = t.queue(REQUESTQ)
        while queue is not None and not t.broken:
            try:
                chain = queue.pop()
            except VirtqueueError as e:
                t.needs_reset(e.reason)
                return
            if chain is None:
                return
            try:
                outcome = self.process_request(chain.read(), chain.writable_len)
            except RequestFramingError as e:
                queue.detach(chain)
                self._virtio_error(e.reason)
                return
            await Timer(self.cost.viommu_request_ps + outcome.host_ps)
            chain.write(outcome.reply)
            queue.push(chain, outcome.used_len)
            t.notify_used(REQUESTQ)

    def _virtio_error(self, reason: str) -> None:
        """virtio_error(): the device needs a reset (the transport traces it)."""
        if self.transport is not None:
            self.transport.needs_reset(reason)
        else:
            self._trace("virtio_error", reason=reason)

    # -- requests (pure decisions) -------------------------------------------------------
    def handle_request(self, request: bytes, writable_len: int) -> tuple[bytes, int]:
        """Answer one request: (bytes for the writable part from offset 0, used length).

        Raises RequestFramingError when either part is shorter than the head/tail.
        """
        outcome = self.process_request(request, writable_len)
        return outcome.reply, outcome.used_len

    def process_request(self, request: bytes, writable_len: int) -> RequestOutcome:
        """handle_request plus the status and the host time the request's notifiers cost."""
        if writable_len < TAIL_SIZE or len(request) < HEAD_SIZE:
            raise RequestFramingError("virtio-iommu bad head/tail size")
        self._host_ps = 0
        rtype = request[0]
        if rtype == ReqType.PROBE:
            status, reply, used = self._handle_probe(request, writable_len)
        elif rtype in self._HANDLERS:
            cls, handler = self._HANDLERS[rtype]
            self._trace(f"virtio_iommu_handle_{ReqType(rtype).name.lower()}", size=len(request))
            status = Status.INVAL if len(request) < cls.SIZE else handler(self, cls.unpack(request))
            reply, used = ReqTail(status).pack(), TAIL_SIZE
        elif self.flavor == "spec":
            status, reply, used = None, b"", 0
        else:
            status = Status.UNSUPP
            reply, used = ReqTail(status).pack(), TAIL_SIZE
        self._trace("virtio_iommu_request_status", type=rtype,
                    status=None if status is None else int(status), used_len=used)
        host_ps, self._host_ps = self._host_ps, 0
        return RequestOutcome(rtype, status, reply, used, host_ps)

    def _attach(self, req: AttachReq) -> Status:
        """virtio_iommu_attach."""
        self._trace("virtio_iommu_attach", domain_id=req.domain, ep_id=req.endpoint)
        spec = self.flavor == "spec"
        if spec and any(req.reserved):
            return Status.INVAL
        if req.flags & ~ATTACH_F_BYPASS:
            return Status.INVAL
        bypass = bool(req.flags & ATTACH_F_BYPASS)
        if spec:
            if req.endpoint not in self.devices:
                return Status.NOENT
            rec = self.endpoints.get(req.endpoint)
            current = rec.domain if rec is not None else None
            if current is not None and current.id == req.domain:
                return Status.OK if current.bypass == bypass else Status.INVAL
            target = self.domains.get(req.domain)
            if target is not None and target.bypass != bypass:
                return Status.INVAL
        ep = self._get_endpoint(req.endpoint)
        if ep is None:
            return Status.NOENT
        if ep.domain is not None:
            previous = ep.domain
            self._detach_endpoint_from_domain(ep)
            if not previous.endpoints:
                self._put_domain(previous)
        domain = self._get_domain(req.domain, bypass)
        if domain is None:
            return Status.INVAL
        domain.endpoints.insert(0, ep)
        ep.domain = domain
        self._switch_address_space(ep.dev)
        for m in domain.mappings.values():
            self._notify_map(ep.dev.mr, m.virt_start, m.virt_end, m.phys_start, m.flags)
        return Status.OK

    def _detach(self, req: DetachReq) -> Status:
        """virtio_iommu_detach."""
        self._trace("virtio_iommu_detach", domain_id=req.domain, ep_id=req.endpoint)
        if self.flavor == "spec" and req.endpoint not in self.devices:
            return Status.NOENT
        ep = self.endpoints.get(req.endpoint)
        if ep is None:
            return Status.INVAL if self.flavor == "spec" else Status.NOENT
        domain = ep.domain
        if domain is None or domain.id != req.domain:
            return Status.INVAL
        self._detach_endpoint_from_domain(ep)
        if not domain.endpoints:
            self._put_domain(domain)
        self._put_endpoint(ep)
        return Status.OK

    def _map(self, req: MapReq) -> Status:
        """virtio_iommu_map."""
        if req.flags & ~MAP_F_MASK:
            return Status.INVAL
        domain = self.domains.get(req.domain)
        if domain is None:
            return Status.NOENT
        if domain.bypass:
            return Status.INVAL
        if req.virt_end < req.virt_start:
            return Status.INVAL
        if self.flavor == "spec":
            granule_mask = (self.page_size_mask & -self.page_size_mask) - 1
            if (req.virt_start | req.phys_start | (req.virt_end + 1)) & granule_mask:
                return Status.RANGE
            if req.virt_start < self.input_range[0] or req.virt_end > self.input_range[1]:
                return Status.RANGE
            for ep in domain.endpoints:
                if any(r.start <= req.virt_end and req.virt_start <= r.end for r in ep.dev.resv):
                    return Status.INVAL
        if domain.first_overlap(req.virt_start, req.virt_end) is not None:
            return Status.INVAL
        self._trace(
            "virtio_iommu_map", domain_id=req.domain, virt_start=req.virt_start, virt_end=req.virt_end,
            phys_start=req.phys_start, flags=req.flags,
        )
        domain.mappings[req.virt_start] = Mapping(req.virt_start, req.virt_end, req.phys_start, req.flags)
        for ep in domain.endpoints:
            self._notify_map(ep.dev.mr, req.virt_start, req.virt_end, req.phys_start, req.flags)
        return Status.OK

    def _unmap(self, req: UnmapReq) -> Status:
        """virtio_iommu_unmap (non-atomic in the qemu flavour, atomic in the spec flavour)."""
        self._trace("virtio_iommu_unmap", domain_id=req.domain, virt_start=req.virt_start, virt_end=req.virt_end)
        domain = self.domains.get(req.domain)
        if domain is None:
            return Status.NOENT
        if domain.bypass:
            return Status.INVAL
        lo, hi = req.virt_start, req.virt_end
        if self.flavor == "spec":
            hit = domain.overlapping(lo, hi)
            if any(m.virt_start < lo or m.virt_end > hi for m in hit):
                return Status.RANGE
            for m in hit:
                self._remove_mapping(domain, m)
            return Status.OK
        while (found := domain.first_overlap(lo, hi)) is not None:
            if found.virt_start < lo or found.virt_end > hi:
                return Status.RANGE
            self._remove_mapping(domain, found)
        return Status.OK

    def _remove_mapping(self, domain: Domain, m: Mapping) -> None:
        for ep in domain.endpoints:
            self._notify_unmap(ep.dev.mr, m.virt_start, m.virt_end)
        del domain.mappings[m.virt_start]
        self._trace("virtio_iommu_unmap_done", domain_id=domain.id, virt_start=m.virt_start, virt_end=m.virt_end)

    def _handle_probe(self, request: bytes, writable_len: int) -> tuple[Status, bytes, int]:
        """virtio_iommu_handle_probe: probe_size bytes of properties then the tail."""
        self._trace("virtio_iommu_handle_probe", size=len(request))
        buf = bytearray(self.probe_size + TAIL_SIZE)
        status = Status.INVAL if len(request) < ProbeReq.SIZE else self._probe(ProbeReq.unpack(request), buf)
        need = self.probe_size + TAIL_SIZE
        if writable_len >= need:
            buf[self.probe_size :] = ReqTail(status).pack()
            return status, bytes(buf), need
        if self.flavor == "spec":
            return Status.INVAL, bytes(writable_len - TAIL_SIZE) + ReqTail(Status.INVAL).pack(), writable_len
        # QEMU >= 9.1: the partial copy is overwritten at offset 0 by a DEVERR tail
        return Status.DEVERR, ReqTail(Status.DEVERR).pack() + bytes(buf[TAIL_SIZE:writable_len]), TAIL_SIZE

    def _probe(self, req: ProbeReq, buf: bytearray) -> Status:
        """virtio_iommu_probe: one RESV_MEM property per reserved region, ascending."""
        key = req.endpoint if self.flavor == "spec" else req.endpoint & 0xFFFF
        dev = self.devices.get(key)
        if dev is None:
            return Status.NOENT
        if len(dev.resv) * ProbeResvMem.SIZE > self.probe_size:
            return Status.INVAL
        for i, r in enumerate(dev.resv):
            self._trace("virtio_iommu_fill_resv_property", devid=req.endpoint, subtype=r.subtype,
                        start=r.start, end=r.end)
            off = i * ProbeResvMem.SIZE
            buf[off : off + ProbeResvMem.SIZE] = ProbeResvMem.of(r.subtype, r.start, r.end).pack()
        return Status.OK

    _HANDLERS: dict[int, tuple[Any, Callable[[Any, Any], Status]]] = {
        ReqType.ATTACH: (AttachReq, _attach),
        ReqType.DETACH: (DetachReq, _detach),
        ReqType.MAP: (MapReq, _map),
        ReqType.UNMAP: (UnmapReq, _unmap),
    }

    # -- domains and endpoints --------------------------------------------------------------
    def _get_endpoint(self, ep_id: int) -> Endpoint | None:
        """virtio_iommu_get_endpoint: existing record, or a new one if the BDF has an IOMMUDevice."""
        ep = self.endpoints.get(ep_id)
        if ep is not None:
            return ep
        dev = self.devices.get(ep_id & 0xFFFF)
        if dev is None:
            return None
        ep = self.endpoints[ep_id] = Endpoint(ep_id, dev)
        self._trace("virtio_iommu_get_endpoint", ep_id=ep_id)
        return ep

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
            return bool(self.bypass)
        return ep.domain.bypass

    def _switch_address_space(self, dev: IommuDevice) -> None:
        """virtio_iommu_switch_address_space: IOMMU region or bypass alias; VFIO follows."""
        on = not self._bypassed(dev.bdf)
        self._trace(
            "virtio_iommu_switch_address_space", bus=dev.bdf >> 8, slot=(dev.bdf >> 3) & 0x1F,
            fn=dev.bdf & 7, on=on,
        )
        if on == dev.translated:
            return
        dev.translated = on
        if dev.vfio and self.host is not None:
            self._host_ps += self.host.set_translated(dev.bdf, dev.mr if on else None)

    # -- notifiers ------------------------------------------------------------------------
    def _notify_map(self, mr: IommuMemoryRegion, virt_start: int, virt_end: int, paddr: int, flags: int) -> None:
        """virtio_iommu_notify_map: skipped without a MAP notifier, for MMIO or no permission."""
        perm = (IOMMU_RO if flags & MAP_F_READ else 0) | (IOMMU_WO if flags & MAP_F_WRITE else 0)
        if not mr.notify_flags & NotifierFlag.MAP or flags & MAP_F_MMIO or not perm:
            return
        self._trace("virtio_iommu_notify_map", mr=mr.name, virt_start=virt_start, virt_end=virt_end,
                    paddr=paddr, flags=flags)
        self._host_ps += mr.notify_range(NotifierFlag.MAP, virt_start, virt_end, paddr, perm)

    def _notify_unmap(self, mr: IommuMemoryRegion, virt_start: int, virt_end: int) -> None:
        """virtio_iommu_notify_unmap: sent for every removed mapping if the region has UNMAP notifiers."""
        if not mr.notify_flags & NotifierFlag.UNMAP:
            return
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
        eventq.
        """
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
        paddr = (iova - m.virt_start + m.phys_start) & U64
        if sim.tracing:
            sim.trace(self.name, "virtio_iommu_translate_out", virt_addr=iova, phys_addr=paddr, sid=endpoint)
        return Translation(True, paddr, access, mask)

    def _fault(self, endpoint: int, iova: int, reason: int, flags: int, mask: int) -> Translation:
        fault = FaultEvent(reason, flags, endpoint, iova)
        self._report_fault(fault)
        return Translation(False, iova, IOMMU_NONE, mask, reason, fault)

    def _report_fault(self, fault: FaultEvent) -> None:
        """virtio_iommu_report_fault: one eventq buffer per fault, dropped if none is available."""
        t = self.transport
        queue = t.queue(EVENTQ) if t is not None and not t.broken else None
        try:
            chain = queue.pop() if queue is not None else None
        except VirtqueueError as e:
            assert t is not None
            t.needs_reset(e.reason)
            return
        if chain is None:
            self.faults_dropped += 1
            self._trace("virtio_iommu_fault_dropped", reason=fault.reason, flags=fault.flags,
                        endpoint=fault.endpoint, addr=fault.address)
            return
        assert t is not None and queue is not None
        if chain.writable_len < FaultEvent.SIZE:
            queue.detach(chain)
            self._virtio_error("error buffer of wrong size")
            return
        chain.write(fault.pack())
        self._trace("virtio_iommu_report_fault", reason=fault.reason, flags=fault.flags,
                    endpoint=fault.endpoint, addr=fault.address)
        self.faults_reported += 1
        queue.push(chain, FaultEvent.SIZE)
        t.notify_used(EVENTQ)

    # -- introspection ------------------------------------------------------------------
    def mappings(self, domain_id: int) -> list[Mapping]:
        """The mappings of a domain, ascending (empty if the domain does not exist)."""
        domain = self.domains.get(domain_id)
        return [] if domain is None else list(domain.mappings.values())

    def domain_of(self, endpoint: int) -> int | None:
        ep = self.endpoints.get(endpoint)
        return None if ep is None or ep.domain is None else ep.domain.id

    def _trace(self, event: str, **fields: Any) -> None:
        if self.sim.tracing:
            self.sim.trace(self.name, event, **fields)
