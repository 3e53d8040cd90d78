"""Fault injection: the failures a virtio-iommu test wants to provoke, each with QEMU's/Linux's outcome.

* ``UsedIrqFault`` drops or delays the used-buffer interrupts of chosen
  virtqueues of a virtio-pci transport.  It is a hook on the transport's INTx
  path (``VirtioPciTransport.used_irq_hooks``) after the device decided to interrupt
  (QEMU ``virtio_notify`` -> ``virtio_split_should_notify``), so the ISR bit is
  still set and the used ring still written, as with a lost or late interrupt on
  real hardware.  A driver that polls its used ring (Linux's virtio-iommu driver
  polls the request queue, ``__viommu_sync_req``) still sees every completion.
* ``reset_device`` writes 0 to ``device_status`` while requests sit in the
  available ring: QEMU's ``virtio_reset`` forgets the rings, so those requests
  never complete, and a driver's wait for them must be bounded.
* ``fail_host_maps`` installs a hook in ``HostVfio.map_fault_hooks``: every
  ``VFIO_IOMMU_MAP_DMA`` fails; QEMU's ``vfio_iommu_map_notify`` only logs it (``error_report``), the
  guest still gets OK for its MAP, and the device's DMA to that IOVA later
  faults on the host IOMMU.
* ``endpoint_dma_port`` / ``attempt_dma`` give any endpoint behind the vIOMMU a
  DMA engine (QEMU's DMA through the endpoint's IOMMU region,
  ``virtio_iommu_translate`` per access), so a test can aim one device's DMA at
  another domain's IOVAs and see the fault.

Every fault goes in through a hook the model exposes and comes out when its
block ends (or ``remove()``); no model attribute is replaced.  The model types
are imported for the type checker only, and the models themselves only when a
helper is called: the plugin's import stays free of the models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import attrs

from sim import Simulator

if TYPE_CHECKING:
    from models import DmaPort, HostVfio, Machine, VfioContainer, ViommuDmaPort, VirtioPciTransport

#: virtio-pci common configuration: device_status register offset (virtio spec 4.1.4.3)
DEVICE_STATUS_OFFSET = 0x14
U16 = 0xFFFF


class UsedIrqFault:
    """Drop or delay the used-buffer interrupts of ``queues`` on ``transport`` (a VirtioPciTransport).

    ``mode`` is ``"drop"`` (the line is never raised for them) or ``"delay"``
    (raised ``delay`` ps later).  ``limit`` bounds how many interrupts are
    affected (None = all).  Interrupts of other queues and configuration
    interrupts pass untouched.  The fault is a hook in the transport's
    ``used_irq_hooks``; use as a context manager or call ``remove()``.
    """

    def __init__(self, sim: Simulator, transport: VirtioPciTransport, *, mode: str = "drop", delay: int = 0,
                 queues: Iterable[int] = (0,), limit: int | None = None) -> None:
        if mode not in ("drop", "delay"):
            raise ValueError(f"UsedIrqFault mode is 'drop' or 'delay', not {mode!r}")
        if mode == "delay" and (type(delay) is not int or delay <= 0):
            raise ValueError(f"UsedIrqFault(mode='delay') needs a positive int delay in ps, not {delay!r}")
        if limit is not None and limit < 0:
            raise ValueError(f"UsedIrqFault limit must be >= 0 or None, not {limit!r}")
        self.sim = sim
        self.transport = transport
        self.mode = mode
        self.delay = delay
        self.queues = frozenset(queues)
        self.limit = limit
        #: (time, queue) of every used-buffer interrupt the device raised for ``queues``
        self.raised: list[tuple[int, int]] = []
        #: (time, queue) of those that reached the INTx line, at once or late (dropped ones never do)
        self.delivered: list[tuple[int, int]] = []
        self.dropped = 0
        self.delayed = 0
        self._installed = True
        transport.used_irq_hooks.append(self._hook)

    def __enter__(self) -> UsedIrqFault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Take the hook out of the transport's interrupt path (delayed interrupts still arrive)."""
        if self._installed:
            self._installed = False
            self.transport.used_irq_hooks.remove(self._hook)

    def _affects_next(self) -> bool:
        return self.limit is None or self.dropped + self.delayed < self.limit

    def _hook(self, queue: int, raise_line: Callable[[], None]) -> None:
        if queue not in self.queues:
            raise_line()
            return
        sim = self.sim
        self.raised.append((sim.now, queue))
        if not self._affects_next():
            self.delivered.append((sim.now, queue))
            raise_line()
            return
        if self.mode == "drop":
            self.dropped += 1
            if sim.tracing:
                sim.trace("fault", "used_irq_dropped", queue=queue)
            return
        self.delayed += 1
        if sim.tracing:
            sim.trace("fault", "used_irq_delayed", queue=queue, delay=self.delay)

        def deliver() -> None:
            self.delivered.append((sim.now, queue))
            if sim.tracing:
                sim.trace("fault", "used_irq_delivered", queue=queue)
            raise_line()

        sim.call_at(sim.now + self.delay, deliver)


@attrs.frozen
class ResetOutcome:
    """What a device reset found: per enabled queue, buffers available but not yet consumed
    (requests on a request queue, posted receive/event buffers on others), and the old status."""

    pending: dict[int, int]
    status_before: int


def reset_device(transport: VirtioPciTransport) -> ResetOutcome:
    """Write 0 to ``device_status`` of ``transport`` now (QEMU ``virtio_set_status(0)`` -> ``virtio_reset``).

    Requests the driver published but the device had not popped are dropped
    with the rings: they never get a used entry.  If the device is handling a
    kick at this instant (another vCPU's exit holds QEMU's big lock), the write
    waits for it, as in QEMU: the reset lands when the handler is done.
    """
    pending: dict[int, int] = {}
    for index in range(transport.num_queues):
        queue = transport.queue(index)
        if queue is not None:
            pending[index] = (queue.avail_idx() - queue.last_avail_idx) & U16
    before = int(transport.status)
    sim = transport.sim
    if sim.tracing:
        sim.trace("fault", "device_reset", pending=sum(pending.values()))
    work = transport.common_write(DEVICE_STATUS_OFFSET, 1, 0)
    if work is not None:
        sim.spawn(work, name="device_reset")
    return ResetOutcome(pending, before)


@attrs.define(eq=False)
class HostMapFailures:
    """Counts what happened while ``fail_host_maps`` was active."""

    host: HostVfio
    errors_before: int
    map_calls_before: int
    errors: int = 0
    failed_maps: int = 0

    def _update(self) -> None:
        self.errors = self.host.statistics().errors - self.errors_before
        self.failed_maps = _map_calls(self.host) - self.map_calls_before


def _map_calls(host: HostVfio) -> int:
    return sum(c.statistics().map_calls for c in host.containers.values())


@contextlib.contextmanager
def fail_host_maps(host: HostVfio | None, errno: int | None = None) -> Iterator[HostMapFailures]:
    """Inside the block every host ``VFIO_IOMMU_MAP_DMA`` of ``host`` (a HostVfio) fails with ``-errno``
    (a Linux errno; None: ENOMEM).

    QEMU only logs the failure; the vIOMMU request that caused it completes OK.
    The yielded record's ``errors`` (host error_report lines) and ``failed_maps``
    are final when the block ends.
    """
    if host is None:
        raise ValueError("fail_host_maps needs a HostVfio: the machine has no VFIO device (nvme='vfio')")
    from models import ENOMEM

    ret = -(ENOMEM if errno is None else errno)
    record = HostMapFailures(host, host.statistics().errors, _map_calls(host))

    def fail(_container: VfioContainer, _iova: int, _size: int, _paddr: int) -> int:
        return ret

    host.map_fault_hooks.append(fail)
    try:
        yield record
    finally:
        host.map_fault_hooks.remove(fail)
        record._update()


def endpoint_dma_port(machine: Machine, bdf: int, *, name: str | None = None) -> ViommuDmaPort:
    """A DMA engine for the function ``bdf`` behind the machine's virtio-iommu (a ViommuDmaPort).

    Every access is translated by ``virtio_iommu_translate`` for ``bdf`` at the
    moment it is made; it is refused while the function's bus-master bit is off.
    """
    from models import ViommuDmaPort

    if machine.viommu is None:
        raise ValueError("endpoint_dma_port needs a machine with a virtio-iommu (viommu='none' has none)")
    fn = machine.function(bdf)
    return ViommuDmaPort(machine.memory, machine.viommu, bdf, name or f"rogue@{bdf:#06x}", fn.check_dma_allowed)


def enable_bus_master(machine: Machine, bdf: int) -> None:
    """Set memory-space and bus-master enable in the function's PCI command register (as a driver does)."""
    bus = machine.bus
    bus.config_write_sync(bdf, 0x04, 2, bus.config_read_sync(bdf, 0x04, 2) | 0x6)


@attrs.frozen
class DmaAttempt:
    """One device access: what it read (or wrote), or why it faulted."""

    iova: int
    write: bool
    ok: bool
    data: bytes
    fault: str | None


def attempt_dma(port: DmaPort, iova: int, *, read: int = 0, write: bytes | None = None) -> DmaAttempt:
    """Read ``read`` bytes at ``iova`` (or write ``write``) through ``port``; a fault is an outcome, not an error."""
    from models import DmaFault

    if (write is None) == (read <= 0):
        raise ValueError("attempt_dma takes either read=<bytes> > 0 or write=<data>")
    try:
        if write is not None:
            port.dma_write(iova, write)
            return DmaAttempt(iova, True, True, bytes(write), None)
        return DmaAttempt(iova, False, True, port.dma_read(iova, read), None)
    except DmaFault as exc:
        return DmaAttempt(iova, write is not None, False, b"", exc.reason)
