"""The virtio-iommu driver's event queue: Linux drivers/iommu/virtio-iommu.c, 6.7 and 6.12.

``ViommuEvents`` owns the event virtqueue once ``viommu_probe`` has set it up:

* ``fill`` is ``viommu_fill_evtq``: one array of event buffers, each posted, no kick;
* the INTx line runs ``vp_interrupt`` (drivers/virtio/virtio_pci_common.c: read and clear the
  ISR, a config change, then ``vring_interrupt``) on CPU 0, the default IRQ affinity;
* ``viommu_event_handler``: each used buffer checked, a fault record handed to
  ``viommu_fault_handler`` (a ``dev_err_ratelimited`` line), the buffer re-posted, the queue
  kicked when it asks for it.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from sim import seconds

from .._virtqueue import VirtqueueError
from .._viommu_wire import (
    EVENTQ, FAULT_F_ADDRESS, FAULT_F_EXEC, FAULT_F_READ, FAULT_F_WRITE, FAULT_R_DOMAIN, FAULT_R_MAPPING, FaultEvent,
)
from ._pci_scan import PciDeviceInfo
from ._virtio_driver import VirtioModernDevice
from ._virtqueue_driver import DriverQueue

if TYPE_CHECKING:
    from ._kernel import GuestKernel

#: sizeof(struct viommu_event): a union with struct virtio_iommu_fault
EVENT_SIZE = FaultEvent.SIZE
#: viommu_event.head bits that must be clear for a fault record (VIOMMU_FAULT_RESV_MASK)
FAULT_RESV_MASK = 0xFFFF_FF00
#: dev_err_ratelimited: DEFAULT_RATELIMIT_INTERVAL (5 * HZ) and DEFAULT_RATELIMIT_BURST
RATELIMIT_INTERVAL_PS = seconds(5)
RATELIMIT_BURST = 10
TRACE_SOURCE = "guest/virtio_iommu"


class _Ratelimit:
    """``___ratelimit`` with the default interval and burst."""

    def __init__(self) -> None:
        self.begin: int | None = None
        self.printed = 0
        self.missed = 0

    def allow(self, now: int) -> tuple[bool, int]:
        """(print this one?, callbacks suppressed in the window that just ended)."""
        suppressed = 0
        if self.begin is None or now - self.begin >= RATELIMIT_INTERVAL_PS:
            suppressed, self.missed = self.missed, 0
            self.begin, self.printed = now, 0
        if self.printed < RATELIMIT_BURST:
            self.printed += 1
            return True, suppressed
        self.missed += 1
        return False, suppressed


class ViommuEvents:
    """The event queue of one virtio-iommu device, its posted buffers and the fault log's rate limit."""

    def __init__(self, kernel: GuestKernel, name: tuple[str, str], info: PciDeviceInfo, vdev: VirtioModernDevice,
                 queue: DriverQueue) -> None:
        self.kernel = kernel
        #: dev_printk prefix of the virtio device: ("virtio_iommu", "virtio0")
        self.name = name
        self.info = info
        self.vdev = vdev
        self.queue = queue
        self._bufs: dict[int, int] = {}  # chain head -> buffer
        self._ratelimit = _Ratelimit()

    def __repr__(self) -> str:
        return f"<ViommuEvents {self.name[1]} posted={len(self._bufs)}>"

    def fill(self) -> None:
        """``viommu_fill_evtq``: one array of ``num_free`` event buffers, each posted; no kick."""
        q = self.queue
        n = q.num_free
        base = self.kernel.mm.kmalloc(n * EVENT_SIZE)
        for i in range(n):
            buf = base + i * EVENT_SIZE
            self._bufs[q.add([], [(buf, EVENT_SIZE)])] = buf
            q.publish()

    def on_intx(self) -> None:
        """The INTx line rose (``vp_interrupt`` runs on CPU 0, the default IRQ affinity)."""
        self.kernel.sim.spawn(self._vp_interrupt(), name="virtio_iommu.vp_interrupt")

    async def _vp_interrupt(self) -> None:
        """``vp_interrupt``: read (and clear) the ISR, config change, then ``vring_interrupt``s."""
        isr = await self.vdev.read_isr()
        if isr & 2:
            self.kernel.printk.dev_warn(self.kernel.sim.now, *self.name, "config changed")
        if isr & 1:
            await self._event_handler()
        if self.info.gsi is not None:
            self.kernel.machine.irq.eoi(self.info.gsi)

    async def _event_handler(self) -> None:
        """``viommu_event_handler``: log each fault, re-post its buffer, kick the event queue."""
        q = self.queue
        mem = self.kernel.machine.memory
        while q.broken is None:
            try:
                used = q.get_used()
            except VirtqueueError as e:
                self.kernel.printk.dev_err(self.kernel.sim.now, *self.name, f"virtqueue_get_buf_ctx_split:{e.reason}")
                break
            if used is None:
                break
            head, length = used
            buf = self._bufs.pop(head)
            if length > EVENT_SIZE:
                self.kernel.printk.dev_err(self.kernel.sim.now, *self.name,
                                           f"invalid event buffer (len {length} != {EVENT_SIZE})")
            else:
                data = mem.read(buf, EVENT_SIZE)
                if not struct.unpack_from("<I", data)[0] & FAULT_RESV_MASK:
                    self._fault_handler(FaultEvent.unpack(data))
            self._bufs[q.add([], [(buf, EVENT_SIZE)])] = buf
            q.publish()
        if q.kick_needed():
            await self.vdev.notify(EVENTQ)

    def _fault_handler(self, fault: FaultEvent) -> None:
        """``viommu_fault_handler``: a rate-limited dev_err."""
        reason = {FAULT_R_DOMAIN: "domain", FAULT_R_MAPPING: "page"}.get(fault.reason, "unknown")
        if fault.flags & FAULT_F_ADDRESS:
            rwx = "".join(c for bit, c in ((FAULT_F_READ, "R"), (FAULT_F_WRITE, "W"), (FAULT_F_EXEC, "X"))
                          if fault.flags & bit)
            text = f"{reason} fault from EP {fault.endpoint} at {fault.address:#x} [{rwx}]"
        else:
            text = f"{reason} fault from EP {fault.endpoint}"
        sim = self.kernel.sim
        if sim.tracing:
            sim.trace(TRACE_SOURCE, "viommu_fault", reason=fault.reason, flags=fault.flags, endpoint=fault.endpoint,
                      address=fault.address)
        now = sim.now
        allow, suppressed = self._ratelimit.allow(now)
        if suppressed:
            self.kernel.printk.log(now, f"viommu_fault_handler: {suppressed} callbacks suppressed", 4)
        if allow:
            self.kernel.printk.dev_err(now, *self.name, text)
