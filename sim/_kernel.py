"""The simulation kernel: one total event order, coroutines resumed by ``send()``.

Prior art: SimPy's ``Environment`` (events ordered by ``(time, priority,
eid)``) and cocotb's event loop (model coroutines driven by the kernel, not by
an async framework).

Scheduling rule.  Every resumption of a model coroutine or kernel callback is an
*item* in a *slot*; a slot is one ``(time, priority)`` pair, encoded as the int
key ``time << 2 | priority``.  Slots run in key order (a heap of keys); items
in a slot run in the order they were scheduled (a list, appended to).  So the
total order is exactly ``(time, priority, seq)`` with ``seq`` the scheduling
order — SimPy's rule — and it is a pure function of the program and its seed.
One refinement keeps it total while a slot is running: an item scheduled for
the current instant with a *lower* priority than the running slot joins the
running slot at its end (time never runs backwards, not even by priority).

Why slots rather than a heap of items: most wake-ups share an instant with
others, and appending to a list is much cheaper than a heap push with a
three-way tuple comparison; it is what makes the kernel faster than SimPy on
the same workload (benchmarks/kernel_vs_simpy.py).

trio hosts the kernel: ``await sim.run()`` runs batches of items inside the
calling trio task and checkpoints between batches (every ``yield_interval``
seconds of wall time) so that ``trio.fail_after``, ``move_on_after`` and Ctrl-C
stop a simulation promptly.  trio never sees a model coroutine, so its
deliberately randomised scheduling can never reorder simulated events.

A scheduled callback may return a list of items (``(target, token, value)`` tuples); they run
next, in that order, before the rest of its slot -- how a trigger replays, in one item, what a
group of waiters would have done one after the other at that point of the slot (``TestAndSetLock``).

Waiting is a closed protocol: a coroutine yields an ``int`` (``sleep``), a
``Timer``, or a trigger object; the kernel asks a trigger to
``_prime(kernel, target, token)`` and the trigger later calls
``kernel._wake(target, token, value)``.  ``token`` is the task's wait token;
cancelling a task bumps it, so stale wake-ups from triggers are dropped in O(1).
A trigger also owns ``_unprime(target)``: forget a waiter that no longer waits
(a ``First`` whose other branch fired).  The kernel knows no trigger but the two
it resumes without one: an ``int`` from ``sleep`` and a ``Timer``, both defined
beside it in ``_wait`` (tasks are in ``_task``).
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time as _wall
from collections.abc import Coroutine
from typing import Any, Callable, TypeVar

import trio

from ._rng import RngStreams
from ._task import _ALIVE, Cancelled, Task, TaskState, _Throw
from ._time import SimTime, format_time
from ._trace import TraceRecord, Tracer, TraceSink
from ._wait import _PRIO_BITS, PRIORITY_LATE, PRIORITY_NORMAL, PRIORITY_URGENT, Timer, Waiter

T = TypeVar("T")

class SimTimeoutError(TimeoutError):
    """Raised by ``with_timeout`` when the simulated deadline passes first."""


class SimDeadlockError(RuntimeError):
    """``run(until=task)`` ran out of events while the task was still waiting."""


class _Running(threading.local):
    """Per-thread stack of running simulators (simulations in different threads are independent)."""

    def __init__(self) -> None:
        self.stack: list[Simulator] = []


_running_state = _Running()


def current_sim() -> Simulator:
    """The simulator whose ``run()`` is executing in this thread (for helpers that need it)."""
    stack = _running_state.stack
    if not stack:
        raise RuntimeError("no simulation is running; call this from a model task")
    return stack[-1]


_TRIO_OR_ASYNCIO_HINT = (
    "Models run on the viommu-sim kernel, not on trio or asyncio: await sim triggers "
    "(sleep, Timer, Event, Signal, Queue, Lock, First, Combine, with_timeout) or another Task. "
    "To exchange data with trio code, do it outside the model, around `await sim.run()`."
)

#: key beyond any reachable slot ("run without a time limit")
_NEVER = 1 << 256


class Simulator:
    """One simulation: clock, event slots, tasks, RNG streams and trace sinks.

    Usage::

        sim = Simulator(seed=1)
        sim.spawn(model(sim), name="model")
        await sim.run(until=ms(1))       # from trio; or sim.run_sync(...)
    """

    __slots__ = (
        "_now", "_keys", "_slots", "_cur_key", "_current", "_failure", "_stop", "_rng", "_sinks",
        "_trace_seq", "tracing", "_task_names", "steps", "yield_interval",
    )

    def __init__(self, seed: int = 0, *, sinks: tuple[TraceSink, ...] | list[TraceSink] = ()) -> None:
        self._now: SimTime = 0
        self._keys: list[int] = []  # heap of slot keys (time << 2 | priority)
        self._slots: dict[int, list[Any]] = {}  # slot key -> items, in scheduling order
        self._cur_key = -1  # the slot being (or last) run
        self._current: Task[Any] | None = None
        self._failure: tuple[Task[Any], BaseException] | None = None
        self._stop = False
        self._rng = RngStreams(seed)
        self._sinks: list[TraceSink] = list(sinks)
        self._trace_seq = itertools.count().__next__
        self.tracing: bool = bool(self._sinks)
        self._task_names: dict[str, int] = {}
        #: items executed so far (for statistics)
        self.steps = 0
        #: wall-clock seconds between trio checkpoints while running
        self.yield_interval = 0.002

    # -- basics ----------------------------------------------------------
    @property
    def now(self) -> SimTime:
        """Current simulated time in picoseconds."""
        return self._now

    @property
    def seed(self) -> int:
        return self._rng.seed

    def rng(self, component: str) -> random.Random:
        """The ``random.Random`` stream of ``component`` (stable across processes)."""
        return self._rng.stream(component)

    def current_task(self) -> Task[Any] | None:
        return self._current

    # -- tracing ---------------------------------------------------------
    def add_sink(self, sink: TraceSink) -> None:
        self._sinks.append(sink)
        self.tracing = True

    def remove_sink(self, sink: TraceSink) -> None:
        self._sinks.remove(sink)
        self.tracing = bool(self._sinks)

    def tracer(self, source: str, **common: Any) -> Tracer:
        """A model's trace helper: ``tracer(event, **fields)`` emits from ``source``
        (with ``common`` fields first) and costs one attribute check when tracing is off."""
        return Tracer(self, source, common)

    def trace(self, source: str, event: str, **fields: Any) -> None:
        """Emit a trace record.  Hot call sites guard with ``if sim.tracing:``."""
        if not self._sinks:
            return
        rec = TraceRecord(self._now, self._trace_seq(), source, event, fields)
        for sink in self._sinks:
            sink.emit(rec)

    # -- tasks -----------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, T], name: str | None = None) -> Task[T]:
        """Schedule ``coro`` to start at the current time; returns its Task."""
        if not hasattr(coro, "send"):
            kind = type(coro).__name__
            hint = " (did you pass the function instead of calling it?)" if callable(coro) else ""
            raise TypeError(f"spawn() takes a coroutine, not {kind}{hint}")
        if name is None:
            name = getattr(coro, "__qualname__", "task")
        n = self._task_names.get(name, 0)
        self._task_names[name] = n + 1
        if n:
            name = f"{name}#{n}"
        task: Task[T] = Task(self, coro, name)
        task._wake_key = self._append(self._now, PRIORITY_NORMAL, task)
        return task

    def call_at(self, when: SimTime, fn: Callable[[], None], priority: int = PRIORITY_NORMAL) -> None:
        """Run a plain callback at simulated time ``when`` (no coroutine)."""
        if when < self._now:
            raise ValueError(f"call_at({when}) is in the past (now={self._now})")
        self._schedule(when, priority, _Callback(fn), 0, None)

    def stop(self) -> None:
        """Make the current ``run()`` return before any further item runs."""
        self._stop = True

    # -- internal scheduling API (used by triggers) ----------------------
    def _append(self, when: SimTime, priority: int, item: Any) -> int:
        """Append ``item`` to slot (when, priority), clamped to the running slot."""
        key = when << _PRIO_BITS | priority
        if key < self._cur_key:
            key = self._cur_key
        slot = self._slots.get(key)
        if slot is None:
            self._slots[key] = slot = []
            heapq.heappush(self._keys, key)
        slot.append(item)
        return key

    def _schedule(self, when: SimTime, priority: int, target: Waiter, token: int, value: Any) -> None:
        self._append(when, priority, (target, token, value))

    def _wake(self, target: Waiter, token: int, value: Any) -> None:
        """A trigger fired for ``target``: tasks resume later at the current time
        (in schedule order); combinator callbacks run immediately."""
        if type(target) is Task:
            self._append(self._now, PRIORITY_NORMAL, (target, token, value))
        else:
            target(token, value)  # type: ignore[operator]

    def _tombstone(self, task: Task[Any]) -> None:
        """Neutralise the sleeping ``task``'s live item (the last one in its slot)."""
        slot = self._slots.get(task._wake_key)
        if not slot:
            return
        for i in range(len(slot) - 1, -1, -1):
            if slot[i] is task:
                slot[i] = _DEAD
                return

    # -- running -----------------------------------------------------------
    async def run(self, until: SimTime | Task[Any] | None = None) -> None:
        """Run from trio until ``until`` (a time, a Task) or until no events remain.

        Yields to trio every ``yield_interval`` seconds of wall time, so trio
        cancellation (timeouts, Ctrl-C) interrupts the run between two items.
        """
        until_key, until_task = self._until(until)
        try:
            while not self._run_batch(until_key, until_task, self.yield_interval):
                await trio.lowlevel.checkpoint()
        finally:
            self._forget_until(until_task)
        self._finish_run(until, until_key)

    def run_sync(self, until: SimTime | Task[Any] | None = None) -> None:
        """Run without trio (scripts, benchmarks).  Same semantics as ``run``."""
        until_key, until_task = self._until(until)
        try:
            while not self._run_batch(until_key, until_task, 3600.0):
                pass
        finally:
            self._forget_until(until_task)
        self._finish_run(until, until_key)

    def _until(self, until: SimTime | Task[Any] | None) -> tuple[int, Task[Any] | None]:
        if isinstance(until, Task):
            if not until.done():
                until._prime(self, _StopWhenDone(self), 0)
            return _NEVER, until
        if until is None:
            return _NEVER, None
        if until < self._now:
            raise ValueError(f"run(until={until}) is before now ({self._now})")
        return until << _PRIO_BITS | ((1 << _PRIO_BITS) - 1), None

    @staticmethod
    def _forget_until(task: Task[Any] | None) -> None:
        if task is not None and task._joiners:
            task._joiners = [j for j in task._joiners if type(j[0]) is not _StopWhenDone] or None

    def _finish_run(self, until: SimTime | Task[Any] | None, until_key: int) -> None:
        keys = self._keys
        if until_key is not _NEVER and not self._stop and (not keys or keys[0] > until_key):
            assert isinstance(until, int)
            self._now = until

    def _run_batch(self, until_key: int, until_task: Task[Any] | None, budget: float) -> bool:
        """Run items until done (True) or the wall budget is spent (False).

        This is the hot loop: locals instead of attributes, slots iterated as
        lists, one resume path for every item, and two fast paths for what a
        task may yield: an ``int`` (from ``sleep``) and a ``Timer``; both
        re-append the bare Task to a slot, which resumes with ``None``.
        """
        if until_task is not None and until_task.done():
            return True
        keys = self._keys
        slots = self._slots
        heappop = heapq.heappop
        heappush = heapq.heappush
        timer_cls = Timer
        throw_cls = _Throw
        task_cls = Task
        deadline = _wall.perf_counter() + budget
        steps = 0
        out_of_budget = False
        running = _running_state.stack
        running.append(self)
        self._stop = False
        try:
            while keys and not self._stop:
                key = keys[0]
                if key > until_key:
                    break
                slot = slots[key]
                self._cur_key = key
                now = key >> _PRIO_BITS
                self._now = now
                start = steps
                for item in slot:
                    steps += 1
                    if item.__class__ is task_cls:  # a sleep/Timer wake-up: the bare Task
                        target = item
                        value = None
                    else:
                        target, token, value = item
                        if target.__class__ is not task_cls:
                            self._current = None
                            more = target(token, value)
                            if more is not None:  # continuations: they run next, before the slot's other items
                                at = steps - start
                                slot[at:at] = more
                            if self._stop:
                                break
                            continue
                        if target._token != token:
                            continue  # stale: the task was cancelled since
                    self._current = target
                    try:
                        if value is not None and value.__class__ is throw_cls:
                            trig = target._coro.throw(value.exc)
                        else:
                            trig = target._coro.send(value)
                    except StopIteration as stop:
                        self._current = None
                        target._finish_ok(stop.value)
                        trig = None
                    except Cancelled as exc:
                        self._current = None
                        target._finish_error(exc, cancelled=True)
                        trig = None
                    except BaseException as exc:  # noqa: BLE001 - re-raised by run()
                        self._current = None
                        trig = None
                        if not target._finish_error(exc, cancelled=False):
                            self._failure = (target, exc)
                            self._stop = True
                    if trig is not None:
                        cls = trig.__class__
                        if cls is int or cls is timer_cls:
                            when = now + (trig if cls is int else trig.delay)
                            k = when << _PRIO_BITS | PRIORITY_NORMAL
                            if k < key:
                                if when < now:
                                    self._refuse(target, ValueError(f"negative delay {trig} ps: simulated time only moves forward"))
                                    continue
                                k = key
                            s = slots.get(k)
                            if s is None:
                                slots[k] = s = []
                                heappush(keys, k)
                            s.append(target)
                            target._wake_key = k
                            target._trigger = trig
                        else:
                            self._park(target, trig)
                    if self._stop:
                        break
                    if not steps & 1023 and _wall.perf_counter() > deadline:
                        out_of_budget = True
                        break
                else:
                    heappop(keys)
                    del slots[key]
                    continue
                # interrupted inside the slot: drop the items already run, keep the rest
                del slot[: steps - start]
                if not slot:
                    heappop(keys)
                    del slots[key]
                if out_of_budget:
                    return False
            if not self._stop and until_task is not None and not until_task.done():
                self._current = None
                raise SimDeadlockError(
                    f"no events left at {format_time(self._now)} but {until_task!r} has not finished"
                )
        finally:
            running.pop()
            self._current = None
            self.steps += steps
        failure = self._failure
        if failure is not None:
            self._failure = None
            failed, error = failure
            error.add_note(f"(raised by sim task {failed.name!r} at simulated time {format_time(self._now)} = {self._now} ps)")
            raise error
        return True

    def _refuse(self, task: Task[Any], err: BaseException) -> None:
        """Throw ``err`` into ``task`` at the current instant (a bad await)."""
        task._trigger = err
        self._schedule(self._now, PRIORITY_NORMAL, task, task._token, _Throw(err))

    def _park(self, task: Task[Any], trig: Any) -> None:
        prime = getattr(trig, "_prime", None)
        if prime is None:
            origin = type(trig).__module__.split(".")[0].lstrip("_")
            what = f"{trig!r} (an object from {origin})" if origin in ("trio", "asyncio") else repr(trig)
            err = TypeError(f"task {task.name!r} awaited {what}, which the simulation kernel cannot schedule. {_TRIO_OR_ASYNCIO_HINT}")
            self._refuse(task, err)
            return
        task._trigger = trig
        prime(self, task, task._token)

    def pending_events(self) -> int:
        """Number of scheduled items (including cancelled ones not yet reached)."""
        return sum(len(s) for s in self._slots.values())


class _StopWhenDone:
    """Joiner of ``run(until=task)``: stops the run when the task finishes."""

    __slots__ = ("kernel",)

    def __init__(self, kernel: Simulator) -> None:
        self.kernel = kernel

    def __call__(self, token: int, value: Any) -> None:
        self.kernel.stop()


class _Callback:
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn

    def __call__(self, token: int, value: Any) -> None:
        self.fn()


def _dead(token: int, value: Any) -> None:
    """Target of a tombstoned item: does nothing."""


_DEAD = (_dead, 0, None)
