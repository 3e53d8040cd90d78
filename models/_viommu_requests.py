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

The ``qemu`` and ``spec`` flavours (``MachineConfig.flavor``):

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

Two peer flavours follow their VMM's own check order (the values they present,
features, config space, PROBE size, bypass, are the rows of
models/_viommu_flavours.py):

* ``cloud-hypervisor`` (virtio-devices/src/iommu.rs ``Request::parse`` at ae44c29):
  the readable part must be exactly the request's size (else INVAL); ATTACH checks
  ``reserved`` and ``flags`` (INVAL), a bypass mismatch (INVAL) and the domain cap
  (65536, NOMEM) and accepts any endpoint id; ATTACH to the endpoint's own domain
  changes nothing; DETACH never fails: it drops the endpoint's record whatever
  domain it names and removes the *named* domain if that is left empty (the
  endpoint's own domain stays, with its mappings); MAP checks flags (INVAL),
  ``input_range`` when offered (RANGE), the domain (NOENT, bypass INVAL), an
  inverted or wrapping range (RANGE), the 4 KiB granule of start, phys_start and
  size (RANGE), overlap (INVAL) and 2^20 mappings (NOMEM), and stores no
  permissions (every mapping reads and writes); UNMAP checks ``input_range``, the
  domain, an inverted range (RANGE) and, before removing anything, a split
  (RANGE: atomic); PROBE answers any endpoint with one RESV_MEM MSI property.  A
  rejected request has its tail written but used length 0 (the driver reads
  IOERR); an unknown type, a chain with no room for the reply or a head shorter
  than 4 bytes gets used length 0 and nothing written (no device reset).
* ``crosvm`` (devices/src/virtio/iommu.rs ``State::execute_request`` at f1e797a):
  ATTACH checks ``reserved`` (INVAL) but not ``flags`` (ATTACH_F_BYPASS is
  ignored: no bypass domains), an unknown endpoint is NOENT, and an attached
  endpoint is first detached, which fails with UNSUPP for a VFIO endpoint
  (``VfioWrapper::supports_detach``) or a domain shared with another endpoint;
  detaching a domain's last endpoint drops the domain and its mappings
  (``reset_domain``), so ATTACH to the own domain empties it as QEMU does; DETACH
  ignores the domain it names (NOENT for an unknown endpoint, UNSUPP as above);
  MAP with ``virt_end <= virt_start`` is INVAL, off-granule start, phys_start or
  end + 1 is RANGE, then flags (INVAL), domain (NOENT), overlap (INVAL), no
  ``input_range`` check, and WRITE maps read-write, anything else read-only
  (READ implied); UNMAP: domain (NOENT), a range that is empty or runs past
  2^64 - 1 fails (used length 0), a split is RANGE with nothing removed
  (``BasicMemoryMapper::remove_map``); PROBE: NOENT for an unknown endpoint,
  INVAL when the buffer has less than 24 bytes of properties, the whole writable
  part zero-filled and used.  A readable part shorter than the request, a
  writable part shorter than the tail or an unknown type gets used length 0 and
  nothing written.

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

from typing import Any, Callable, TypeVar

import attrs

from ._viommu_state import Domain, Endpoint, Mapping, ViommuState
from ._wire import U64
from ._viommu_wire import (
    ATTACH_F_BYPASS,
    HEAD_SIZE,
    MAP_F_MASK,
    MAP_F_READ,
    MAP_F_WRITE,
    RESV_MEM_T_MSI,
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
    """The request handlers over the device state, in the flavour ``MachineConfig.flavor`` names."""

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
            if self.flavour.framing_breaks_device:
                raise RequestFramingError("virtio-iommu bad head/tail size")
            rtype, status, reply, used = request[0] if request else 0, None, b"", 0  # the peers: used length 0
        else:
            self._host_ps = 0
            rtype = request[0]
            status, reply, used = self._answer(rtype, request, writable_len, size)
        if self.sim.tracing:
            self._trace("virtio_iommu_request_status", type=rtype,
                        status=None if status is None else int(status), used_len=used)
        host_ps, self._host_ps = self._host_ps, 0
        return RequestOutcome(rtype, status, reply, used, host_ps)

    def _answer(self, rtype: int, request: bytes, writable_len: int, size: int) -> tuple[Status | None, bytes, int]:
        """One well-framed request: (status or None when nothing is written, reply bytes, used length)."""
        if self.flavor == "cloud-hypervisor":
            return self._ch_request(rtype, request, writable_len, size)
        if self.flavor == "crosvm":
            return self._crosvm_request(rtype, request, writable_len, size)
        if rtype == ReqType.PROBE:
            status, reply, used = self._handle_probe(request, writable_len, size)
        elif rtype in _SIMPLE:
            if self.sim.tracing:
                self._trace(f"virtio_iommu_handle_{ReqType(rtype).name.lower()}", size=size)
            status = self._handle_simple(rtype, request)
            reply, used = ReqTail(status).pack(), TAIL_SIZE
        elif self.flavor == "spec":
            status, reply, used = None, b"", 0
        else:
            status = Status.UNSUPP
            reply, used = ReqTail(status).pack(), TAIL_SIZE
        return status, reply, used

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
        self._join(ep, domain)
        return Status.OK

    def _join(self, ep: Endpoint, domain: Domain) -> None:
        """The end of virtio_iommu_attach: the endpoint joins, its address space switches, the domain replays."""
        domain.endpoints.insert(0, ep)
        ep.domain = domain
        self._switch_address_space(ep.dev)
        for m in domain.mappings.values():
            self._notify_map(ep.dev.mr, m.virt_start, m.virt_end, m.phys_start, m.flags)

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
        return self._add_mapping(domain, req, req.flags)

    def _add_mapping(self, domain: Domain, req: MapReq, flags: int) -> Status:
        """virtio_iommu_map's insertion: the mapping with ``flags`` (what the flavour stores), then the notifiers."""
        if self.sim.tracing:
            self._trace(
                "virtio_iommu_map", domain_id=req.domain, virt_start=req.virt_start, virt_end=req.virt_end,
                phys_start=req.phys_start, flags=flags,
            )
        domain.mappings[req.virt_start] = Mapping(req.virt_start, req.virt_end, req.phys_start, flags)
        for ep in domain.endpoints:
            self._notify_map(ep.dev.mr, req.virt_start, req.virt_end, req.phys_start, flags)
        return Status.OK

    def _unmap(self, req: UnmapReq) -> Status:
        """virtio_iommu_unmap (non-atomic in the qemu flavour, atomic in the spec flavour)."""
        if self.sim.tracing:
            self._trace("virtio_iommu_unmap", domain_id=req.domain, virt_start=req.virt_start, virt_end=req.virt_end)
        domain = self.domains.get(req.domain)
        if domain is None:
            return Status.NOENT
        if domain.bypass:
            return Status.INVAL
        lo, hi = req.virt_start, req.virt_end
        if self.flavor == "spec":
            return self._unmap_atomic(domain, lo, hi)
        while (found := domain.first_overlap(lo, hi)) is not None:
            if found.virt_start < lo or found.virt_end > hi:
                return Status.RANGE
            self._remove_mapping(domain, found)
        return Status.OK

    def _remove_mapping(self, domain: Domain, m: Mapping) -> None:
        for ep in domain.endpoints:
            self._notify_unmap(ep.dev.mr, m.virt_start, m.virt_end)
        del domain.mappings[m.virt_start]
        if self.sim.tracing:
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


    # -- cloud-hypervisor (virtio-devices/src/iommu.rs, Request::parse) ------------------------
    def _ch_request(self, rtype: int, request: bytes, writable_len: int, size: int) -> tuple[Status | None, bytes, int]:
        """``Request::parse``: exact readable size, the handler, then the tail (used length 0 if rejected)."""
        if rtype not in _REQUEST_SIZES:
            return None, b"", 0  # "unrecognised request types must not have the reply buffer written"
        if self.sim.tracing:
            self._trace(f"virtio_iommu_handle_{ReqType(rtype).name.lower()}", size=size)
        props = b""
        if size != _REQUEST_SIZES[rtype]:
            status = Status.INVAL
        elif rtype == ReqType.PROBE:
            status = Status.OK  # any endpoint: one RESV_MEM MSI property (get_msi_iova_space on x86_64)
            props = ProbeResvMem.of(RESV_MEM_T_MSI, *_X86_MSI).pack()
        else:
            cls, handler = _CH_HANDLERS[rtype]
            status = handler(self, cls.unpack(request))
        reply = props + ReqTail(status).pack()
        if writable_len < len(reply):
            return None, b"", 0  # BufferLengthTooSmall: nothing written
        return status, reply, len(reply) if status == Status.OK else 0

    def _ch_attach(self, req: AttachReq) -> Status:
        """VIRTIO_IOMMU_T_ATTACH: reserved/flags, bypass mismatch, domain cap; any endpoint id."""
        self._trace("virtio_iommu_attach", domain_id=req.domain, ep_id=req.endpoint)
        if any(req.reserved) or req.flags & ~ATTACH_F_BYPASS:
            return Status.INVAL
        bypass = bool(req.flags & ATTACH_F_BYPASS)
        target = self.domains.get(req.domain)
        if target is not None and target.bypass != bypass:
            return Status.INVAL
        if target is None and len(self.domains) >= CH_MAX_DOMAINS:
            return Status.NOMEM
        ep = self._get_endpoint(req.endpoint)
        assert ep is not None  # cloud-hypervisor records any id (endpoint_checks is off)
        if ep.domain is not None:
            if ep.domain.id == req.domain:
                return Status.OK  # old_domain_id == domain_id: nothing detached
            previous = ep.domain
            self._detach_endpoint_from_domain(ep)
            if not previous.endpoints:
                self._put_domain(previous)
        domain = self._get_domain(req.domain, bypass)
        assert domain is not None
        self._join(ep, domain)
        return Status.OK

    def _ch_detach(self, req: DetachReq) -> Status:
        """VIRTIO_IOMMU_T_DETACH / ``detach_endpoint_from_domain``: never fails; the named domain goes if empty."""
        self._trace("virtio_iommu_detach", domain_id=req.domain, ep_id=req.endpoint)
        ep = self.endpoints.get(req.endpoint)
        if ep is not None:
            self._put_endpoint(ep)  # endpoints.remove(endpoint), whatever domain it was in
        named = self.domains.get(req.domain)
        if named is not None and not named.endpoints:
            self._put_domain(named)
        return Status.OK

    def _ch_map(self, req: MapReq) -> Status:
        """VIRTIO_IOMMU_T_MAP in cloud-hypervisor's check order; no permissions are stored."""
        if req.flags & ~MAP_F_MASK:
            return Status.INVAL
        if self.input_range_checked and (req.virt_start < self.input_range[0] or req.virt_end > self.input_range[1]):
            return Status.RANGE
        domain = self.domains.get(req.domain)
        if domain is None:
            return Status.NOENT
        if domain.bypass:
            return Status.INVAL
        size = req.virt_end - req.virt_start + 1
        if size <= 0 or size > U64 or req.phys_start > U64 - size or req.virt_start > U64 - size:
            return Status.RANGE  # checked_sub / checked_add / the overflow checks
        granule_mask = (self.page_size_mask & -self.page_size_mask) - 1
        if (req.virt_start | req.phys_start | size) & granule_mask:
            return Status.RANGE
        if domain.first_overlap(req.virt_start, req.virt_end) is not None:
            return Status.INVAL
        if len(domain.mappings) >= CH_MAX_MAPPINGS_PER_DOMAIN:
            return Status.NOMEM
        return self._add_mapping(domain, req, MAP_F_READ | MAP_F_WRITE)

    def _ch_unmap(self, req: UnmapReq) -> Status:
        """VIRTIO_IOMMU_T_UNMAP: input range, domain, inverted range, then the split pre-check (atomic)."""
        self._trace("virtio_iommu_unmap", domain_id=req.domain, virt_start=req.virt_start, virt_end=req.virt_end)
        lo, hi = req.virt_start, req.virt_end
        if self.input_range_checked and (lo < self.input_range[0] or hi > self.input_range[1]):
            return Status.RANGE
        domain = self.domains.get(req.domain)
        if domain is None:
            return Status.NOENT
        if domain.bypass:
            return Status.INVAL
        if hi < lo:
            return Status.RANGE
        return self._unmap_atomic(domain, lo, hi)

    def _unmap_atomic(self, domain: Domain, lo: int, hi: int) -> Status:
        """RANGE if any mapping overlapping [lo, hi] would be split (nothing removed), else remove them all."""
        hit = domain.overlapping(lo, hi)
        if any(m.virt_start < lo or m.virt_end > hi for m in hit):
            return Status.RANGE
        for m in hit:
            self._remove_mapping(domain, m)
        return Status.OK

    # -- crosvm (devices/src/virtio/iommu.rs, State::execute_request) ----------------------------
    def _crosvm_request(self, rtype: int, request: bytes, writable_len: int, size: int) -> tuple[Status | None, bytes, int]:
        """``execute_request``: an error (short read, unknown type, bad UNMAP size) is used length 0, unwritten."""
        if rtype not in _REQUEST_SIZES:
            return None, b"", 0  # IommuError::UnexpectedDescriptor
        self._trace(f"virtio_iommu_handle_{ReqType(rtype).name.lower()}", size=size)
        if len(request) < _REQUEST_SIZES[rtype]:
            return None, b"", 0  # reader.read_obj fails
        if rtype == ReqType.PROBE:
            return self._crosvm_probe(ProbeReq.unpack(request), writable_len)
        cls, handler = _CROSVM_HANDLERS[rtype]
        status: Status | None = handler(self, cls.unpack(request))
        if status is None:
            return None, b"", 0
        return status, ReqTail(status).pack(), TAIL_SIZE

    def _crosvm_detach_endpoint(self, ep: Endpoint) -> bool:
        """``State::detach_endpoint``: only a domain's sole, detachable endpoint; the domain goes with it."""
        domain = ep.domain
        if domain is None:
            return True
        if ep.dev.vfio or len(domain.endpoints) > 1:
            return False  # VfioWrapper::supports_detach is false; refs > 1
        self._put_domain(domain)  # reset_domain: the mapper forgets every mapping
        return True

    def _crosvm_attach(self, req: AttachReq) -> Status | None:
        """``process_attach_request``: reserved, endpoint, detach first (UNSUPP if it cannot); flags unread."""
        self._trace("virtio_iommu_attach", domain_id=req.domain, ep_id=req.endpoint)
        if any(req.reserved):
            return Status.INVAL
        ep = self._get_endpoint(req.endpoint)
        if ep is None:
            return Status.NOENT
        if not self._crosvm_detach_endpoint(ep):
            return Status.UNSUPP
        domain = self._get_domain(req.domain, False)  # no bypass domains
        assert domain is not None
        self._join(ep, domain)
        return Status.OK

    def _crosvm_detach(self, req: DetachReq) -> Status | None:
        """``process_detach_request``: the endpoint only (the named domain is not read)."""
        self._trace("virtio_iommu_detach", domain_id=req.domain, ep_id=req.endpoint)
        if req.endpoint not in self.devices:
            return Status.NOENT
        ep = self.endpoints.get(req.endpoint)
        if ep is None:
            return Status.OK
        if not self._crosvm_detach_endpoint(ep):
            return Status.UNSUPP
        self._put_endpoint(ep)
        return Status.OK

    def _crosvm_map(self, req: MapReq) -> Status | None:
        """``process_dma_map_request``: order, alignment, flags, domain, overlap; WRITE means read-write."""
        if req.virt_start >= req.virt_end:
            return Status.INVAL
        granule_mask = (self.page_size_mask & -self.page_size_mask) - 1
        if (req.phys_start | req.virt_start | ((req.virt_end + 1) & U64)) & granule_mask:
            return Status.RANGE
        if req.flags & ~MAP_F_MASK:
            return Status.INVAL
        domain = self.domains.get(req.domain)
        if domain is None:
            return Status.NOENT
        if req.virt_end - req.virt_start + 1 > U64:
            return Status.DEVERR  # "doesn't support unlikely request for size == U64::MAX+1"
        if domain.first_overlap(req.virt_start, req.virt_end) is not None:
            return Status.INVAL  # AddMapResult::OverlapFailure
        return self._add_mapping(domain, req, MAP_F_READ | (MAP_F_WRITE if req.flags & MAP_F_WRITE else 0))

    def _crosvm_unmap(self, req: UnmapReq) -> Status | None:
        """``process_dma_unmap_request`` / ``remove_map``: sizes computed as a release build wraps them."""
        self._trace("virtio_iommu_unmap", domain_id=req.domain, virt_start=req.virt_start, virt_end=req.virt_end)
        domain = self.domains.get(req.domain)
        if domain is None:
            return Status.NOENT
        size = (req.virt_end - req.virt_start + 1) & U64
        if size == 0 or req.virt_start + size > U64:
            return None  # "can't unmap 0 sized region" / "iova overflow": an error, used length 0
        return self._unmap_atomic(domain, req.virt_start, req.virt_end)

    def _crosvm_probe(self, req: ProbeReq, writable_len: int) -> tuple[Status, bytes, int]:
        """``process_probe_request``: NOENT, INVAL under 24 property bytes, else the x86 MSI property; all zero-filled."""
        self._trace("virtio_iommu_probe", endpoint=req.endpoint)
        properties = bytearray(writable_len - TAIL_SIZE)
        status = Status.OK if req.endpoint in self.devices else Status.NOENT
        if len(properties) < self.probe_size:
            status = Status.INVAL
        elif status == Status.OK:
            properties[: ProbeResvMem.SIZE] = ProbeResvMem.of(RESV_MEM_T_MSI, *_X86_MSI).pack()
        return status, bytes(properties) + ReqTail(status).pack(), writable_len


#: cloud-hypervisor's caps: ``MAX_DOMAINS`` per device, ``MAX_MAPPINGS_PER_DOMAIN``
CH_MAX_DOMAINS = 1 << 16
CH_MAX_MAPPINGS_PER_DOMAIN = 1 << 20
#: the x86 MSI window both peers report (cloud-hypervisor get_msi_iova_space, crosvm X86_MSI_IOVA_START/END)
_X86_MSI = (0xFEE0_0000, 0xFEEF_FFFF)
_CH_HANDLERS: dict[int, tuple[type[Any], Callable[..., Status]]] = {
    ReqType.ATTACH: (AttachReq, ViommuRequests._ch_attach), ReqType.DETACH: (DetachReq, ViommuRequests._ch_detach),
    ReqType.MAP: (MapReq, ViommuRequests._ch_map), ReqType.UNMAP: (UnmapReq, ViommuRequests._ch_unmap),
}
_CROSVM_HANDLERS: dict[int, tuple[type[Any], Callable[..., Status | None]]] = {
    ReqType.ATTACH: (AttachReq, ViommuRequests._crosvm_attach),
    ReqType.DETACH: (DetachReq, ViommuRequests._crosvm_detach),
    ReqType.MAP: (MapReq, ViommuRequests._crosvm_map), ReqType.UNMAP: (UnmapReq, ViommuRequests._crosvm_unmap),
}
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
