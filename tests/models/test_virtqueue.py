"""The split virtqueue: one test per spec rule the device side or the driver side implements."""

import struct

import pytest

from models._memory import GuestMemory
from models._virtq_wire import (
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    VIRTQ_USED_F_NO_NOTIFY,
    VirtqDesc,
    avail_entry_offset,
    avail_event_offset,
    used_entry_offset,
    used_event_offset,
)
from models._virtqueue import Chain, DeviceQueue, VirtqueueError, vring_need_event
from models.guest._virtqueue_driver import DriverQueue, VirtqueueFull

RAM = 1 << 30
DESC, AVAIL, USED = 0x10000, 0x20000, 0x30000
BUF = 0x100000
TABLE = 0x300000


class RecordingMemory(GuestMemory):
    """Guest RAM that logs every write (CPU or DMA) as (addr, size), in order."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.writes: list[tuple[int, int]] = []

    def write(self, addr, data):
        self.writes.append((addr, len(data)))
        super().write(addr, data)


def ring(size=8, event_idx=False, memory=None, **device_kw):
    mem = memory or GuestMemory(RAM)
    drv = DriverQueue(mem, size, DESC, AVAIL, USED, event_idx)
    dev = DeviceQueue(mem, 0, size, DESC, AVAIL, USED, event_idx, **device_kw)
    return mem, drv, dev


def send(drv, out=((BUF, 16),), in_=((BUF + 0x1000, 8),), indirect_table=None):
    head = drv.add(list(out), list(in_), indirect_table)
    drv.publish()
    return head


def put_desc(mem, table, index, addr, length, flags=0, nxt=0):
    mem.write(table + 16 * index, VirtqDesc(addr, length, flags, nxt).pack())


def expose(mem, size, heads, start=0):
    """Write avail.ring entries for ``heads`` from slot ``start`` and set avail.idx after them."""
    for k, head in enumerate(heads):
        mem.write_u16(AVAIL + avail_entry_offset((start + k) % size), head)
    mem.write_u16(AVAIL + 2, (start + len(heads)) & 0xFFFF)


def pop_error(dev):
    with pytest.raises(VirtqueueError) as info:
        dev.pop()
    return info.value.reason


# -- the device side: popping -------------------------------------------------------------------
def test_device_pops_readable_then_writable_segments_of_a_chain():
    """A chain's segments come back in order, split at the first device-writable descriptor."""
    _, drv, dev = ring()
    head = send(drv, out=[(BUF, 4), (BUF + 100, 5)], in_=[(BUF + 0x1000, 6), (BUF + 0x2000, 7)])

    chain = dev.pop()

    assert (chain.head, chain.readable, chain.writable) == (head, [(BUF, 4), (BUF + 100, 5)],
                                                            [(BUF + 0x1000, 6), (BUF + 0x2000, 7)])
    assert (chain.readable_len, chain.writable_len, dev.last_avail_idx, dev.inuse) == (9, 13, 1, 1)


def test_device_finds_nothing_until_avail_idx_moves():
    """With avail.idx equal to the device's last_avail_idx, pop returns None."""
    _, drv, dev = ring()

    assert dev.pop() is None
    send(drv)
    assert dev.pop() is not None
    assert dev.pop() is None


def test_device_ignores_write_flag_on_the_indirect_descriptor():
    """V-IND-1: the WRITE flag on the descriptor pointing at an indirect table is ignored."""
    mem, _, dev = ring()
    put_desc(mem, TABLE, 0, BUF, 8, VIRTQ_DESC_F_NEXT, 1)
    put_desc(mem, TABLE, 1, BUF + 0x1000, 4, VIRTQ_DESC_F_WRITE)
    put_desc(mem, DESC, 3, TABLE, 32, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE)
    expose(mem, 8, [3])

    chain = dev.pop()

    assert (chain.head, chain.readable, chain.writable) == (3, [(BUF, 8)], [(BUF + 0x1000, 4)])


def test_device_accepts_direct_descriptors_followed_by_one_indirect():
    """V-IND-2: zero or more normal descriptors followed by a single INDIRECT descriptor form one chain."""
    mem, _, dev = ring()
    put_desc(mem, DESC, 0, BUF, 4, VIRTQ_DESC_F_NEXT, 5)
    put_desc(mem, DESC, 5, TABLE, 32, VIRTQ_DESC_F_INDIRECT)
    put_desc(mem, TABLE, 0, BUF + 4, 4, VIRTQ_DESC_F_NEXT, 1)
    put_desc(mem, TABLE, 1, BUF + 0x1000, 4, VIRTQ_DESC_F_WRITE)
    expose(mem, 8, [0])

    chain = dev.pop()

    assert (chain.readable, chain.writable) == ([(BUF, 4), (BUF + 4, 4)], [(BUF + 0x1000, 4)])


def test_device_writes_avail_event_when_event_idx_is_negotiated():
    """With EVENT_IDX the device asks to be kicked at its next avail index (vring_set_avail_event)."""
    mem, drv, dev = ring(event_idx=True)
    send(drv)
    send(drv)

    dev.pop()

    assert mem.read_u16(USED + avail_event_offset(8)) == 1


def test_device_leaves_avail_event_alone_without_event_idx():
    """Without EVENT_IDX avail_event is not part of the protocol and stays untouched."""
    mem, drv, dev = ring(event_idx=False)
    send(drv)

    dev.pop()

    assert mem.read_u16(USED + avail_event_offset(8)) == 0


# -- the device side: malformed chains (each a distinct virtio_error reason) -----------------------
def test_avail_idx_more_than_queue_size_ahead_is_an_error():
    """The driver cannot expose more than Queue Size chains (QEMU virtqueue_num_heads)."""
    mem, _, dev = ring()
    mem.write_u16(AVAIL + 2, 9)

    assert pop_error(dev) == "Guest moved used index from 0 to 9"


def test_avail_head_beyond_the_table_is_an_error():
    """An avail.ring entry must name a descriptor of the table (QEMU virtqueue_get_head)."""
    mem, _, dev = ring()
    expose(mem, 8, [8])

    assert pop_error(dev) == "Guest says index 8 is available"


def test_looping_chain_is_an_error():
    """A chain longer than the table must loop: the walk's ttl is the queue size."""
    mem, _, dev = ring(size=4)
    for i in range(4):
        put_desc(mem, DESC, i, BUF + 16 * i, 16, VIRTQ_DESC_F_NEXT, (i + 1) % 4)
    expose(mem, 4, [0])

    assert pop_error(dev) == "Looped descriptor"


def test_chain_of_exactly_queue_size_descriptors_is_accepted():
    """The ttl allows the longest legal chain, Queue Size descriptors."""
    mem, _, dev = ring(size=4)
    for i in range(4):
        put_desc(mem, DESC, i, BUF + 16 * i, 16, VIRTQ_DESC_F_NEXT if i < 3 else 0, i + 1)
    expose(mem, 4, [0])

    assert len(dev.pop().readable) == 4


def test_next_beyond_the_table_is_an_error():
    """``next`` must index the table it is in (QEMU virtqueue_split_read_next_desc)."""
    mem, _, dev = ring()
    put_desc(mem, DESC, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 8)
    expose(mem, 8, [0])

    assert pop_error(dev) == "Desc next is 8"


def test_next_beyond_the_indirect_table_is_an_error():
    """Inside an indirect table, ``next`` is bounded by the table's length, not the queue size."""
    mem, _, dev = ring()
    put_desc(mem, DESC, 0, TABLE, 32, VIRTQ_DESC_F_INDIRECT)
    put_desc(mem, TABLE, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 2)
    expose(mem, 8, [0])

    assert pop_error(dev) == "Desc next is 2"


def test_indirect_and_next_together_is_an_error():
    """2.7.5.3.1: the driver MUST NOT set both INDIRECT and NEXT."""
    mem, _, dev = ring()
    put_desc(mem, DESC, 0, TABLE, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1)
    expose(mem, 8, [0])

    assert pop_error(dev) == "Descriptor has both INDIRECT and NEXT set"


def test_nested_indirect_table_is_an_error():
    """2.7.5.3.1: the driver MUST NOT set INDIRECT inside an indirect table."""
    mem, _, dev = ring()
    put_desc(mem, DESC, 0, TABLE, 16, VIRTQ_DESC_F_INDIRECT)
    put_desc(mem, TABLE, 0, TABLE + 0x100, 16, VIRTQ_DESC_F_INDIRECT)
    expose(mem, 8, [0])

    assert pop_error(dev) == "Nested indirect descriptor"


@pytest.mark.parametrize("length", [0, 8, 24])
def test_indirect_table_length_not_a_positive_multiple_of_16_is_an_error(length):
    """An indirect table holds len/16 whole descriptors, at least one."""
    mem, _, dev = ring()
    put_desc(mem, DESC, 0, TABLE, length, VIRTQ_DESC_F_INDIRECT)
    expose(mem, 8, [0])

    assert pop_error(dev) == "Invalid size for indirect buffer table"


def test_indirect_table_longer_than_the_queue_is_an_error():
    """2.7.5.3.1: no chain, indirect or not, is longer than the Queue Size."""
    mem, _, dev = ring()
    put_desc(mem, DESC, 0, TABLE, 16 * 9, VIRTQ_DESC_F_INDIRECT)
    expose(mem, 8, [0])

    assert pop_error(dev) == "Indirect buffer table of 9 descriptors exceeds the queue size 8"


def test_indirect_table_outside_guest_ram_is_an_error():
    """The table itself must be guest RAM (QEMU "Cannot map indirect buffer")."""
    mem, _, dev = ring()
    put_desc(mem, DESC, 0, RAM - 16, 32, VIRTQ_DESC_F_INDIRECT)
    expose(mem, 8, [0])

    assert pop_error(dev) == "Cannot map indirect buffer"


def test_readable_descriptor_after_a_writable_one_is_an_error():
    """2.7.4.2: device-writable descriptors come after all device-readable ones."""
    mem, _, dev = ring()
    put_desc(mem, DESC, 0, BUF, 4, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1)
    put_desc(mem, DESC, 1, BUF + 16, 4)
    expose(mem, 8, [0])

    assert pop_error(dev) == "Incorrect order for descriptors"


@pytest.mark.parametrize("addr,length", [(RAM - 8, 16), (0xFEE0_0000, 4), (1 << 63, 4)])
def test_buffer_outside_guest_ram_is_an_error(addr, length):
    """A buffer the device cannot map (QEMU virtqueue_map_desc) breaks the device."""
    mem, _, dev = ring()
    put_desc(mem, DESC, 0, addr, length)
    expose(mem, 8, [0])

    assert pop_error(dev) == "virtio: bogus descriptor or out of resources"


def test_zero_length_buffer_is_an_error():
    """QEMU virtqueue_map_desc refuses zero-sized buffers."""
    mem, _, dev = ring()
    put_desc(mem, DESC, 0, BUF, 0)
    expose(mem, 8, [0])

    assert pop_error(dev) == "virtio: zero sized buffers are not allowed"


def test_chain_of_4_gib_or_more_is_an_error():
    """2.7.5.2: a chain's total length fits the 32-bit used length, so 2^32 - 1 bytes is the most."""
    mem = GuestMemory(12 << 30)
    _, _, dev = ring(memory=mem)
    put_desc(mem, DESC, 0, 1 << 32, 0xFFFF_F000, VIRTQ_DESC_F_NEXT, 1)
    put_desc(mem, DESC, 1, 2 << 32, 0xFFF)
    put_desc(mem, DESC, 2, 1 << 32, 0xFFFF_F000, VIRTQ_DESC_F_NEXT, 3)
    put_desc(mem, DESC, 3, 2 << 32, 0x1000)
    expose(mem, 8, [0, 2])

    assert dev.pop().readable_len == 0xFFFF_FFFF
    assert pop_error(dev) == "Descriptor chain of 2^32 bytes or more"


def test_popping_more_chains_than_the_queue_holds_is_an_error():
    """A device cannot have more than Queue Size chains in flight (QEMU "Virtqueue size exceeded")."""
    mem, drv, dev = ring(size=2)
    send(drv, in_=())
    send(drv, in_=())
    dev.pop()
    dev.pop()
    expose(mem, 2, [0], start=2)

    assert pop_error(dev) == "Virtqueue size exceeded"


@pytest.mark.parametrize("area,addr", [("desc", (1, RAM - 64)), ("avail", (2, RAM - 8)), ("used", (3, RAM - 64))])
def test_ring_areas_outside_guest_ram_cannot_be_mapped(area, addr):
    """At enable the three areas must be RAM (QEMU virtio_init_region_cache "Cannot map ...")."""
    addrs = [DESC, AVAIL, USED]
    addrs[addr[0] - 1] = addr[1]

    with pytest.raises(VirtqueueError) as info:
        DeviceQueue(GuestMemory(RAM), 0, 8, *addrs, False)

    assert info.value.reason == f"Cannot map {area}"


def test_queue_size_must_be_a_power_of_two():
    """Queue Size is a power of 2 no larger than 32768."""
    for bad in (0, 3, 65536):
        with pytest.raises(ValueError):
            DeviceQueue(GuestMemory(RAM), 0, bad, DESC, AVAIL, USED, False)


# -- the device side: used ring --------------------------------------------------------------------
def test_device_writes_used_element_before_used_idx():
    """V-USD-1: the element (id, len) is written before used.idx moves."""
    mem, drv, dev = ring(memory=RecordingMemory(RAM))
    head = send(drv)
    chain = dev.pop()
    mem.writes.clear()

    dev.push(chain, 3)

    assert mem.writes == [(USED + used_entry_offset(0), 8), (USED + 2, 2)]
    assert struct.unpack("<II", mem.read(USED + 4, 8)) == (head, 3)
    assert (mem.read_u16(USED + 2), dev.used_idx, dev.inuse) == (1, 1, 0)


def test_used_len_is_the_number_of_bytes_written():
    """The used element reports what the device wrote into the writable part, not its capacity."""
    _, drv, dev = ring()
    send(drv, in_=[(BUF + 0x1000, 64)])
    chain = dev.pop()
    written = chain.write(b"abc")

    dev.push(chain, written)

    assert drv.get_used() == (0, 3)


def test_push_of_more_bytes_than_the_writable_part_is_refused():
    """A device model cannot report a used length beyond the chain's writable bytes."""
    _, drv, dev = ring()
    send(drv, in_=[(BUF + 0x1000, 8)])
    chain = dev.pop()

    with pytest.raises(ValueError):
        dev.push(chain, 9)


def test_detach_drops_a_chain_without_a_used_element():
    """QEMU virtqueue_detach_element: the chain leaves the in-flight count, used.idx does not move."""
    mem, drv, dev = ring()
    send(drv)
    chain = dev.pop()

    dev.detach(chain)

    assert (dev.inuse, dev.used_idx, mem.read_u16(USED + 2)) == (0, 0, 0)


def test_used_ring_wraps_at_65536():
    """avail.idx and used.idx are free-running u16: after 65536 chains both are back at 0 and still work."""
    _, drv, dev = ring(size=2)
    for n in range(65536 + 3):
        head = send(drv, out=[(BUF, 4)], in_=[(BUF + 0x1000, 4)])
        chain = dev.pop()
        dev.push(chain, n & 3)
        assert drv.get_used() == (head, n & 3)

    assert (dev.last_avail_idx, dev.used_idx) == (3, 3)
    assert drv.num_free == 2


def test_chain_write_scatters_across_segments_from_an_offset():
    """Chain.write fills the writable segments in order, starting ``offset`` bytes in."""
    mem, drv, dev = ring()
    send(drv, in_=[(BUF + 0x1000, 3), (BUF + 0x2000, 4)])
    chain = dev.pop()

    assert chain.write(b"WXYZ", offset=2) == 4
    assert (mem.read(BUF + 0x1000, 3), mem.read(BUF + 0x2000, 4)) == (b"\0\0W", b"XYZ\0")


def test_chain_write_stops_at_the_end_of_the_writable_part():
    """Bytes beyond the writable space are not written; the count says how many were."""
    mem, drv, dev = ring()
    send(drv, in_=[(BUF + 0x1000, 2)])
    chain = dev.pop()

    assert chain.write(b"abcdef") == 2
    assert mem.read(BUF + 0x1000, 3) == b"ab\0"


def test_chain_read_concatenates_the_readable_segments():
    """Chain.read returns every device-readable byte in chain order (iov_to_buf)."""
    mem, drv, dev = ring()
    mem.write(BUF, b"hello")
    mem.write(BUF + 0x800, b" world")
    send(drv, out=[(BUF, 5), (BUF + 0x800, 6)])

    assert dev.pop().read() == b"hello world"


# -- the device side: notification suppression -----------------------------------------------------
def test_vring_need_event_matches_the_spec_examples():
    """Spec: with used_event 0 the device notifies after the 1st buffer, then again after the 65536th."""
    assert vring_need_event(0, 1, 0) is True
    assert vring_need_event(0, 2, 1) is False
    assert vring_need_event(0, 1, 0xFFFF) is True
    assert vring_need_event(0, 0, 0xFFFF) is False
    assert vring_need_event(5, 7, 4) is True
    assert vring_need_event(7, 7, 4) is False


def test_device_must_notify_when_no_interrupt_is_clear():
    """V-UBS-2: without EVENT_IDX and avail.flags 0, every used buffer is notified."""
    _, drv, dev = ring()
    send(drv)
    dev.push(dev.pop(), 0)

    assert dev.should_notify() is True


def test_device_should_not_notify_when_no_interrupt_is_set():
    """V-UBS-2: without EVENT_IDX, avail.flags NO_INTERRUPT suppresses the notification."""
    _, drv, dev = ring()
    drv.disable_cb()
    send(drv)
    dev.push(dev.pop(), 0)

    assert dev.should_notify() is False


def test_device_ignores_used_event_without_event_idx():
    """V-UBS-1: used_event means nothing unless EVENT_IDX is negotiated."""
    mem, drv, dev = ring()
    mem.write_u16(AVAIL + used_event_offset(8), 100)
    send(drv)
    dev.push(dev.pop(), 0)

    assert dev.should_notify() is True


def test_event_idx_suppresses_notification_until_used_event():
    """V-UBS-4: with EVENT_IDX the device notifies only when used.idx passes used_event."""
    mem, drv, dev = ring(event_idx=True)
    decisions = []
    for _ in range(4):
        send(drv)
    dev.push(dev.pop(), 0)
    decisions.append(dev.should_notify())  # the first decision always notifies (QEMU)
    mem.write_u16(AVAIL + used_event_offset(8), 2)  # "interrupt me when entry #3 (idx 2) is used"
    for _ in range(3):
        dev.push(dev.pop(), 0)
        decisions.append(dev.should_notify())

    assert decisions == [True, False, True, False]


def test_event_idx_ignores_the_no_interrupt_flag():
    """V-UBS-3: with EVENT_IDX the device ignores avail.flags' NO_INTERRUPT bit."""
    mem, drv, dev = ring(event_idx=True)
    mem.write_u16(AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT)
    send(drv)
    dev.push(dev.pop(), 0)

    assert dev.should_notify() is True


def test_notify_on_empty_notifies_once_the_queue_drains():
    """QEMU NOTIFY_ON_EMPTY: with nothing in flight and nothing available, notify even if suppressed."""
    _, drv, dev = ring(notify_on_empty=True)
    drv.disable_cb()
    send(drv)
    send(drv)
    dev.push(dev.pop(), 0)
    busy = dev.should_notify()
    dev.push(dev.pop(), 0)

    assert (busy, dev.should_notify()) == (False, True)


# -- the driver side ----------------------------------------------------------------------------------
def test_driver_zeroes_the_rings_so_used_flags_start_at_zero():
    """D-ABS-1: the driver initialises used.flags (and the rest of its areas) to 0."""
    mem = GuestMemory(RAM)
    mem.fill(USED, 64, 0xFF)
    mem.fill(AVAIL, 64, 0xFF)

    DriverQueue(mem, 8, DESC, AVAIL, USED, False)

    assert (mem.read_u16(USED), mem.read_u16(AVAIL + 2), mem.read(DESC, 16)) == (0, 0, bytes(16))


def test_driver_writes_descriptors_before_avail_idx():
    """2.7.13: descriptors and the ring entry are written first; only publish() moves avail.idx."""
    mem, drv, _ = ring(memory=RecordingMemory(RAM))
    mem.writes.clear()

    head = drv.add([(BUF, 4)], [(BUF + 0x1000, 4)])
    hidden = mem.read_u16(AVAIL + 2)
    drv.publish()

    assert mem.writes == [(DESC, 16), (DESC + 16, 16), (AVAIL + avail_entry_offset(0), 2), (AVAIL + 2, 2)]
    assert (head, hidden, mem.read_u16(AVAIL + 2)) == (0, 0, 1)
    assert VirtqDesc.unpack(mem.read(DESC, 16)) == VirtqDesc(BUF, 4, VIRTQ_DESC_F_NEXT, 1)
    assert VirtqDesc.unpack(mem.read(DESC + 16, 16)).flags == VIRTQ_DESC_F_WRITE


def test_driver_indirect_chain_takes_one_ring_descriptor():
    """An indirect chain puts its segments in the caller's table and one INDIRECT descriptor in the ring."""
    mem, drv, _ = ring()

    drv.add([(BUF, 4)], [(BUF + 0x1000, 4)], indirect_table=TABLE)

    assert VirtqDesc.unpack(mem.read(DESC, 16)) == VirtqDesc(TABLE, 32, VIRTQ_DESC_F_INDIRECT, 1)
    assert VirtqDesc.unpack(mem.read(TABLE, 16)) == VirtqDesc(BUF, 4, VIRTQ_DESC_F_NEXT, 1)
    assert VirtqDesc.unpack(mem.read(TABLE + 16, 16)) == VirtqDesc(BUF + 0x1000, 4, VIRTQ_DESC_F_WRITE, 2)
    assert drv.num_free == 7


def test_driver_add_reports_a_full_ring():
    """Linux virtqueue_add_split -ENOSPC: a chain needing more descriptors than are free is refused."""
    _, drv, _ = ring(size=2)
    drv.add([(BUF, 4)], [])

    with pytest.raises(VirtqueueFull):
        drv.add([(BUF, 4)], [(BUF + 0x1000, 4)])


def test_driver_must_kick_when_no_notify_is_clear():
    """D-ABS-3: without EVENT_IDX and used.flags 0, the driver notifies."""
    _, drv, _ = ring()
    send(drv)

    assert drv.kick_needed() is True


def test_driver_should_not_kick_when_no_notify_is_set():
    """D-ABS-3: without EVENT_IDX, used.flags NO_NOTIFY suppresses the kick."""
    mem, drv, _ = ring()
    mem.write_u16(USED, VIRTQ_USED_F_NO_NOTIFY)
    send(drv)

    assert drv.kick_needed() is False


def test_driver_kick_under_event_idx_follows_avail_event():
    """D-ABS-5: with EVENT_IDX the driver kicks only when avail.idx passes avail_event."""
    mem, drv, dev = ring(event_idx=True)
    send(drv)
    first = drv.kick_needed()  # avail_event 0, idx 0 -> 1
    dev.pop()  # the device asks for a kick at idx 1 -> 2
    mem.write_u16(USED + avail_event_offset(8), 3)  # ... but say it only wants one after entry idx 3
    send(drv)
    second = drv.kick_needed()
    send(drv)
    send(drv)
    third = drv.kick_needed()

    assert (first, second, third) == (True, False, True)


def test_driver_ignores_no_notify_under_event_idx():
    """D-ABS-4: with EVENT_IDX the low bit of used.flags is ignored."""
    mem, drv, _ = ring(event_idx=True)
    mem.write_u16(USED, VIRTQ_USED_F_NO_NOTIFY)
    send(drv)

    assert drv.kick_needed() is True


def test_driver_harvests_used_entries_in_order_and_frees_descriptors():
    """get_used returns (head, len) in used-ring order and gives the chain's descriptors back."""
    _, drv, dev = ring(size=4)
    a = send(drv)
    b = send(drv)
    ca, cb = dev.pop(), dev.pop()
    dev.push(cb, 2)
    dev.push(ca, 1)

    assert (drv.get_used(), drv.get_used(), drv.get_used()) == ((b, 2), (a, 1), None)
    assert drv.num_free == 4


def test_driver_announces_used_event_after_each_harvest_under_event_idx():
    """Linux virtqueue_get_buf_ctx_split writes used_event = last_used_idx while callbacks are on."""
    mem, drv, dev = ring(event_idx=True)
    send(drv)
    dev.push(dev.pop(), 0)

    drv.get_used()

    assert mem.read_u16(AVAIL + used_event_offset(8)) == 1


def test_driver_disable_cb_sets_no_interrupt_and_enable_cb_clears_it():
    """Without EVENT_IDX callbacks are switched through avail.flags (virtqueue_disable/enable_cb_split)."""
    mem, drv, dev = ring()
    drv.disable_cb()
    flags_off = mem.read_u16(AVAIL)
    send(drv)
    dev.push(dev.pop(), 0)

    assert (flags_off, drv.enable_cb(), mem.read_u16(AVAIL)) == (VIRTQ_AVAIL_F_NO_INTERRUPT, True, 0)


def test_driver_rejects_a_used_id_beyond_the_table():
    """Linux BAD_RING "id %u out of range": the queue is broken from then on."""
    mem, drv, _ = ring()
    mem.write(USED + used_entry_offset(0), struct.pack("<II", 8, 0))
    mem.write_u16(USED + 2, 1)

    with pytest.raises(VirtqueueError, match="id 8 out of range"):
        drv.get_used()
    with pytest.raises(VirtqueueError, match="broken"):
        drv.add([(BUF, 4)], [])


def test_driver_rejects_a_used_id_that_is_not_a_head():
    """Linux BAD_RING "id %u is not a head!"."""
    mem, drv, _ = ring()
    mem.write(USED + used_entry_offset(0), struct.pack("<II", 3, 0))
    mem.write_u16(USED + 2, 1)

    with pytest.raises(VirtqueueError, match="id 3 is not a head!"):
        drv.get_used()


def test_chain_repr_names_its_shape():
    """A chain prints its head and both parts' sizes."""
    chain = Chain(2, [(BUF, 4)], [(BUF + 8, 4), (BUF + 16, 2)], GuestMemory(RAM), "t")

    assert repr(chain) == "Chain(head=2, out=4B/1, in=6B/2)"
