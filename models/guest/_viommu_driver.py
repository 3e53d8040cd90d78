"""The guest's virtio-iommu driver: Linux drivers/iommu/virtio-iommu.c, 6.7 and 6.12.

Everything goes through the machine: config space and BAR MMIO (``PciVirtioRegs`` +
``VirtioModernDevice``), split rings in guest memory (``DriverQueue``), requests
built with the wire classes of ``models._viommu_wire``.

* ``probe`` is ``viommu_probe`` (behind the virtio core's reset / feature
  negotiation): both virtqueues (the request queue has no callback, so its
  completions are polled; the event queue's interrupt arrives on INTx), config
  reads of the negotiated optional fields, DRIVER_OK, ``viommu_fill_evtq``
  (buffers posted, no kick), ``iommu_device_register`` and the two lines
  "input address: %u bits" / "page mask: %#llx".
* The request engine (``__viommu_add_req``, ``__viommu_sync_req``,
  ``viommu_send_req_sync``): one ``request_lock`` (a spinlock: in a KVM guest without
  paravirtual spinlocks the unfair test-and-set lock of ``_spinlock``, so a CPU's sync
  re-takes it right after its own add); adding writes the chain and
  publishes ``avail.idx`` without a kick; a sync kicks (when the ring asks for a
  notification) and busy-polls the used ring until *every* outstanding request
  completed; a full ring (-ENOSPC) syncs and retries once.  The poll is bounded
  (Linux's is not): after ``SOFT_LOCKUP_PS`` the CPU logs the soft-lockup splat's
  first line and gives up on the outstanding requests (-EIO to a synchronous
  sender).  Linux forces IOERR into a request's own copy when the used length is
  0, but copies the writable part back only when the used length equals its size,
  so the *caller* of ``viommu_send_req_sync`` reads the tail it started with (a
  zeroed tail reads as OK); this is modelled as is and traced.
* Endpoints and domains (``viommu_probe_device`` / ``viommu_probe_endpoint``,
  ``viommu_attach_dev`` + ``viommu_domain_finalise``, ``viommu_replay_mappings``,
  ``viommu_get_resv_regions``) and the map path (``viommu_map_pages``,
  ``viommu_unmap_pages`` with the internal mapping tree, ``viommu_iotlb_sync``).
* 6.7 vs 6.12 (``MachineConfig.guest_kernel``): 6.7 sends each MAP with
  ``viommu_send_req_sync`` and has neither ``iotlb_sync_map`` nor
  ``flush_iotlb_all`` (no IOMMU_CAP_DEFERRED_FLUSH); from 6.8 ("Make use of
  ops->iotlb_sync_map", "Add ops->flush_iotlb_all and enable deferred flush") a
  MAP is queued, its status never read, and ``iotlb_sync_map``/``flush_iotlb_all``
  kick and drain once the domain has endpoints.  ``MachineConfig.map_batching`` and
  ``flush_queue`` switch the two halves independently (the calibration's "+map" and
  "sq"/"mq" configurations).

Beside it: ``_viommu_domain`` (``struct viommu_domain`` with the internal mapping
tree, ``struct viommu_endpoint``, the RESV_MEM parsing and reserved regions) and
``_viommu_events`` (the event queue: ``vp_interrupt`` -> ``viommu_event_handler``
-> ``viommu_fault_handler``, faults logged rate-limited, buffers re-posted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from sim import Histogram, ms, seconds, sleep, us

from .._errno import EFAULT, EINVAL, EIO, ENODEV, ENOENT, ENOMEM, ENOSPC, ENOSYS, ERANGE
from .._pci_ids import VIRTIO_IOMMU_PCI_ID
from .._virtq_wire import VIRTIO_RING_F_INDIRECT_DESC, CommonCfg, avail_ring_size, desc_table_size, used_ring_size
from .._virtqueue import VirtqueueError
from .._wire import U32, U64
from .._viommu_wire import (
    EVENTQ,
    F_BYPASS_CONFIG,
    F_DOMAIN_RANGE,
    F_INPUT_RANGE,
    F_MAP_UNMAP,
    F_MMIO,
    F_PROBE,
    MAP_F_MMIO,
    MAP_F_READ,
    MAP_F_WRITE,
    PROBE_T_MASK,
    PROBE_T_NONE,
    PROBE_T_RESV_MEM,
    REQUESTQ,
    TAIL_SIZE,
    AttachReq,
    MapReq,
    ProbeProperty,
    ProbeReq,
    ReqType,
    Status,
    UnmapReq,
)
from ._device import GuestDevice
from ._flush_queue import virtio_iommu_deferred_flush
from ._map_policy import MAP_SEND_SYNC, MapSubmissionPolicy, make_map_policy
from ._policy_api import PolicyContext
from ._iommu_core import (
    IOMMU_MMIO,
    IOMMU_READ,
    IOMMU_WRITE,
    IommuDriverDomain,
)
from ._iova import ResvRegion, order_base_2
from ._kmem_consts import PAGE_SIZE
from ._pci_scan import PciDeviceInfo
from ._spinlock import SpinlockStats, GuestSpinlock
from ._viommu_domain import (
    ViommuDomain,
    ViommuEndpoint,
    add_resv_mem,
    resv_regions,
    to_viommu_domain,
    to_viommu_endpoint,
)
from ._viommu_events import ViommuEvents
from ._virtio_driver import TRANSPORT_FEATURES, VirtioModernDevice
from ._virtio_pci_regs import PciVirtioRegs
from ._virtqueue_driver import DirectDriverQueue, DriverQueue, VirtqueueFull

if TYPE_CHECKING:
    from ._kernel import GuestKernel

DRIVER_NAME = "virtio_iommu"
#: the driver's feature table (``features[]``); the legacy F_BYPASS is not in it
VIOMMU_FEATURES = sum(1 << b for b in (F_MAP_UNMAP, F_INPUT_RANGE, F_DOMAIN_RANGE, F_PROBE, F_MMIO, F_BYPASS_CONFIG))
#: vring_create_virtqueue(..., SMP_CACHE_BYTES, ...): the used ring's alignment
VRING_ALIGN = 64
#: an indirect table of the two descriptors of a request (alloc_indirect_split, GFP_ATOMIC)
INDIRECT_TABLE_SIZE = 2 * 16

# -- cost/bound parameters introduced here (not in CostModel) --------------------------------
#: first re-poll of the used ring after a kick found requests still outstanding (ps).  The
#: guest spins; the device completes requests inside the kick's MMIO exit, so the poll only
#: waits when another vCPU's exit holds QEMU's lock or the device is broken.  The interval
#: doubles up to SYNC_POLL_MAX_PS: a coarser sampling of a spin that changes nothing observable.
SYNC_POLL_PS = us(1)
SYNC_POLL_MAX_PS = ms(1)
#: give up on a request queue that never completes after this long (ps): the first report of
#: the soft-lockup watchdog with the default watchdog_thresh=10 (2 * 10 s, sampled every 4 s)
SOFT_LOCKUP_PS = seconds(22)

_STATUS_ERRNO: dict[int, int] = {
    Status.OK: 0, Status.UNSUPP: -ENOSYS, Status.INVAL: -EINVAL, Status.RANGE: -ERANGE,
    Status.NOENT: -ENOENT, Status.FAULT: -EFAULT, Status.NOMEM: -ENOMEM,
}
_TYPE_NAMES = {int(t): t.name for t in ReqType}
#: the request types in type order (of ``ViommuDriverStats.requests``)
REQUEST_TYPE_NAMES = tuple(_TYPE_NAMES[k] for k in sorted(_TYPE_NAMES))
TRACE_SOURCE = "guest/virtio_iommu"


@attrs.frozen(kw_only=True)
class ViommuDriverStats:
    """The virtio-iommu driver's counters at one instant (``ViommuDriver.statistics()``)."""

    #: notifications written to the request queue (a sync whose ring asked for one)
    kicks: int
    #: requests added to the request queue, of every type
    requests_sent: int
    #: requests added, by type, in ``REQUEST_TYPE_NAMES`` order (ATTACH, DETACH, MAP, UNMAP, PROBE)
    requests: tuple[int, ...]
    #: UNMAPs seen complete by a sync
    unmaps_completed: int
    #: stale window of those UNMAPs (``viommu_unmap_pages`` to the sync that saw them complete): sum, in ps
    stale_total_ps: int
    #: ... and the largest, in ps, since the driver probed or ``reset_stale_max()``
    stale_max_ps: int
    #: their median and 99th percentile since then, in ps (a log-linear histogram: within 0.2 %)
    stale_p50_ps: int = 0
    stale_p99_ps: int = 0


class ViommuProbeError(Exception):
    """``viommu_probe`` failed; ``errno`` is what it returned."""

    def __init__(self, errno: int, message: str) -> None:
        self.errno = errno
        super().__init__(message)


def req_errno(status: int) -> int:
    """``viommu_get_req_errno``: the errno of a tail status (IOERR, DEVERR, unknown: -EIO)."""
    return _STATUS_ERRNO.get(status, -EIO)


def _type_name(rtype: int) -> str:
    """A request type for traces: its name, or the number of an unknown type."""
    return _TYPE_NAMES.get(rtype, str(rtype))


def viommu_pci_info(devices: Any) -> PciDeviceInfo | None:
    """The virtio-iommu-pci function among enumeration records (or GuestDevices), if any."""
    for d in devices:
        info = getattr(d, "info", d)
        if (info.vendor_id, info.device_id) == VIRTIO_IOMMU_PCI_ID:
            return info  # type: ignore[no-any-return]
    return None


class _Request:
    """``struct viommu_request``: one chain in flight."""

    __slots__ = ("type", "buf", "size", "write_offset", "writeback", "table", "reply", "status", "used_len",
                 "since_ps")

    def __init__(self, rtype: int, buf: int, size: int, write_offset: int, writeback: bool, table: int | None):
        self.type = rtype
        self.buf = buf
        self.size = size
        self.write_offset = write_offset
        self.writeback = writeback
        self.table = table
        #: the caller's copy of the writable part (starts zeroed; written back on a full-length completion)
        self.reply = bytes(size - write_offset)
        self.status: int | None = None
        self.used_len: int | None = None
        #: an UNMAP's ``viommu_unmap_pages`` call time (for the stale-window counters), else None
        self.since_ps: int | None = None


class ViommuDriver:
    """The virtio-iommu driver bound to one virtio-iommu-pci function (``virtio<index>``)."""

    def __init__(self, kernel: GuestKernel, info: PciDeviceInfo, *, index: int = 0) -> None:
        self.kernel = kernel
        self.info = info
        self._trace = kernel.sim.tracer(TRACE_SOURCE)
        #: dev_printk prefix of the virtio device: ("virtio_iommu", "virtio0")
        self.name = (DRIVER_NAME, f"virtio{index}")
        config = kernel.config
        #: how MAPs are submitted (6.7: each synchronously; 6.8+: queued + iotlb_sync_map; or the user's)
        self.map_policy: MapSubmissionPolicy = make_map_policy(
            config.map_batching, PolicyContext(ncpus=kernel.ncpus, guest_kernel=config.guest_kernel, domain_type=""))
        #: 6.8+ op (or MachineConfig's override): flush_iotlb_all
        self.deferred_flush = virtio_iommu_deferred_flush(config.guest_kernel, config.flush_queue)
        self.regs = PciVirtioRegs(kernel.machine.bus, info)
        self.vdev: VirtioModernDevice | None = None
        self.requestq: DriverQueue | None = None
        self.eventq: DriverQueue | None = None
        self.features = 0
        self.pgsize_bitmap = 0
        self.aperture = (0, U64)
        self.first_domain = 0
        self.last_domain = U32
        self.probe_size = 0
        self.map_flags = 0
        #: ``request_lock``: a spinlock, so on KVM without PV spinlocks a test-and-set lock
        self._lock = GuestSpinlock(kernel.sim, "viommu.request_lock", kernel.cost.spinlock_handoff_ps)
        self._requests: dict[int, _Request] = {}  # head -> request, in the order they were added
        self._abandoned: dict[int, _Request] = {}
        self._domain_ids: set[int] = set()
        self._events: ViommuEvents | None = None
        # counters (read with statistics()): notifications written to the request queue, requests
        # sent (in all and by type name); the stale window of each completed UNMAP, from
        # ``viommu_unmap_pages`` to the sync that saw it complete (the device completes it inside
        # that sync's kick): count, sum and max in ps
        self._kicks = 0
        self._requests_sent = 0
        self._requests_by_type = dict.fromkeys(REQUEST_TYPE_NAMES, 0)
        self._unmaps_completed = 0
        self._stale_total_ps = 0
        self._stale_max_ps = 0
        self._stale_hist = Histogram()  # in ns

    def __repr__(self) -> str:
        return f"<ViommuDriver {self.name[1]} at {self.info.slot_name}>"

    def statistics(self) -> ViommuDriverStats:
        """A snapshot of the driver's counters."""
        return ViommuDriverStats(
            kicks=self._kicks, requests_sent=self._requests_sent,
            requests=tuple(self._requests_by_type[name] for name in REQUEST_TYPE_NAMES),
            unmaps_completed=self._unmaps_completed, stale_total_ps=self._stale_total_ps,
            stale_max_ps=self._stale_max_ps, stale_p50_ps=round(self._stale_hist.percentile(50) * 1000),
            stale_p99_ps=round(self._stale_hist.percentile(99) * 1000))

    def request_lock_statistics(self) -> SpinlockStats:
        """A snapshot of ``request_lock``'s counters: acquisitions, contended ones, time held (every kick,
        the device's whole handling of it and the spin are inside it)."""
        return self._lock.statistics()

    def reset_stale_max(self) -> None:
        """Start a new maximum and distribution of the stale window (a measurement window opens)."""
        self._stale_max_ps = 0
        self._stale_hist.reset()

    # -- the IOMMU ops that differ between 6.7 and 6.8+ (and with them IOMMU_CAP_DEFERRED_FLUSH) --
    @property
    def has_iotlb_sync_map(self) -> bool:
        return self.map_policy.sync_map

    @property
    def map_batching(self) -> bool:
        """Does this driver queue MAPs and sync per map operation (the 6.8+ ``iotlb_sync_map``)?"""
        return self.map_policy.sync_map

    @property
    def has_flush_iotlb_all(self) -> bool:
        return self.deferred_flush

    # -- probe -------------------------------------------------------------------------
    def _alloc_ring(self, size: int) -> tuple[int, int, int]:
        """One zeroed block for a split ring (``vring_alloc_queue``): descriptors, avail, aligned used."""
        desc_b, avail_b, used_b = desc_table_size(size), avail_ring_size(size), used_ring_size(size)
        used_off = -(-(desc_b + avail_b) // VRING_ALIGN) * VRING_ALIGN
        total = used_off + used_b
        base = self.kernel.mm.alloc_pages(order_base_2(-(-total // PAGE_SIZE)))
        return base, base + desc_b, base + used_off

    async def probe(self, cpu: int) -> None:
        """Bind to the function: virtio core (reset, features) then ``viommu_probe``.  Raises
        ViommuProbeError (device status FAILED) on a refusal."""
        kernel = self.kernel
        core = kernel.iommu
        if core is None:
            raise RuntimeError("the IOMMU core must exist (iommu_subsys_init) before virtio-iommu binds")
        await self.regs.probe()
        vdev = VirtioModernDevice(self.regs, kernel.machine.memory,
                                  notify_off_multiplier=self.regs.notify_off_multiplier)
        await vdev.reset()
        self.features = features = await vdev.negotiate(VIOMMU_FEATURES | TRANSPORT_FEATURES)
        if not features >> F_MAP_UNMAP & 1:
            await vdev.fail()
            raise ViommuProbeError(-ENODEV, "virtio-iommu: the device does not offer VIRTIO_IOMMU_F_MAP_UNMAP")
        # viommu_init_vqs: "request" (no callback) and "event" (viommu_event_handler), INTx
        sizes = []
        for index in (REQUESTQ, EVENTQ):  # the rings are sized to the device's maximum, as setup_vq does
            await self.regs.write("common", CommonCfg.QUEUE_SELECT, 2, index)
            sizes.append(await self.regs.read("common", CommonCfg.QUEUE_SIZE, 2))
        self.requestq = await vdev.setup_queue(REQUESTQ, sizes[0], *self._alloc_ring(sizes[0]),
                                               direct=kernel.config.detail == "fast")
        self.requestq.disable_cb()
        self.eventq = await vdev.setup_queue(EVENTQ, sizes[1], *self._alloc_ring(sizes[1]))
        self.vdev = vdev
        self._events = ViommuEvents(kernel, self.name, self.info, vdev, self.eventq)
        # configuration (virtio_cread_le / virtio_cread_le_feature)
        self.pgsize_bitmap = await vdev.config_read(0, 8)
        if not self.pgsize_bitmap:
            await vdev.fail()  # del_vqs, then the virtio core marks the device FAILED
            raise ViommuProbeError(-EINVAL, "virtio-iommu: page_size_mask is 0")
        if self.info.gsi is not None:  # vp_request_intx (in find_vqs; registered once probe cannot fail)
            kernel.machine.irq.register_intx(self.info.gsi, self._events.on_intx)
        start, end = 0, U64
        if features >> F_INPUT_RANGE & 1:
            start, end = await vdev.config_read(8, 8), await vdev.config_read(16, 8)
        if features >> F_DOMAIN_RANGE & 1:
            self.first_domain, self.last_domain = await vdev.config_read(24, 4), await vdev.config_read(28, 4)
        if features >> F_PROBE & 1:
            self.probe_size = await vdev.config_read(32, 4)
        self.aperture = (start, end)
        self.map_flags = MAP_F_READ | MAP_F_WRITE | (MAP_F_MMIO if features >> F_MMIO & 1 else 0)
        await vdev.driver_ok()
        self._events.fill()
        core.register(self)
        kernel.dev_info(self.name, f"input address: {order_base_2(end) if end else 0} bits")
        kernel.dev_info(self.name, f"page mask: {self.pgsize_bitmap:#x}")
        self._trace("viommu_probe", features=features, pgsize_bitmap=self.pgsize_bitmap, aperture_end=end,
                    probe_size=self.probe_size)

    # -- the request engine ---------------------------------------------------------------
    async def _add_locked(self, cpu: int, request: bytes, writable_len: int, writeback: bool) -> _Request | int:
        """``__viommu_add_req`` (request_lock held): the chain is in the ring, ``avail.idx`` published."""
        q = self.requestq
        if q is None:
            raise RuntimeError("virtio-iommu request before probe")
        kernel = self.kernel
        await sleep(kernel.cost.guest_request_build_ps)
        size = len(request) + writable_len
        buf = kernel.mm.kmalloc(size)  # kzalloc(GFP_ATOMIC) + memcpy of the readable part
        if not isinstance(q, DirectDriverQueue):  # the transaction-level ring carries the request itself
            kernel.machine.memory.write(buf, bytes(request) + bytes(writable_len))
        indirect = bool(self.features >> VIRTIO_RING_F_INDIRECT_DESC & 1)
        req = _Request(request[0], buf, size, len(request), writeback, None)
        out, in_ = [(buf, len(request))], [(buf + len(request), writable_len)]
        head = None
        for attempt in range(2):
            table = kernel.mm.kmalloc(INDIRECT_TABLE_SIZE) if indirect and q.num_free else None
            try:
                head = q.add(out, in_, indirect_table=table, payload=request)
                req.table = table
                break
            except VirtqueueFull:
                if table is not None:
                    kernel.mm.kfree(table, INDIRECT_TABLE_SIZE)
                if attempt == 0:
                    await self._sync_locked(cpu)  # "If the queue is full, sync and retry"
        if head is None:
            kernel.mm.kfree(buf, size)
            self._trace("viommu_add_req_failed", cpu=cpu, type=_type_name(req.type), errno=-ENOSPC)
            return -ENOSPC
        q.publish()
        self._requests[head] = req
        self._requests_sent += 1
        name = _type_name(req.type)
        self._requests_by_type[name] = self._requests_by_type.get(name, 0) + 1
        if kernel.sim.tracing:
            self._trace("viommu_add_req", cpu=cpu, type=_type_name(req.type), head=head,
                        outstanding=len(self._requests))
        return req

    def _complete(self, head: int, req: _Request, used_len: int) -> None:
        """One used entry of ``__viommu_sync_req``: IOERR when nothing was written, writeback on a
        full-length completion, free the request."""
        kernel = self.kernel
        q = self.requestq
        write_len = req.size - req.write_offset
        if isinstance(q, DirectDriverQueue):  # the buffer as the device left it, from the ring object
            area = bytes(req.write_offset) + q.written(head, write_len)
            tail, reply = area[-TAIL_SIZE:], area[req.write_offset:]
        else:
            mem = kernel.machine.memory
            tail = mem.read(req.buf + req.size - TAIL_SIZE, TAIL_SIZE)
            reply = b""
            if req.writeback and used_len == write_len:
                reply = mem.read(req.buf + req.write_offset, write_len)
        req.status = int(Status.IOERR) if used_len == 0 else tail[0]  # viommu_set_req_status(..., IOERR)
        req.used_len = used_len
        if req.writeback and used_len == write_len:
            req.reply = reply
        kernel.mm.kfree(req.buf, req.size)
        if req.table is not None:
            kernel.mm.kfree(req.table, INDIRECT_TABLE_SIZE)

    async def _sync_locked(self, cpu: int) -> int:
        """``__viommu_sync_req`` (request_lock held): kick, then spin until every request completed."""
        q = self.requestq
        vdev = self.vdev
        assert q is not None and vdev is not None
        sim = self.kernel.sim
        kick = q.kick_needed()
        if sim.tracing:
            self._trace("viommu_sync_req", cpu=cpu, kick=kick, outstanding=len(self._requests))
        if kick:
            self._kicks += 1
            await vdev.notify(REQUESTQ)
        start = sim.now
        delay = SYNC_POLL_PS
        while self._requests:
            used = None
            if q.broken is None:
                try:
                    used = q.get_used()
                except VirtqueueError as e:  # BAD_RING: the queue is broken, get_buf returns NULL from now on
                    self.kernel.printk.dev_err(sim.now, *self.name, f"virtqueue_get_buf_ctx_split:{e.reason}")
            if used is None:
                if sim.now - start >= SOFT_LOCKUP_PS:
                    self._give_up(cpu, sim.now - start)
                    break
                await sleep(delay)
                delay = min(2 * delay, SYNC_POLL_MAX_PS)
                continue
            head, used_len = used
            req = self._requests.pop(head, None) or self._abandoned.pop(head, None)
            if req is None:
                continue  # not ours (cannot happen: DriverQueue only returns chain heads)
            self._complete(head, req, used_len)
            if req.since_ps is not None:
                stale = sim.now - req.since_ps
                self._unmaps_completed += 1
                self._stale_total_ps += stale
                self._stale_max_ps = max(self._stale_max_ps, stale)
                self._stale_hist.add(stale // 1000)
            if sim.tracing:
                self._trace("viommu_req_done", cpu=cpu, type=_type_name(req.type), head=head, used_len=used_len,
                            status=req.status)
        return 0

    def _give_up(self, cpu: int, waited_ps: int) -> None:
        """The simulator's bound on the spin: log the soft-lockup line, abandon what is outstanding."""
        sim = self.kernel.sim
        task = sim.current_task()
        self.kernel.log(f"watchdog: BUG: soft lockup - CPU#{cpu} stuck for {waited_ps // seconds(1)}s! "
                        f"[{task.name if task is not None else 'swapper'}]")
        for head, req in self._requests.items():
            self._abandoned[head] = req
        self._trace("viommu_sync_req_abandoned", cpu=cpu, heads=sorted(self._requests))
        self._requests.clear()

    async def add_req(self, cpu: int, request: bytes, writable_len: int = TAIL_SIZE, *,
                      since_ps: int | None = None) -> int:
        """``viommu_add_req``: queue a request (no kick, status never read); 0 or -errno.
        ``since_ps``: the UNMAP's start, for the stale-window counters."""
        async with self._lock:
            req = await self._add_locked(cpu, request, writable_len, writeback=False)
            if isinstance(req, int):
                return req
            req.since_ps = since_ps
        return 0

    async def sync_req(self, cpu: int) -> int:
        """``viommu_sync_req``: kick and wait for everything outstanding."""
        async with self._lock:
            return await self._sync_locked(cpu)

    async def send_req_sync(self, cpu: int, request: bytes, writable_len: int = TAIL_SIZE) -> tuple[int, bytes]:
        """``viommu_send_req_sync``: (errno of the tail the caller reads back, the writable part)."""
        async with self._lock:
            req = await self._add_locked(cpu, request, writable_len, writeback=True)
            if isinstance(req, int):
                return req, bytes(writable_len)
            await self._sync_locked(cpu)
        errno = -EIO if req.status is None else req_errno(req.reply[-TAIL_SIZE])
        if self.kernel.sim.tracing:
            self._trace("viommu_send_req_sync", cpu=cpu, type=_type_name(req.type), status=req.status,
                        errno=errno)
        return errno, req.reply

    # -- endpoints ------------------------------------------------------------------------
    async def probe_device(self, cpu: int, dev: GuestDevice) -> ViommuEndpoint | int:
        """``viommu_probe_device``: the endpoint (VIOT: id = BDF) and, if ``probe_size``, its PROBE."""
        endpoint = ViommuEndpoint(dev, (dev.bdf,))
        if self.probe_size:
            ret = await self.probe_endpoint(cpu, endpoint)
            if ret:
                return ret
        return endpoint

    async def probe_endpoint(self, cpu: int, endpoint: ViommuEndpoint) -> int:
        """``viommu_probe_endpoint``: one PROBE for the first id; RESV_MEM properties become
        ``endpoint.resv_regions``.  0 or the errno of the request or of the last property."""
        errno, reply = await self.send_req_sync(cpu, ProbeReq(endpoint.ids[0]).pack(), self.probe_size + TAIL_SIZE)
        if errno:
            return errno
        ret = 0
        cur = 0
        while cur + ProbeProperty.SIZE <= self.probe_size:
            prop = ProbeProperty.unpack(reply, cur)
            ptype = prop.type & PROBE_T_MASK
            if ptype == PROBE_T_NONE:
                break
            length = prop.length + ProbeProperty.SIZE
            if ptype == PROBE_T_RESV_MEM:
                ret = add_resv_mem(endpoint, reply, cur, length, lambda text: self.kernel.printk.dev_warn(
                    self.kernel.sim.now, endpoint.dev.prefix_driver, endpoint.dev.name, text))
            else:
                self._dev_err(endpoint.dev, f"unknown viommu prop {ptype:#x}")
            if ret:
                self._dev_err(endpoint.dev, f"failed to parse viommu prop {ptype:#x}")
            cur += length
        return ret

    def get_resv_regions(self, dev_priv: object) -> list[ResvRegion]:
        """``viommu_get_resv_regions``: the PROBE regions, plus a software MSI window if none is MSI."""
        endpoint = to_viommu_endpoint(dev_priv)
        return resv_regions(endpoint)

    def release_device(self, dev_priv: object) -> None:
        """``viommu_release_device`` of an endpoint that never got attached: nothing to detach."""
        endpoint = to_viommu_endpoint(dev_priv)
        if endpoint.domain is not None:
            raise RuntimeError(f"release of attached endpoint {endpoint!r}: DETACH is not modelled")

    # -- domains --------------------------------------------------------------------------
    def domain_alloc(self) -> ViommuDomain:
        """``viommu_domain_alloc(IOMMU_DOMAIN_DMA)``: the structure only; no id, no request."""
        domain = ViommuDomain()
        domain.pgsize_bitmap = self.pgsize_bitmap  # __iommu_domain_alloc: ops->pgsize_bitmap
        return domain

    def domain_free(self, iommu_domain: IommuDriverDomain) -> None:
        """``viommu_domain_free``: drop the tree, release the id."""
        domain = to_viommu_domain(iommu_domain)
        domain.mappings.clear()
        if domain.id is not None:
            self._domain_ids.discard(domain.id)

    def _finalise(self, domain: ViommuDomain, endpoint: ViommuEndpoint) -> int:
        """``viommu_domain_finalise``: granule check, lowest free id in [first_domain, last_domain]."""
        granule = self.pgsize_bitmap & -self.pgsize_bitmap
        if granule > PAGE_SIZE:
            self._dev_err(endpoint.dev, f"granule {granule:#x} larger than system page size {PAGE_SIZE:#x}")
            return -ENODEV
        domain_id = self.first_domain
        while domain_id in self._domain_ids:
            domain_id += 1
        if domain_id > self.last_domain:
            return -ENOSPC
        self._domain_ids.add(domain_id)
        domain.id = domain_id
        domain.viommu = self
        domain.pgsize_bitmap = self.pgsize_bitmap
        domain.aperture = self.aperture
        domain.map_flags = self.map_flags
        return 0

    async def attach(self, cpu: int, iommu_domain: IommuDriverDomain, dev_priv: object) -> int:
        """``viommu_attach_dev``: finalise a new domain, ATTACH each id, replay into an empty domain."""
        domain = to_viommu_domain(iommu_domain)
        endpoint = to_viommu_endpoint(dev_priv)
        if domain.viommu is None:
            ret = self._finalise(domain, endpoint)
            if ret:
                return ret
        elif domain.viommu is not self:
            return -EINVAL
        if endpoint.domain is not None:
            endpoint.domain.nr_endpoints -= 1
        assert domain.id is not None
        for ep_id in endpoint.ids:
            ret, _ = await self.send_req_sync(cpu, AttachReq(domain.id, ep_id).pack())
            if ret:
                return ret
        if not domain.nr_endpoints:
            ret = await self._replay_mappings(cpu, domain)
            if ret:
                return ret
        domain.nr_endpoints += 1
        endpoint.domain = domain
        self._trace("viommu_attach_dev", cpu=cpu, domain=domain.id, endpoints=list(endpoint.ids))
        return 0

    async def _replay_mappings(self, cpu: int, domain: ViommuDomain) -> int:
        """``viommu_replay_mappings``: every tree entry as a synchronous MAP, in IOVA order."""
        assert domain.id is not None
        for start, (end, paddr, flags) in list(domain.mappings.items()):
            ret, _ = await self.send_req_sync(cpu, MapReq(domain.id, start, end, paddr, flags).pack())
            if ret:
                return ret
        return 0

    # -- map / unmap ----------------------------------------------------------------------
    async def map_pages(self, cpu: int, iommu_domain: IommuDriverDomain, iova: int, paddr: int, pgsize: int, pgcount: int,
                        prot: int) -> int:
        """``viommu_map_pages``: tree entry, then a MAP (6.7: sent synchronously, its status
        returned; 6.8+: queued, status never read).  0 or -errno."""
        domain = to_viommu_domain(iommu_domain)
        size = pgsize * pgcount
        end = iova + size - 1
        flags = ((MAP_F_READ if prot & IOMMU_READ else 0) | (MAP_F_WRITE if prot & IOMMU_WRITE else 0)
                 | (MAP_F_MMIO if prot & IOMMU_MMIO else 0))
        if flags & ~domain.map_flags:
            return -EINVAL
        domain.mappings[iova] = (end, paddr, flags)
        if self.kernel.sim.tracing:
            self._trace("viommu_map_pages", cpu=cpu, domain=domain.id, iova=iova, paddr=paddr, size=size,
                        flags=flags)
        if domain.nr_endpoints:
            assert domain.id is not None
            req = MapReq(domain.id, iova, end, paddr, flags).pack()
            if self.map_policy.map_range(cpu, iova, size) == MAP_SEND_SYNC:
                ret, _ = await self.send_req_sync(cpu, req)
            else:
                ret = await self.add_req(cpu, req)
            if ret:
                domain.del_mappings(iova, end)
                return ret
        return 0

    async def unmap_pages(self, cpu: int, iommu_domain: IommuDriverDomain, iova: int, pgsize: int, pgcount: int) -> int:
        """``viommu_unmap_pages``: drop whole mappings from the tree and queue one UNMAP (no kick,
        status ignored); bytes unmapped, 0 when the range would split a mapping."""
        domain = to_viommu_domain(iommu_domain)
        size = pgsize * pgcount
        unmapped = domain.del_mappings(iova, iova + size - 1)
        if self.kernel.sim.tracing:
            self._trace("viommu_unmap_pages", cpu=cpu, domain=domain.id, iova=iova, size=size, unmapped=unmapped)
        if unmapped < size:
            return 0
        if not domain.nr_endpoints:
            return unmapped
        assert domain.id is not None
        ret = await self.add_req(cpu, UnmapReq(domain.id, iova, iova + unmapped - 1).pack(),
                                 since_ps=self.kernel.sim.now)
        return 0 if ret else unmapped

    async def iotlb_sync(self, cpu: int, iommu_domain: IommuDriverDomain) -> None:
        """``viommu_iotlb_sync``: kick and drain everything queued."""
        await self.sync_req(cpu)

    async def iotlb_sync_map(self, cpu: int, iommu_domain: IommuDriverDomain, iova: int, size: int) -> int:
        """``viommu_iotlb_sync_map`` (6.8+): sync once the domain has endpoints."""
        domain = to_viommu_domain(iommu_domain)
        if not self.has_iotlb_sync_map:
            raise RuntimeError(f"Linux {self.kernel.config.guest_kernel} virtio-iommu has no iotlb_sync_map")
        if not domain.nr_endpoints or not self.map_policy.map_operation_done(cpu, iova, size):
            return 0
        return await self.sync_req(cpu)

    async def flush_iotlb_all(self, cpu: int, iommu_domain: IommuDriverDomain) -> None:
        """``viommu_flush_iotlb_all`` (6.8+): sync once the domain has endpoints."""
        domain = to_viommu_domain(iommu_domain)
        if not self.has_flush_iotlb_all:
            raise RuntimeError(f"Linux {self.kernel.config.guest_kernel} virtio-iommu has no flush_iotlb_all")
        if domain.nr_endpoints:
            await self.sync_req(cpu)

    # -- helpers ---------------------------------------------------------------------------
    def _dev_err(self, dev: GuestDevice, text: str) -> None:
        self.kernel.printk.dev_err(self.kernel.sim.now, dev.prefix_driver, dev.name, text)
