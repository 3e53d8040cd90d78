"""Replay input: virtio-iommu request streams from JSON Lines or from QEMU trace logs.

Two formats, told apart by the first non-blank line (``{`` starts JSON Lines):

* JSON Lines, one request per line::

      {"op": "map", "domain": 1, "virt_start": "0xfffff000", "virt_end": "0xffffffff",
       "phys_start": "0xa1000", "flags": 3}

  ``op`` is attach | detach | map | unmap | probe; the other fields are ints or
  strings such as ``"0xa1000"``; absent fields are 0; unknown fields are an error.
* QEMU trace logs as written with ``-trace 'virtio_iommu_*'`` (log backend), with
  or without the ``pid@seconds:`` prefix.  The lines ``virtio_iommu_attach``,
  ``virtio_iommu_detach``, ``virtio_iommu_map`` and ``virtio_iommu_unmap`` become
  requests (formats from hw/virtio/trace-events); every other line is ignored.
  QEMU prints 32-bit fields with ``%d``, so negative values are read back as u32.
  ``virtio_iommu_map`` is traced only for MAPs that passed validation, and ATTACH
  flags are not traced (read as 0).

A malformed line raises ReplayInputError carrying its 1-based line number.
``encode_request`` turns a request into the bytes of its device-readable part.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

from ._viommu_wire import (
    TAIL_SIZE,
    U32,
    U64,
    AttachReq,
    DetachReq,
    MapReq,
    ProbeReq,
    UnmapReq,
)

OPS = ("attach", "detach", "map", "unmap", "probe")
_FIELDS = ("domain", "endpoint", "virt_start", "virt_end", "phys_start", "flags")
_WIDTH = {"domain": U32, "endpoint": U32, "flags": U32, "virt_start": U64, "virt_end": U64, "phys_start": U64}


class ReplayInputError(ValueError):
    """A replay input line that cannot be read; ``line`` is 1-based."""

    def __init__(self, line: int, problem: str) -> None:
        self.line = line
        self.problem = problem
        super().__init__(f"line {line}: {problem}")


@attrs.frozen
class ReplayRequest:
    """One request to replay; ``line`` is where it came from (1-based)."""

    op: str
    domain: int = 0
    endpoint: int = 0
    virt_start: int = 0
    virt_end: int = 0
    phys_start: int = 0
    flags: int = 0
    line: int = 0


def parse_replay(text: str) -> list[ReplayRequest]:
    """Parse replay input, auto-detecting JSON Lines or a QEMU trace log."""
    lines = text.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    if first.startswith("{"):
        return _parse_jsonl(lines)
    return _parse_trace(lines)


def _number(lineno: int, name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ReplayInputError(lineno, f"{name} must be an integer, not {json.dumps(value)}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        try:
            n = int(value.strip(), 0)
        except ValueError:
            raise ReplayInputError(lineno, f"{name} {value!r} is not an integer (e.g. 42 or \"0xa1000\")") from None
    else:
        raise ReplayInputError(lineno, f"{name} must be an integer or a hex string, not {json.dumps(value)}")
    if not 0 <= n <= _WIDTH[name]:
        bits = 32 if _WIDTH[name] == U32 else 64
        raise ReplayInputError(lineno, f"{name} {n:#x} does not fit in {bits} bits")
    return n


def _parse_jsonl(lines: list[str]) -> list[ReplayRequest]:
    out: list[ReplayRequest] = []
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ReplayInputError(lineno, f"not valid JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(obj, dict):
            raise ReplayInputError(lineno, "expected a JSON object")
        op = obj.get("op")
        if op not in OPS:
            raise ReplayInputError(lineno, f"op must be one of {', '.join(OPS)}, not {json.dumps(op)}")
        unknown = sorted(set(obj) - {"op", *_FIELDS})
        if unknown:
            raise ReplayInputError(lineno, f"unknown field {unknown[0]!r}")
        values = {name: _number(lineno, name, obj[name]) for name in _FIELDS if name in obj}
        out.append(ReplayRequest(op, line=lineno, **values))
    return out


_PREFIX = re.compile(r"^\d+@\d+(?:\.\d+)?:")
_TRACE_OPS = {
    "virtio_iommu_attach": ("attach", ("domain", "endpoint")),
    "virtio_iommu_detach": ("detach", ("domain", "endpoint")),
    "virtio_iommu_map": ("map", ("domain", "virt_start", "virt_end", "phys_start", "flags")),
    "virtio_iommu_unmap": ("unmap", ("domain", "virt_start", "virt_end")),
}
_KV = re.compile(r"(\w+)=(\S*)")
DEFAULT_PROBE_SIZE = 512


def _parse_trace(lines: list[str]) -> list[ReplayRequest]:
    out: list[ReplayRequest] = []
    for lineno, raw in enumerate(lines, 1):
        line = _PREFIX.sub("", raw.strip(), count=1)
        event, _, args = line.partition(" ")
        spec = _TRACE_OPS.get(event)
        if spec is None:
            continue
        op, names = spec
        found = dict(_KV.findall(args))
        values: dict[str, int] = {}
        for name in names:
            text = found.get(name)
            if text is None:
                raise ReplayInputError(lineno, f"{event} without {name}=")
            try:
                n = int(text, 0)
            except ValueError:
                raise ReplayInputError(lineno, f"{event}: {name}={text!r} is not a number") from None
            if n < 0 and _WIDTH[name] == U32 and n >= -(1 << 31):
                n &= U32  # %d of a u32
            values[name] = _number(lineno, name, n)
        out.append(ReplayRequest(op, line=lineno, **values))
    return out


def encode_request(req: ReplayRequest) -> bytes:
    """The device-readable part (head + body) of ``req`` on the wire."""
    if req.op == "attach":
        return AttachReq(req.domain, req.endpoint, req.flags).pack()
    if req.op == "detach":
        return DetachReq(req.domain, req.endpoint).pack()
    if req.op == "map":
        return MapReq(req.domain, req.virt_start, req.virt_end, req.phys_start, req.flags).pack()
    if req.op == "unmap":
        return UnmapReq(req.domain, req.virt_start, req.virt_end).pack()
    if req.op == "probe":
        return ProbeReq(req.endpoint).pack()
    raise ValueError(f"unknown op {req.op!r}")


def writable_size(req: ReplayRequest, probe_size: int = DEFAULT_PROBE_SIZE) -> int:
    """Size of the device-writable part a driver supplies for ``req`` (tail, or properties + tail)."""
    return probe_size + TAIL_SIZE if req.op == "probe" else TAIL_SIZE
