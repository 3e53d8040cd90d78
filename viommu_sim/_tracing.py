"""``--trace PATH`` / ``--trace-format jsonl|perfetto`` for the subcommands that run a simulation."""

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


class TraceOutput:
    """Opens the trace file up front (a bad path is a usage error before anything runs) and finishes it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.path: str | None = getattr(args, "trace", None)
        self.format: str = getattr(args, "trace_format", "jsonl")
        self.file: IO[str] | None = None
        self.sinks: list[TraceSink] = []
        self._records: ListSink | None = None
        if self.path is None:
            return
        try:
            self.file = open(self.path, "w", encoding="utf-8", newline="\n")
        except OSError as exc:
            raise UsageError(f"--trace: cannot write {self.path}: {exc.strerror}") from None
        if self.format == "jsonl":
            self.sinks.append(JsonlSink(self.file))
        else:
            self._records = ListSink()
            self.sinks.append(self._records)

    def close(self) -> None:
        if self.file is None:
            return
        if self._records is not None:
            write_chrome_trace(self._records.records, self.file)
        self.file.close()
        self.file = None

    def __enter__(self) -> TraceOutput:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
