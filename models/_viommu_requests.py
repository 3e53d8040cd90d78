"""The virtio-iommu's request handlers: ATTACH, DETACH, MAP, UNMAP and PROBE in QEMU's check order.

Follows hw/virtio/virtio-iommu.c ``virtio_iommu_handle_attach``/``_detach``/``_map``/
``_unmap``/``_probe`` and the functions they call (``virtio_iommu_attach``,
``virtio_iommu_detach``, ``virtio_iommu_map``, ``virtio_iommu_unmap``,
``virtio_iommu_probe``); virtio spec "IOMMU Device / Device operations".  These are
plain synchronous decisions: ``process_request``/``handle_request`` take the bytes of
a request's device-readable part and the size of its device-writable part and
return the reply; the device (models/_viommu.py) pops the chains and applies time.
The device reads no more of the readable part than ``request_size`` of its type
(QEMU: the head, then ``virtio_iommu_iov_to_req`` of the struct's size), so a
request costs its own size whatever lengths the guest's descriptors claim.

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
  DETACH of a managed, unattached         NOENT (no endpoint record)       INVAL (DETACH: NOENT only if the endpoint
  endpoint                                                                 doesn't exist; MAY INVAL if not attached)
  MAP start/phys/end+1 off the granule    accepted                         RANGE (MAP: SHOULD)
  MAP outside ``input_range``             accepted                         RANGE ("any mapping request ... outside
                                                                           this range fails"; no status given)
  MAP whose physical range wraps past     accepted (warning traced:        RANGE (the range names no physical
  2^64 (phys_start + size > 2^64)         ``virtio_iommu_map_phys_wrap``)  address past 2^64 - 1)
  MAP over a RESV_MEM region of an        accepted                         INVAL (RESV_MEM: SHOULD reject; no status
  endpoint in the domain                                                   given)
  UNMAP that would split a mapping        RANGE after removing the lower   RANGE, nothing removed (UNMAP: SHOULD NOT
                                          fully covered mappings           remove any mapping)
  unknown request type                    UNSUPP tail, used length 4       nothing written, used length 0 (SHOULD NOT
                                                                           write the buffer)
  PROBE writable part < probe_size + 4    DEVERR tail at offset 0, used 4  zero properties, INVAL tail at the end,
                                                                           used = writable size (PROBE: SHOULD INVAL)
  ======================================  ===============================  ==========================================

Off-granule mappings in the qemu flavour translate as QEMU does
(``virtio_iommu_translate`` returns an entry of the granule's size, then
``address_space_translate_iommu`` keeps the address's offset in the granule), so a DMA
can land outside the mapping; the DMA port traces each such access (``dma_escape``,
models/_dma.py).  The spec flavour refuses those MAPs, so its DMA never escapes.

Simulator choices, the same in both flavours (documented divergences from QEMU):

* An endpoint id is a function's 16-bit requester id (QEMU ``PCI_BUILD_BDF``), and
  every view keys it by exactly that: the request handlers, ``translate``, the
  IOMMU region's notifiers and the VFIO container behind them.  QEMU's
  ``virtio_iommu_mr`` finds the device from bits 0..15 (``PCI_BUS_NUM``, devfn) but
  keys the endpoint record by all 32 bits, so ATTACH 0x10020 makes a second record
  for function 0x20 whose domain the VFIO notifiers follow while translate uses
  0x20's: two views of one function disagree about its domain.  Here an id with bits
  16..31 set names no function: ATTACH/DETACH/PROBE get NOENT (ATTACH: "If the
  endpoint doesn't exist, the device MUST reject with VIRTIO_IOMMU_S_NOENT").

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

from typing import Callable, TypeVar

import attrs

from ._viommu_state import Domain, Mapping, ViommuState
from ._wire import U64
from ._viommu_wire import (
    ATTACH_F_BYPASS,
    HEAD_SIZE,
    MAP_F_MASK,
    TAIL_SIZE,
    AttachReq,
    DetachReq,
    MapReq,
    ProbeReq,
    ProbeResvMem,
    ReqTail,
    ReqType,
    Status,
    UnmapReq,
)


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


class ViommuRequests(ViommuState):
    """The request handlers over the device state, in the ``qemu`` or ``spec`` flavour."""

    def handle_request(self, request: bytes, writable_len: int) -> tuple[bytes, int]:
        """Answer one request: (bytes for the writable part from offset 0, used length).

        Raises RequestFramingError when either part is shorter than the head/tail.
        """
        outcome = self.process_request(request, writable_len)
        return outcome.reply, outcome.used_len

    def process_request(self, request: bytes, writable_len: int, readable_len: int | None = None) -> RequestOutcome:
        """handle_request plus the status and the host time the request's notifiers cost.

        ``readable_len`` is the size of the whole device-readable part when ``request``
        holds only its first ``request_size`` bytes (the device's bounded read); by
        default it is ``len(request)``.
        """
        size = len(request) if readable_len is None else readable_len
        if writable_len < TAIL_SIZE or size < HEAD_SIZE:
            raise RequestFramingError("virtio-iommu bad head/tail size")
        self._host_ps = 0
        rtype = request[0]
        if rtype == ReqType.PROBE:
            status, reply, used = self._handle_probe(request, writable_len, size)
        elif rtype in _SIMPLE:
            self._trace(f"virtio_iommu_handle_{ReqType(rtype).name.lower()}", size=size)
            status = self._handle_simple(rtype, request)
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
            if req.phys_start + (req.virt_end - req.virt_start) > U64:
                return Status.RANGE
            for ep in domain.endpoints:
                if any(r.start <= req.virt_end and req.virt_start <= r.end for r in ep.dev.resv):
                    return Status.INVAL
        if domain.first_overlap(req.virt_start, req.virt_end) is not None:
            return Status.INVAL
        if req.phys_start + (req.virt_end - req.virt_start) > U64:
            self._trace("virtio_iommu_map_phys_wrap", domain_id=req.domain, virt_start=req.virt_start,
                        virt_end=req.virt_end, phys_start=req.phys_start,
                        wrapped=req.phys_start + (req.virt_end - req.virt_start) - U64)
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

    def _handle_probe(self, request: bytes, writable_len: int, size: int) -> tuple[Status, bytes, int]:
        """virtio_iommu_handle_probe: probe_size bytes of properties then the tail."""
        self._trace("virtio_iommu_handle_probe", size=size)
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
        dev = self.devices.get(req.endpoint)
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

    def _handle_simple(self, rtype: int, request: bytes) -> Status:
        """virtio_iommu_handle_req: a body shorter than the request's struct is INVAL, else its handler."""
        if rtype == ReqType.ATTACH:
            return _decoded(request, AttachReq, self._attach)
        if rtype == ReqType.DETACH:
            return _decoded(request, DetachReq, self._detach)
        if rtype == ReqType.MAP:
            return _decoded(request, MapReq, self._map)
        return _decoded(request, UnmapReq, self._unmap)


_SIMPLE = frozenset((ReqType.ATTACH, ReqType.DETACH, ReqType.MAP, ReqType.UNMAP))
_REQUEST_SIZES: dict[int, int] = {ReqType.ATTACH: AttachReq.SIZE, ReqType.DETACH: DetachReq.SIZE, ReqType.MAP: MapReq.SIZE,
                  ReqType.UNMAP: UnmapReq.SIZE, ReqType.PROBE: ProbeReq.SIZE}


def request_size(head: bytes) -> int:
    """How many readable bytes the device reads for a request whose first bytes are ``head``.

    The struct's device-readable size for a known type (QEMU ``iov_to_buf`` of
    ``sizeof(req) - sizeof(tail)``), the head alone for an unknown one, and what there
    is when even the head is short (the framing check then breaks the device).
    """
    if len(head) < HEAD_SIZE:
        return len(head)
    return _REQUEST_SIZES.get(head[0], HEAD_SIZE)
_Req = TypeVar("_Req", AttachReq, DetachReq, MapReq, UnmapReq)


def _decoded(request: bytes, cls: type[_Req], handler: Callable[[_Req], Status]) -> Status:
    return Status.INVAL if len(request) < cls.SIZE else handler(cls.unpack(request))
