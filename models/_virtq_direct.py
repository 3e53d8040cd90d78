"""The transaction-level split virtqueue: the same ring protocol with the ring held as Python values.

``MachineConfig.detail = "fast"`` (issue 12's two levels of detail).  In the spirit of SystemC
TLM-2.0's direct memory interface, the guest driver registers the ring it set up with guest memory
(``GuestMemory.direct_rings``, keyed by the descriptor table's guest-physical address) and the
device, when the driver enables the queue at that address, takes the ring object instead of
walking descriptors in RAM.  Everything the two sides decide stays the code of
``models/_virtqueue.py`` and ``models/guest/_virtqueue_driver.py``: indices, free list, event
suppression (``vring_need_event``), ``avail_event``/``used_event``, the queue-full and
size-exceeded checks, the trace events with their fields.  What changes is only where the bytes
are: the u16 ring words (indices, flags, ring entries, event indices) live in ``DirectRing.words``
keyed by their guest-physical address, a chain is its segment lists plus the request bytes its
readable part holds, and the used element carries the bytes the device wrote into the chain's
writable part.  So neither side encodes, decodes or walks descriptors, and the device reads the
request from the object the driver built (Linux's ``kzalloc`` + ``memcpy`` of the request).

What the fast level gives up: the ring and the request buffer are not in guest memory (a DMA
observer or a test reading guest RAM sees nothing), and a chain cannot be malformed (only the
guest driver model builds chains at this level).  ``boot``, ``replay`` and the testbench keep the
byte-level ring (``detail = "full"``).
"""

from __future__ import annotations

from ._memory import GuestMemory
from ._virtqueue import Chain, DeviceQueue, Tracer

__all__ = ["DirectRing", "DirectChain", "DirectDeviceQueue"]


class DirectRing:
    """One split ring's state shared by the driver and the device at the transaction level.

    ``words``: every u16 ring word written so far, by guest-physical address (absent = 0, as the
    driver zeroes the areas); ``chains``: per head, (readable segments, writable segments, the
    readable part's bytes); ``used``: per used slot, (head, used length); ``written``: per head,
    the bytes the device wrote into the chain's writable part from its offset 0.
    """

    __slots__ = ("words", "chains", "used", "written")

    def __init__(self) -> None:
        self.words: dict[int, int] = {}
        self.chains: dict[int, tuple[list[tuple[int, int]], list[tuple[int, int]], bytes]] = {}
        self.used: dict[int, tuple[int, int]] = {}
        self.written: dict[int, bytes] = {}


class DirectChain(Chain):
    """A popped chain whose readable part is the driver's request bytes and whose writes are kept."""

    __slots__ = ("_data", "_ring")

    def __init__(self, head: int, readable: list[tuple[int, int]], writable: list[tuple[int, int]],
                 data: bytes, ring: DirectRing, memory: GuestMemory, initiator: str) -> None:
        super().__init__(head, readable, writable, memory, initiator)
        self._data = data
        self._ring = ring

    def read(self, size: int | None = None, offset: int = 0) -> bytes:
        if offset < 0 or (size is not None and size < 0):
            raise ValueError(f"negative offset {offset} or size {size}")
        return self._data[offset:] if size is None else self._data[offset:offset + size]

    def write(self, data: bytes, offset: int = 0) -> int:
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        take = max(0, min(len(data), self.writable_len - offset))
        if take:
            old = self._ring.written.get(self.head, b"")
            area = bytearray(old.ljust(offset + take, b"\0"))
            area[offset:offset + take] = data[:take]
            self._ring.written[self.head] = bytes(area)
        return take


class DirectDeviceQueue(DeviceQueue):
    """``DeviceQueue`` over a ``DirectRing``: the same pop/push/notify decisions, no descriptor walk."""

    def __init__(self, ring: DirectRing, memory: GuestMemory, index: int, size: int, desc_addr: int,
                 driver_addr: int, device_addr: int, event_idx: bool, *, notify_on_empty: bool = False,
                 initiator: str = "virtio", tracer: Tracer | None = None) -> None:
        super().__init__(memory, index, size, desc_addr, driver_addr, device_addr, event_idx,
                         notify_on_empty=notify_on_empty, initiator=initiator, tracer=tracer)
        self.ring = ring

    def _r16(self, addr: int) -> int:
        return self.ring.words.get(addr, 0)

    def _w16(self, addr: int, value: int) -> None:
        self.ring.words[addr] = value & 0xFFFF

    def _chain(self, head: int) -> Chain:
        readable, writable, data = self.ring.chains.pop(head)
        self.ring.written.pop(head, None)
        return DirectChain(head, readable, writable, data, self.ring, self.memory, self.initiator)

    def _write_used_elem(self, slot: int, head: int, written: int) -> None:
        self.ring.used[slot] = (head, written)
