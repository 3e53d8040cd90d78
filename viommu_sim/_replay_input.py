"""Replay input: virtio-iommu request streams from JSON Lines or from QEMU trace logs, streamed.

Two formats, told apart by the first non-blank line (a UTF-8 byte order mark before it is dropped):

* JSON Lines (the line starts with ``{``), one request object per line::

      {"op": "map", "domain": 1, "virt_start": "0xfffff000", "virt_end": "0xffffffff",
       "phys_start": "0xa1000", "flags": 3}

  ``op`` is attach | detach | map | unmap | probe; the other fields are ints or
  strings such as ``"0xa1000"``; absent fields are 0; unknown fields are an error.
* QEMU trace logs as written with ``-trace 'virtio_iommu_*'`` (log backend): the line has
  the shape of a trace line, an event name (lower case, with underscores) and its
  arguments, with or without the ``pid@seconds:`` prefix.  The lines ``virtio_iommu_attach``,
  ``virtio_iommu_detach``, ``virtio_iommu_map`` and ``virtio_iommu_unmap`` become
  requests (formats from hw/virtio/trace-events); every other line is ignored.
  QEMU prints 32-bit fields with ``%d``, so negative values are read back as u32.
  ``virtio_iommu_map`` is traced only for MAPs that passed validation, and ATTACH
  flags are not traced (read as 0).

Any other first line (a JSON array, arbitrary text) is an error naming that line, so a file
in neither format never replays to nothing; ``viommu-sim replay`` also refuses an input
that holds no request.

The input is read one line at a time (``requests(f)`` yields each request as its line is
read), so memory does not grow with the number of requests.  Every read is bounded: a line
is at most ``MAX_LINE_BYTES`` (a request line is under 300 bytes), the input at most
``MAX_INPUT_BYTES``, a JSON integer at most ``MAX_INT_DIGITS`` digits (a u64 has 20), and a
JSON value nested past the parser's recursion limit is an error, not a crash.

A malformed line raises ReplayInputError carrying its 1-based line number.
The records are ``ReplayRequest`` (models/guest/_raw_requests.py), which also
encodes them for the raw guest driver.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import IO, Any

from models import U32, U64
from models.guest import OPS, ReplayRequest

from ._nesting import MAX_NESTING, deeper_than

_FIELDS = ("domain", "endpoint", "virt_start", "virt_end", "phys_start", "flags")
_WIDTH = {"domain": U32, "endpoint": U32, "flags": U32, "virt_start": U64, "virt_end": U64, "phys_start": U64}

#: the longest input line read, in bytes (with its newline)
MAX_LINE_BYTES = 64 << 10
#: the largest input read, in bytes
MAX_INPUT_BYTES = 1 << 30
#: the most digits of an integer in the input (a u64 needs 20, "0x" + 16 hex digits 18)
MAX_INT_DIGITS = 40
_BOM = b"\xef\xbb\xbf"


class ReplayInputError(ValueError):
    """A replay input line that cannot be read; ``line`` is 1-based."""

    def __init__(self, line: int, problem: str) -> None:
        self.line = line
        self.problem = problem
        super().__init__(f"line {line}: {problem}")


def _shown(value: Any, limit: int = 40) -> str:
    """A value as JSON for an error message, at most ``limit`` characters."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError):
        text = f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def lines(f: IO[bytes], copy: IO[bytes] | None = None) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` for each line of ``f``, bounded (see the module docstring), a BOM
    before the first line dropped; each raw line is also written to ``copy`` if given."""
    total = 0
    lineno = 0
    while True:
        raw = f.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        lineno += 1
        total += len(raw)
        if len(raw) > MAX_LINE_BYTES:
            raise ReplayInputError(lineno, f"line longer than {MAX_LINE_BYTES >> 10} KiB")
        if total > MAX_INPUT_BYTES:
            raise ReplayInputError(lineno, f"input larger than {MAX_INPUT_BYTES >> 20} MiB")
        if copy is not None:
            copy.write(raw)
        if lineno == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ReplayInputError(lineno, f"not UTF-8 text (byte {exc.start + 1} of the line)") from None


#: a QEMU log-backend trace line: optional ``pid@seconds:``, an event name, its arguments
_PREFIX = re.compile(r"^\d+@\d+(?:\.\d+)?:")
_TRACE_LINE = re.compile(r"^(?:\d+@\d+(?:\.\d+)?:)?[a-z][a-z0-9]*(?:_[a-z0-9]+)+(?:\s|$)")


def detect(lineno: int, text: str) -> str:
    """The format a first non-blank line starts: ``"jsonl"`` or ``"qemu"``; else ReplayInputError."""
    line = text.strip()
    if line.startswith("{"):
        return "jsonl"
    if _TRACE_LINE.match(line):
        return "qemu"
    if line.startswith("["):
        raise ReplayInputError(lineno, "a JSON array, not JSON Lines: write one request object per line")
    raise ReplayInputError(lineno, "neither a JSON Lines request (a line starting with {) nor a QEMU trace log "
                                   "line (pid@seconds:event_name arguments)")


def requests(f: IO[bytes], copy: IO[bytes] | None = None) -> Iterator[ReplayRequest]:
    """Each request of the input ``f`` as its line is read (the format from the first non-blank line)."""
    parse = None
    for lineno, text in lines(f, copy):
        if parse is None:
            if not text.strip():
                continue
            parse = _jsonl_line if detect(lineno, text) == "jsonl" else _trace_line
        req = parse(lineno, text)
        if req is not None:
            yield req


def parse_replay(text: str) -> list[ReplayRequest]:
    """Parse a whole replay input held in a string (see ``requests``)."""
    return list(requests(io.BytesIO(text.encode("utf-8"))))


def _number(lineno: int, name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ReplayInputError(lineno, f"{name} must be an integer, not {_shown(value)}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            if len(text) > MAX_INT_DIGITS:
                raise ValueError(text)
            n = int(text, 0)
        except ValueError:
            shown = repr(value) if len(value) <= 40 else repr(value[:34]) + "..."
            raise ReplayInputError(lineno, f"{name} {shown} is not an integer (e.g. 42 or \"0xa1000\")") from None
    else:
        raise ReplayInputError(lineno, f"{name} must be an integer or a hex string, not {_shown(value)}")
    if not 0 <= n <= _WIDTH[name]:
        bits = 32 if _WIDTH[name] == U32 else 64
        raise ReplayInputError(lineno, f"{name} {n:#x} does not fit in {bits} bits")
    return n


def _bounded_int(text: str) -> int:
    """json's ``parse_int``: an integer of at most MAX_INT_DIGITS digits."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _jsonl_line(lineno: int, raw: str) -> ReplayRequest | None:
    if not raw.strip():
        return None
    if deeper_than(raw):  # a bound of its own: json's depends on the interpreter's recursion limit
        raise ReplayInputError(lineno, f"not valid JSON: nested too deeply (more than {MAX_NESTING} levels)")
    try:
        obj = json.loads(raw, parse_int=_bounded_int)
    except json.JSONDecodeError as e:
        raise ReplayInputError(lineno, f"not valid JSON: {e.msg} at column {e.colno}") from None
    except ValueError as e:
        raise ReplayInputError(lineno, f"not valid JSON: {e}") from None
    except RecursionError:
        raise ReplayInputError(lineno, f"not valid JSON: nested too deeply (more than {MAX_NESTING} levels)") from None
    if not isinstance(obj, dict):
        raise ReplayInputError(lineno, "expected a JSON object")
    op = obj.get("op")
    if op not in OPS:
        raise ReplayInputError(lineno, f"op must be one of {', '.join(OPS)}, not {_shown(op)}")
    unknown = sorted(set(obj) - {"op", *_FIELDS})
    if unknown:
        raise ReplayInputError(lineno, f"unknown field {unknown[0][:40]!r}")
    values = {name: _number(lineno, name, obj[name]) for name in _FIELDS if name in obj}
    return ReplayRequest(op, line=lineno, **values)


_TRACE_OPS = {
    "virtio_iommu_attach": ("attach", ("domain", "endpoint")),
    "virtio_iommu_detach": ("detach", ("domain", "endpoint")),
    "virtio_iommu_map": ("map", ("domain", "virt_start", "virt_end", "phys_start", "flags")),
    "virtio_iommu_unmap": ("unmap", ("domain", "virt_start", "virt_end")),
}
_KV = re.compile(r"(\w+)=(\S*)")


def _trace_line(lineno: int, raw: str) -> ReplayRequest | None:
    line = _PREFIX.sub("", raw.strip(), count=1)
    event, _, args = line.partition(" ")
    spec = _TRACE_OPS.get(event)
    if spec is None:
        return None
    op, names = spec
    found = dict(_KV.findall(args))
    values: dict[str, int] = {}
    for name in names:
        text = found.get(name)
        if text is None:
            raise ReplayInputError(lineno, f"{event} without {name}=")
        try:
            if len(text) > MAX_INT_DIGITS:
                raise ValueError(text)
            n = int(text, 0)
        except ValueError:
            shown = repr(text) if len(text) <= 40 else repr(text[:34]) + "..."
            raise ReplayInputError(lineno, f"{event}: {name}={shown} is not a number") from None
        if n < 0 and _WIDTH[name] == U32 and n >= -(1 << 31):
            n &= U32  # %d of a u32
        values[name] = _number(lineno, name, n)
    return ReplayRequest(op, line=lineno, **values)
