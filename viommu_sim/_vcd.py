"""Trace records as a value change dump (IEEE 1364 VCD, written with pyvcd) for GTKWave or Surfer.

``$timescale 1 ps``: a time stamp is the simulated time itself.  The signals, each derived from
the records that change it (a signal appears only if its component traced something):

* ``virtio.<transport>.q<n>``, one scope per virtqueue: ``avail_idx`` (the driver's avail.idx as
  the device last read it, ``virtqueue_pop``'s ``avail_idx``), ``last_avail_idx`` (the next entry
  the device pops: one more per pop), ``used_idx`` (``virtqueue_flush``'s ``used_idx``) and
  ``in_flight`` = avail_idx - used_idx (mod 2^16): requests the driver published that the device
  has not yet used.  A transport reset (``virtio_reset``) zeroes its queues.
* ``irq``: ``intx_gsi<g>``, a wire per INTx line at its level (``intx``), and
  ``msi_<device>_v<vector>``, an event per MSI/MSI-X vector each time a message is delivered
  (``msi``).
* ``nvme.sq<q>_in_flight``: commands fetched from submission queue q and not yet completed
  (``fetch`` / ``complete``).
* ``<viommu>.domain<d>_mappings``: the mappings of each virtio-iommu domain (``virtio_iommu_map``
  adds one, each ``virtio_iommu_unmap_done`` removes one, ``virtio_iommu_put_domain`` empties it).

A VCD declares every variable before its first value, so the records are read twice: once to
find the signals, once to write their changes.  ``$date`` is fixed (no wall clock in the file), so
equal runs give byte-identical dumps.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import IO, Any

from vcd import VCDWriter

from sim import TraceRecord

_U16 = 0xFFFF
_Key = tuple[str, ...]


def _name(text: str) -> str:
    """A VCD-safe identifier part (letters, digits, underscores)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", str(text))


class _Signals:
    """The derived signals: their declarations (first pass) and current values (second pass)."""

    def __init__(self) -> None:
        self.decls: dict[_Key, tuple[str, int]] = {}  # (scope, name) -> (var type, size)
        self.values: dict[_Key, int] = {}
        self.queues: dict[str, set[int]] = {}  # transport -> queues seen

    def declare(self, key: _Key, var_type: str = "integer", size: int = 32) -> None:
        self.decls.setdefault(key, (var_type, size))


def _queue_keys(source: str, queue: int) -> dict[str, _Key]:
    scope = f"virtio.{_name(source)}.q{queue}"
    return {name: (scope, name) for name in ("avail_idx", "last_avail_idx", "used_idx", "in_flight")}


def _changes(rec: TraceRecord, sig: _Signals) -> list[tuple[_Key, int | bool | None]]:
    """The signal changes one record makes (declaring the signals it touches)."""
    ev, f = rec.event, rec.fields
    out: list[tuple[_Key, int | bool | None]] = []
    if ev in ("virtqueue_pop", "virtqueue_flush") and "queue" in f:
        q = int(f["queue"])
        keys = _queue_keys(rec.source, q)
        for name, key in keys.items():
            sig.declare(key, "integer" if name == "in_flight" else "reg", 32 if name == "in_flight" else 16)
        sig.queues.setdefault(rec.source, set()).add(q)
        avail = sig.values.get(keys["avail_idx"], 0)
        used = sig.values.get(keys["used_idx"], 0)
        if ev == "virtqueue_pop":
            avail = int(f.get("avail_idx", avail))
            out.append((keys["avail_idx"], avail))
            out.append((keys["last_avail_idx"], (sig.values.get(keys["last_avail_idx"], 0) + 1) & _U16))
        elif "used_idx" in f:
            used = int(f["used_idx"])
            out.append((keys["used_idx"], used))
        out.append((keys["in_flight"], (avail - used) & _U16))
    elif ev == "virtio_reset":
        for q in sorted(sig.queues.get(rec.source, ())):
            out.extend((key, 0) for key in _queue_keys(rec.source, q).values())
    elif ev == "intx" and "gsi" in f:
        key = ("irq", f"intx_gsi{int(f['gsi'])}")
        sig.declare(key, "wire", 1)
        out.append((key, 1 if f.get("level") else 0))
    elif ev == "msi" and "vector" in f:
        key = ("irq", f"msi_{_name(f.get('device', 'dev'))}_v{int(f['vector'])}")
        sig.declare(key, "event", 1)
        out.append((key, None))
    elif ev in ("fetch", "complete") and "sqid" in f and rec.source.startswith("nvme"):
        key = (_name(rec.source), f"sq{int(f['sqid'])}_in_flight")
        sig.declare(key)
        out.append((key, sig.values.get(key, 0) + (1 if ev == "fetch" else -1)))
    elif ev in ("virtio_iommu_map", "virtio_iommu_unmap_done", "virtio_iommu_put_domain") and "domain_id" in f:
        key = (_name(rec.source), f"domain{int(f['domain_id'])}_mappings")
        sig.declare(key)
        now = sig.values.get(key, 0)
        out.append((key, 0 if ev == "virtio_iommu_put_domain" else now + (1 if ev == "virtio_iommu_map" else -1)))
    for key, value in out:
        if value is not None:
            sig.values[key] = value
    return out


def write_vcd(records: Sequence[TraceRecord], out: IO[str]) -> None:
    """Write ``records`` (in time order) as a VCD to ``out``."""
    first = _Signals()
    for rec in records:
        _changes(rec, first)
    with VCDWriter(out, timescale="1 ps", date="simulated time (viommu-sim)", version="viommu-sim",
                   comment="virtqueue indices, interrupt lines, requests in flight, domain mappings") as writer:
        handles: dict[_Key, Any] = {}
        for key in sorted(first.decls):
            var_type, size = first.decls[key]
            init: int | None = None if var_type == "event" else 0
            handles[key] = writer.register_var(key[0], key[1], var_type, size=size, init=init)
        second = _Signals()
        for rec in records:
            for key, value in _changes(rec, second):
                handle = handles[key]
                writer.change(handle, rec.time, True if value is None else value)
        if records:
            writer.flush(records[-1].time)
