"""The split virtqueue, device side: DeviceQueue, and what both sides share.

Spec: virtio 1.2/1.3 ``split-ring.tex`` (2.7): descriptor table, available and
used rings, indirect descriptors, notification suppression (EVENT_IDX).

Device side follows QEMU hw/virtio/virtio.c: ``virtqueue_split_pop`` (with
``virtqueue_num_heads``, ``virtqueue_get_head``, ``virtqueue_split_read_next_desc``
and ``virtqueue_map_desc``), ``virtqueue_split_fill``/``virtqueue_split_flush``
and ``virtio_split_should_notify``; its bounds follow rust-vmm virtio-queue
(``chain.rs``: ttl = queue size, 2^32-byte chain limit, nested indirect rejected).
Every malformed chain raises ``VirtqueueError`` whose ``reason`` is the message
QEMU passes to ``virtio_error`` for the same fault, or, for faults QEMU does not
check, a message in the same style.  Two deliberate spec-over-QEMU choices:

* "zero or more normal descriptors followed by a single INDIRECT descriptor" is
  accepted (spec "Indirect Descriptors", device requirement); QEMU only follows
  an INDIRECT flag on the head.
* INDIRECT together with NEXT, and INDIRECT inside an indirect table, are errors
  (the driver MUST NOT do either); QEMU ignores NEXT there and treats a nested
  INDIRECT descriptor as a plain buffer.

Device accesses use ``GuestMemory.dma_read``/``dma_write`` (observable DMA).
The rings of a virtio device are addressed with guest-physical addresses here
(the virtio-iommu itself does not sit behind an IOMMU).  The guest driver's side
of the ring is models/guest/_virtqueue_driver.py; ``VirtqueueError``,
``vring_need_event`` and ``check_queue_size`` are shared with it.
"""

from __future__ import annotations

import struct
from typing import Callable

from ._memory import GuestMemory
from ._virtq_wire import (
    RING_FLAGS,
    RING_IDX,
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    VIRTQUEUE_MAX_SIZE,
    VirtqDesc,
    VirtqUsedElem,
    avail_entry_offset,
    avail_event_offset,
    avail_ring_size,
    desc_table_size,
    used_entry_offset,
    used_event_offset,
    used_ring_size,
)

U16 = 0xFFFF
#: "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total" (2.7.5.2); the used
#: length is a u32, so like vm-virtio (chain.rs checked_add on u32) the total must fit in 32 bits
MAX_CHAIN_BYTES = (1 << 32) - 1

_DESC = struct.Struct(VirtqDesc.FORMAT)
_ELEM = struct.Struct(VirtqUsedElem.FORMAT)
_U16 = struct.Struct("<H")

Tracer = Callable[..., None]


class VirtqueueError(Exception):
    """A malformed ring or chain; ``reason`` is what the device reports (QEMU ``virtio_error``)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def vring_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """virtio-queue.h ``vring_need_event``: did the index move past ``event_idx`` in (old, new]?"""
    return ((new_idx - event_idx - 1) & U16) < ((new_idx - old_idx) & U16)


def check_queue_size(size: int) -> None:
    """Queue Size is a power of 2 no larger than 32768 (split-ring.tex "Virtqueues")."""
    if not 0 < size <= VIRTQUEUE_MAX_SIZE or size & (size - 1):
        raise ValueError(f"queue size must be a power of 2 in 1..{VIRTQUEUE_MAX_SIZE}, not {size}")


class Chain:
    """One popped descriptor chain: device-readable then device-writable (addr, len) segments."""

    __slots__ = ("head", "readable", "writable", "readable_len", "writable_len", "_memory", "_initiator")

    def __init__(
        self,
        head: int,
        readable: list[tuple[int, int]],
        writable: list[tuple[int, int]],
        memory: GuestMemory,
        initiator: str,
    ) -> None:
        self.head = head
        self.readable = readable
        self.writable = writable
        self.readable_len = sum(n for _, n in readable)
        self.writable_len = sum(n for _, n in writable)
        self._memory = memory
        self._initiator = initiator

    def __repr__(self) -> str:
        return f"Chain(head={self.head}, out={self.readable_len}B/{len(self.readable)}, in={self.writable_len}B/{len(self.writable)})"

    def read(self, size: int | None = None, offset: int = 0) -> bytes:
        """Up to ``size`` device-readable bytes from byte ``offset``, in chain order (QEMU ``iov_to_buf``).

        Only the segments' parts inside [offset, offset + size) are read, so what a read
        costs is bounded by ``size``, not by the lengths the guest put in the descriptors
        (a request's device reads its own size: virtio_iommu_handle_command copies the head,
        then ``virtio_iommu_iov_to_req`` the request's struct).  ``size=None`` reads the
        whole readable part (at most 2^32 - 1 bytes, the chain limit).  Fewer bytes come
        back when the readable part ends first.
        """
        if offset < 0 or (size is not None and size < 0):
            raise ValueError(f"negative offset {offset} or size {size}")
        mem = self._memory
        want = self.readable_len - offset if size is None else size
        out: list[bytes] = []
        for addr, n in self.readable:
            if want <= 0:
                break
            if offset >= n:
                offset -= n
                continue
            take = min(n - offset, want)
            out.append(mem.dma_read(addr + offset, take, self._initiator))
            want -= take
            offset = 0
        return b"".join(out)

    def write(self, data: bytes, offset: int = 0) -> int:
        """Scatter ``data`` into the writable segments from byte ``offset``; returns bytes written."""
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        mem = self._memory
        done = 0
        for addr, n in self.writable:
            if done == len(data):
                break
            if offset >= n:
                offset -= n
                continue
            take = min(n - offset, len(data) - done)
            mem.dma_write(addr + offset, data[done : done + take], self._initiator)
            done += take
            offset = 0
        return done


class DeviceQueue:
    """The device's view of one enabled split virtqueue.

    ``pop`` walks one chain with every guest-controlled loop bounded (ttl = the
    table size), ``push`` publishes one used element (QEMU ``virtqueue_push`` =
    fill + flush of 1), ``should_notify`` decides the interrupt.  The queue never
    raises interrupts itself (vm-virtio's "agnostic to the notification mechanism").
    """

    def __init__(
        self,
        memory: GuestMemory,
        index: int,
        size: int,
        desc_addr: int,
        driver_addr: int,
        device_addr: int,
        event_idx: bool,
        *,
        notify_on_empty: bool = False,
        initiator: str = "virtio",
        tracer: Tracer | None = None,
    ) -> None:
        check_queue_size(size)
        self.memory = memory
        self.index = index
        self.size = size
        self.desc_addr = desc_addr
        self.driver_addr = driver_addr
        self.device_addr = device_addr
        self.event_idx = event_idx
        #: VIRTIO_F_NOTIFY_ON_EMPTY negotiated: interrupt whenever the queue runs empty (QEMU)
        self.notify_on_empty = notify_on_empty
        self.initiator = initiator
        self._trace = tracer
        # virtio_init_region_cache: the three areas must be guest RAM, checked once at enable
        for what, addr, length in (
            ("desc", desc_addr, desc_table_size(size)),
            ("used", device_addr, used_ring_size(size)),
            ("avail", driver_addr, avail_ring_size(size)),
        ):
            if not memory.is_ram(addr, length):
                raise VirtqueueError(f"Cannot map {what}")
        #: next avail.ring slot to read (free-running u16)
        self.last_avail_idx = 0
        #: our copy of used.idx (free-running u16)
        self.used_idx = 0
        #: chains popped but not yet pushed or detached
        self.inuse = 0
        # virtio_split_should_notify: used idx at the last interrupt decision
        self._signalled_used = 0
        self._signalled_used_valid = False

    def __repr__(self) -> str:
        return f"DeviceQueue({self.index}, size={self.size}, last_avail={self.last_avail_idx}, used={self.used_idx}, inuse={self.inuse})"

    # -- ring accessors -------------------------------------------------------------
    def _r16(self, addr: int) -> int:
        return int(_U16.unpack(self.memory.dma_read(addr, 2, self.initiator))[0])

    def _w16(self, addr: int, value: int) -> None:
        self.memory.dma_write(addr, _U16.pack(value & U16), self.initiator)

    def avail_idx(self) -> int:
        return self._r16(self.driver_addr + RING_IDX)

    def empty(self) -> bool:
        """No chain is available (QEMU ``virtio_queue_empty``)."""
        return self.avail_idx() == self.last_avail_idx

    # -- pop ------------------------------------------------------------------------
    def pop(self) -> Chain | None:
        """Take the next available chain, or None; raises VirtqueueError on a malformed ring."""
        avail = self.avail_idx()
        last = self.last_avail_idx
        num_heads = (avail - last) & U16
        if num_heads > self.size:  # virtqueue_num_heads (QEMU's wording says "used index")
            raise VirtqueueError(f"Guest moved used index from {last} to {avail}")
        if num_heads == 0:
            return None
        if self.inuse >= self.size:
            raise VirtqueueError("Virtqueue size exceeded")
        head = self._r16(self.driver_addr + avail_entry_offset(last % self.size))
        if head >= self.size:  # virtqueue_get_head
            raise VirtqueueError(f"Guest says index {head} is available")
        self.last_avail_idx = (last + 1) & U16
        if self.event_idx:  # vring_set_avail_event: kick me when you pass this index
            self._w16(self.device_addr + avail_event_offset(self.size), self.last_avail_idx)
        chain = self._chain(head)
        self.inuse += 1
        if self._trace is not None:
            self._trace("virtqueue_pop", queue=self.index, head=head, in_num=len(chain.writable),
                        out_num=len(chain.readable), avail_idx=avail)
        return chain

    def _chain(self, head: int) -> Chain:
        """The chain at ``head``, walked and checked (a malformed one raises VirtqueueError)."""
        readable, writable = self._walk(head)
        return Chain(head, readable, writable, self.memory, self.initiator)

    def _walk(self, head: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        mem = self.memory
        initiator = self.initiator
        table = self.desc_addr
        limit = self.size  # ttl: no chain in a table of N entries is longer than N
        i = head
        count = 0
        total = 0
        indirect = False
        readable: list[tuple[int, int]] = []
        writable: list[tuple[int, int]] = []
        while True:
            addr, length, flags, nxt = _DESC.unpack(mem.dma_read(table + 16 * i, 16, initiator))
            if flags & VIRTQ_DESC_F_INDIRECT:
                if indirect:  # 2.7.5.3.1: "MUST NOT set VIRTQ_DESC_F_INDIRECT within an indirect table"
                    raise VirtqueueError("Nested indirect descriptor")
                if flags & VIRTQ_DESC_F_NEXT:  # 2.7.5.3.1: "MUST NOT set both INDIRECT and NEXT"
                    raise VirtqueueError("Descriptor has both INDIRECT and NEXT set")
                if length == 0 or length % 16:
                    raise VirtqueueError("Invalid size for indirect buffer table")
                entries = length // 16
                if entries > self.size:  # 2.7.5.3.1: no chain longer than the Queue Size
                    raise VirtqueueError(
                        f"Indirect buffer table of {entries} descriptors exceeds the queue size {self.size}")
                if not mem.is_ram(addr, length):
                    raise VirtqueueError("Cannot map indirect buffer")
                # the WRITE flag of this descriptor is ignored (2.7.5.3.2)
                table, limit, i, count, indirect = addr, entries, 0, 0, True
                continue
            if flags & VIRTQ_DESC_F_WRITE:
                writable.append((addr, length))
            elif writable:  # 2.7.4.2: writable descriptors come after all readable ones
                raise VirtqueueError("Incorrect order for descriptors")
            else:
                readable.append((addr, length))
            if length == 0:  # virtqueue_map_desc
                raise VirtqueueError("virtio: zero sized buffers are not allowed")
            if not mem.is_ram(addr, length):
                raise VirtqueueError("virtio: bogus descriptor or out of resources")
            total += length
            if total > MAX_CHAIN_BYTES:  # 2.7.5.2 (vm-virtio chain.rs checked_add)
                raise VirtqueueError("Descriptor chain of 2^32 bytes or more")
            count += 1
            if count > limit:
                raise VirtqueueError("Looped descriptor")
            if not flags & VIRTQ_DESC_F_NEXT:
                return readable, writable
            if nxt >= limit:  # virtqueue_split_read_next_desc
                raise VirtqueueError(f"Desc next is {nxt}")
            i = nxt

    # -- used ring --------------------------------------------------------------------
    def push(self, chain: Chain, written: int) -> None:
        """Publish ``chain`` as used with ``written`` bytes (element first, then used.idx)."""
        if not 0 <= written <= chain.writable_len:
            raise ValueError(f"used length {written} outside the chain's {chain.writable_len} writable bytes")
        if self.inuse == 0:
            raise ValueError(f"push of chain {chain.head} on queue {self.index} with no chain in use")
        old = self.used_idx
        slot = old % self.size
        # virtqueue_split_fill: the element, then (virtqueue_split_flush, after a wmb) the index
        self._write_used_elem(slot, chain.head, written)
        if self._trace is not None:
            self._trace("virtqueue_fill", queue=self.index, head=chain.head, len=written, idx=0)
        new = (old + 1) & U16
        self._w16(self.device_addr + RING_IDX, new)
        self.used_idx = new
        self.inuse -= 1
        if self._trace is not None:
            self._trace("virtqueue_flush", queue=self.index, count=1, used_idx=new)
        # virtqueue_split_flush: the index wrapped past the last signalled value; forget it
        if _s16(new - self._signalled_used) < ((new - old) & U16):
            self._signalled_used_valid = False

    def _write_used_elem(self, slot: int, head: int, written: int) -> None:
        self.memory.dma_write(self.device_addr + used_entry_offset(slot), _ELEM.pack(head, written), self.initiator)

    def detach(self, chain: Chain) -> None:
        """Drop a popped chain without using it (QEMU ``virtqueue_detach_element``)."""
        if self.inuse == 0:
            raise ValueError(f"detach of chain {chain.head} on queue {self.index} with no chain in use")
        self.inuse -= 1

    def should_notify(self) -> bool:
        """Does the driver want an interrupt for what was pushed since the last decision?

        QEMU ``virtio_split_should_notify``: with NOTIFY_ON_EMPTY and nothing in
        flight and nothing available, always; without EVENT_IDX, unless
        avail.flags has NO_INTERRUPT (V-UBS-2); with EVENT_IDX,
        ``vring_need_event(used_event, used_idx, used idx at the previous
        decision)`` (V-UBS-4), and always for the first decision after enable.
        """
        if self.notify_on_empty and self.inuse == 0 and self.empty():
            return True
        if not self.event_idx:
            return not self._r16(self.driver_addr + RING_FLAGS) & VIRTQ_AVAIL_F_NO_INTERRUPT
        valid = self._signalled_used_valid
        old = self._signalled_used
        new = self._signalled_used = self.used_idx
        self._signalled_used_valid = True
        used_event = self._r16(self.driver_addr + used_event_offset(self.size))
        return not valid or vring_need_event(used_event, new, old)


def _s16(value: int) -> int:
    value &= U16
    return value - 0x10000 if value & 0x8000 else value
