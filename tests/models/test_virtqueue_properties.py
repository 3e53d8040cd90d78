"""Generated chains: valid ones round-trip unchanged, malformed ones only ever end in VirtqueueError / NEEDS_RESET."""

import re
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from models._memory import GuestMemory
from models._virtio_pci import VirtioBackend, VirtioPciTransport
from models._virtq_wire import (
    VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    CommonCfg,
    DeviceStatus,
    VirtqDesc,
    avail_entry_offset,
    used_entry_offset,
)
from models._virtqueue import DeviceQueue, VirtqueueError
from models.guest._virtqueue_driver import DriverQueue
from sim import ListSink, Simulator

RAM = 1 << 28
DESC, AVAIL, USED = 0x10000, 0x20000, 0x30000
HEAP = 0x100000
TABLE = 0x80000
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None)


class Heap:
    """Bump allocator for buffers and indirect tables in guest RAM."""

    def __init__(self) -> None:
        self.next = HEAP

    def alloc(self, size: int, align: int = 8) -> int:
        addr = -(-self.next // align) * align
        self.next = addr + size
        return addr


@st.composite
def requests(draw, size):
    """One request: readable and writable segment sizes (at most ``size`` segments), indirect or not."""
    n = draw(st.integers(1, min(size, 6)))
    n_out = draw(st.integers(1, n))
    seg = st.integers(1, 96)
    out = draw(st.lists(seg, min_size=n_out, max_size=n_out))
    in_ = draw(st.lists(seg, min_size=n - n_out, max_size=n - n_out))
    indirect = draw(st.booleans())
    written = draw(st.integers(0, sum(in_)))
    return out, in_, indirect, written


@SETTINGS
@given(st.data())
def test_valid_chains_round_trip_driver_device_driver_unchanged(data):
    """Every chain the driver adds is popped with the same segments and bytes, and its used len comes back."""
    size = data.draw(st.sampled_from([2, 4, 8, 32]), "size")
    event_idx = data.draw(st.booleans(), "event_idx")
    todo = data.draw(st.lists(requests(size), min_size=1, max_size=24), "requests")
    mem = GuestMemory(RAM)
    drv = DriverQueue(mem, size, DESC, AVAIL, USED, event_idx)
    dev = DeviceQueue(mem, 0, size, DESC, AVAIL, USED, event_idx)
    heap = Heap()
    serial = 0
    while todo:
        batch = []
        while todo and (1 if todo[0][2] else len(todo[0][0]) + len(todo[0][1])) <= drv.num_free:
            out_sizes, in_sizes, indirect, written = todo.pop(0)
            out = [(heap.alloc(n), n) for n in out_sizes]
            in_ = [(heap.alloc(n), n) for n in in_sizes]
            payload = bytes((serial + i) & 0xFF for i in range(sum(out_sizes)))
            pos = 0
            for addr, n in out:
                mem.write(addr, payload[pos : pos + n])
                pos += n
            table = heap.alloc(16 * (len(out) + len(in_)), 16) if indirect else None
            batch.append((drv.add(out, in_, table), out, in_, payload, written, serial))
            serial += 1
        drv.publish()
        for head, out, in_, payload, written, tag in batch:
            chain = dev.pop()
            assert (chain.head, chain.readable, chain.writable) == (head, out, in_)
            assert chain.read() == payload
            reply = bytes([tag & 0xFF]) * written
            assert chain.write(reply) == written
            dev.push(chain, written)
        assert dev.pop() is None
        for head, out, in_, payload, written, tag in batch:
            assert drv.get_used() == (head, written)
            landed = b"".join(mem.read(a, n) for a, n in in_)
            assert landed[:written] == bytes([tag & 0xFF]) * written
        assert drv.get_used() is None
    assert (drv.num_free, dev.inuse, dev.used_idx, dev.last_avail_idx) == (size, 0, serial & 0xFFFF, serial & 0xFFFF)


# -- garbage in the rings ----------------------------------------------------------------------------
ADDRS = st.one_of(
    st.sampled_from([HEAP, TABLE, RAM - 1, RAM - 16, RAM, 0xFEE0_0000, (1 << 64) - 16]),
    st.integers(0, (1 << 64) - 1),
)
LENS = st.one_of(st.sampled_from([0, 1, 15, 16, 32, 48, 0x1000, 0xFFFF_FFFF]), st.integers(0, (1 << 32) - 1))
SMALL16 = st.one_of(st.integers(0, 40), st.integers(0, 0xFFFF))
DESCS = st.builds(VirtqDesc, ADDRS, LENS, st.one_of(st.integers(0, 7), st.integers(0, 0xFFFF)), SMALL16)


@SETTINGS
@given(
    size=st.sampled_from([1, 2, 4, 8]),
    event_idx=st.booleans(),
    table=st.lists(DESCS, min_size=8, max_size=8),
    indirect=st.lists(DESCS, min_size=4, max_size=4),
    heads=st.lists(SMALL16, min_size=8, max_size=8),
    avail_idx=SMALL16,
)
def test_random_rings_never_raise_anything_but_virtqueue_error(size, event_idx, table, indirect, heads, avail_idx):
    """Whatever the descriptor table, indirect table and avail ring hold, pop returns a Chain, None or raises VirtqueueError."""
    mem = GuestMemory(RAM)
    for i, d in enumerate(table[:size]):
        mem.write(DESC + 16 * i, d.pack())
    for i, d in enumerate(indirect):
        mem.write(TABLE + 16 * i, d.pack())
    for i, h in enumerate(heads[:size]):
        mem.write_u16(AVAIL + avail_entry_offset(i), h)
    mem.write_u16(AVAIL + 2, avail_idx)
    dev = DeviceQueue(mem, 0, size, DESC, AVAIL, USED, event_idx)
    for _ in range(size + 2):
        try:
            chain = dev.pop()
        except VirtqueueError as err:
            assert err.reason
            return
        if chain is None:
            return
        assert chain.readable_len + chain.writable_len < 1 << 32
        dev.push(chain, chain.writable_len)


@SETTINGS
@given(
    used=st.lists(st.tuples(st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 32) - 1)), min_size=4, max_size=4),
    used_idx=SMALL16,
    added=st.integers(0, 4),
)
def test_random_used_rings_never_raise_anything_but_virtqueue_error_on_the_driver(used, used_idx, added):
    """The driver's get_used answers garbage from the device with VirtqueueError (BAD_RING), nothing else."""
    mem = GuestMemory(RAM)
    drv = DriverQueue(mem, 4, DESC, AVAIL, USED, False)
    for _ in range(added):
        drv.add([(HEAP, 8)], [])
    drv.publish()
    for i, (head, length) in enumerate(used):
        mem.write(USED + used_entry_offset(i), struct.pack("<II", head, length))
    mem.write_u16(USED + 2, used_idx)
    try:
        for _ in range(6):
            if drv.get_used() is None:
                break
    except VirtqueueError as err:
        assert drv.broken == err.reason


# -- malformed chains through the transport ------------------------------------------------------------
class PopOnKick(VirtioBackend):
    """A trivial test device: on a kick, pop every chain and return it used with nothing written."""

    device_id = 42
    queue_max_sizes = (8,)

    def device_features(self) -> int:
        return 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_INDIRECT_DESC | 1 << VIRTIO_RING_F_EVENT_IDX

    def config_read(self, offset: int, size: int) -> int:
        return 0

    def config_write(self, offset: int, size: int, value: int) -> None:
        pass

    def attached(self, transport: VirtioPciTransport) -> None:
        self.transport = transport

    def reset(self) -> None:
        pass

    def queue_notify(self, index: int) -> None:
        queue = self.transport.queue(index)
        while (chain := queue.pop()) is not None:
            queue.push(chain, 0)
            self.transport.notify_used(index)


#: corruption kind -> (needs an indirect chain, the reason the device must report)
CORRUPTIONS = {
    "loop": (None, r"Looped descriptor"),
    "bad_next": (None, r"Desc next is \d+"),
    "bad_addr": (None, r"virtio: bogus descriptor or out of resources"),
    "zero_len": (None, r"virtio: zero sized buffers are not allowed"),
    "order": (None, r"Incorrect order for descriptors"),
    "nested_indirect": (True, r"Nested indirect descriptor"),
    "indirect_and_next": (True, r"Descriptor has both INDIRECT and NEXT set"),
    "indirect_len": (True, r"Invalid size for indirect buffer table"),
    "indirect_too_long": (True, r"Indirect buffer table of \d+ descriptors exceeds the queue size 8"),
    "indirect_unmapped": (True, r"Cannot map indirect buffer"),
    "head_out_of_range": (None, r"Guest says index \d+ is available"),
    "avail_jump": (None, r"Guest moved used index from \d+ to \d+"),
}


def _bring_up(t: VirtioPciTransport, event_idx: bool) -> DriverQueue:
    features = 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_INDIRECT_DESC | event_idx << VIRTIO_RING_F_EVENT_IDX
    t.common_write(CommonCfg.DEVICE_STATUS, 1, 0)
    t.common_write(CommonCfg.DEVICE_STATUS, 1, 3)
    for sel in (0, 1):
        t.common_write(CommonCfg.DRIVER_FEATURE_SELECT, 4, sel)
        t.common_write(CommonCfg.DRIVER_FEATURE, 4, features >> (32 * sel) & 0xFFFF_FFFF)
    t.common_write(CommonCfg.DEVICE_STATUS, 1, 11)
    queue = DriverQueue(t.memory, 8, DESC, AVAIL, USED, event_idx)
    t.common_write(CommonCfg.QUEUE_DESC_LO, 4, DESC)
    t.common_write(CommonCfg.QUEUE_DRIVER_LO, 4, AVAIL)
    t.common_write(CommonCfg.QUEUE_DEVICE_LO, 4, USED)
    t.common_write(CommonCfg.QUEUE_ENABLE, 2, 1)
    t.common_write(CommonCfg.DEVICE_STATUS, 1, 15)
    return queue


def _walk(mem: GuestMemory, table: int, first: int) -> list[int]:
    """Indices of a well-formed chain in ``table`` starting at ``first``."""
    out = [first]
    while VirtqDesc.unpack(mem.read(table + 16 * out[-1], 16)).has_next:
        out.append(VirtqDesc.unpack(mem.read(table + 16 * out[-1], 16)).next)
    return out


def _patch(mem: GuestMemory, at: int, **changes: int) -> None:
    d = VirtqDesc.unpack(mem.read(at, 16))
    fields = {"addr": d.addr, "len": d.len, "flags": d.flags, "next": d.next, **changes}
    mem.write(at, VirtqDesc(**fields).pack())


@SETTINGS
@given(
    kind=st.sampled_from(sorted(CORRUPTIONS)),
    event_idx=st.booleans(),
    good_before=st.integers(0, 3),
    shape=requests(8),
    pick=st.integers(0, 1 << 16),
    value=st.integers(0, 0xFFFF),
)
def test_malformed_chains_through_the_transport_end_in_needs_reset(kind, event_idx, good_before, shape, pick, value):
    """A corrupted chain kicked through the transport leaves the device broken with NEEDS_RESET and the reason traced."""
    sink = ListSink()
    mem = GuestMemory(RAM)
    t = VirtioPciTransport(Simulator(sinks=[sink]), mem, PopOnKick(), "vq-test")
    drv = _bring_up(t, event_idx)
    heap = Heap()
    for _ in range(good_before):  # some healthy traffic first moves the indices
        drv.add([(heap.alloc(8), 8)], [(heap.alloc(8), 8)])
        drv.publish()
        t.notify_write(0, 2, 0)
        assert drv.get_used() is not None

    out_sizes, in_sizes, indirect, _ = shape
    want_indirect, reason = CORRUPTIONS[kind]
    indirect = want_indirect or indirect
    if kind == "order" and len(out_sizes) < 2:
        out_sizes = [*out_sizes, 4]
        in_sizes = in_sizes[: 7 - len(out_sizes)]
    out = [(heap.alloc(n), n) for n in out_sizes]
    in_ = [(heap.alloc(n), n) for n in in_sizes]
    itable = heap.alloc(16 * (len(out) + len(in_)), 16) if indirect else None
    head = drv.add(out, in_, itable)
    table, chain = (itable, list(range(len(out) + len(in_)))) if indirect else (DESC, _walk(mem, DESC, head))
    limit = len(chain) if indirect else 8
    victim = table + 16 * chain[pick % len(chain)]
    last = table + 16 * chain[-1]
    last_idx = mem.read_u16(AVAIL + 2)
    match kind:
        case "loop":
            _patch(mem, last, flags=VirtqDesc.unpack(mem.read(last, 16)).flags | VIRTQ_DESC_F_NEXT, next=chain[-1])
        case "bad_next":
            _patch(mem, last, flags=VirtqDesc.unpack(mem.read(last, 16)).flags | VIRTQ_DESC_F_NEXT,
                   next=limit + value % (0x10000 - limit))
        case "bad_addr":
            n = VirtqDesc.unpack(mem.read(victim, 16)).len
            _patch(mem, victim, addr=[RAM - n + 1, 0xFEE0_0000, (1 << 64) - n][pick % 3])
        case "zero_len":
            _patch(mem, victim, len=0)
        case "order":
            _patch(mem, table + 16 * chain[0], flags=VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT)
        case "nested_indirect":
            _patch(mem, victim, flags=VirtqDesc.unpack(mem.read(victim, 16)).flags | VIRTQ_DESC_F_INDIRECT, len=16)
        case "indirect_and_next":
            _patch(mem, DESC + 16 * head, flags=VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT)
        case "indirect_len":
            _patch(mem, DESC + 16 * head, len=[0, 1 + value % 15, 16 * len(chain) + 8][pick % 3])
        case "indirect_too_long":
            _patch(mem, DESC + 16 * head, len=16 * (9 + value % 100))
        case "indirect_unmapped":
            _patch(mem, DESC + 16 * head, addr=RAM - 16)
        case "head_out_of_range":
            mem.write_u16(AVAIL + avail_entry_offset(last_idx % 8), 8 + value % (0x10000 - 8))
    drv.publish()
    if kind == "avail_jump":
        mem.write_u16(AVAIL + 2, (last_idx + 9 + value % 0x7000) & 0xFFFF)

    assert t.notify_write(0, 2, 0) is None
    errors = [r.fields["reason"] for r in sink.records if r.event == "virtio_error"]
    assert len(errors) == 1 and re.fullmatch(reason, errors[0]), errors
    assert (t.broken, t.status & DeviceStatus.NEEDS_RESET) == (True, DeviceStatus.NEEDS_RESET)
    assert t.notify_write(0, 2, 0) is None
    assert sink.records[-1].event == "virtio_queue_notify_ignored"
