"""The guest's virtio-pci modern driver core, on top of a register-access object.

Follows Linux drivers/virtio/virtio.c (``virtio_add_status``, ``virtio_dev_probe``,
``virtio_features_ok``), drivers/virtio/virtio_pci_modern_dev.c
(``vp_modern_get_features``, ``vp_modern_set_features``,
``vp_modern_get_queue_size``, ``vp_modern_queue_address``,
``vp_modern_get_queue_notify_off``, ``vp_modern_set_queue_enable``,
``vp_modern_generation``) and drivers/virtio/virtio_pci_modern.c (``vp_reset``,
``setup_vq``, ``vp_get``, ``vp_notify``), access for access: every Linux
register read or write is one ``regs`` call, so the MMIO exits cost what they
cost on the real machine.

``regs`` knows where the capabilities are (PCI discovery, ``vp_modern_probe``):
``read(cfg, offset, size)`` / ``write(cfg, offset, size, value)`` with cfg one
of "common", "isr", "device", "notify".  The notify offset multiplier comes from
the notify capability and is passed in.
"""

from __future__ import annotations

from typing import Protocol

from .._memory import GuestMemory
from .._virtq_wire import (
    VIRTIO_F_ACCESS_PLATFORM,
    VIRTIO_F_RING_RESET,
    VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
    CommonCfg,
    DeviceStatus,
)
from ._virtqueue_driver import DirectDriverQueue, DriverQueue

#: transport bits Linux keeps when offered (``vring_transport_features``), minus RING_PACKED:
#: this driver core only builds split rings
TRANSPORT_FEATURES = sum(
    1 << b
    for b in (VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_RING_F_EVENT_IDX, VIRTIO_F_VERSION_1, VIRTIO_F_ACCESS_PLATFORM,
              VIRTIO_F_RING_RESET)
)
#: bound on re-reads while the device config changes under us (Linux loops without one)
CONFIG_RETRIES = 16
#: bound on status polls after a reset (Linux ``vp_reset`` sleeps 1 ms per poll, unbounded)
RESET_POLLS = 1000


class VirtioRegs(Protocol):
    """Register access to one virtio-pci modern device (the four capability regions)."""

    async def read(self, cfg: str, offset: int, size: int) -> int: ...

    async def write(self, cfg: str, offset: int, size: int, value: int) -> None: ...


class VirtioDriverError(Exception):
    """Device initialisation failed; the message is what Linux would log."""


class VirtioModernDevice:
    """Linux's ``virtio_pci_device`` (modern) for one function: status, features, queues, config."""

    def __init__(self, regs: VirtioRegs, memory: GuestMemory, *, notify_off_multiplier: int) -> None:
        self.regs = regs
        self.memory = memory
        self.notify_off_multiplier = notify_off_multiplier
        #: the negotiated feature bits (``vdev->features``)
        self.features = 0
        self._notify_offsets: dict[int, int] = {}

    async def _common_read(self, reg: CommonCfg, size: int) -> int:
        return await self.regs.read("common", int(reg), size)

    async def _common_write(self, reg: CommonCfg, size: int, value: int) -> None:
        await self.regs.write("common", int(reg), size, value)

    # -- status -------------------------------------------------------------------------
    async def get_status(self) -> int:
        return await self._common_read(CommonCfg.DEVICE_STATUS, 1)

    async def add_status(self, bits: int) -> None:
        """``virtio_add_status``: read the status, write it back with ``bits`` added."""
        await self._common_write(CommonCfg.DEVICE_STATUS, 1, int(await self.get_status() | bits))

    async def reset(self) -> None:
        """``vp_reset``: write 0, then wait until the device reads back 0 (D-CMN-3)."""
        await self._common_write(CommonCfg.DEVICE_STATUS, 1, 0)
        for _ in range(RESET_POLLS):
            if await self.get_status() == 0:
                self.features = 0
                self._notify_offsets.clear()
                return
        raise VirtioDriverError(f"virtio: device did not finish its reset after {RESET_POLLS} polls")

    async def fail(self) -> None:
        """Give up on the device (probe failure: ``virtio_add_status(dev, FAILED)``)."""
        await self.add_status(DeviceStatus.FAILED)

    async def driver_ok(self) -> None:
        """``virtio_device_ready``: add DRIVER_OK."""
        await self.add_status(DeviceStatus.DRIVER_OK)

    # -- features -----------------------------------------------------------------------
    async def device_features(self) -> int:
        """``vp_modern_get_features``: both 32-bit words through device_feature_select."""
        await self._common_write(CommonCfg.DEVICE_FEATURE_SELECT, 4, 0)
        low = await self._common_read(CommonCfg.DEVICE_FEATURE, 4)
        await self._common_write(CommonCfg.DEVICE_FEATURE_SELECT, 4, 1)
        return low | await self._common_read(CommonCfg.DEVICE_FEATURE, 4) << 32

    async def negotiate(self, driver_features: int) -> int:
        """ACKNOWLEDGE, DRIVER, accept ``driver_features & device features``, FEATURES_OK and check it stuck.

        ``driver_features`` is everything the driver understands: its feature
        table plus transport bits (e.g. ``| TRANSPORT_FEATURES``).  Returns the
        accepted bits; on refusal sets FAILED and raises VirtioDriverError.
        """
        await self.add_status(DeviceStatus.ACKNOWLEDGE)
        await self.add_status(DeviceStatus.DRIVER)
        offered = await self.device_features()
        accepted = driver_features & offered
        if not accepted >> VIRTIO_F_VERSION_1 & 1:  # vp_finalize_features
            await self.fail()
            raise VirtioDriverError("virtio: device uses modern interface but does not have VIRTIO_F_VERSION_1")
        # vp_modern_set_features
        await self._common_write(CommonCfg.DRIVER_FEATURE_SELECT, 4, 0)
        await self._common_write(CommonCfg.DRIVER_FEATURE, 4, accepted & 0xFFFF_FFFF)
        await self._common_write(CommonCfg.DRIVER_FEATURE_SELECT, 4, 1)
        await self._common_write(CommonCfg.DRIVER_FEATURE, 4, accepted >> 32)
        # virtio_features_ok
        await self.add_status(DeviceStatus.FEATURES_OK)
        if not await self.get_status() & DeviceStatus.FEATURES_OK:
            await self.fail()
            raise VirtioDriverError(f"virtio: device refuses features: {accepted:x}")
        self.features = accepted
        return accepted

    # -- queues -------------------------------------------------------------------------
    async def setup_queue(self, index: int, size: int, desc: int, avail: int, used: int, *,
                          direct: bool = False) -> DriverQueue:
        """``setup_vq`` + enable: check the queue, size it, zero and program the rings, enable it.
        ``direct``: the transaction-level ring (``DirectDriverQueue``, ``MachineConfig.detail`` fast)."""
        num_queues = await self._common_read(CommonCfg.NUM_QUEUES, 2)
        if index >= num_queues:
            raise VirtioDriverError(f"virtio: queue {index} does not exist ({num_queues} queues)")
        await self._common_write(CommonCfg.QUEUE_SELECT, 2, index)
        num = await self._common_read(CommonCfg.QUEUE_SIZE, 2)
        await self._common_write(CommonCfg.QUEUE_SELECT, 2, index)
        if not num or await self._common_read(CommonCfg.QUEUE_ENABLE, 2):
            raise VirtioDriverError(f"virtio: queue {index} is unavailable or already enabled")
        if num & (num - 1):
            raise VirtioDriverError(f"virtio: bad queue size {num}")
        if size > num:
            raise VirtioDriverError(f"virtio: queue {index} holds at most {num} entries, not {size}")
        queue = (DirectDriverQueue if direct else DriverQueue)(
            self.memory, size, desc, avail, used, event_idx=bool(self.features >> VIRTIO_RING_F_EVENT_IDX & 1))
        await self._common_write(CommonCfg.QUEUE_SELECT, 2, index)
        await self._common_write(CommonCfg.QUEUE_SIZE, 2, size)
        # vp_modern_queue_address: each 64-bit address as two halves, low first
        await self._common_write(CommonCfg.QUEUE_SELECT, 2, index)
        for lo, addr in ((CommonCfg.QUEUE_DESC_LO, desc), (CommonCfg.QUEUE_DRIVER_LO, avail),
                         (CommonCfg.QUEUE_DEVICE_LO, used)):
            await self._common_write(lo, 4, addr & 0xFFFF_FFFF)
            await self._common_write(CommonCfg(lo + 4), 4, addr >> 32)
        # vp_modern_map_vq_notify
        await self._common_write(CommonCfg.QUEUE_SELECT, 2, index)
        self._notify_offsets[index] = await self._common_read(CommonCfg.QUEUE_NOTIFY_OFF, 2) * self.notify_off_multiplier
        # vp_modern_set_queue_enable (vp_modern_find_vqs, before DRIVER_OK)
        await self._common_write(CommonCfg.QUEUE_SELECT, 2, index)
        await self._common_write(CommonCfg.QUEUE_ENABLE, 2, 1)
        return queue

    async def notify(self, index: int) -> None:
        """``vp_notify``: write the queue index to its doorbell."""
        if index not in self._notify_offsets:
            raise VirtioDriverError(f"virtio: queue {index} was not set up")
        await self.regs.write("notify", self._notify_offsets[index], 2, index)

    # -- interrupts and config ----------------------------------------------------------
    async def read_isr(self) -> int:
        """``vp_interrupt``'s read of the ISR byte (clears it, lowers INTx)."""
        return await self.regs.read("isr", 0, 1)

    async def config_read(self, off: int, size: int) -> int:
        """Device-config read (``vp_get``); an 8-byte field is two 32-bit reads, retried while
        config_generation changes (``__virtio_cread_many``)."""
        if size != 8:
            return await self.regs.read("device", off, size)
        for _ in range(CONFIG_RETRIES):
            gen = await self._common_read(CommonCfg.CONFIG_GENERATION, 1)
            value = await self.regs.read("device", off, 4) | await self.regs.read("device", off + 4, 4) << 32
            if await self._common_read(CommonCfg.CONFIG_GENERATION, 1) == gen:
                return value
        raise VirtioDriverError(f"virtio: config at {off:#x} kept changing over {CONFIG_RETRIES} reads")
