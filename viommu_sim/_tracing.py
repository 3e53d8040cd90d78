"""``--trace PATH`` / ``--trace-format jsonl|perfetto`` for the subcommands that run a simulation.

The trace file is opened before anything runs (a path that cannot be opened is a usage error at
once).  A path that opens but fails on write (``/dev/full``, a full disk) must not break the
models mid-step nor pass unnoticed: the sink writes through ``_GuardedFile``, which keeps the first
``OSError`` and drops every later record; closing the output reports it as one line naming the
path (exit 2).  A JSONL trace is therefore either complete or reported as failed.
"""

from __future__ import annotations

import argparse
from typing import IO, Any

from sim import JsonlSink, ListSink, TraceSink

from ._options import UsageError
from ._perfetto import write_chrome_trace


def add_trace_flags(parser: argparse.ArgumentParser, *, formats: bool = True) -> None:
    parser.add_argument("--trace", metavar="PATH", help="write the simulation's event trace to PATH")
    if formats:
        parser.add_argument("--trace-format", default="jsonl", choices=("jsonl", "perfetto"),
                            help="jsonl: one event per line (default); perfetto: Chrome trace-event JSON for ui.perfetto.dev")


class _GuardedFile:
    """A text file whose writes never raise: the first failure is kept in ``error``."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, text: str) -> int:
        if self.error is None:
            try:
                self._file.write(text)
            except OSError as exc:
                self.error = exc
        return len(text)

    def flush(self) -> None:
        if self.error is None:
            try:
                self._file.flush()
            except OSError as exc:
                self.error = exc


class TraceOutput:
    """Opens the trace file up front (a bad path is a usage error before anything runs) and finishes it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.path: str | None = getattr(args, "trace", None)
        self.format: str = getattr(args, "trace_format", "jsonl")
        self.file: IO[str] | None = None
        self._guard: _GuardedFile | None = None
        self.sinks: list[TraceSink] = []
        self._records: ListSink | None = None
        if self.path is None:
            return
        try:
            self.file = open(self.path, "w", encoding="utf-8", newline="\n")
        except OSError as exc:
            raise UsageError(f"--trace: cannot write {self.path}: {exc.strerror}") from None
        self._guard = _GuardedFile(self.file)
        if self.format == "jsonl":
            self.sinks.append(JsonlSink(self._guard))  # type: ignore[arg-type]  # write/flush are all it uses
        else:
            self._records = ListSink()
            self.sinks.append(self._records)

    @property
    def failed(self) -> bool:
        """A write of the trace has failed (a run may stop early: ``close`` reports it)."""
        return self._guard is not None and self._guard.error is not None

    def close(self) -> None:
        """Finish the file; a write that failed (now or during the run) is a ``UsageError``."""
        if self.file is None or self._guard is None:
            return
        guard, file = self._guard, self.file
        self.file = None
        if self._records is not None:
            write_chrome_trace(self._records.records, guard)  # type: ignore[arg-type]
        guard.flush()
        try:
            file.close()
        except OSError as exc:
            guard.error = guard.error or exc
        if guard.error is not None:
            raise UsageError(f"--trace: cannot write {self.path}: {guard.error.strerror}")

    def __enter__(self) -> TraceOutput:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
