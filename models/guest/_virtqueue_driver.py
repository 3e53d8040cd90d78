"""The guest driver's side of a split virtqueue: DriverQueue.

Spec: virtio 1.2/1.3 ``split-ring.tex`` (2.7), the driver requirements.
Follows Linux drivers/virtio/virtio_ring.c: ``virtqueue_add_split``,
``virtqueue_kick_prepare_split``, ``virtqueue_get_buf_ctx_split``,
``detach_buf_split``, ``virtqueue_disable_cb_split``/``virtqueue_enable_cb_split``.
Linux bumps ``avail.idx`` inside every add; here ``add`` stops after the ring
entry and ``publish`` stores the index, so the spec's "descriptors and ring
entries before idx" step is explicit (call ``publish`` after each ``add`` to get
Linux's exact sequence).

Driver accesses use the CPU path ``GuestMemory.read``/``write``.  The ring
layout comes from models/_virtq_wire.py; the device side is models/_virtqueue.py.
"""

from __future__ import annotations

import struct

from .._memory import GuestMemory
from .._virtq_wire import (
    RING_FLAGS,
    RING_IDX,
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    VIRTQ_USED_F_NO_NOTIFY,
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
from .._virtq_direct import DirectRing
from .._virtqueue import U16, VirtqueueError, check_queue_size, vring_need_event

_DESC = struct.Struct(VirtqDesc.FORMAT)
_ELEM = struct.Struct(VirtqUsedElem.FORMAT)
_U16 = struct.Struct("<H")


class VirtqueueFull(Exception):
    """``DriverQueue.add`` found too few free descriptors (Linux ``virtqueue_add_split`` -ENOSPC)."""


class DriverQueue:
    """The guest driver's side of one split virtqueue (Linux ``vring_virtqueue``, split layout).

    The constructor zeroes the three areas, as the driver allocating them does
    (spec "MUST initialize used.flags to 0"; Linux allocates them zeroed).
    """

    def __init__(
        self,
        memory: GuestMemory,
        size: int,
        desc_addr: int,
        avail_addr: int,
        used_addr: int,
        event_idx: bool,
    ) -> None:
        check_queue_size(size)
        self.memory = memory
        self.size = size
        self.desc_addr = desc_addr
        self.avail_addr = avail_addr
        self.used_addr = used_addr
        self.event_idx = event_idx
        memory.fill(desc_addr, desc_table_size(size))
        memory.fill(avail_addr, avail_ring_size(size))
        memory.fill(used_addr, used_ring_size(size))
        memory.direct_rings.pop(desc_addr, None)  # a byte-level ring here now: no direct access to offer
        #: free descriptors (``vq->vq.num_free``)
        self.num_free = size
        self._free_head = 0
        self._next_free = list(range(1, size + 1))  # desc_extra[i].next: the free list
        self._chain_len: list[int] = [0] * size  # descriptors used by the chain at each head (0: not a head)
        self._avail_shadow = 0  # avail_idx_shadow: entries written to the ring
        self._published = 0  # the avail.idx value in memory
        self._num_added = 0  # published since the last kick decision
        self._last_used = 0
        self._avail_flags = 0  # avail_flags_shadow
        #: set when the device returned garbage (Linux BAD_RING); the queue is unusable
        self.broken: str | None = None

    def __repr__(self) -> str:
        return f"DriverQueue(size={self.size}, free={self.num_free}, avail={self._avail_shadow}, last_used={self._last_used})"

    def _w16(self, addr: int, value: int) -> None:
        self.memory.write(addr, _U16.pack(value & U16))

    def _r16(self, addr: int) -> int:
        return int(_U16.unpack(self.memory.read(addr, 2))[0])

    def _check_broken(self) -> None:
        if self.broken is not None:
            raise VirtqueueError(f"virtqueue is broken: {self.broken}")

    def _bad_ring(self, reason: str) -> VirtqueueError:
        self.broken = reason
        return VirtqueueError(reason)

    # -- adding buffers ---------------------------------------------------------------
    def add(self, out: list[tuple[int, int]], in_: list[tuple[int, int]], indirect_table: int | None = None,
            payload: bytes = b"") -> int:
        """Write a chain (``out`` readable then ``in_`` writable segments) and its avail entry; returns the head.

        With ``indirect_table`` (guest-physical address of room for
        ``16 * (len(out) + len(in_))`` bytes) the segments go into that table and
        the ring gets one INDIRECT descriptor (Linux ``alloc_indirect_split``).
        Nothing is visible to the device until ``publish``.  ``payload``: the bytes the readable
        segments hold, which only the transaction-level ring (``DirectDriverQueue``) carries.
        """
        self._check_broken()
        segs = [(a, n, 0) for a, n in out] + [(a, n, VIRTQ_DESC_F_WRITE) for a, n in in_]
        if not segs:
            raise ValueError("a chain needs at least one buffer")
        needed = 1 if indirect_table is not None else len(segs)
        if needed > self.num_free:
            raise VirtqueueFull(f"virtqueue full: the chain needs {needed} descriptors, {self.num_free} free")
        head = i = self._free_head
        segs = self._place_chain(head, segs, out, in_, indirect_table, payload)
        for k, (a, n, f) in enumerate(segs):
            last = k + 1 == len(segs)
            self._write_desc(i, a, n, f | (0 if last else VIRTQ_DESC_F_NEXT), self._next_free[i])
            if not last:
                i = self._next_free[i]
        self._free_head = self._next_free[i]
        self.num_free -= len(segs)
        self._chain_len[head] = len(segs)
        self._w16(self.avail_addr + avail_entry_offset(self._avail_shadow % self.size), head)
        self._avail_shadow = (self._avail_shadow + 1) & U16
        return head

    def _place_chain(self, head: int, segs: list[tuple[int, int, int]], out: list[tuple[int, int]],
                     in_: list[tuple[int, int]], indirect_table: int | None, payload: bytes) -> list[tuple[int, int, int]]:
        """The ring's descriptors for ``segs``: the segments, or one INDIRECT descriptor of the table
        written at ``indirect_table`` (Linux ``alloc_indirect_split``)."""
        if indirect_table is None:
            return segs
        table = b"".join(
            _DESC.pack(a, n, f | (VIRTQ_DESC_F_NEXT if k + 1 < len(segs) else 0), k + 1)
            for k, (a, n, f) in enumerate(segs)
        )
        self.memory.write(indirect_table, table)
        return [(indirect_table, len(table), VIRTQ_DESC_F_INDIRECT)]

    def _write_desc(self, i: int, addr: int, length: int, flags: int, nxt: int) -> None:
        self.memory.write(self.desc_addr + 16 * i, _DESC.pack(addr, length, flags, nxt))

    def _read_used_elem(self, slot: int) -> tuple[int, int]:
        head, length = _ELEM.unpack(self.memory.read(self.used_addr + used_entry_offset(slot), 8))
        return int(head), int(length)

    def publish(self) -> None:
        """Expose every added chain: store avail.idx (after the descriptors and ring entries)."""
        self._num_added += (self._avail_shadow - self._published) & U16
        self._published = self._avail_shadow
        self._w16(self.avail_addr + RING_IDX, self._published)

    def kick_needed(self) -> bool:
        """Must the driver notify the device of what was published? (``virtqueue_kick_prepare_split``)."""
        new = self._published
        old = (new - self._num_added) & U16
        self._num_added = 0
        if self.event_idx:  # D-ABS-5
            return vring_need_event(self._r16(self.used_addr + avail_event_offset(self.size)), new, old)
        return not self._r16(self.used_addr + RING_FLAGS) & VIRTQ_USED_F_NO_NOTIFY  # D-ABS-3

    # -- harvesting -------------------------------------------------------------------
    def has_used(self) -> bool:
        """Is a used element waiting? (``more_used_split``)."""
        return self._r16(self.used_addr + RING_IDX) != self._last_used

    def get_used(self) -> tuple[int, int] | None:
        """Take the next used element as (head, len) and free its descriptors, or None."""
        self._check_broken()
        if not self.has_used():
            return None
        slot = self._last_used % self.size
        head, length = self._read_used_elem(slot)
        if head >= self.size:
            raise self._bad_ring(f"id {head} out of range")
        n = self._chain_len[head]
        if n == 0:
            raise self._bad_ring(f"id {head} is not a head!")
        # detach_buf_split: return the chain's descriptors to the free list
        last = head
        for _ in range(n - 1):
            last = self._next_free[last]
        self._next_free[last] = self._free_head
        self._free_head = head
        self._chain_len[head] = 0
        self.num_free += n
        self._last_used = (self._last_used + 1) & U16
        if self.event_idx and not self._avail_flags & VIRTQ_AVAIL_F_NO_INTERRUPT:
            # "tell the host we expect an interrupt for the next entry"
            self._w16(self.avail_addr + used_event_offset(self.size), self._last_used)
        return head, length

    def disable_cb(self) -> None:
        """Ask for no used-buffer interrupts (``virtqueue_disable_cb_split``; also a callback-less vq)."""
        if not self._avail_flags & VIRTQ_AVAIL_F_NO_INTERRUPT:
            self._avail_flags |= VIRTQ_AVAIL_F_NO_INTERRUPT
            if self.event_idx:
                self._w16(self.avail_addr + used_event_offset(self.size), 0)  # Linux's own "hack" value
            else:
                self._w16(self.avail_addr + RING_FLAGS, self._avail_flags)

    def enable_cb(self) -> bool:
        """Re-enable interrupts; True if used buffers are already waiting (``virtqueue_enable_cb``)."""
        if self._avail_flags & VIRTQ_AVAIL_F_NO_INTERRUPT:
            self._avail_flags &= ~VIRTQ_AVAIL_F_NO_INTERRUPT
            if not self.event_idx:
                self._w16(self.avail_addr + RING_FLAGS, self._avail_flags)
        if self.event_idx:
            self._w16(self.avail_addr + used_event_offset(self.size), self._last_used)
        return self.has_used()


class DirectDriverQueue(DriverQueue):
    """``DriverQueue`` at the transaction level (models/_virtq_direct.py): the same free list,
    indices and event suppression, the ring words and chains in a ``DirectRing`` that guest memory
    hands to the device (``GuestMemory.direct_rings``) instead of bytes in RAM.  The readable part
    of each chain is the ``payload`` given to ``add``; ``written(head)`` is what the device wrote
    into the writable part (zeros elsewhere, as the driver's zeroed buffer)."""

    def __init__(self, memory: GuestMemory, size: int, desc_addr: int, avail_addr: int, used_addr: int,
                 event_idx: bool) -> None:
        self.ring = DirectRing()
        super().__init__(memory, size, desc_addr, avail_addr, used_addr, event_idx)
        memory.direct_rings[desc_addr] = self.ring

    def _w16(self, addr: int, value: int) -> None:
        self.ring.words[addr] = value & U16

    def _r16(self, addr: int) -> int:
        return self.ring.words.get(addr, 0)

    def _place_chain(self, head: int, segs: list[tuple[int, int, int]], out: list[tuple[int, int]],
                     in_: list[tuple[int, int]], indirect_table: int | None, payload: bytes) -> list[tuple[int, int, int]]:
        self.ring.chains[head] = (list(out), list(in_), bytes(payload))
        if indirect_table is None:
            return segs
        return [(indirect_table, 16 * len(segs), VIRTQ_DESC_F_INDIRECT)]

    def _write_desc(self, i: int, addr: int, length: int, flags: int, nxt: int) -> None:
        pass  # the device takes the chain from the ring object, not from a descriptor table

    def _read_used_elem(self, slot: int) -> tuple[int, int]:
        return self.ring.used.pop(slot)

    def written(self, head: int, length: int) -> bytes:
        """The ``length`` bytes of chain ``head``'s writable part after the device used it."""
        return self.ring.written.pop(head, b"").ljust(length, b"\0")[:length]
