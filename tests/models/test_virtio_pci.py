"""The modern virtio-pci transport and the guest's driver core on top of it."""

import pytest

from models._memory import GuestMemory
from models._virtio_pci import VirtioBackend, VirtioPciTransport
from models._virtq_wire import (
    ISR_CONFIG,
    ISR_QUEUE,
    VIRTIO_F_RING_RESET,
    VIRTIO_F_VERSION_1,
    VIRTIO_MSI_NO_VECTOR,
    VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
    CommonCfg,
    DeviceStatus,
)
from models._virtqueue import VirtqueueError
from models.guest._virtio_driver import TRANSPORT_FEATURES, VirtioDriverError, VirtioModernDevice
from models.guest._virtqueue_driver import DriverQueue
from sim import ListSink, Simulator

RAM = 1 << 30
DESC, AVAIL, USED = 0x10000, 0x11000, 0x12000
BUF = 0x100000
F_DEMO = 1 << 3  # a device-specific bit the echo device offers
OFFERED = F_DEMO | 1 << VIRTIO_RING_F_INDIRECT_DESC | 1 << VIRTIO_RING_F_EVENT_IDX | 1 << VIRTIO_F_VERSION_1
ACK_DRIVER = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER


class EchoDevice(VirtioBackend):
    """A test device: two queues; a kick on queue 0 answers each chain with its readable bytes reversed."""

    device_id = 42
    queue_max_sizes = (8, 4)

    def __init__(self, offered: int = OFFERED) -> None:
        self.offered = offered
        self.config = bytearray(range(16))
        self.log: list[str] = []
        self.transport: VirtioPciTransport | None = None
        self.work = None

    def device_features(self) -> int:
        return self.offered

    def config_read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.config[offset : offset + size], "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        self.config[offset : offset + size] = value.to_bytes(size, "little")

    def attached(self, transport: VirtioPciTransport) -> None:
        self.transport = transport

    def reset(self) -> None:
        self.log.append("reset")

    def set_status(self, status: int) -> None:
        self.log.append(f"status={status}")

    def queue_notify(self, index: int):
        self.log.append(f"kick {index}")
        if self.work is not None:
            return self.work
        t = self.transport
        q = t.queue(index)
        while (chain := q.pop()) is not None:
            q.push(chain, chain.write(chain.read()[::-1]))
            t.notify_used(index)
        return None


class TransportRegs:
    """The four capability regions of the test function, as seen by the guest driver core."""

    def __init__(self, transport: VirtioPciTransport) -> None:
        self.t = transport
        self.log: list[tuple[str, str, int, int]] = []

    async def read(self, cfg: str, offset: int, size: int) -> int:
        t = self.t
        value = {"common": t.common_read, "isr": t.isr_read, "device": t.device_cfg_read}[cfg](offset, size)
        self.log.append(("r", cfg, offset, value))
        return value

    async def write(self, cfg: str, offset: int, size: int, value: int) -> None:
        self.log.append(("w", cfg, offset, value))
        if cfg == "common":
            self.t.common_write(offset, size, value)
        elif cfg == "device":
            self.t.device_cfg_write(offset, size, value)
        elif cfg == "notify":
            work = self.t.notify_write(offset, size, value)
            if work is not None:
                await work


def make(offered: int = OFFERED):
    sink = ListSink()
    sim = Simulator(sinks=[sink])
    mem = GuestMemory(RAM)
    dev = EchoDevice(offered)
    t = VirtioPciTransport(sim, mem, dev, "echo")
    irq: list[bool] = []
    t.on_irq = irq.append
    return t, dev, mem, sink, irq


def events(sink, *names):
    return [(r.event, r.fields) for r in sink.records if not names or r.event in names]


def cw(t, reg, value, size=None):
    t.common_write(reg, size or _width(reg), value)


def cr(t, reg, size=None):
    return t.common_read(reg, size or _width(reg))


def _width(reg):
    if reg in (CommonCfg.DEVICE_STATUS, CommonCfg.CONFIG_GENERATION):
        return 1
    if reg <= CommonCfg.DRIVER_FEATURE or CommonCfg.QUEUE_DESC_LO <= reg <= CommonCfg.QUEUE_DEVICE_HI:
        return 4
    return 2


def accept(t, features):
    cw(t, CommonCfg.DRIVER_FEATURE_SELECT, 0)
    cw(t, CommonCfg.DRIVER_FEATURE, features & 0xFFFF_FFFF)
    cw(t, CommonCfg.DRIVER_FEATURE_SELECT, 1)
    cw(t, CommonCfg.DRIVER_FEATURE, features >> 32)


def enable_queue(t, index=0, size=8):
    cw(t, CommonCfg.QUEUE_SELECT, index)
    cw(t, CommonCfg.QUEUE_SIZE, size)
    for lo, addr in ((CommonCfg.QUEUE_DESC_LO, DESC), (CommonCfg.QUEUE_DRIVER_LO, AVAIL),
                     (CommonCfg.QUEUE_DEVICE_LO, USED)):
        cw(t, lo, addr)
    cw(t, CommonCfg.QUEUE_ENABLE, 1)


def bring_up(t, features=OFFERED, driver_ok=True):
    """Reset, negotiate ``features``, enable queue 0; returns the driver's view of it."""
    cw(t, CommonCfg.DEVICE_STATUS, 0)
    cw(t, CommonCfg.DEVICE_STATUS, ACK_DRIVER)
    accept(t, features)
    cw(t, CommonCfg.DEVICE_STATUS, ACK_DRIVER | DeviceStatus.FEATURES_OK)
    q = DriverQueue(t.memory, 8, DESC, AVAIL, USED, bool(features >> VIRTIO_RING_F_EVENT_IDX & 1))
    enable_queue(t)
    if driver_ok:
        cw(t, CommonCfg.DEVICE_STATUS, ACK_DRIVER | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK)
    return q


# -- features and status ----------------------------------------------------------------------------
def test_device_presents_offered_features_through_the_select_register():
    """device_feature shows bits 0-31 for select 0, 32-63 for select 1 (VERSION_1 always offered)."""
    t, *_ = make(offered=F_DEMO)
    words = []
    for sel in (0, 1):
        cw(t, CommonCfg.DEVICE_FEATURE_SELECT, sel)
        words.append(cr(t, CommonCfg.DEVICE_FEATURE))

    assert words == [F_DEMO, 1]


def test_device_feature_reads_zero_beyond_bit_63():
    """V-CMN-2: the device presents 0 for any select value past the defined bits."""
    t, *_ = make()
    cw(t, CommonCfg.DEVICE_FEATURE_SELECT, 2)

    assert cr(t, CommonCfg.DEVICE_FEATURE) == 0


def test_device_presents_the_driver_features_written():
    """V-CMN-2: driver_feature reads back what the driver wrote, word by word."""
    t, *_ = make()
    accept(t, OFFERED)
    words = []
    for sel in (0, 1):
        cw(t, CommonCfg.DRIVER_FEATURE_SELECT, sel)
        words.append(cr(t, CommonCfg.DRIVER_FEATURE))

    assert (words, t.driver_features) == ([OFFERED & 0xFFFF_FFFF, 1], OFFERED)


def test_device_sets_features_ok_only_for_offered_subset():
    """A subset of the offered bits is accepted: FEATURES_OK sticks and the status reads it back."""
    t, dev, *_ = make()
    cw(t, CommonCfg.DEVICE_STATUS, ACK_DRIVER)
    accept(t, 1 << VIRTIO_F_VERSION_1 | F_DEMO)
    cw(t, CommonCfg.DEVICE_STATUS, ACK_DRIVER | DeviceStatus.FEATURES_OK)

    assert cr(t, CommonCfg.DEVICE_STATUS) == ACK_DRIVER | DeviceStatus.FEATURES_OK
    assert (t.has_feature(3), t.has_feature(VIRTIO_RING_F_EVENT_IDX)) == (True, False)


def test_device_refuses_features_ok_when_unoffered_features_are_accepted():
    """Spec 3.1.1: the device may refuse the feature set; the driver's re-read finds FEATURES_OK clear."""
    t, dev, _, sink, _ = make()
    cw(t, CommonCfg.DEVICE_STATUS, ACK_DRIVER)
    accept(t, OFFERED | 1 << 5)
    cw(t, CommonCfg.DEVICE_STATUS, ACK_DRIVER | DeviceStatus.FEATURES_OK)

    assert cr(t, CommonCfg.DEVICE_STATUS) == ACK_DRIVER
    assert events(sink, "virtio_features_refused")[0][1]["reason"] == (
        "driver accepted features the device does not offer: 0x20")
    assert dev.log == ["status=3"]


def test_device_refuses_features_ok_without_version_1():
    """A modern-only device cannot work with a driver that did not accept VIRTIO_F_VERSION_1."""
    t, *_ = make()
    cw(t, CommonCfg.DEVICE_STATUS, ACK_DRIVER)
    accept(t, F_DEMO)
    cw(t, CommonCfg.DEVICE_STATUS, ACK_DRIVER | DeviceStatus.FEATURES_OK)

    assert cr(t, CommonCfg.DEVICE_STATUS) == ACK_DRIVER


def test_driver_feature_writes_after_features_ok_are_ignored():
    """content.tex: no new feature bits may be accepted after FEATURES_OK."""
    t, _, _, sink, _ = make()
    bring_up(t, OFFERED, driver_ok=False)
    cw(t, CommonCfg.DRIVER_FEATURE_SELECT, 0)
    cw(t, CommonCfg.DRIVER_FEATURE, 0)

    assert t.driver_features == OFFERED
    assert events(sink, "virtio_pci_common_write_ignored")[-1][1]["reason"] == (
        "features already accepted (FEATURES_OK)")


def test_writing_zero_status_resets_the_device_and_all_queues():
    """V-CMN-4: status 0 resets the device; status, queue_enable and features read 0 afterwards."""
    t, dev, _, sink, irq = make()
    bring_up(t)
    dev.log.clear()
    irq.clear()

    cw(t, CommonCfg.DEVICE_STATUS, 0)

    cw(t, CommonCfg.QUEUE_SELECT, 0)
    assert (cr(t, CommonCfg.DEVICE_STATUS), cr(t, CommonCfg.QUEUE_ENABLE), t.driver_features) == (0, 0, 0)
    assert (t.queue(0), cr(t, CommonCfg.QUEUE_SIZE), cr(t, CommonCfg.QUEUE_DESC_LO)) == (None, 8, 0)
    assert dev.log == ["status=0", "status=0", "reset"]  # QEMU: virtio_set_status twice, then k->reset
    assert irq == [False]


def test_status_trace_follows_the_driver_dance():
    """Every status write is traced as virtio_set_status with the byte written."""
    t, _, _, sink, _ = make()
    bring_up(t)

    assert [f["status"] for e, f in events(sink, "virtio_set_status")] == [0, 0, 3, 11, 15]


# -- queues ------------------------------------------------------------------------------------------
def test_num_queues_and_queue_size_read_the_device_maximums():
    """num_queues is the device's queue count; queue_size reads each queue's maximum after reset."""
    t, *_ = make()
    sizes = []
    for index in (0, 1):
        cw(t, CommonCfg.QUEUE_SELECT, index)
        sizes.append(cr(t, CommonCfg.QUEUE_SIZE))

    assert (cr(t, CommonCfg.NUM_QUEUES), sizes) == (2, [8, 4])


def test_nonexistent_queue_reads_size_zero():
    """V-CMN-5: a queue that is not available reads queue_size 0."""
    t, *_ = make()
    cw(t, CommonCfg.QUEUE_SELECT, 2)

    assert (cr(t, CommonCfg.QUEUE_SIZE), cr(t, CommonCfg.QUEUE_ENABLE)) == (0, 0)


@pytest.mark.parametrize("size,expected", [(4, 4), (1, 1), (6, 8), (16, 8), (0, 8)])
def test_queue_size_accepts_only_a_power_of_two_up_to_the_maximum(size, expected):
    """D-CMN-2: the driver may shrink the queue to a power of 2; other values leave it unchanged."""
    t, *_ = make()
    cw(t, CommonCfg.QUEUE_SIZE, size)

    assert cr(t, CommonCfg.QUEUE_SIZE) == expected


def test_queue_address_halves_are_independently_accessible():
    """transport-pci.tex: the device allows the two halves of a 64-bit field to be accessed independently."""
    t, *_ = make()
    cw(t, CommonCfg.QUEUE_DESC_HI, 0x1)
    cw(t, CommonCfg.QUEUE_DESC_LO, 0x2000)
    cw(t, CommonCfg.QUEUE_DRIVER_LO, 0x3000, 8)  # an 8-byte access is split in two, as QEMU's memory core does

    assert (cr(t, CommonCfg.QUEUE_DESC_LO), cr(t, CommonCfg.QUEUE_DESC_HI), cr(t, CommonCfg.QUEUE_DESC_LO, 8)) == (
        0x2000, 1, 0x1_0000_2000)
    assert cr(t, CommonCfg.QUEUE_DRIVER_LO, 8) == 0x3000


def test_queue_enable_creates_the_device_queue_with_the_negotiated_event_idx():
    """queue_enable=1 hands the programmed size and areas to a DeviceQueue; EVENT_IDX is bit 29 if accepted."""
    t, *_ = make()
    bring_up(t, OFFERED, driver_ok=False)
    q = t.queue(0)
    cw(t, CommonCfg.QUEUE_SELECT, 0)

    assert (q.size, q.desc_addr, q.driver_addr, q.device_addr, q.event_idx) == (8, DESC, AVAIL, USED, True)
    assert cr(t, CommonCfg.QUEUE_ENABLE) == 1
    assert t.queue(1) is None


def test_queue_enable_with_rings_outside_ram_breaks_the_device():
    """QEMU virtio_init_region_cache: an unmappable area is a virtio_error at enable."""
    t, _, _, sink, _ = make()
    cw(t, CommonCfg.QUEUE_DESC_LO, RAM - 16)
    cw(t, CommonCfg.QUEUE_ENABLE, 1)

    assert (t.broken, t.status & DeviceStatus.NEEDS_RESET, t.queue(0)) == (True, DeviceStatus.NEEDS_RESET, None)
    assert events(sink, "virtio_error") == [("virtio_error", {"reason": "Cannot map desc"})]


def test_queue_enable_write_of_zero_breaks_the_device():
    """D-CMN-3: the driver never writes 0 to queue_enable; QEMU treats it as a virtio_error."""
    t, _, _, sink, _ = make()
    cw(t, CommonCfg.QUEUE_ENABLE, 0)

    assert events(sink, "virtio_error")[0][1]["reason"] == "wrong value for queue_enable 0"


def test_queue_notify_off_is_the_queue_index():
    """queue_notify_off = queue index with a multiplier of 4 (QEMU "simply map queues in order")."""
    t, *_ = make()
    cw(t, CommonCfg.QUEUE_SELECT, 1)

    assert (cr(t, CommonCfg.QUEUE_NOTIFY_OFF), t.notify_off_multiplier) == (1, 4)


def test_queue_reset_needs_ring_reset_and_then_clears_the_queue():
    """V-CMN-6: with RING_RESET, writing 1 resets the queue; queue_reset and queue_enable read 0."""
    t, _, _, sink, _ = make(offered=OFFERED | 1 << VIRTIO_F_RING_RESET)
    bring_up(t, OFFERED)
    cw(t, CommonCfg.QUEUE_RESET, 1)
    kept = t.queue(0) is not None
    bring_up(t, OFFERED | 1 << VIRTIO_F_RING_RESET)
    cw(t, CommonCfg.QUEUE_RESET, 1)

    assert kept is True
    assert (t.queue(0), cr(t, CommonCfg.QUEUE_RESET), cr(t, CommonCfg.QUEUE_ENABLE), cr(t, CommonCfg.QUEUE_DESC_LO)) == (
        None, 0, 0, 0)
    assert events(sink, "virtio_queue_reset") == [("virtio_queue_reset", {"queue": 0})]


def test_msix_vector_registers_read_no_vector():
    """Without MSI-X every vector mapping fails and reads back VIRTIO_MSI_NO_VECTOR (V-MSX-1)."""
    t, *_ = make()
    cw(t, CommonCfg.CONFIG_MSIX_VECTOR, 0)
    cw(t, CommonCfg.QUEUE_MSIX_VECTOR, 1)

    assert (cr(t, CommonCfg.CONFIG_MSIX_VECTOR), cr(t, CommonCfg.QUEUE_MSIX_VECTOR)) == (VIRTIO_MSI_NO_VECTOR,) * 2


def test_writes_to_read_only_registers_are_ignored_and_traced():
    """D-CMN-1 registers (num_queues, generation, notify_off, ...) do not change; the write is traced."""
    t, _, _, sink, _ = make()
    cw(t, CommonCfg.NUM_QUEUES, 7)

    assert cr(t, CommonCfg.NUM_QUEUES) == 2
    assert events(sink, "virtio_pci_common_write_ignored") == [
        ("virtio_pci_common_write_ignored", {"reg": "num_queues", "value": 7, "reason": "read-only or reserved register"})]


# -- notifications -------------------------------------------------------------------------------------
def test_notify_is_ignored_before_driver_ok():
    """V-STS-1: the device does not consume buffers before DRIVER_OK."""
    t, dev, _, sink, _ = make()
    bring_up(t, driver_ok=False)

    assert t.notify_write(0, 2, 0) is None
    assert dev.log[-1] != "kick 0"
    assert events(sink, "virtio_queue_notify_ignored")[-1][1] == {"queue": 0, "reason": "DRIVER_OK not set"}


def test_notify_is_ignored_for_a_queue_that_is_not_enabled_or_does_not_exist():
    """Only enabled queues get kicks; a doorbell past the last queue is dropped too."""
    t, dev, _, sink, _ = make()
    bring_up(t)
    t.notify_write(4, 2, 1)
    t.notify_write(8, 2, 2)

    assert [f["reason"] for e, f in events(sink, "virtio_queue_notify_ignored")] == ["queue not enabled",
                                                                                       "no such queue"]


def test_notify_dispatches_the_kick_to_the_backend():
    """A doorbell write at queue_notify_off * 4 reaches backend.queue_notify(index)."""
    t, dev, mem, sink, _ = make()
    q = bring_up(t)
    mem.write(BUF, b"abc")
    q.add([(BUF, 3)], [(BUF + 0x100, 3)])
    q.publish()

    assert t.notify_write(0, 2, 0) is None
    assert (dev.log[-1], q.get_used(), mem.read(BUF + 0x100, 3)) == ("kick 0", (0, 3), b"cba")
    assert [e for e, _ in events(sink)][-6:] == ["virtio_pci_notify_write", "virtio_queue_notify", "virtqueue_pop",
                                                 "virtqueue_fill", "virtqueue_flush", "virtio_notify"]


async def test_notify_returns_the_backends_work_and_a_virtqueue_error_in_it_breaks_the_device():
    """The kick's coroutine is handed back to the bus; a VirtqueueError raised in it becomes virtio_error."""
    t, dev, _, sink, _ = make()
    bring_up(t)

    async def work():
        raise VirtqueueError("Looped descriptor")

    dev.work = work()
    returned = t.notify_write(0, 2, 0)
    await returned

    assert (t.broken, events(sink, "virtio_error")) == (True, [("virtio_error", {"reason": "Looped descriptor"})])


def test_notify_is_ignored_while_the_device_is_broken():
    """QEMU virtio_queue_notify: a broken device ignores kicks until it is reset."""
    t, dev, _, sink, _ = make()
    bring_up(t)
    t.needs_reset("test")

    t.notify_write(0, 2, 0)

    assert events(sink, "virtio_queue_notify_ignored")[-1][1]["reason"] == "device is broken (NEEDS_RESET)"


def test_used_buffer_notification_sets_isr_queue_bit_and_raises_intx():
    """V-ISR-1: with MSI-X off the queue bit is set before the interrupt; INTx goes high."""
    t, _, mem, _, irq = make()
    q = bring_up(t)
    irq.clear()
    q.add([(BUF, 3)], [(BUF + 0x100, 3)])
    q.publish()
    t.notify_write(0, 2, 0)

    assert (t.isr, irq) == (ISR_QUEUE, [True])


def test_isr_read_returns_the_bits_clears_them_and_deasserts_intx():
    """ISR status is read-to-clear and the read lowers the INTx line."""
    t, _, _, _, irq = make()
    bring_up(t)
    t.config_changed()
    irq.clear()

    assert (t.isr_read(0, 1), t.isr_read(0, 1), irq) == (ISR_QUEUE | ISR_CONFIG, 0, [False, False])


def test_no_used_buffer_notification_when_the_driver_suppresses_it():
    """The interrupt decision is the queue's: NO_INTERRUPT set means no ISR bit and no INTx."""
    t, _, _, sink, irq = make()
    q = bring_up(t, OFFERED & ~(1 << VIRTIO_RING_F_EVENT_IDX))
    q.disable_cb()
    irq.clear()
    q.add([(BUF, 3)], [(BUF + 0x100, 3)])
    q.publish()
    t.notify_write(0, 2, 0)

    assert (t.isr, irq, events(sink, "virtio_notify")) == (0, [], [])


def test_needs_reset_sets_the_status_bit_and_sends_a_config_interrupt():
    """V-STA-1: on an unrecoverable error NEEDS_RESET is set and, with DRIVER_OK, a config change is notified."""
    t, _, _, sink, irq = make()
    bring_up(t)
    gen = t.config_generation
    irq.clear()

    t.needs_reset("Desc next is 9")

    assert cr(t, CommonCfg.DEVICE_STATUS) & DeviceStatus.NEEDS_RESET
    assert (t.broken, t.isr, irq, t.config_generation) == (True, ISR_QUEUE | ISR_CONFIG, [True], gen + 1)
    assert events(sink, "virtio_error", "virtio_notify_config") == [
        ("virtio_error", {"reason": "Desc next is 9"}), ("virtio_notify_config", {})]


def test_needs_reset_before_driver_ok_raises_no_interrupt():
    """QEMU virtio_notify_config does nothing before DRIVER_OK; the status bit is still set."""
    t, _, _, _, irq = make()
    irq.clear()
    t.needs_reset("Cannot map used")

    assert (t.status, t.isr, irq) == (DeviceStatus.NEEDS_RESET, 0, [])


def test_reset_clears_needs_reset_and_the_broken_state():
    """After the driver's reset the device works again."""
    t, *_ = make()
    bring_up(t)
    t.needs_reset("x")
    bring_up(t)

    assert (t.broken, t.status) == (False, 15)


def test_config_change_bumps_the_generation():
    """V-CMN-3: config_generation changes whenever the device configuration changed."""
    t, *_ = make()
    before = cr(t, CommonCfg.CONFIG_GENERATION)
    t.config_changed()

    assert cr(t, CommonCfg.CONFIG_GENERATION) == before + 1


def test_device_config_accesses_reach_the_backend():
    """The device-specific region is the backend's config space; 8-byte reads are two 4-byte reads."""
    t, dev, *_ = make()
    t.device_cfg_write(4, 2, 0xBEEF)

    assert (t.device_cfg_read(4, 2), t.device_cfg_read(0, 8)) == (0xBEEF, 0x07_06_BE_EF_03_02_01_00)


# -- the guest driver core -------------------------------------------------------------------------------
def driver(offered=OFFERED):
    t, dev, mem, sink, irq = make(offered)
    regs = TransportRegs(t)
    return VirtioModernDevice(regs, mem, notify_off_multiplier=4), regs, t, dev, mem, sink


async def test_driver_negotiation_follows_the_status_sequence():
    """2.4: reset, ACKNOWLEDGE, DRIVER, features via the select registers, FEATURES_OK re-read."""
    vdev, regs, t, *_ = driver()
    await vdev.reset()
    regs.log.clear()

    accepted = await vdev.negotiate(TRANSPORT_FEATURES | F_DEMO)

    assert accepted == OFFERED
    assert [(op, reg, v) for op, _, reg, v in regs.log] == [
        ("r", CommonCfg.DEVICE_STATUS, 0), ("w", CommonCfg.DEVICE_STATUS, 1),
        ("r", CommonCfg.DEVICE_STATUS, 1), ("w", CommonCfg.DEVICE_STATUS, 3),
        ("w", CommonCfg.DEVICE_FEATURE_SELECT, 0), ("r", CommonCfg.DEVICE_FEATURE, OFFERED & 0xFFFF_FFFF),
        ("w", CommonCfg.DEVICE_FEATURE_SELECT, 1), ("r", CommonCfg.DEVICE_FEATURE, 1),
        ("w", CommonCfg.DRIVER_FEATURE_SELECT, 0), ("w", CommonCfg.DRIVER_FEATURE, OFFERED & 0xFFFF_FFFF),
        ("w", CommonCfg.DRIVER_FEATURE_SELECT, 1), ("w", CommonCfg.DRIVER_FEATURE, 1),
        ("r", CommonCfg.DEVICE_STATUS, 3), ("w", CommonCfg.DEVICE_STATUS, 11), ("r", CommonCfg.DEVICE_STATUS, 11),
    ]


async def test_driver_fails_the_device_that_refuses_its_features():
    """virtio_features_ok: FEATURES_OK not read back -> "device refuses features", and FAILED is set."""
    vdev, regs, t, dev, *_ = driver()
    await vdev.reset()
    real_write = regs.write

    async def withdrawing_write(cfg, offset, size, value):
        if (cfg, offset) == ("common", CommonCfg.DRIVER_FEATURE_SELECT):
            dev.offered &= ~F_DEMO  # the device withdraws a bit after the driver read the offer
        await real_write(cfg, offset, size, value)

    regs.write = withdrawing_write

    with pytest.raises(VirtioDriverError, match="device refuses features: 130000008"):
        await vdev.negotiate(TRANSPORT_FEATURES | F_DEMO)
    assert t.status == ACK_DRIVER | DeviceStatus.FAILED


async def test_driver_requires_version_1():
    """vp_finalize_features: a modern device without VERSION_1 accepted is not usable."""
    vdev, _, t, *_ = driver()
    await vdev.reset()

    with pytest.raises(VirtioDriverError, match="VIRTIO_F_VERSION_1"):
        await vdev.negotiate(F_DEMO)
    assert t.status & DeviceStatus.FAILED


async def test_driver_sets_up_a_queue_and_completes_a_request():
    """setup_vq programs size and areas, enables the queue; a kick gets the echo device's answer back."""
    vdev, regs, t, dev, mem, sink = driver()
    await vdev.reset()
    await vdev.negotiate(TRANSPORT_FEATURES | F_DEMO)
    q = await vdev.setup_queue(0, 4, DESC, AVAIL, USED)
    await vdev.driver_ok()
    mem.write(BUF, b"virtio")
    head = q.add([(BUF, 6)], [(BUF + 0x100, 8)], indirect_table=BUF + 0x1000)
    q.publish()
    if q.kick_needed():
        await vdev.notify(0)

    assert (t.queue(0).size, t.queue(0).event_idx, t.status) == (4, True, 15)
    assert (q.get_used(), mem.read(BUF + 0x100, 6), await vdev.read_isr()) == ((head, 6), b"oitriv", ISR_QUEUE)


async def test_driver_refuses_a_queue_larger_than_the_device_allows():
    """setup_vq: the ring cannot be bigger than the device's queue_size."""
    vdev, *_ = driver()
    await vdev.reset()
    await vdev.negotiate(TRANSPORT_FEATURES)

    with pytest.raises(VirtioDriverError, match="at most 4 entries"):
        await vdev.setup_queue(1, 8, DESC, AVAIL, USED)
    with pytest.raises(VirtioDriverError, match="does not exist"):
        await vdev.setup_queue(2, 4, DESC, AVAIL, USED)


async def test_driver_config_read_of_8_bytes_retries_while_the_generation_changes():
    """__virtio_cread_many: the two halves are re-read until config_generation is stable."""
    vdev, regs, t, dev, *_ = driver()
    calls = []
    real = dev.config_read

    def changing(offset, size):
        calls.append(offset)
        if len(calls) == 2:
            dev.config[4:8] = b"\xaa\xbb\xcc\xdd"
            t.config_changed()
        return real(offset, size)

    dev.config_read = changing

    assert await vdev.config_read(0, 8) == 0xDDCCBBAA_03020100
    assert calls == [0, 4, 0, 4]
