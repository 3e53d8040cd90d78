"""Monitors and scoreboards driven by trace records.

Models report what they do as trace records (``sim.trace(source, event,
**fields)``); a ``Monitor`` is a ``sim.CallbackSink`` that keeps the records
matching a source/event/predicate filter and lets a test task await the next
one.  A ``Scoreboard`` pairs expected items with observed ones (cocotb-bus's
``Scoreboard``, by trace record rather than by bus transaction) and reports
each mismatch with both items and both simulated times.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

from sim import CallbackSink, Event, Simulator, TraceRecord, format_time, with_timeout

from . import _seed

_Match = str | Iterable[str] | None


def _matcher(what: _Match) -> Callable[[str], bool]:
    if what is None:
        return lambda _: True
    if isinstance(what, str):
        return what.__eq__
    names = tuple(what)
    return names.__contains__


class Monitor:
    """Collects the trace records of ``sim`` that match a filter.

    ``source``/``event`` are a name, a collection of names, or None (any);
    ``where`` is an extra predicate on the record.  Matching records are
    appended to ``records`` and passed to each callback, in emission order.
    Creating a Monitor attaches a sink, which turns tracing on.
    """

    def __init__(
        self,
        sim: Simulator,
        source: _Match = None,
        event: _Match = None,
        where: Callable[[TraceRecord], bool] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        self.sim = sim
        self.name = name or f"{source or '*'}.{event or '*'}"
        self.records: list[TraceRecord] = []
        self._source = _matcher(source)
        self._event = _matcher(event)
        self._where = where
        self._callbacks: list[Callable[[TraceRecord], None]] = []
        self._waiters: list[Event] = []
        self._sink = CallbackSink(self._on_record)
        sim.add_sink(self._sink)

    def __repr__(self) -> str:
        return f"<Monitor {self.name} {len(self.records)} records>"

    def __len__(self) -> int:
        return len(self.records)

    def matches(self, record: TraceRecord) -> bool:
        return (
            self._source(record.source)
            and self._event(record.event)
            and (self._where is None or bool(self._where(record)))
        )

    def _on_record(self, record: TraceRecord) -> None:
        if not self.matches(record):
            return
        self.records.append(record)
        for fn in self._callbacks:
            fn(record)
        waiters, self._waiters = self._waiters, []
        for ev in waiters:
            ev.set(record)

    def add_callback(self, fn: Callable[[TraceRecord], None]) -> None:
        """Call ``fn(record)`` for every later matching record."""
        self._callbacks.append(fn)

    async def next(self, timeout: int | None = None) -> TraceRecord:
        """Wait (in a sim task) for the next matching record emitted from now on.

        With ``timeout`` (simulated ps), raise ``SimTimeoutError`` if none comes in time.
        """
        ev = Event(name=f"{self.name}.next")
        self._waiters.append(ev)
        try:
            if timeout is None:
                await ev.wait()
            else:
                await with_timeout(ev.wait(), timeout)
        finally:
            if ev in self._waiters:
                self._waiters.remove(ev)
        record: TraceRecord = ev.data
        return record

    def close(self) -> None:
        """Stop collecting (detach the sink)."""
        self.sim.remove_sink(self._sink)


class ScoreboardError(AssertionError):
    """A scoreboard found mismatched, missing or unexpected items (a functional check failed)."""


def describe(item: Any) -> str:
    """Render an item for messages: a trace record as ``source.event(field=value, ...)``."""
    if isinstance(item, TraceRecord):
        fields = ", ".join(f"{k}={v!r}" for k, v in item.fields.items())
        return f"{item.source}.{item.event}({fields})"
    return repr(item)


class Scoreboard:
    """Compares what was observed with what was expected.

    ``expect(item)`` queues an expectation, ``observe(item)`` matches an
    observation against it, ``check()`` raises ``ScoreboardError`` listing every
    mismatch (both items and both simulated times), every expectation never met
    and every observation nobody expected.  An item is any value or a trace
    record; a record's time is its own, any other item's time is ``sim.now``.

    In order (default) an observation is compared with the oldest pending
    expectation; with ``ordered=False`` it is matched to the oldest pending
    expectation with the same ``key()``.  Subclasses override ``transform``
    (the comparable value of an item), ``key`` and ``compare``.  Connect
    monitors with ``connect(expected=..., observed=...)``.  A scoreboard
    created while a ``@testbench.test`` runs is checked when the test returns.
    """

    def __init__(
        self, sim: Simulator, name: str = "scoreboard", *, ordered: bool = True, fail_immediately: bool = False
    ) -> None:
        self.sim = sim
        self.name = name
        self.ordered = ordered
        #: raise at the mismatching ``observe()`` (inside the task that observed) instead of at ``check()``
        self.fail_immediately = fail_immediately
        self.pending: list[tuple[Any, int]] = []
        self.unexpected: list[tuple[Any, int]] = []
        self.errors: list[str] = []
        self.matched = 0
        self.checked = False
        ctx = _seed.active()
        if ctx is not None:
            ctx.scoreboards.append(self)

    def __repr__(self) -> str:
        return f"<Scoreboard {self.name} matched={self.matched} pending={len(self.pending)} errors={len(self.errors)}>"

    # -- hooks for subclasses ---------------------------------------------
    def transform(self, item: Any) -> Any:
        """The value compared: a record's fields, any other item itself."""
        return dict(item.fields) if isinstance(item, TraceRecord) else item

    def key(self, item: Any) -> Hashable:
        """Identity used to pair items when ``ordered=False``."""
        value = self.transform(item)
        return tuple(value.items()) if isinstance(value, dict) else value

    def compare(self, expected: Any, observed: Any) -> str | None:
        """None if the items agree, else what differs."""
        exp, got = self.transform(expected), self.transform(observed)
        if exp == got:
            return None
        if isinstance(exp, dict) and isinstance(got, dict):
            diffs = [
                f"{k}: {exp.get(k, '<absent>')!r} != {got.get(k, '<absent>')!r}"
                for k in [*exp, *(k for k in got if k not in exp)]
                if exp.get(k, _ABSENT) != got.get(k, _ABSENT)
            ]
            return "; ".join(diffs)
        return f"{exp!r} != {got!r}"

    # -- feeding ----------------------------------------------------------
    def _time(self, item: Any) -> int:
        return item.time if isinstance(item, TraceRecord) else self.sim.now

    def expect(self, item: Any) -> None:
        """Queue an expected item."""
        self.pending.append((item, self._time(item)))

    def observe(self, item: Any) -> None:
        """Match an observed item against the expectations."""
        t_obs = self._time(item)
        index = self._find(item)
        if index is None:
            self.unexpected.append((item, t_obs))
            self._error(f"unexpected: observed {describe(item)} at {format_time(t_obs)}, nothing was expected")
            return
        expected, t_exp = self.pending.pop(index)
        diff = self.compare(expected, item)
        if diff is None:
            self.matched += 1
            return
        self._error(
            f"mismatch: expected {describe(expected)} (expected at {format_time(t_exp)}) "
            f"but observed {describe(item)} at {format_time(t_obs)}: {diff}"
        )

    def _find(self, item: Any) -> int | None:
        if not self.pending:
            return None
        if self.ordered:
            return 0
        key = self.key(item)
        for i, (expected, _) in enumerate(self.pending):
            if self.key(expected) == key:
                return i
        return None

    def _error(self, text: str) -> None:
        self.errors.append(text)
        if self.fail_immediately:
            raise ScoreboardError(f"{self.name}: {text}")

    def connect(self, expected: Monitor | None = None, observed: Monitor | None = None) -> None:
        """Feed ``expected``'s records to ``expect`` and ``observed``'s to ``observe``."""
        if expected is not None:
            expected.add_callback(self.expect)
        if observed is not None:
            observed.add_callback(self.observe)

    # -- verdict ------------------------------------------------------------
    def check(self) -> None:
        """Raise ``ScoreboardError`` unless every expectation was met exactly once."""
        self.checked = True
        problems = list(self.errors)
        problems += [
            f"missing: expected {describe(item)} (expected at {format_time(t)}) was never observed"
            for item, t in self.pending
        ]
        if problems:
            lines = "\n  ".join(problems)
            raise ScoreboardError(
                f"scoreboard {self.name!r}: {len(problems)} problem(s), {self.matched} matched, "
                f"checked at {format_time(self.sim.now)}:\n  {lines}"
            )


_ABSENT = object()
