"""``--trace PATH``, ``--trace-format`` and ``--trace-events`` for the subcommands that run a simulation.

Formats: ``jsonl`` (one canonical JSON object per record, the default), ``perfetto`` (Chrome
trace-event JSON, ``_perfetto``), ``qemu`` (QEMU's log trace backend, ``_qemu_trace``; what
``replay`` reads back) and ``vcd`` (a value change dump, ``_vcd``).  ``--trace-events PATTERN``
(repeatable) keeps the events QEMU's ``-trace`` rules select (``*`` and ``?`` wildcards, a leading
``-`` disables; ``_qemu_trace.EventFilter``), whatever the format.

``--trace -`` writes the trace to standard output; the command's own output (dmesg, replay's
statuses, run's summary) then goes to standard error, so the two never interleave.  The trace
file is opened before anything runs: a path that cannot be opened (a directory, no permission)
and an argument that is an event pattern rather than a path (``--trace 'virtio_iommu_*'``, QEMU's
spelling) are one line and exit 2, and no file is created.

A path that opens but fails on write (``/dev/full``, a full disk) must not break the models
mid-step nor pass unnoticed: the output goes through ``_GuardedFile``, which keeps the first
``OSError`` and drops every later write; closing the output reports it as one line naming the
path (exit 2).  A trace is therefore either complete or reported as failed.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any

from sim import JsonlSink, ListSink, TraceSink

from ._options import UsageError
from ._perfetto import write_chrome_trace
from ._qemu_trace import EventFilter, FilterSink, PatternError, QemuLogSink
from ._vcd import write_vcd

FORMATS = ("jsonl", "perfetto", "qemu", "vcd")
_GLOB = frozenset("*?[")


def add_trace_flags(parser: argparse.ArgumentParser, *, formats: bool = True) -> None:
    parser.add_argument("--trace", metavar="PATH",
                        help="write the simulation's event trace to PATH ('-' = standard output; the command's "
                             "own output then goes to standard error)")
    if formats:
        parser.add_argument("--trace-format", default="jsonl", choices=FORMATS,
                            help="jsonl: one event per line (default); perfetto: Chrome trace-event JSON for "
                                 "ui.perfetto.dev; qemu: QEMU's log trace backend (PID@SECONDS.MICROS:event "
                                 "args, readable by replay); vcd: value change dump for GTKWave or Surfer")
    parser.add_argument("--trace-events", metavar="PATTERN", action="append", default=None,
                        help="trace only the events PATTERN selects, QEMU's -trace rules: * and ? wildcards, "
                             "a leading - disables (write it --trace-events=-PATTERN); repeatable, applied in order "
                             "(default: every event)")


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


def _check_path(path: str) -> None:
    if _GLOB & set(path):
        raise UsageError(f"--trace {path}: an event pattern, not a file (QEMU's -trace PATTERN): "
                         f"give the events with --trace-events '{path}' and the file with --trace PATH")


class TraceOutput:
    """Opens the trace up front (a bad argument is a usage error before anything runs) and finishes it.

    Used as a context manager around the run: inside it, with ``--trace -``, ``sys.stdout`` is
    standard error (the command's output) while the trace goes to the real standard output.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.path: str | None = getattr(args, "trace", None)
        self.format: str = getattr(args, "trace_format", "jsonl") or "jsonl"
        patterns: list[str] | None = getattr(args, "trace_events", None)
        self.file: IO[str] | None = None
        self._guard: _GuardedFile | None = None
        self.sinks: list[TraceSink] = []
        self._records: ListSink | None = None
        self._stdout: IO[str] | None = None  # the real standard output while it carries the trace
        try:
            keep = EventFilter(patterns or [])
        except PatternError as exc:
            raise UsageError(f"--trace-events: {exc}") from None
        if self.path is None:
            if patterns:
                raise UsageError("--trace-events needs --trace PATH (the file the selected events go to)")
            return
        if self.path == "-":
            self.file = sys.stdout
        else:
            _check_path(self.path)
            try:
                self.file = open(self.path, "w", encoding="utf-8", newline="\n")
            except OSError as exc:
                raise UsageError(f"--trace: cannot write {self.path}: {exc.strerror}") from None
        self._guard = guard = _GuardedFile(self.file)
        sink: TraceSink
        if self.format == "jsonl":
            sink = JsonlSink(guard)  # type: ignore[arg-type]  # write/flush are all it uses
        elif self.format == "qemu":
            sink = QemuLogSink(guard)  # type: ignore[arg-type]
        else:
            sink = self._records = ListSink()
        self.sinks.append(FilterSink(keep, sink) if patterns else sink)

    @property
    def failed(self) -> bool:
        """A write of the trace has failed (a run may stop early: ``close`` reports it)."""
        return self._guard is not None and self._guard.error is not None

    @property
    def to_stdout(self) -> bool:
        return self.path == "-"

    def close(self) -> None:
        """Finish the trace; a write that failed (now or during the run) is a ``UsageError``."""
        if self._stdout is not None:
            sys.stdout, self._stdout = self._stdout, None
        if self.file is None or self._guard is None:
            return
        guard, file = self._guard, self.file
        self.file = None
        if self._records is not None:
            if self.format == "perfetto":
                write_chrome_trace(self._records.records, guard)  # type: ignore[arg-type]
            else:
                write_vcd(self._records.records, guard)  # type: ignore[arg-type]
        guard.flush()
        if file is not sys.stdout and file is not sys.__stdout__:
            try:
                file.close()
            except OSError as exc:
                guard.error = guard.error or exc
        if guard.error is not None:
            where = "standard output" if self.to_stdout else self.path
            raise UsageError(f"--trace: cannot write {where}: {guard.error.strerror}")

    def __enter__(self) -> TraceOutput:
        if self.to_stdout and self.file is not None and self._stdout is None:
            self._stdout, sys.stdout = sys.stdout, sys.stderr
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
