"""Trace records as Chrome trace-event JSON, the format ui.perfetto.dev and chrome://tracing open.

Mapping (the Trace Event Format document; perfetto docs, "other formats"; timestamps in
microseconds, floats allowed):

* one process per component (the guest, the virtio-iommu, its virtio-pci transport, the NVMe,
  the host, ...), one thread (track) per record source; a record that carries a ``cpu`` field is
  guest work and goes on the track of that vCPU ("vCPU n") in the guest process;
* every record is an instant event (``ph: "i"``) with its fields as ``args``.  Integers that a
  JSON viewer would round (beyond 2^53, a double's mantissa) and address-like fields (``iova``,
  ``paddr``, ``virt_start``, masks, ...) are hex strings such as ``"0xfffff000"``;
* each virtqueue request is a complete slice (``ph: "X"``) on the transport's track (the device
  as the guest sees it), from ``virtqueue_pop`` to the ``virtqueue_fill`` of the same head, named
  after the request type the device handled in between;
* each doorbell write (``virtio_pci_notify_write``) is a ``kick`` slice on the track of the vCPU
  that wrote it, from the write to the completion of the last request the kick made the device
  pop (the device works inside the vCPU's MMIO exit).  The vCPU is the one whose driver decided
  to kick (``viommu_sync_req`` with ``kick: true``, the record just before the write); a kick
  with no such record (``replay``'s raw driver traces none) is vCPU 0's;
* one flow per request (``ph: "s"`` on the vCPU's kick slice, ``ph: "f"`` with ``bp: "e"`` on the
  request's slice where the device used it), written only once the request completed: every
  flow that starts also ends, and a kick that popped nothing starts none.
"""

from __future__ import annotations

import json
from typing import IO, Any, Iterable

from sim import TraceRecord

_PS_PER_US = 1_000_000
#: the largest integer a double holds exactly (JSON viewers parse numbers as doubles)
_SAFE_INT = (1 << 53) - 1
#: fields that hold an address, a mask or a 64-bit bit set: always written as hex strings
_HEX_FIELDS = frozenset({
    "iova", "paddr", "addr", "address", "virt_start", "virt_end", "phys_start", "virt_addr", "phys_addr",
    "iova_start", "iova_end", "translated_addr", "addr_mask", "start", "end", "page_size_mask", "old", "new",
    "features", "pgsize_bitmap", "aperture_end", "dma_limit", "desc", "driver", "device", "base", "asq", "acq",
})


def _us(ps: int) -> float:
    return ps / _PS_PER_US


def _component(source: str) -> str:
    if source.startswith(("guest", "cpu", "vcpu")):
        return "guest"
    return source.split(".")[0].split(":")[0]


def _arg(name: str, value: Any) -> Any:
    """A field value as JSON viewers read it without loss (see the module docstring)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    if name in _HEX_FIELDS and value >= 0:
        return f"0x{value:x}"
    if not -_SAFE_INT <= value <= _SAFE_INT:
        return f"0x{value:x}" if value >= 0 else f"-0x{-value:x}"
    return value


def _args(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: _arg(name, value) for name, value in fields.items()}


class _Ids:
    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.tids: dict[tuple[int, str], int] = {}
        self.meta: list[dict[str, Any]] = []

    def track(self, component: str, thread: str) -> tuple[int, int]:
        pid = self.pids.get(component)
        if pid is None:
            pid = self.pids[component] = len(self.pids) + 1
            self.meta.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": component}})
        key = (pid, thread)
        tid = self.tids.get(key)
        if tid is None:
            tid = self.tids[key] = len(self.tids) + 1
            self.meta.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": thread}})
        return pid, tid


class _Kick:
    """One doorbell write: where it started and how far its in-exit work went."""

    __slots__ = ("ts", "pid", "tid", "cpu", "offset", "end", "requests")

    def __init__(self, ts: float, pid: int, tid: int, cpu: int, offset: int) -> None:
        self.ts, self.pid, self.tid, self.cpu, self.offset = ts, pid, tid, cpu, offset
        self.end = ts
        self.requests = 0

    def slice(self) -> dict[str, Any]:
        return {"name": "kick", "cat": "kick", "ph": "X", "ts": self.ts, "dur": self.end - self.ts,
                "pid": self.pid, "tid": self.tid, "args": {"notify_offset": self.offset, "requests": self.requests}}


def chrome_trace(records: Iterable[TraceRecord]) -> dict[str, Any]:
    """The whole trace as one JSON-serialisable object."""
    ids = _Ids()
    events: list[dict[str, Any]] = []
    open_requests: dict[tuple[str, int, int], dict[str, Any]] = {}  # (transport, queue, head) -> slice start
    kicks: dict[str, _Kick] = {}  # transport -> its latest kick
    kicker: int | None = None  # the vCPU whose driver just decided to kick
    flows = 0
    last_request_type = "request"  # the type the device handled since the last pop
    for rec in records:
        fields = rec.fields
        if "cpu" in fields:  # guest work done on a vCPU
            pid, tid = ids.track("guest", f"vCPU {fields['cpu']}")
        else:
            pid, tid = ids.track(_component(rec.source), rec.source)
        ts = _us(rec.time)
        events.append({"name": rec.event, "cat": _component(rec.source), "ph": "i", "s": "t", "ts": ts,
                       "pid": pid, "tid": tid, "args": _args(fields)})
        ev = rec.event
        if fields.get("kick") is True and "cpu" in fields:
            kicker = int(fields["cpu"])
        elif ev == "virtio_pci_notify_write":
            cpu = 0 if kicker is None else kicker
            kicker = None
            previous = kicks.get(rec.source)
            if previous is not None:
                events.append(previous.slice())
            vpid, vtid = ids.track("guest", f"vCPU {cpu}")
            kicks[rec.source] = _Kick(ts, vpid, vtid, cpu, int(fields.get("offset", 0)))
        elif ev.startswith("virtio_iommu_handle_") and ev != "virtio_iommu_handle_command":
            last_request_type = ev[len("virtio_iommu_handle_"):].upper()
        elif ev == "virtqueue_pop":
            last_request_type = "request"
            open_requests[(rec.source, fields.get("queue", 0), fields.get("head", 0))] = {
                "ts": ts, "pid": pid, "tid": tid, "kick": kicks.get(rec.source)}
        elif ev == "virtqueue_fill":
            start = open_requests.pop((rec.source, fields.get("queue", 0), fields.get("head", 0)), None)
            if start is None:
                continue
            events.append({"name": last_request_type, "cat": "request", "ph": "X", "ts": start["ts"],
                           "dur": max(ts - start["ts"], 0.0), "pid": start["pid"], "tid": start["tid"],
                           "args": {"queue": fields.get("queue", 0), "head": fields.get("head", 0),
                                    "len": fields.get("len", 0)}})
            kick: _Kick | None = start["kick"]
            if kick is not None:
                flows += 1
                kick.end = max(kick.end, ts)
                kick.requests += 1
                events.append({"name": "kick", "cat": "flow", "ph": "s", "id": flows, "ts": kick.ts,
                               "pid": kick.pid, "tid": kick.tid})
                events.append({"name": "kick", "cat": "flow", "ph": "f", "bp": "e", "id": flows, "ts": ts,
                               "pid": pid, "tid": tid})
    events.extend(kick.slice() for kick in kicks.values())
    return {"traceEvents": ids.meta + events, "displayTimeUnit": "ns"}


def write_chrome_trace(records: Iterable[TraceRecord], out: IO[str]) -> None:
    json.dump(chrome_trace(records), out, separators=(",", ":"))
    out.write("\n")
