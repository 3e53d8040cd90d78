"""virtio-pci, modern interface: the transport between the PCI function and a virtio device model.

Spec: virtio 1.2/1.3 ``transport-pci.tex`` (common configuration structure,
spec 4.1.4.3; notification, ISR and device-specific capabilities) and
``content.tex`` (device status, feature negotiation, device reset).  Behaviour
follows QEMU hw/virtio/virtio-pci.c (``virtio_pci_common_read``/``_write``,
``virtio_pci_notify_write``, ``virtio_pci_isr_read``, ``virtio_pci_reset``) and
hw/virtio/virtio.c (``virtio_set_status``, ``virtio_reset``, ``virtio_queue_notify``,
``virtio_notify``, ``virtio_notify_config``, ``virtio_error``).

Where QEMU and the spec part ways this module takes the spec, and says so:

* FEATURES_OK is refused (left clear) when the driver accepted a feature the
  device did not offer or did not accept VERSION_1; QEMU masks unoffered bits
  silently.
* A kick is dispatched only when DRIVER_OK is set ("The device MUST NOT consume
  buffers ... before DRIVER_OK"); QEMU dispatches any kick to a queue with a
  descriptor table.
* The config generation changes on every device-config change; QEMU bumps it
  only in ``virtio_notify_config`` when DRIVER_OK is set.

A VirtqueueError escaping the backend's kick handler (synchronously or from the
coroutine it returns) breaks the device exactly like QEMU's ``virtio_error``:
no exception ever leaves the transport for a malformed ring.

The transport has no MSI-X (virtio-iommu-pci is wired to INTx here): vector
registers read VIRTIO_MSI_NO_VECTOR and interrupts are the ISR bits plus the
INTx level reported through ``on_irq``.

QEMU's big lock is the machine's: the transport is handed it (``bql``) and a
common-configuration write that arrives while a device handler holds it waits
for it.  Fault injection plugs into ``used_irq_hooks``, the used-buffer interrupt
path between ``virtio_notify``'s decision and the INTx line.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Callable, Protocol

from sim import Lock, Simulator

from ._memory import GuestMemory
from ._virtq_wire import (
    ISR_CONFIG,
    ISR_QUEUE,
    VIRTIO_F_NOTIFY_ON_EMPTY,
    VIRTIO_F_RING_RESET,
    VIRTIO_F_VERSION_1,
    VIRTIO_MSI_NO_VECTOR,
    VIRTIO_RING_F_EVENT_IDX,
    CommonCfg,
    DeviceStatus,
)
from ._virtq_direct import DirectDeviceQueue
from ._virtqueue import DeviceQueue, VirtqueueError

M32 = 0xFFFF_FFFF
#: QEMU's VIRTIO_QUEUE_MAX: queue_select values at or above it are ignored
VIRTIO_QUEUE_MAX = 1024

Work = Coroutine[Any, Any, None]

#: a fault hook on the used-buffer interrupt path: called with the queue and the call that raises the
#: INTx line; the hook raises it (now, later or never).  Hooks installed later see the interrupt first.
UsedIrqHook = Callable[[int, Callable[[], None]], None]


class VirtioBackend(Protocol):
    """A virtio device model (QEMU ``VirtioDeviceClass``) as the transport sees it.

    A backend sets ``device_id`` and ``queue_max_sizes`` and implements the
    methods; subclassing this Protocol gives the no-op ``set_status`` (QEMU
    ``VirtioDeviceClass.set_status``), which the transport calls on every accepted
    status write, twice for a reset as QEMU does.
    """

    device_id: int
    queue_max_sizes: tuple[int, ...]

    def device_features(self) -> int:
        """64-bit feature bits offered (device and transport bits)."""
        raise NotImplementedError

    def config_read(self, offset: int, size: int) -> int:
        raise NotImplementedError

    def config_write(self, offset: int, size: int, value: int) -> None:
        raise NotImplementedError

    def queue_notify(self, index: int) -> Work | None:
        """A kick of queue ``index``; may return the work to run inside the vCPU's MMIO exit."""
        raise NotImplementedError

    def reset(self) -> None:
        """Device reset (the driver wrote 0 to device_status)."""
        raise NotImplementedError

    def attached(self, transport: VirtioPciTransport) -> None:
        """Called once by the transport's constructor."""
        raise NotImplementedError

    def set_status(self, status: int) -> None:
        """The driver wrote ``status`` (QEMU ``k->set_status``, e.g. virtio_iommu_set_status)."""


class _QueueRegs:
    """Per-queue registers of the common configuration (QEMU ``VirtIOPCIQueue`` + vring.num)."""

    __slots__ = ("max_size", "size", "enabled", "reset", "desc", "driver", "device")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.size = max_size
        self.enabled = 0
        self.reset = 0
        self.desc = 0
        self.driver = 0
        self.device = 0


_ADDR_REGS = {
    CommonCfg.QUEUE_DESC_LO: ("desc", 0), CommonCfg.QUEUE_DESC_HI: ("desc", 32),
    CommonCfg.QUEUE_DRIVER_LO: ("driver", 0), CommonCfg.QUEUE_DRIVER_HI: ("driver", 32),
    CommonCfg.QUEUE_DEVICE_LO: ("device", 0), CommonCfg.QUEUE_DEVICE_HI: ("device", 32),
}


def _mask(size: int) -> int:
    return (1 << (8 * size)) - 1


class VirtioPciTransport:
    """The modern virtio-pci register file of one device, and its queues, status and interrupts."""

    notify_off_multiplier = 4

    def __init__(self, sim: Simulator, memory: GuestMemory, backend: VirtioBackend, name: str, *,
                 bql: Lock | None = None) -> None:
        self.sim = sim
        self.memory = memory
        self.backend = backend
        self.name = name
        self._trace = sim.tracer(name)
        #: QEMU's big lock (the machine's); None for a transport built alone
        self.bql = bql
        #: INTx level callback, set by the PCI function
        self.on_irq: Callable[[bool], None] | None = None
        #: fault hooks on used-buffer interrupts (see UsedIrqHook); empty on a healthy machine
        self.used_irq_hooks: list[UsedIrqHook] = []
        self.status = 0
        self.driver_features = 0
        self.device_feature_select = 0
        self.driver_feature_select = 0
        self.queue_select = 0
        self.config_msix_vector = VIRTIO_MSI_NO_VECTOR
        self.queue_msix_vector = VIRTIO_MSI_NO_VECTOR  # of every queue: there is no MSI-X
        self.config_generation = 0
        self.isr = 0
        #: QEMU ``vdev->broken``: set by needs_reset(), cleared by reset; kicks are ignored meanwhile
        self.broken = False
        self._regs = [_QueueRegs(n) for n in backend.queue_max_sizes]
        self._queues: list[DeviceQueue | None] = [None] * len(self._regs)
        backend.attached(self)

    def __repr__(self) -> str:
        return f"VirtioPciTransport({self.name!r}, status={self.status:#x}, broken={self.broken})"

    # -- state queries ----------------------------------------------------------------
    @property
    def num_queues(self) -> int:
        return len(self._regs)

    def offered_features(self) -> int:
        """What device_feature presents: the backend's bits, plus VERSION_1 (QEMU virtio_pci_pre_plugged)."""
        return self.backend.device_features() | (1 << VIRTIO_F_VERSION_1)

    def has_feature(self, bit: int) -> bool:
        """Was feature ``bit`` offered and accepted? (QEMU ``virtio_vdev_has_feature``)."""
        return bool(self.driver_features & self.offered_features() & (1 << bit))

    @property
    def driver_ok(self) -> bool:
        return bool(self.status & DeviceStatus.DRIVER_OK)

    def queue(self, index: int) -> DeviceQueue | None:
        """The enabled device-side queue ``index``, or None."""
        return self._queues[index] if 0 <= index < len(self._queues) else None

    # -- common configuration -----------------------------------------------------------
    def common_read(self, off: int, size: int) -> int:
        """Read a common-configuration register (accesses wider than 4 bytes are split, as QEMU's memory core does)."""
        if size > 4:
            return self.common_read(off, 4) | self.common_read(off + 4, size - 4) << 32
        return self._common_value(off) & _mask(size)

    def _common_value(self, off: int) -> int:
        regs = self._regs[self.queue_select] if self.queue_select < len(self._regs) else None
        if off in _ADDR_REGS:
            if regs is None:
                return 0
            attr, shift = _ADDR_REGS[CommonCfg(off)]
            return int(getattr(regs, attr)) >> shift & M32
        match off:
            case CommonCfg.DEVICE_FEATURE_SELECT:
                return self.device_feature_select
            case CommonCfg.DEVICE_FEATURE:  # V-CMN-2: 0 beyond bit 63
                sel = self.device_feature_select
                return self.offered_features() >> (32 * sel) & M32 if sel < 2 else 0
            case CommonCfg.DRIVER_FEATURE_SELECT:
                return self.driver_feature_select
            case CommonCfg.DRIVER_FEATURE:
                sel = self.driver_feature_select
                return self.driver_features >> (32 * sel) & M32 if sel < 2 else 0
            case CommonCfg.CONFIG_MSIX_VECTOR:
                return self.config_msix_vector
            case CommonCfg.NUM_QUEUES:
                return len(self._regs)
            case CommonCfg.DEVICE_STATUS:
                return self.status
            case CommonCfg.CONFIG_GENERATION:
                return self.config_generation
            case CommonCfg.QUEUE_SELECT:
                return self.queue_select
            case CommonCfg.QUEUE_SIZE:  # V-CMN-5: 0 for a queue that does not exist
                return regs.size if regs else 0
            case CommonCfg.QUEUE_MSIX_VECTOR:
                return self.queue_msix_vector
            case CommonCfg.QUEUE_ENABLE:
                return regs.enabled if regs else 0
            case CommonCfg.QUEUE_NOTIFY_OFF:  # "simply map queues in order" (QEMU)
                return self.queue_select if regs else 0
            case CommonCfg.QUEUE_RESET:
                return regs.reset if regs else 0
        return 0

    def common_write(self, off: int, size: int, value: int) -> Coroutine[Any, Any, None] | None:
        """Write a common-configuration register; writes the device does not take are traced.

        QEMU takes the big lock for every MMIO write; a device handler that runs inside another
        vCPU's exit holds it (``virtio_iommu_handle_command``).  A write arriving meanwhile waits for
        the machine's BQL (returned as in-exit work), so a reset cannot tear the queues out from under
        a handler that is still popping them.
        """
        lock = self.bql
        if lock is not None and lock.locked():
            return self._common_write_locked(lock, off, size, value)
        self._common_write(off, size, value)
        return None

    async def _common_write_locked(self, lock: Lock, off: int, size: int, value: int) -> None:
        async with lock:
            self._common_write(off, size, value)

    def _common_write(self, off: int, size: int, value: int) -> None:
        if size > 4:
            self._common_write(off, 4, value & M32)
            self._common_write(off + 4, size - 4, value >> 32)
            return
        value = int(value) & _mask(size)
        regs = self._regs[self.queue_select] if self.queue_select < len(self._regs) else None
        why = None
        if off in _ADDR_REGS:
            if regs is None:
                why = "no such queue"
            else:
                attr, shift = _ADDR_REGS[CommonCfg(off)]
                old = int(getattr(regs, attr))
                setattr(regs, attr, old & ~(M32 << shift) | value << shift)
        else:
            match off:
                case CommonCfg.DEVICE_FEATURE_SELECT:
                    self.device_feature_select = value
                case CommonCfg.DRIVER_FEATURE_SELECT:
                    self.driver_feature_select = value
                case CommonCfg.DRIVER_FEATURE:
                    why = self._write_driver_features(value)
                case CommonCfg.CONFIG_MSIX_VECTOR:  # no MSI-X: every mapping fails (V-MSX-1)
                    self.config_msix_vector = VIRTIO_MSI_NO_VECTOR
                case CommonCfg.DEVICE_STATUS:
                    self._set_status(value & 0xFF)
                case CommonCfg.QUEUE_SELECT:
                    if value < VIRTIO_QUEUE_MAX:
                        self.queue_select = value
                    else:
                        why = f"queue_select beyond {VIRTIO_QUEUE_MAX}"
                case CommonCfg.QUEUE_SIZE:
                    if regs is None:
                        why = "no such queue"
                    elif not 0 < value <= regs.max_size or value & (value - 1):  # D-CMN-2
                        why = f"queue size must be a power of 2 no larger than {regs.max_size}"
                    else:
                        regs.size = value
                case CommonCfg.QUEUE_MSIX_VECTOR:
                    self.queue_msix_vector = VIRTIO_MSI_NO_VECTOR
                case CommonCfg.QUEUE_ENABLE:
                    why = self._write_queue_enable(regs, value)
                case CommonCfg.QUEUE_RESET:
                    why = self._write_queue_reset(regs, value)
                case _:
                    why = "read-only or reserved register"
        if why is not None:
            try:
                reg = CommonCfg(off).name.lower()
            except ValueError:
                reg = f"{off:#x}"
            self._trace("virtio_pci_common_write_ignored", reg=reg, value=value, reason=why)

    def _write_driver_features(self, value: int) -> str | None:
        sel = self.driver_feature_select
        if sel >= 2:
            return "no feature bits beyond 63"
        if self.status & DeviceStatus.FEATURES_OK:  # "no new feature bits after FEATURES_OK"
            return "features already accepted (FEATURES_OK)"
        shift = 32 * sel
        self.driver_features = self.driver_features & ~(M32 << shift) | value << shift
        return None

    def _write_queue_enable(self, regs: _QueueRegs | None, value: int) -> str | None:
        if regs is None:
            return "no such queue"
        if value != 1:  # D-CMN-3: the driver never writes 0; QEMU treats it as an error
            self.needs_reset(f"wrong value for queue_enable {value:x}")
            return None
        if regs.enabled:
            return "queue already enabled"
        index = self.queue_select
        try:
            event_idx = self.has_feature(VIRTIO_RING_F_EVENT_IDX)
            on_empty = self.has_feature(VIRTIO_F_NOTIFY_ON_EMPTY)
            ring = self.memory.direct_rings.get(regs.desc)  # the driver offers the ring at the transaction level
            if ring is None:
                queue = DeviceQueue(self.memory, index, regs.size, regs.desc, regs.driver, regs.device, event_idx,
                                    notify_on_empty=on_empty, initiator=self.name, tracer=self._trace)
            else:
                queue = DirectDeviceQueue(ring, self.memory, index, regs.size, regs.desc, regs.driver, regs.device,
                                          event_idx, notify_on_empty=on_empty, initiator=self.name,
                                          tracer=self._trace)
        except VirtqueueError as err:  # virtio_init_region_cache: "Cannot map desc/used/avail"
            self.needs_reset(err.reason)
            return None
        regs.enabled = 1
        regs.reset = 0
        self._queues[index] = queue
        self._trace("virtio_queue_enable", queue=index, size=regs.size, desc=regs.desc, driver=regs.driver,
                    device=regs.device, event_idx=queue.event_idx)
        return None

    def _write_queue_reset(self, regs: _QueueRegs | None, value: int) -> str | None:
        if regs is None:
            return "no such queue"
        if value != 1:
            return "only 1 starts a queue reset"
        if not self.has_feature(VIRTIO_F_RING_RESET):
            return "VIRTIO_F_RING_RESET not negotiated"
        # V-CMN-6: the reset completes at once, so queue_reset and queue_enable both read 0 again
        index = self.queue_select
        self._regs[index] = _QueueRegs(regs.max_size)
        self._queues[index] = None
        self._trace("virtio_queue_reset", queue=index)
        return None

    # -- status and reset ---------------------------------------------------------------
    def _set_status(self, value: int) -> None:
        """QEMU ``virtio_set_status``, then ``virtio_pci_reset`` if the result is 0."""
        self._trace("virtio_set_status", status=value)
        if value & DeviceStatus.FEATURES_OK and not self.status & DeviceStatus.FEATURES_OK:
            refusal = self._feature_refusal()
            if refusal is not None:  # the device leaves FEATURES_OK clear; the driver sees it on re-read
                self._trace("virtio_features_refused", features=self.driver_features, reason=refusal)
                return
        self.backend.set_status(value)
        self.status = value
        if value == 0:
            self.reset()

    def _feature_refusal(self) -> str | None:
        unoffered = self.driver_features & ~self.offered_features()
        if unoffered:
            return f"driver accepted features the device does not offer: {unoffered:#x}"
        if not self.driver_features >> VIRTIO_F_VERSION_1 & 1:
            return "driver did not accept VIRTIO_F_VERSION_1"
        return None

    def reset(self) -> None:
        """Device reset (QEMU ``virtio_reset`` + ``virtio_pci_reset``): status 0, queues gone, INTx low."""
        self._trace("virtio_set_status", status=0)
        self.backend.set_status(0)
        self.backend.reset()
        self.status = 0
        self.broken = False
        self.driver_features = 0
        self.device_feature_select = 0
        self.driver_feature_select = 0
        self.queue_select = 0
        self.config_msix_vector = VIRTIO_MSI_NO_VECTOR
        self.queue_msix_vector = VIRTIO_MSI_NO_VECTOR
        self.isr = 0
        self._regs = [_QueueRegs(r.max_size) for r in self._regs]
        self._queues = [None] * len(self._regs)
        self._trace("virtio_reset")
        if self.on_irq is not None:
            self.on_irq(False)

    # -- ISR, device config, notifications -----------------------------------------------
    def isr_read(self, off: int, size: int) -> int:
        """Read-to-clear ISR status; deasserts INTx (QEMU ``virtio_pci_isr_read``)."""
        value = self.isr
        self.isr = 0
        if self.on_irq is not None:
            self.on_irq(False)
        return value & _mask(size)

    def device_cfg_read(self, off: int, size: int) -> int:
        if size > 4:
            return self.device_cfg_read(off, 4) | self.device_cfg_read(off + 4, size - 4) << 32
        return self.backend.config_read(off, size) & _mask(size)

    def device_cfg_write(self, off: int, size: int, value: int) -> None:
        if size > 4:
            self.device_cfg_write(off, 4, value & M32)
            self.device_cfg_write(off + 4, size - 4, value >> 32)
            return
        self.backend.config_write(off, size, value & _mask(size))

    def notify_write(self, off: int, size: int, value: int) -> Work | None:
        """A doorbell write: queue = off / notify_off_multiplier (QEMU ``virtio_pci_notify_write``)."""
        index = off // self.notify_off_multiplier
        if self.sim.tracing:
            self._trace("virtio_pci_notify_write", offset=off, value=value, size=size)
        if index >= len(self._queues):
            why = "no such queue"
        elif self.broken:
            why = "device is broken (NEEDS_RESET)"
        elif not self.status & DeviceStatus.DRIVER_OK:
            why = "DRIVER_OK not set"
        elif self._queues[index] is None:
            why = "queue not enabled"
        else:
            if self.sim.tracing:
                self._trace("virtio_queue_notify", queue=index)
            try:
                work = self.backend.queue_notify(index)
            except VirtqueueError as err:
                self.needs_reset(err.reason)
                return None
            return None if work is None else self._guarded(work)
        self._trace("virtio_queue_notify_ignored", queue=index, reason=why)
        return None

    async def _guarded(self, work: Work) -> None:
        try:
            await work
        except VirtqueueError as err:
            self.needs_reset(err.reason)

    def notify_used(self, index: int) -> None:
        """After pushing used entries: interrupt if the queue wants it (QEMU ``virtio_notify``)."""
        queue = self.queue(index)
        if queue is None or not queue.should_notify():
            return
        self._trace("virtio_notify", queue=index)
        if not self.used_irq_hooks:
            self._interrupt(ISR_QUEUE)
            return
        self.isr |= ISR_QUEUE
        self._hooked_irq(index, tuple(self.used_irq_hooks))

    def _hooked_irq(self, index: int, hooks: tuple[UsedIrqHook, ...]) -> None:
        """Offer the used-buffer interrupt of queue ``index`` to the newest hook; the oldest one's raise is the line."""
        if not hooks:
            if self.on_irq is not None:
                self.on_irq(True)
            return
        hooks[-1](index, lambda: self._hooked_irq(index, hooks[:-1]))

    def config_changed(self) -> None:
        """The device configuration changed: new generation, and a config interrupt once DRIVER_OK."""
        self.config_generation = (self.config_generation + 1) & 0xFF
        if self.status & DeviceStatus.DRIVER_OK:
            self._trace("virtio_notify_config")
            # QEMU virtio_notify_config sets ISR 0x3 (queue and config bits); Linux vp_interrupt handles both
            self._interrupt(ISR_QUEUE | ISR_CONFIG)

    def needs_reset(self, reason: str) -> None:
        """The device is broken (QEMU ``virtio_error``): NEEDS_RESET, config interrupt, kicks ignored until reset."""
        self._trace("virtio_error", reason=reason)
        self.broken = True
        self.status = int(self.status | DeviceStatus.NEEDS_RESET)
        if self.status & DeviceStatus.DRIVER_OK:  # V-STA-1
            self.config_changed()

    def _interrupt(self, bits: int) -> None:
        self.isr |= bits
        if self.on_irq is not None:
            self.on_irq(True)
