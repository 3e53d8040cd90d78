"""Trace records and sinks.

A trace event is data: a small frozen record of (time, seq, source, event,
fields).  The kernel numbers records with its own counter so that two records at
the same simulated time keep the order in which the models emitted them.
Sinks receive records; with no sink attached, ``Simulator.tracing`` is False and
call sites skip building the record at all (one attribute check).

The JSON Lines rendering is canonical (fixed key order, no whitespace, ints as
ints), so two runs that emit the same records write byte-identical files.
"""

from __future__ import annotations

import json
from typing import IO, TYPE_CHECKING, Any, Callable, Protocol

import attrs

if TYPE_CHECKING:
    from ._kernel import Simulator


@attrs.frozen(slots=True)
class TraceRecord:
    """One observable fact: what happened (``event``) where (``source``) and when."""

    time: int
    seq: int
    source: str
    event: str
    fields: dict[str, Any] = attrs.field(factory=dict, eq=True, hash=False)

    def to_json(self) -> str:
        """Canonical one-line JSON rendering (the JSONL sink's format)."""
        obj = {"t": self.time, "seq": self.seq, "src": self.source, "ev": self.event, **self.fields}
        return json.dumps(obj, separators=(",", ":"), default=_json_default)


def _json_default(value: object) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (tuple, frozenset, set)):
        return list(value)
    if hasattr(value, "name") and hasattr(value, "value"):  # enums
        return getattr(value, "name")
    return repr(value)


class TraceSink(Protocol):
    def emit(self, record: TraceRecord) -> None: ...


class ListSink:
    """Collects records in memory (tests assert on ``records``)."""

    def __init__(self) -> None:
        self.records: list[TraceRecord] = []

    def emit(self, record: TraceRecord) -> None:
        self.records.append(record)

    def events(self, source: str | None = None) -> list[tuple[str, str]]:
        """``(source, event)`` pairs, optionally of one source: handy in asserts."""
        return [(r.source, r.event) for r in self.records if source is None or r.source == source]


class JsonlSink:
    """Writes one canonical JSON object per line to a text file."""

    def __init__(self, target: str | IO[str]) -> None:
        if isinstance(target, str):
            self._file: IO[str] = open(target, "w", encoding="utf-8", newline="\n")
            self._owned = True
        else:
            self._file = target
            self._owned = False

    def emit(self, record: TraceRecord) -> None:
        self._file.write(record.to_json())
        self._file.write("\n")

    def close(self) -> None:
        if self._owned:
            self._file.close()
        else:
            self._file.flush()


class CallbackSink:
    """Calls ``fn(record)`` for each record (monitors in the testbench use this)."""

    def __init__(self, fn: Callable[[TraceRecord], None]) -> None:
        self._fn = fn

    def emit(self, record: TraceRecord) -> None:
        self._fn(record)


class Tracer:
    """Emits trace records for one source; made by ``Simulator.tracer``."""

    __slots__ = ("_sim", "source", "_common")

    def __init__(self, sim: Simulator, source: str, common: dict[str, Any]) -> None:
        self._sim = sim
        self.source = source
        self._common = common

    def __repr__(self) -> str:
        return f"<Tracer {self.source!r}>"

    @property
    def enabled(self) -> bool:
        """True while some sink listens (guard an expensive field computation with it)."""
        return self._sim.tracing

    def __call__(self, event: str, **fields: Any) -> None:
        sim = self._sim
        if sim.tracing:
            if self._common:
                fields = {**self._common, **fields}
            sim.trace(self.source, event, **fields)
