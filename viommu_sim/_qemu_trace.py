"""Trace records as QEMU's ``log`` trace backend writes them, and QEMU's ``-trace`` event patterns.

**The line format** follows QEMU's log backend (scripts/tracetool/backend/log.py), one line per
event: ``PID@SECONDS.MICROS:name args``, where ``args`` is the event's printf format from QEMU's
``trace-events`` files (hw/virtio/trace-events for ``virtio_iommu_*``, ``virtio_*`` and
``virtqueue_*``; hw/vfio/trace-events for ``vfio_iommu_map_notify``) applied to the record's
fields, which the models name after the same arguments::

    4242@1.090262:virtio_iommu_map domain=0 virt_start=0xfffe9000 virt_end=0xffffffff phys_start=0x1100a3000 flags=3

* ``PID`` is ``QEMU_TRACE_PID`` (4242) on every line.  QEMU prints the id of the thread that
  traced the event (vCPU threads, the main loop); the simulator has no threads, so one fixed
  number keeps the output byte-identical from run to run.
* ``SECONDS.MICROS`` is the simulated time (picoseconds truncated to microseconds), where QEMU
  prints the host's wall clock.
* ``%d`` of a 32-bit argument prints it signed, as C does (``domain range end=-1``); ``%u`` and
  ``0x%x`` print it unsigned.  ``viommu-sim replay`` reads the ``-1`` back as 0xffffffff.
* ``%p`` arguments (``vdev``, ``vq``, ``elem``) are pointers in QEMU.  Here they are fixed numbers
  that name the object: ``vdev`` = ``0x5555550000000 + 0x100000 * k`` for the k-th virtio device
  (in order of its first record), ``vq`` = ``vdev + 0x1000 * (queue + 1)``, ``elem`` =
  ``vq + 0x10 * head``, so a ``virtqueue_pop`` and the ``virtqueue_fill`` of the same request carry
  the same ``elem``, as they do in QEMU.

Only QEMU's own events are written: the table below lists every QEMU event the models trace.  A
record with no QEMU counterpart (the guest's events, NVMe, interrupts, DMA accesses, the
simulator's own diagnostics) is left out, since a QEMU log could not hold it; the JSONL format
carries everything.  PROBE requests leave no line: QEMU traces no event for them (the reserved
regions it returns are ``virtio_iommu_fill_resv_property`` lines), so a replay of a QEMU log
re-sends the ATTACH, DETACH, MAP and UNMAP requests only.

**Event patterns** (``--trace-events``) follow trace/control.c: a pattern names events with the
wildcards ``*`` (any run of characters) and ``?`` (one character), matched against the whole
event name (GLib's ``g_pattern_match_simple``: no character classes); a leading ``-`` disables what
it matches instead of enabling it; patterns apply in the order given.  QEMU starts with every
event disabled.  Here a run without ``--trace-events`` traces everything, so the events start
disabled when the first pattern enables and enabled when the first pattern is a ``-`` one:
``--trace-events '-virtio_iommu_translate*'`` is everything but the translations.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import IO, Any

from sim import TraceRecord, TraceSink

#: the number before ``@`` on every line (QEMU's thread id)
QEMU_TRACE_PID = 4242

_VDEV_BASE = 0x5555_5500_0000
_VDEV_STRIDE = 0x10_0000

_Fields = dict[str, Any]


def _d(value: Any) -> str:
    """C's ``%d`` of a 32-bit argument: values of 2^31 and above print negative."""
    n = int(value) & 0xFFFF_FFFF
    return str(n - (1 << 32) if n >= 1 << 31 else n)


def _u(value: Any) -> str:
    return str(int(value))


def _x(value: Any) -> str:
    return f"0x{int(value):x}"


def _bool(value: Any) -> str:
    return "1" if value else "0"


def _dom_ep(f: _Fields) -> str:
    return f"domain={_d(f['domain_id'])} endpoint={_d(f['ep_id'])}"


def _range(f: _Fields) -> str:
    return f"domain={_d(f['domain_id'])} virt_start={_x(f['virt_start'])} virt_end={_x(f['virt_end'])}"


#: QEMU event name -> its trace-events format applied to the record's fields (virtio devices'
#: pointer arguments are added by ``QemuLogSink``)
_FORMATS: dict[str, Callable[[_Fields], str]] = {
    # hw/virtio/trace-events, virtio-iommu.c
    "virtio_iommu_device_reset": lambda f: "reset!",
    "virtio_iommu_system_reset": lambda f: "system reset!",
    "virtio_iommu_device_status": lambda f: f"driver status = {_d(f['status'])}",
    "virtio_iommu_get_config": lambda f: (
        f"page_size_mask={_x(f['page_size_mask'])} input range start={_x(f['start'])} "
        f"input range end={_x(f['end'])} domain range start={_d(f['domain_start'])} "
        f"domain range end={_d(f['domain_end'])} probe_size={_x(f['probe_size'])} bypass={_x(f['bypass'])}"),
    "virtio_iommu_set_config": lambda f: f"bypass={_x(f['bypass'])}",
    "virtio_iommu_attach": _dom_ep,
    "virtio_iommu_detach": _dom_ep,
    "virtio_iommu_detach_endpoint_from_domain": _dom_ep,
    "virtio_iommu_map": lambda f: f"{_range(f)} phys_start={_x(f['phys_start'])} flags={_d(f['flags'])}",
    "virtio_iommu_unmap": _range,
    "virtio_iommu_unmap_done": _range,
    "virtio_iommu_translate": lambda f: f"mr={f['name']} rid={_d(f['rid'])} addr={_x(f['iova'])} flag={_d(f['flag'])}",
    "virtio_iommu_init_iommu_mr": lambda f: f"init {f['iommu_mr']}",
    "virtio_iommu_get_endpoint": lambda f: f"Alloc endpoint={_d(f['ep_id'])}",
    "virtio_iommu_put_endpoint": lambda f: f"Free endpoint={_d(f['ep_id'])}",
    "virtio_iommu_get_domain": lambda f: f"Alloc domain={_d(f['domain_id'])}",
    "virtio_iommu_put_domain": lambda f: f"Free domain={_d(f['domain_id'])}",
    "virtio_iommu_translate_out": lambda f: f"{_x(f['virt_addr'])} -> {_x(f['phys_addr'])} for sid={_d(f['sid'])}",
    "virtio_iommu_report_fault": lambda f: (
        f"FAULT reason={_d(f['reason'])} flags={_d(f['flags'])} endpoint={_d(f['endpoint'])} "
        f"address ={_x(f['addr'])}"),
    "virtio_iommu_fill_resv_property": lambda f: (
        f"dev= {_d(f['devid'])}, type={_d(f['subtype'])} start={_x(f['start'])} end={_x(f['end'])}"),
    "virtio_iommu_notify_map": lambda f: (
        f"mr={f['mr']} virt_start={_x(f['virt_start'])} virt_end={_x(f['virt_end'])} "
        f"phys_start={_x(f['paddr'])} flags={_d(f['flags'])}"),
    "virtio_iommu_notify_unmap": lambda f: (
        f"mr={f['mr']} virt_start={_x(f['virt_start'])} virt_end={_x(f['virt_end'])}"),
    "virtio_iommu_remap": lambda f: (
        f"mr={f['name']} virt_start={_x(f['virt_start'])} virt_end={_x(f['virt_end'])} "
        f"phys_start={_x(f['phys_start'])}"),
    "virtio_iommu_update_page_size_mask": lambda f: (
        f"host iommu device={f['name']} old_mask={_x(f['old'])} new_mask={_x(f['new'])}"),
    "virtio_iommu_notify_flag_add": lambda f: f"add notifier to mr {f['name']}",
    "virtio_iommu_notify_flag_del": lambda f: f"del notifier from mr {f['name']}",
    "virtio_iommu_switch_address_space": lambda f: (
        f"Device {int(f['bus']):02x}:{int(f['slot']):02x}.{int(f['fn']):x} switching address space "
        f"(iommu enabled={_bool(f['on'])})"),
    "virtio_iommu_freeze_granule": lambda f: f"granule set to {_x(f['page_size_mask'])}",
    # hw/virtio/trace-events, virtio-pci.c and virtio.c (pointers from ``_pointers``)
    "virtio_pci_notify_write": lambda f: f"{_x(f['offset'])} = {_x(f['value'])} ({_d(f['size'])})",
    "virtio_queue_notify": lambda f: f"vdev {_x(f['_vdev'])} n {_d(f['queue'])} vq {_x(f['_vq'])}",
    "virtqueue_pop": lambda f: (
        f"vq {_x(f['_vq'])} elem {_x(f['_elem'])} in_num {_u(f['in_num'])} out_num {_u(f['out_num'])}"),
    "virtqueue_fill": lambda f: f"vq {_x(f['_vq'])} elem {_x(f['_elem'])} len {_u(f['len'])} idx {_u(f['idx'])}",
    "virtqueue_flush": lambda f: f"vq {_x(f['_vq'])} count {_u(f['count'])}",
    "virtio_notify": lambda f: f"vdev {_x(f['_vdev'])} vq {_x(f['_vq'])}",
    "virtio_set_status": lambda f: f"vdev {_x(f['_vdev'])} val {_u(f['status'])}",
    # hw/vfio/trace-events
    "vfio_iommu_map_notify": lambda f: f"iommu {f['op']} @ {_x(f['iova_start'])} - {_x(f['iova_end'])}",
}

#: the QEMU events ``--trace-format qemu`` can write
QEMU_EVENTS: tuple[str, ...] = tuple(_FORMATS)

_POINTER_EVENTS = frozenset({"virtio_queue_notify", "virtqueue_pop", "virtqueue_fill", "virtqueue_flush",
                             "virtio_notify", "virtio_set_status"})


def qemu_timestamp(time_ps: int) -> str:
    """``SECONDS.MICROS`` of a simulated time in picoseconds (truncated to the microsecond)."""
    us = time_ps // 1_000_000
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


class QemuLogSink:
    """Writes each record that has a QEMU counterpart as one log-backend line to ``out``."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._vdevs: dict[str, int] = {}

    def _pointers(self, record: TraceRecord) -> _Fields:
        vdev = self._vdevs.get(record.source)
        if vdev is None:
            vdev = self._vdevs[record.source] = _VDEV_BASE + _VDEV_STRIDE * len(self._vdevs)
        fields = dict(record.fields)
        vq = vdev + 0x1000 * (int(fields.get("queue", 0)) + 1)
        fields.update(_vdev=vdev, _vq=vq, _elem=vq + 0x10 * int(fields.get("head", 0)))
        return fields

    def line(self, record: TraceRecord) -> str | None:
        """The record's log line (with its newline), or None for an event QEMU does not have."""
        fmt = _FORMATS.get(record.event)
        if fmt is None:
            return None
        fields = self._pointers(record) if record.event in _POINTER_EVENTS else record.fields
        try:
            args = fmt(fields)
        except (KeyError, TypeError, ValueError):  # a record without the fields QEMU prints: left out
            return None
        return f"{QEMU_TRACE_PID}@{qemu_timestamp(record.time)}:{record.event} {args}\n"

    def emit(self, record: TraceRecord) -> None:
        text = self.line(record)
        if text is not None:
            self._out.write(text)


# -- event patterns (trace/control.c) ---------------------------------------------------------------

class PatternError(ValueError):
    """A ``--trace-events`` pattern that names nothing (empty, or a lone ``-``)."""


def _compile(pattern: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


class EventFilter:
    """Which events pass: QEMU's ``-trace`` patterns applied in order (see the module docstring)."""

    def __init__(self, patterns: Sequence[str]) -> None:
        rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in patterns:
            enable = not raw.startswith("-")
            name = raw if enable else raw[1:]
            if not name:
                raise PatternError(f"{raw!r} names no event (a name, or a pattern with * and ?)")
            rules.append((enable, _compile(name)))
        self._rules = rules
        self._default = not rules or not rules[0][0]
        self._cache: dict[str, bool] = {}

    def __call__(self, event: str) -> bool:
        """Does ``event`` pass?"""
        known = self._cache.get(event)
        if known is not None:
            return known
        on = self._default
        for enable, rx in self._rules:
            if rx.match(event):
                on = enable
        self._cache[event] = on
        return on


class FilterSink:
    """Passes to ``inner`` the records whose event the filter lets through."""

    def __init__(self, keep: Callable[[str], bool], inner: TraceSink) -> None:
        self._keep = keep
        self._inner = inner

    def emit(self, record: TraceRecord) -> None:
        if self._keep(record.event):
            self._inner.emit(record)
