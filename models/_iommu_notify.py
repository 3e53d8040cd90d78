"""IOMMU memory regions and their notifiers: how IOMMU mapping changes reach listeners.

Models QEMU's memory core for IOMMU regions (system/memory.c):
``memory_region_register_iommu_notifier`` (notifier list, ``notify_flag_changed``,
then ``memory_region_iommu_replay``), ``memory_region_notify_iommu`` (every
notifier of the region with ``iommu_idx`` 0) and ``memory_region_notify_iommu_one``
(skip when the event misses the notifier's range, crop ``iova``/``addr_mask`` to
it, call the notifier only if ``event.type & notifier.flags``).  Also the
splitting of a MAP/UNMAP range into naturally aligned power-of-two events
(hw/virtio/virtio-iommu.c ``virtio_iommu_notify_map_unmap`` driven by
system/dma-helpers.c ``dma_aligned_pow2_mask``).

Notifier callbacks return the host time (ps) their work cost; ``notify`` returns
the sum so the device can charge it to the request being processed.

``HostIommuDevice`` is what an assigned (VFIO) function brings to an IOMMU: the
host IOMMU's properties QEMU hands over with ``pci_device_set_iommu_device``
(include/sysemu/host_iommu_device.h: page sizes, usable IOVA ranges) and the
memory listener VFIO registers on the function's DMA address space
(hw/vfio/listener.c ``vfio_listener_region_add``/``_del``), which registers its IOMMU
notifier on the region when the address space becomes it.  The machine builds it;
the IOMMU model sees only this value.
"""

from __future__ import annotations

import enum
from typing import Callable

import attrs

from sim import Simulator

from ._wire import U64

#: IOMMUAccessFlags (include/exec/memory.h)
IOMMU_NONE = 0
IOMMU_RO = 1
IOMMU_WO = 2
IOMMU_RW = 3


class NotifierFlag(enum.IntFlag):
    """IOMMUNotifierFlag: which events a notifier wants."""

    NONE = 0
    UNMAP = 1
    MAP = 2
    DEVIOTLB_UNMAP = 4


IOTLB_EVENTS = NotifierFlag.MAP | NotifierFlag.UNMAP


class NotifierRefused(Exception):
    """The IOMMU region refused a notifier (QEMU: register returns -EINVAL with errp set)."""


@attrs.frozen
class TlbEntry:
    """IOMMUTLBEntry (target_as is always system memory here)."""

    iova: int
    translated_addr: int
    addr_mask: int
    perm: int


@attrs.frozen
class TlbEvent:
    """IOMMUTLBEvent: an entry and whether it is a MAP or an UNMAP."""

    type: NotifierFlag
    entry: TlbEntry


NotifyFn = Callable[["IommuNotifier", TlbEntry], int]


@attrs.define(eq=False)
class IommuNotifier:
    """IOMMUNotifier: a listener on one IOMMU region; ``notify`` returns its cost in ps."""

    name: str
    flags: NotifierFlag
    notify: NotifyFn
    start: int = 0
    end: int = U64
    iommu_idx: int = 0


#: a memory listener on one function's DMA address space: called with the IOMMU region when the
#: space becomes it, with None when it goes back to system memory (the bypass alias); returns its cost in ps
AddressSpaceListener = Callable[["IommuMemoryRegion | None"], int]


@attrs.frozen
class HostIommuDevice:
    """An assigned function as an IOMMU sees it (QEMU HostIOMMUDevice plus VFIO's memory listener).

    ``page_size_mask`` is the host IOMMU's page-size bitmap, ``reserved_ranges`` the
    inclusive IOVA ranges the host cannot map (the complement of its usable ranges),
    ``listener`` VFIO's listener on the function's DMA address space.
    """

    name: str
    page_size_mask: int
    reserved_ranges: tuple[tuple[int, int], ...]
    listener: AddressSpaceListener


def aligned_pow2_mask(start: int, end: int, max_addr_bits: int = 64) -> int:
    """dma_aligned_pow2_mask: mask of the largest power-of-two block at ``start`` within [start, end]."""
    max_mask = U64 if max_addr_bits == 64 else (1 << max_addr_bits) - 1
    addr_mask = (end - start) & U64
    alignment_mask = min(((start & -start) - 1) if start else max_mask, max_mask)
    size_mask = min(addr_mask, max_mask)
    if alignment_mask <= size_mask:
        return alignment_mask
    if addr_mask == U64:
        return U64
    return (1 << ((addr_mask + 1).bit_length() - 1)) - 1


def pow2_chunks(start: int, end: int) -> list[tuple[int, int]]:
    """The ``(iova, addr_mask)`` events virtio_iommu_notify_map_unmap sends for [start, end].

    The whole 64-bit space is one event with an all-ones mask; otherwise each chunk is
    naturally aligned, so at most 128 chunks for any range.
    """
    if start == 0 and end == U64:
        return [(0, U64)]
    chunks: list[tuple[int, int]] = []
    while start <= end:
        mask = aligned_pow2_mask(start, end)
        chunks.append((start, mask))
        start += mask + 1
    return chunks


class IommuMemoryRegion:
    """One IOMMU memory region (QEMU: ``virtio-iommu-memory-region-<N>-<devfn>``).

    ``replay(region)`` is the owner's ``imrc->replay`` hook, run after a notifier is
    registered; ``flags_changed(region, old, new)`` is ``imrc->notify_flag_changed``
    and may raise NotifierRefused.
    """

    def __init__(
        self,
        name: str,
        *,
        sim: Simulator | None = None,
        replay: Callable[[IommuMemoryRegion], None] | None = None,
        flags_changed: Callable[[IommuMemoryRegion, NotifierFlag, NotifierFlag], None] | None = None,
    ) -> None:
        self.name = name
        self.sim = sim
        self._replay = replay
        self._flags_changed = flags_changed
        #: QEMU inserts new notifiers at the head of the list
        self.notifiers: list[IommuNotifier] = []

    def __repr__(self) -> str:
        return f"<IommuMemoryRegion {self.name} notifiers={len(self.notifiers)}>"

    @property
    def notify_flags(self) -> NotifierFlag:
        """OR of every registered notifier's flags (``iommu_notify_flags``)."""
        flags = NotifierFlag.NONE
        for n in self.notifiers:
            flags |= n.flags
        return flags

    def register_notifier(self, notifier: IommuNotifier) -> None:
        """memory_region_register_iommu_notifier, then memory_region_iommu_replay."""
        old = self.notify_flags
        new = old | notifier.flags
        if new != old and self._flags_changed is not None:
            self._flags_changed(self, old, new)
        self.notifiers.insert(0, notifier)
        if self._replay is not None:
            self._replay(self)

    def unregister_notifier(self, notifier: IommuNotifier) -> None:
        """memory_region_unregister_iommu_notifier."""
        old = self.notify_flags
        self.notifiers.remove(notifier)
        new = self.notify_flags
        if new != old and self._flags_changed is not None:
            self._flags_changed(self, old, new)

    def notify(self, event: TlbEvent) -> int:
        """memory_region_notify_iommu(mr, iommu_idx=0, event): returns the summed notifier cost."""
        sim = self.sim
        if sim is not None and sim.tracing:
            e = event.entry
            sim.trace(
                "memory", "memory_region_notify_iommu", iommu_mr=self.name, iommu_idx=0,
                type=event.type.name, iova=e.iova, addr_mask=e.addr_mask,
                translated_addr=e.translated_addr, perm=e.perm,
            )
        cost = 0
        for n in tuple(self.notifiers):
            if n.iommu_idx == 0:
                cost += notify_one(n, event, sim)
        return cost

    def notify_range(
        self, type: NotifierFlag, virt_start: int, virt_end: int, translated_addr: int, perm: int
    ) -> int:
        """virtio_iommu_notify_map_unmap: one event per naturally aligned power-of-two chunk."""
        cost = 0
        for iova, mask in pow2_chunks(virt_start, virt_end):
            cost += self.notify(TlbEvent(type, TlbEntry(iova, translated_addr, mask, perm)))
            if perm != IOMMU_NONE:
                translated_addr = (translated_addr + mask + 1) & U64
        return cost


def notify_one(notifier: IommuNotifier, event: TlbEvent, sim: Simulator | None = None) -> int:
    """memory_region_notify_iommu_one: range check, crop to the notifier, type filter."""
    entry = event.entry
    if sim is not None and sim.tracing:
        sim.trace(
            "memory", "memory_region_notify_iommu_one", notifier=notifier.name,
            type=event.type.name, iova=entry.iova, addr_mask=entry.addr_mask,
        )
    if event.type == NotifierFlag.UNMAP and entry.perm != IOMMU_NONE:
        raise ValueError("an UNMAP event must carry perm IOMMU_NONE")
    entry_end = entry.iova + entry.addr_mask
    if notifier.start > entry_end or notifier.end < entry.iova:
        return 0
    if not int(event.type) & int(notifier.flags):
        return 0
    iova = max(entry.iova, notifier.start)
    mask = min(entry_end, notifier.end) - iova
    # the entry cropped to the notifier's range (an entry inside it is passed on as it is: frozen)
    cropped = entry if iova == entry.iova and mask == entry.addr_mask else TlbEntry(
        iova, entry.translated_addr, mask, entry.perm)
    return notifier.notify(notifier, cropped)
