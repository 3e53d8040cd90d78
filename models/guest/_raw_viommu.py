"""A raw guest driver for the virtio-iommu: any bytes as a request, through the real transport.

Used by ``viommu-sim replay`` and by the testbench's raw virtqueue driver.  It
does what Linux's virtio-iommu driver does at the transport level
(drivers/iommu/virtio-iommu.c ``viommu_probe``, ``__viommu_add_req``,
``__viommu_sync_req``) but sends whatever it is given, malformed requests
included:

* probe: discover the capabilities in config space, reset, negotiate features,
  set up the request queue (0) and the event queue (1) in guest memory,
  DRIVER_OK, post event buffers (``viommu_fill_evtq``);
* ``submit``: write the request into a zeroed kernel buffer, add a
  two-descriptor chain (device-readable request, device-writable tail),
  publish ``avail.idx``, kick through the notify register if the ring asks for
  it, and poll the used ring (the driver's busy loop, bounded here).

A used length of 0 reads as IOERR, as ``__viommu_sync_req`` forces it.
"""

from __future__ import annotations

import attrs

from sim import Lock, sleep

from .._virtq_wire import (
    VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
    avail_ring_size,
    desc_table_size,
    used_ring_size,
)
from .._viommu_wire import (
    F_BYPASS_CONFIG,
    F_DOMAIN_RANGE,
    F_INPUT_RANGE,
    F_MAP_UNMAP,
    F_MMIO,
    F_PROBE,
    EVENTQ,
    REQUESTQ,
    Status,
)
from ._mm import PageAllocator
from ._pci_scan import PciDeviceInfo
from ._virtio_driver import VirtioModernDevice
from ._virtio_pci_regs import PciVirtioRegs
from ._virtqueue_driver import DirectDriverQueue, DriverQueue

#: the Linux driver's feature table (``viommu_id_table`` features) plus the transport bits it accepts
LINUX_FEATURES = (
    sum(1 << b for b in (F_MAP_UNMAP, F_INPUT_RANGE, F_DOMAIN_RANGE, F_PROBE, F_MMIO, F_BYPASS_CONFIG))
    | 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX | 1 << VIRTIO_RING_F_INDIRECT_DESC
)
#: size of one event buffer (``struct viommu_event``: a virtio_iommu_fault, 24 bytes)
EVENT_BUF_SIZE = 24
#: bound on the used-ring busy loop: polls, each after ``poll_interval_ps``
MAX_POLLS = 1000


@attrs.frozen
class RawCompletion:
    """What the driver saw for one request."""

    status: int | None  # the tail status byte; None when the device never completed it
    used_len: int
    reply: bytes  # the device-writable part as the driver reads it back
    kicked: bool

    @property
    def status_name(self) -> str:
        if self.status is None:
            return "NO_COMPLETION"
        try:
            return Status(self.status).name
        except ValueError:
            return f"UNKNOWN_{self.status}"


class RawViommuDriver:
    """Drives one virtio-iommu-pci function from the guest side."""

    def __init__(self, bus: object, memory: object, info: PciDeviceInfo, mm: PageAllocator, *,
                 features: int = LINUX_FEATURES, queue_size: int = 256, event_buffers: int = 256,
                 poll_interval_ps: int = 100_000, direct: bool = False) -> None:
        self.regs = PciVirtioRegs(bus, info)  # type: ignore[arg-type]
        #: the request queue at the transaction level (``MachineConfig.detail`` fast): requests are
        #: handed to the device as bytes objects on a DirectRing, not written into guest memory
        self.direct = direct
        self.memory = memory
        self.mm = mm
        self.wanted_features = features
        self.queue_size = queue_size
        self.event_buffers = event_buffers
        self.poll_interval_ps = poll_interval_ps
        self.dev: VirtioModernDevice | None = None
        self.requestq: DriverQueue | None = None
        self.eventq: DriverQueue | None = None
        self.features = 0
        self.kicks = 0
        self._event_bufs: dict[int, int] = {}
        #: the driver's request_lock: one request in flight at a time, as viommu_send_req_sync has it
        self.request_lock = Lock(name="viommu.request_lock")

    async def _alloc_ring(self, size: int) -> tuple[int, int, int]:
        desc_b, avail_b, used_b = desc_table_size(size), avail_ring_size(size), used_ring_size(size)
        desc = self.mm.kmalloc(desc_b)
        avail = self.mm.kmalloc(avail_b)
        used = self.mm.kmalloc(used_b)
        for addr, n in ((desc, desc_b), (avail, avail_b), (used, used_b)):
            self.memory.write(addr, bytes(n))  # type: ignore[attr-defined]
        return desc, avail, used

    async def probe(self) -> None:
        """Bring the device up as ``viommu_probe`` does (reset, features, queues, DRIVER_OK, event buffers)."""
        await self.regs.probe()
        dev = VirtioModernDevice(self.regs, self.memory, notify_off_multiplier=self.regs.notify_off_multiplier)  # type: ignore[arg-type]
        await dev.reset()
        self.features = await dev.negotiate(self.wanted_features)
        self.requestq = await dev.setup_queue(REQUESTQ, self.queue_size, *await self._alloc_ring(self.queue_size),
                                              direct=self.direct)
        self.requestq.disable_cb()  # vq0 has no callback: completions are polled
        self.eventq = await dev.setup_queue(EVENTQ, self.queue_size, *await self._alloc_ring(self.queue_size))
        await dev.driver_ok()
        self.dev = dev
        for _ in range(min(self.event_buffers, self.queue_size)):
            buf = self.mm.kmalloc(EVENT_BUF_SIZE)
            self.memory.write(buf, bytes(EVENT_BUF_SIZE))  # type: ignore[attr-defined]
            head = self.eventq.add([], [(buf, EVENT_BUF_SIZE)])
            self._event_bufs[head] = buf
        self.eventq.publish()
        if self.eventq.kick_needed():
            await self._kick(1)

    async def config(self, offset: int, size: int) -> int:
        assert self.dev is not None
        return await self.dev.config_read(offset, size)

    async def _kick(self, index: int) -> None:
        assert self.dev is not None
        self.kicks += 1
        await self.dev.notify(index)

    async def submit(self, request: bytes, writable_len: int) -> RawCompletion:
        """Send ``request`` with a ``writable_len``-byte device-writable tail and wait for it."""
        buf = self.mm.kmalloc(max(1, len(request) + writable_len))
        if not self.direct:
            self.memory.write(buf, bytes(request) + bytes(writable_len))  # type: ignore[attr-defined]
        out = [(buf, len(request))] if request else []
        in_ = [(buf + len(request), writable_len)] if writable_len else []
        try:
            async with self.request_lock:
                return await self._submit_locked(out, in_, buf + len(request), writable_len, None, payload=request)
        finally:
            self.mm.kfree(buf, max(1, len(request) + writable_len))

    async def submit_chain(self, out: list[tuple[int, int]], in_: list[tuple[int, int]], *,
                           reply_addr: int, reply_len: int, indirect_table: int | None = None) -> RawCompletion:
        """Add an arbitrary chain to the request queue, kick, and poll for its used entry."""
        async with self.request_lock:
            return await self._submit_locked(out, in_, reply_addr, reply_len, indirect_table)

    async def _submit_locked(self, out: list[tuple[int, int]], in_: list[tuple[int, int]], reply_addr: int,
                             reply_len: int, indirect_table: int | None, payload: bytes | None = None
                             ) -> RawCompletion:
        """Add the chain, kick, poll.  At the transaction level the readable part is ``payload`` (or
        the bytes the readable segments hold in guest memory) and what the device writes into the
        writable part lands in guest memory when the chain is used, so the reply reads alike."""
        q = self.requestq
        assert q is not None
        if isinstance(q, DirectDriverQueue) and payload is None:
            payload = b"".join(self.memory.read(a, n) for a, n in out)  # type: ignore[attr-defined]
        head = q.add(out, in_, indirect_table=indirect_table, payload=payload or b"")
        q.publish()
        kicked = q.kick_needed()
        if kicked:
            await self._kick(0)
        for _ in range(MAX_POLLS):
            used = q.get_used()
            if used is not None:
                got_head, used_len = used
                if isinstance(q, DirectDriverQueue):  # the device's writes, into the writable segments
                    self._land(q, got_head, in_ if got_head == head else [])
                if got_head != head:
                    continue  # an older request completing; keep polling for ours
                reply = self.memory.read(reply_addr, reply_len) if reply_len else b""  # type: ignore[attr-defined]
                status = reply[-4] if used_len and reply_len >= 4 else int(Status.IOERR)
                return RawCompletion(status, used_len, reply, kicked)
            await sleep(self.poll_interval_ps)
        return RawCompletion(None, 0, b"", kicked)

    def _land(self, q: DirectDriverQueue, head: int, writable: list[tuple[int, int]]) -> None:
        """Write what the device wrote into chain ``head``'s writable part to its segments."""
        data = q.written(head, sum(n for _, n in writable))
        pos = 0
        for addr, n in writable:
            if pos < len(data):
                self.memory.write(addr, data[pos:pos + n])  # type: ignore[attr-defined]
            pos += n

    def harvest_events(self) -> list[bytes]:
        """Fault events the device wrote into the event queue; re-posts the buffers."""
        q = self.eventq
        assert q is not None
        events = []
        while (used := q.get_used()) is not None:
            head, length = used
            buf = self._event_bufs.pop(head)
            events.append(self.memory.read(buf, length))  # type: ignore[attr-defined]
            new_head = q.add([], [(buf, EVENT_BUF_SIZE)])
            self._event_bufs[new_head] = buf
        q.publish()
        return events


async def raw_viommu_platform(machine: object, **driver_options: object) -> RawViommuDriver:
    """Firmware + enumeration on ``machine``, then a RawViommuDriver probed on its virtio-iommu.

    Raises LookupError when the machine has no virtio-iommu-pci function.
    """
    from .._memory import GIB
    from ._pci_scan import enumerate_bus
    from ._viommu_driver import viommu_pci_info

    bus, memory = machine.bus, machine.memory  # type: ignore[attr-defined]
    infos = enumerate_bus(bus, memory)
    info = viommu_pci_info(infos)
    if info is None:
        raise LookupError("the machine has no virtio-iommu-pci function (viommu=none)")
    mm = PageAllocator.for_ram(memory.below_4g, memory.above_4g_end, reserved_bytes=GIB // 4)
    config = getattr(machine, "config", None)
    driver_options.setdefault("direct", getattr(config, "detail", "full") == "fast")
    driver = RawViommuDriver(bus, memory, info, mm, **driver_options)  # type: ignore[arg-type]
    await driver.probe()
    return driver
