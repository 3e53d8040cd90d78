"""DMA-safety and ordering scoreboards over viommu-sim's trace records.

Two checkers, each a ``Scoreboard`` fed by one ``Monitor`` (a ``sim.CallbackSink``),
so they see events in emission order with their simulated times:

* ``DmaSafetyScoreboard`` -- no device DMA may touch an IOVA after the vIOMMU
  completed its UNMAP (``virtio_iommu_unmap_done``: QEMU's
  ``virtio_iommu_unmap`` removed the mapping and notified VFIO), until it is
  mapped again.  It also measures each stale window: from the guest's
  ``viommu_unmap_pages`` (``__iommu_dma_unmap`` -> ``iommu_unmap_fast``, the
  moment the driver is done with the buffer) to the device's UNMAP completion.
* ``OrderingScoreboard`` -- the orders dma-iommu and virtio-iommu promise:
  a MAP completes at the device before any DMA to it and before the guest reads
  its OK status; the host (``vfio_iommu_map_notify``) hears of a MAP before the
  guest reads its OK; and an unmapped IOVA is not mapped again before its UNMAP
  completed at the device.

Events used (sources are the models'): ``dma_access`` (source "dma", one per
device access through an IOMMU port), the device's ``virtio_iommu_attach``/
``_detach``/``_map``/``_unmap_done``/``_notify_map``/``_request_status``,
``vfio_iommu_map_notify``, and the guest driver's ``viommu_map_pages``/
``viommu_unmap_pages``/``viommu_req_done``.  Create a scoreboard before the
machine boots, so it sees the ATTACHes that tie endpoints to domains.
"""

from __future__ import annotations

from collections import deque

import attrs
from sortedcontainers import SortedDict

from sim import Simulator, TraceRecord, format_time

from ._scoreboard import Monitor, Scoreboard

#: virtio-iommu request type of MAP (struct virtio_iommu_req_head.type)
_REQ_MAP = 3


class _Ranges:
    """Disjoint inclusive IOVA ranges of one domain, each tagged with a simulated time."""

    def __init__(self) -> None:
        self._by_start: SortedDict = SortedDict()  # start -> (end, time)

    def __len__(self) -> int:
        return len(self._by_start)

    def overlapping(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """(start, end, time) of every range meeting [start, end], in address order."""
        keys = self._by_start
        i = keys.bisect_right(end)
        out: list[tuple[int, int, int]] = []
        while i > 0:
            i -= 1
            s, (e, t) = keys.peekitem(i)
            if e < start:
                break
            out.append((s, e, t))
        return out[::-1]

    def add(self, start: int, end: int, time: int) -> None:
        """Insert [start, end]; what it covers of older ranges is replaced."""
        self.remove(start, end)
        self._by_start[start] = (end, time)

    def remove(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """Cut [start, end] out; returns the (whole) ranges it met."""
        hit = self.overlapping(start, end)
        for s, e, t in hit:
            del self._by_start[s]
            if s < start:
                self._by_start[s] = (start - 1, t)
            if e > end:
                self._by_start[end + 1] = (e, t)
        return hit


def _span(start: int, end: int) -> str:
    return f"[0x{start:x}-0x{end:x}]"


@attrs.define
class _DeviceMap:
    """A MAP the device completed, and whether/when the host heard of it."""

    domain: int
    start: int
    end: int
    time: int
    notify: bool = False  # the device notified a MAP notifier (a VFIO endpoint is attached)
    notified: int | None = None  # time of the first vfio_iommu_map_notify(MAP) it caused


class _TraceScoreboard(Scoreboard):
    """A scoreboard that checks invariants record by record (no expected/observed pairs)."""

    EVENTS: tuple[str, ...] = ()

    def __init__(self, sim: Simulator, name: str) -> None:
        super().__init__(sim, name)
        self.domain_of: dict[int, int] = {}  # endpoint ID -> domain ID, from the device's ATTACH/DETACH
        self.monitor = Monitor(sim, event=self.EVENTS, name=f"{name}.monitor")
        self.monitor.add_callback(self._on_record)

    def _on_record(self, rec: TraceRecord) -> None:
        f = rec.fields
        if rec.event == "virtio_iommu_attach":
            self.domain_of[f["ep_id"]] = f["domain_id"]
        elif rec.event == "virtio_iommu_detach":
            self.domain_of.pop(f["ep_id"], None)
        else:
            getattr(self, f"_on_{rec.event}")(rec)


class DmaSafetyScoreboard(_TraceScoreboard):
    """Flags every device DMA to an IOVA whose UNMAP had completed at the vIOMMU (use-after-unmap).

    ``violations`` and ``errors`` hold one message per offending access, naming the
    access and the UNMAP completion with their simulated times; ``check()`` (run when a
    ``@testbench.test`` returns) raises ``ScoreboardError`` if there is any.
    ``stale_windows`` lists (domain, IOVA, guest unmap time, device UNMAP completion time).
    """

    EVENTS = ("virtio_iommu_attach", "virtio_iommu_detach", "viommu_unmap_pages", "virtio_iommu_unmap_done",
              "virtio_iommu_map", "dma_access")

    def __init__(self, sim: Simulator, name: str = "dma-safety") -> None:
        super().__init__(sim, name)
        self._unmapped: dict[int, _Ranges] = {}  # domain -> ranges whose UNMAP completed, tagged with that time
        self._guest_unmaps: dict[int, _Ranges] = {}  # domain -> ranges the guest unmapped, UNMAP not done yet
        self.stale_windows: list[tuple[int, int, int, int]] = []
        self.dma_accesses = 0

    @property
    def violations(self) -> list[str]:
        return [e for e in self.errors if e.startswith("use-after-unmap")]

    @property
    def max_stale_window(self) -> int:
        """The longest guest-unmap-to-device-UNMAP time seen, in ps (0 if none)."""
        return max((done - queued for _, _, queued, done in self.stale_windows), default=0)

    def _on_viommu_unmap_pages(self, rec: TraceRecord) -> None:
        f = rec.fields
        if f["unmapped"]:
            self._guest_unmaps.setdefault(f["domain"], _Ranges()).add(f["iova"], f["iova"] + f["unmapped"] - 1,
                                                                      rec.time)

    def _on_virtio_iommu_unmap_done(self, rec: TraceRecord) -> None:
        f = rec.fields
        domain, start, end = f["domain_id"], f["virt_start"], f["virt_end"]
        self._unmapped.setdefault(domain, _Ranges()).add(start, end, rec.time)
        for s, _, queued in self._guest_unmaps.get(domain, _Ranges()).remove(start, end):
            self.stale_windows.append((domain, max(s, start), queued, rec.time))

    def _on_virtio_iommu_map(self, rec: TraceRecord) -> None:
        f = rec.fields
        if f["domain_id"] in self._unmapped:
            self._unmapped[f["domain_id"]].remove(f["virt_start"], f["virt_end"])

    def _on_dma_access(self, rec: TraceRecord) -> None:
        f = rec.fields
        self.dma_accesses += 1
        domain = self.domain_of.get(f["bdf"])
        ranges = self._unmapped.get(domain) if domain is not None else None
        if not ranges:
            return
        iova, size = f["iova"], f["size"]
        for s, e, done in ranges.overlapping(iova, iova + size - 1):
            outcome = (f"it faulted ({f['fault']})" if "fault" in f
                       else f"it was NOT blocked (reached guest-physical 0x{f['paddr']:x})")
            self._error(
                f"use-after-unmap: DMA {f['access']} of IOVA 0x{iova:x} (+{size}) by {f['initiator']} at "
                f"t={format_time(rec.time)} after UNMAP of {_span(s, e)} in domain {domain} completed at "
                f"t={format_time(done)}; {outcome}"
            )


class OrderingScoreboard(_TraceScoreboard):
    """Checks the MAP/UNMAP/DMA orders of the guest, the vIOMMU and the host.

    * a DMA must not hit an IOVA the guest has asked to map (``viommu_map_pages``)
      before the device completed that MAP;
    * the guest must not read OK for a MAP (``viommu_req_done``) the device has not
      completed, nor one whose host notification (``vfio_iommu_map_notify``) has not
      happened when the device notifies a MAP notifier (a VFIO endpoint);
    * the guest must not map an IOVA again before the device completed its UNMAP.

    Requests are paired by order: the device completes them in ring order and the
    guest reads them back in that order, so the n-th MAP the device answered is the
    n-th MAP the guest sees completed.  Every message names both events and their times.
    """

    EVENTS = ("virtio_iommu_attach", "virtio_iommu_detach", "viommu_map_pages", "viommu_unmap_pages",
              "virtio_iommu_map", "virtio_iommu_unmap_done", "virtio_iommu_notify_map", "vfio_iommu_map_notify",
              "virtio_iommu_request_status", "viommu_req_done", "dma_access")

    def __init__(self, sim: Simulator, name: str = "ordering") -> None:
        super().__init__(sim, name)
        self._map_pending: dict[int, _Ranges] = {}  # domain -> guest MAPs not completed at the device
        self._unmap_pending: dict[int, _Ranges] = {}  # domain -> guest UNMAPs not completed at the device
        # guest MAPs that reused an IOVA with an UNMAP pending: (domain, start, end, map time, unmap time)
        self._reuses: list[tuple[int, int, int, int, int]] = []
        self._current_map: _DeviceMap | None = None  # the device MAP being handled
        self._answered_maps: deque[_DeviceMap | None] = deque()  # device-completed MAPs, in ring order
        #: (device MAP time, first host notify time or None, time the guest read OK) of every OK MAP
        self.map_orders: list[tuple[int, int | None, int]] = []

    def _on_viommu_map_pages(self, rec: TraceRecord) -> None:
        f = rec.fields
        domain, start, end = f["domain"], f["iova"], f["iova"] + f["size"] - 1
        pending = self._unmap_pending.get(domain)
        if pending:
            for s, e, unmapped in pending.overlapping(start, end):
                self._reuses.append((domain, max(s, start), min(e, end), rec.time, unmapped))
        self._map_pending.setdefault(domain, _Ranges()).add(start, end, rec.time)

    def _on_viommu_unmap_pages(self, rec: TraceRecord) -> None:
        f = rec.fields
        if f["unmapped"]:
            self._unmap_pending.setdefault(f["domain"], _Ranges()).add(f["iova"], f["iova"] + f["unmapped"] - 1,
                                                                       rec.time)

    def _on_virtio_iommu_map(self, rec: TraceRecord) -> None:
        f = rec.fields
        domain, start, end = f["domain_id"], f["virt_start"], f["virt_end"]
        if domain in self._map_pending:
            self._map_pending[domain].remove(start, end)
        self._current_map = _DeviceMap(domain, start, end, rec.time)

    def _on_virtio_iommu_notify_map(self, rec: TraceRecord) -> None:
        if self._current_map is not None:
            self._current_map.notify = True

    def _on_vfio_iommu_map_notify(self, rec: TraceRecord) -> None:
        if rec.fields["op"] == "MAP" and self._current_map is not None and self._current_map.notified is None:
            self._current_map.notified = rec.time

    def _on_virtio_iommu_request_status(self, rec: TraceRecord) -> None:
        if rec.fields["type"] != _REQ_MAP:
            return
        self._answered_maps.append(self._current_map if rec.fields["status"] == 0 else None)
        self._current_map = None

    def _on_viommu_req_done(self, rec: TraceRecord) -> None:
        f = rec.fields
        if f["type"] != "MAP":
            return
        done = self._answered_maps.popleft() if self._answered_maps else None
        if f["status"] != 0:
            return
        if done is None:
            self._error(f"MAP status before MAP: the guest read OK for a MAP at t={format_time(rec.time)} "
                        "that the device had not completed")
            return
        self.map_orders.append((done.time, done.notified, rec.time))
        if done.notify and done.notified is None:
            self._error(f"host notify after MAP status: the guest read OK for the MAP of {_span(done.start, done.end)} "
                        f"in domain {done.domain} at t={format_time(rec.time)} (device MAP at "
                        f"t={format_time(done.time)}), but vfio_iommu_map_notify never ran for it")

    def _on_virtio_iommu_unmap_done(self, rec: TraceRecord) -> None:
        f = rec.fields
        domain, start, end = f["domain_id"], f["virt_start"], f["virt_end"]
        if domain in self._unmap_pending:
            self._unmap_pending[domain].remove(start, end)
        keep = []
        for reuse in self._reuses:
            d, s, e, mapped, unmapped = reuse
            if d == domain and s <= end and start <= e:
                self._reuse_error(reuse, f"completed only at t={format_time(rec.time)}")
            else:
                keep.append(reuse)
        self._reuses = keep

    def _reuse_error(self, reuse: tuple[int, int, int, int, int], completion: str) -> None:
        d, s, e, mapped, unmapped = reuse
        self._error(f"IOVA reused before UNMAP completed: MAP of IOVA {_span(s, e)} in domain {d} at "
                    f"t={format_time(mapped)}, but its UNMAP (queued at t={format_time(unmapped)}) {completion}")

    def _on_dma_access(self, rec: TraceRecord) -> None:
        f = rec.fields
        domain = self.domain_of.get(f["bdf"])
        pending = self._map_pending.get(domain) if domain is not None else None
        if not pending:
            return
        for s, e, asked in pending.overlapping(f["iova"], f["iova"] + f["size"] - 1):
            self._error(f"DMA before MAP completed: DMA {f['access']} of IOVA 0x{f['iova']:x} by {f['initiator']} "
                        f"at t={format_time(rec.time)}, but the MAP of {_span(s, e)} in domain {domain} (queued at "
                        f"t={format_time(asked)}) had not completed at the device")

    def check(self) -> None:
        """Raise ``ScoreboardError`` for every violation, including reuses whose UNMAP never completed."""
        for reuse in self._reuses:
            self._reuse_error(reuse, f"had not completed by t={format_time(self.sim.now)}")
        self._reuses = []
        super().check()
