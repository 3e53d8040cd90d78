"""Trace records as Chrome trace-event JSON, the format ui.perfetto.dev opens.

Mapping (perfetto docs, "other formats"; timestamps in microseconds, floats allowed):

* one process per component (the guest, the virtio-iommu, its virtio-pci
  transport, the NVMe, the host, ...), one thread (track) per record source;
  a record that carries a ``cpu`` field is guest work and goes on the track of
  that vCPU ("vCPU n") in the guest process;
* every record is an instant event (``ph: "i"``) with its fields as ``args``;
* each virtqueue request is a complete slice (``ph: "X"``) on the transport's
  track, from ``virtqueue_pop`` to the ``virtqueue_fill`` of the same head,
  named after the request type the device handled in between;
* a flow (``ph: "s"``/``"f"``) runs from each kick (``virtio_pci_notify_write``)
  to the completion of every request the kick made the device pop.
"""

from __future__ import annotations

import json
from typing import IO, Any, Iterable

from sim import TraceRecord

_PS_PER_US = 1_000_000


def _us(ps: int) -> float:
    return ps / _PS_PER_US


def _component(source: str) -> str:
    if source.startswith(("guest", "cpu", "vcpu")):
        return "guest"
    return source.split(".")[0].split(":")[0]


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


def chrome_trace(records: Iterable[TraceRecord]) -> dict[str, Any]:
    """The whole trace as one JSON-serialisable object."""
    ids = _Ids()
    events: list[dict[str, Any]] = []
    open_requests: dict[tuple[str, int, int], dict[str, Any]] = {}  # (transport, queue, head) -> slice
    kick_flow: dict[str, int] = {}  # transport -> flow id of its latest kick
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
                       "pid": pid, "tid": tid, "args": dict(fields)})
        ev = rec.event
        if ev == "virtio_pci_notify_write":
            flows += 1
            kick_flow[rec.source] = flows
            events.append({"name": "kick", "cat": "flow", "ph": "s", "id": flows, "ts": ts, "pid": pid, "tid": tid})
        elif ev.startswith("virtio_iommu_handle_") and ev != "virtio_iommu_handle_command":
            last_request_type = ev[len("virtio_iommu_handle_"):].upper()
        elif ev == "virtqueue_pop":
            last_request_type = "request"
            open_requests[(rec.source, fields.get("queue", 0), fields.get("head", 0))] = {
                "ts": ts, "pid": pid, "tid": tid, "flow": kick_flow.get(rec.source)}
        elif ev == "virtqueue_fill":
            start = open_requests.pop((rec.source, fields.get("queue", 0), fields.get("head", 0)), None)
            if start is not None:
                events.append({"name": last_request_type, "cat": "request", "ph": "X", "ts": start["ts"],
                               "dur": max(ts - start["ts"], 0.0), "pid": start["pid"], "tid": start["tid"],
                               "args": {"queue": fields.get("queue", 0), "head": fields.get("head", 0),
                                        "len": fields.get("len", 0)}})
                if start["flow"] is not None:
                    events.append({"name": "kick", "cat": "flow", "ph": "f", "bp": "e", "id": start["flow"],
                                   "ts": ts, "pid": pid, "tid": tid})
    return {"traceEvents": ids.meta + events, "displayTimeUnit": "ns"}


def write_chrome_trace(records: Iterable[TraceRecord], out: IO[str]) -> None:
    json.dump(chrome_trace(records), out, separators=(",", ":"))
    out.write("\n")
