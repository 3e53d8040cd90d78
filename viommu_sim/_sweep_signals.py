"""How a sweep stops: Ctrl-C, SIGTERM and SIGHUP alike, never half way through recording a point.

``stop_on_signals()`` (the CLI holds it while the sweep runs) makes SIGINT, SIGTERM and SIGHUP
raise ``KeyboardInterrupt`` naming the signal, so each stops the sweep the way Ctrl-C does: the
pool's workers are stopped, the CSVs are written for the finished points, the journal keeps them.
A signal that comes while ``recording()`` is held -- the journal line of a finished point being
written and fsync'ed, and the point counted as done -- is held back until that is over, so the
journal, the CSVs and the count ``run_sweep`` reports (``SweepInterrupted``) always agree.  (A
signal arriving during the fsync would otherwise be raised the moment it returns.)

The pool's worker processes leave all of this to the sweep (``worker_signals``): they ignore
Ctrl-C, which the terminal sends to the whole process group, and die of SIGTERM and SIGHUP, the
defaults, rather than run the handler they inherit from the sweep's process when forked.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

#: the signals that stop a sweep
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SweepInterrupted(KeyboardInterrupt):
    """A signal (``how``: "SIGTERM", "SIGHUP", or "Ctrl-C") stopped the sweep with ``done`` of
    ``total`` points in its journal."""

    def __init__(self, how: str, done: int, total: int) -> None:
        super().__init__(how)
        self.how, self.done, self.total = how, done, total


class _Hold:
    """Whether a point is being recorded, and the signal that came meanwhile."""

    depth = 0
    pending: int | None = None


def _name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def _stop(signum: int, _frame: FrameType | None) -> None:
    if _Hold.depth:
        _Hold.pending = signum
        return
    raise KeyboardInterrupt(_name(signum))


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While held, SIGINT, SIGTERM and SIGHUP raise ``KeyboardInterrupt("SIGTERM")`` (the signal's
    name; "Ctrl-C" for SIGINT), outside ``recording()``; the previous handlers come back after."""
    previous: dict[int, Any] = {signum: signal.signal(signum, _stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _Hold.pending = None


@contextlib.contextmanager
def recording() -> Iterator[None]:
    """Hold a stop signal back while a finished point is recorded; raise it at the end."""
    _Hold.depth += 1
    try:
        yield
    finally:
        _Hold.depth -= 1
    if not _Hold.depth and _Hold.pending is not None:
        signum, _Hold.pending = _Hold.pending, None
        raise KeyboardInterrupt(_name(signum))


def interruption(exc: KeyboardInterrupt) -> str:
    """How a KeyboardInterrupt came: the signal ``stop_on_signals`` named, else "Ctrl-C"."""
    return str(exc.args[0]) if exc.args and isinstance(exc.args[0], str) else "Ctrl-C"


def worker_signals() -> None:
    """A pool process's initializer: ignore Ctrl-C, die of SIGTERM and SIGHUP (the defaults)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
