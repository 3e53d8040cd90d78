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
The records are ``ReplayRequest`` (models/guest/_raw_requests.py), which also
encodes them for the raw guest driver.
"""

from __future__ import annotations

import json
import re
from typing import Any

from models import U32, U64
from models.guest import OPS, ReplayRequest

_FIELDS = ("domain", "endpoint", "virt_start", "virt_end", "phys_start", "flags")
_WIDTH = {"domain": U32, "endpoint": U32, "flags": U32, "virt_start": U64, "virt_end": U64, "phys_start": U64}


class ReplayInputError(ValueError):
    """A replay input line that cannot be read; ``line`` is 1-based."""

    def __init__(self, line: int, problem: str) -> None:
        self.line = line
        self.problem = problem
        super().__init__(f"line {line}: {problem}")


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
