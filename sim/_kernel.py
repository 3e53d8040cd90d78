"""The simulation kernel: one heap, one total order, coroutines resumed by ``send()``.

Prior art: SimPy's ``Environment`` (heap of ``(time, priority, eid)``) and
cocotb's event loop (model coroutines driven by the kernel, not by an async
framework).  Every resumption of a model coroutine is a heap entry with the key
``(time, priority, seq)``; ``seq`` comes from one counter, taken when the entry
is scheduled, so same-time events run in the order they were scheduled and the
order is a pure function of the program and its seed.

trio hosts the kernel: ``await sim.run()`` runs batches of events inside the
calling trio task and checkpoints between batches (every ``yield_interval``
seconds of wall time) so that ``trio.fail_after``, ``move_on_after`` and Ctrl-C
stop a simulation promptly.  trio never sees a model coroutine, so its
deliberately randomised scheduling can never reorder simulated events.

Waiting is a closed protocol: a coroutine yields a trigger object; the kernel
asks the trigger to ``_prime(kernel, target, token)`` and the trigger later
calls ``kernel._wake(target, token, value)``.  ``token`` is the task's wait
token; cancelling a task bumps it, so stale wake-ups are dropped in O(1)
without searching waiter lists.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import time as _wall
from collections.abc import Coroutine
from typing import Any, Callable, Generic, TypeVar

import trio

from ._rng import RngStreams
from ._time import SimTime, format_time
from ._trace import TraceRecord, TraceSink

T = TypeVar("T")

#: Priorities within one instant: lower runs first.  Everything a model does
#: uses NORMAL; URGENT exists for kernel-internal deliveries (cancellation).
PRIORITY_URGENT = 0
PRIORITY_NORMAL = 1
PRIORITY_LATE = 2


class Cancelled(BaseException):
    """Delivered inside a task by ``Task.cancel()``.

    A ``BaseException`` (like trio's ``Cancelled`` and asyncio's
    ``CancelledError``) so that ``except Exception`` in model code does not
    swallow it.  Catch it only to clean up, then re-raise.
    """


class SimTimeoutError(TimeoutError):
    """Raised by ``with_timeout`` when the simulated deadline passes first."""


class SimDeadlockError(RuntimeError):
    """``run(until=task)`` ran out of events while the task was still waiting."""


class _Throw:
    """Heap payload meaning "throw this exception into the coroutine"."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class TaskState(enum.Enum):
    """Life cycle of a Task."""

    PENDING = "scheduled, not yet started"
    WAITING = "started, parked on a trigger"
    RUNNING = "being resumed by the kernel right now"
    DONE = "returned a value"
    FAILED = "raised an exception"
    CANCELLED = "ended by Task.cancel()"


_FINISHED = (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED)


class Task(Generic[T]):
    """A model coroutine run by the kernel.  Created by ``Simulator.spawn``.

    Await it to get its result (or its exception); ``cancel()`` delivers
    ``Cancelled`` inside it at its current await.  A Task is also a trigger,
    so ``First(task, Timer(...))`` works.
    """

    __slots__ = ("name", "_coro", "_kernel", "_token", "_state", "_result", "_exc", "_joiners", "_trigger")

    # Invariant: _token changes only on cancel(); a heap entry or waiter whose
    # token differs from _token is stale and is ignored.

    def __init__(self, kernel: Simulator, coro: Coroutine[Any, Any, T], name: str) -> None:
        self.name = name
        self._coro = coro
        self._kernel = kernel
        self._token = 0
        self._state = TaskState.PENDING
        self._result: Any = None
        self._exc: BaseException | None = None
        self._joiners: list[tuple[Any, int]] = []
        self._trigger: Any = None

    def __repr__(self) -> str:
        extra = f" waiting on {self._trigger!r}" if self._state is TaskState.WAITING else ""
        return f"<Task {self.name!r} {self._state.name.lower()}{extra}>"

    # -- queries -------------------------------------------------------
    def done(self) -> bool:
        """True once the task returned, raised or was cancelled."""
        return self._state in _FINISHED

    def cancelled(self) -> bool:
        return self._state is TaskState.CANCELLED

    @property
    def state(self) -> TaskState:
        return self._state

    def result(self) -> T:
        """The return value; re-raises the task's exception; ``Cancelled`` if cancelled."""
        if self._state is TaskState.DONE:
            return self._result  # type: ignore[no-any-return]
        if self._state in (TaskState.FAILED, TaskState.CANCELLED):
            assert self._exc is not None
            raise self._exc
        raise RuntimeError(f"task {self.name!r} has not finished ({self._state.name.lower()}); await it first")

    def exception(self) -> BaseException | None:
        """The exception the task ended with, or None if it returned."""
        if not self.done():
            raise RuntimeError(f"task {self.name!r} has not finished; await it first")
        return self._exc if self._state is not TaskState.DONE else None

    # -- control -------------------------------------------------------
    def cancel(self, msg: str | None = None) -> bool:
        """Deliver ``Cancelled`` inside the task at its current await.

        Returns False if the task had already finished.  The task's cleanup
        (``finally`` blocks, ``except Cancelled``) runs when the kernel next
        resumes it, at the current simulated time.
        """
        if self.done():
            return False
        kernel = self._kernel
        if kernel._current is self:
            raise RuntimeError(f"task {self.name!r} cannot cancel itself; return or raise instead")
        exc = Cancelled(msg or f"task {self.name!r} cancelled at {format_time(kernel._now)}")
        if self._state is TaskState.PENDING:
            self._coro.close()
            self._token += 1
            self._finish_error(exc, cancelled=True)
            return True
        self._token += 1
        kernel._schedule(kernel._now, PRIORITY_URGENT, self, self._token, _Throw(exc))
        return True

    # -- trigger protocol ----------------------------------------------
    def _prime(self, kernel: Simulator, target: Any, token: int) -> None:
        if self.done():
            kernel._wake(target, token, self)
        else:
            self._joiners.append((target, token))


    def __await__(self) -> Any:
        if not self.done():
            yield self
        return self.result()

    # -- completion ----------------------------------------------------
    def _finish_ok(self, value: Any) -> None:
        self._state = TaskState.DONE
        self._result = value
        self._trigger = None
        self._notify_joiners()

    def _finish_error(self, exc: BaseException, cancelled: bool) -> bool:
        """Record failure; returns True if somebody is waiting to receive it."""
        self._state = TaskState.CANCELLED if cancelled else TaskState.FAILED
        self._exc = exc
        self._trigger = None
        handled = bool(self._joiners)
        self._notify_joiners()
        return handled

    def _notify_joiners(self) -> None:
        joiners, self._joiners = self._joiners, []
        wake = self._kernel._wake
        for target, token in joiners:
            wake(target, token, self)


_running: list[Simulator] = []


def current_sim() -> Simulator:
    """The simulator whose ``run()`` is executing (for helpers that need it)."""
    if not _running:
        raise RuntimeError("no simulation is running; call this from a model task")
    return _running[-1]


_TRIO_OR_ASYNCIO_HINT = (
    "Models run on the viommu-sim kernel, not on trio or asyncio: await sim triggers "
    "(Timer, Event, Signal, Queue, Lock, First, Combine, with_timeout) or another Task. "
    "To exchange data with trio code, do it outside the model, around `await sim.run()`."
)


class Simulator:
    """One simulation: clock, event heap, tasks, RNG streams and trace sinks.

    Usage::

        sim = Simulator(seed=1)
        sim.spawn(model(sim), name="model")
        await sim.run(until=ms(1))       # from trio; or sim.run_sync(...)
    """

    #: wall-clock seconds between trio checkpoints while running
    yield_interval = 0.002

    def __init__(self, seed: int = 0, *, sinks: tuple[TraceSink, ...] | list[TraceSink] = ()) -> None:
        self._now: SimTime = 0
        self._heap: list[tuple[Any, ...]] = []
        self._next_seq = itertools.count().__next__
        self._current: Task[Any] | None = None
        self._failure: tuple[Task[Any], BaseException] | None = None
        self._stop = False
        self._rng = RngStreams(seed)
        self._sinks: list[TraceSink] = list(sinks)
        self._trace_seq = itertools.count().__next__
        self.tracing: bool = bool(self._sinks)
        self._task_names: dict[str, int] = {}
        self.steps = 0

    # -- basics ----------------------------------------------------------
    @property
    def now(self) -> SimTime:
        """Current simulated time in picoseconds."""
        return self._now

    @property
    def seed(self) -> int:
        return self._rng.seed

    def rng(self, component: str) -> Any:
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
        self._schedule(self._now, PRIORITY_NORMAL, task, 0, None)
        return task

    def call_at(self, when: SimTime, fn: Callable[[], None], priority: int = PRIORITY_NORMAL) -> None:
        """Run a plain callback at simulated time ``when`` (no coroutine)."""
        if when < self._now:
            raise ValueError(f"call_at({when}) is in the past (now={self._now})")
        self._schedule(when, priority, _Callback(fn), 0, None)

    def stop(self) -> None:
        """Make the current ``run()`` return after the running step."""
        self._stop = True

    # -- internal scheduling API (used by triggers) ----------------------
    def _schedule(self, when: SimTime, priority: int, target: Any, token: int, value: Any) -> None:
        heapq.heappush(self._heap, (when, priority, self._next_seq(), target, token, value))

    def _wake(self, target: Any, token: int, value: Any) -> None:
        """A trigger fired for ``target``: tasks resume later at the current time
        (in schedule order); combinator callbacks run immediately."""
        if type(target) is Task:
            heapq.heappush(self._heap, (self._now, PRIORITY_NORMAL, self._next_seq(), target, token, value))
        else:
            target(token, value)

    # -- running -----------------------------------------------------------
    async def run(self, until: SimTime | Task[Any] | None = None) -> None:
        """Run from trio until ``until`` (a time, a Task) or until no events remain.

        Yields to trio every ``yield_interval`` seconds of wall time, so trio
        cancellation (timeouts, Ctrl-C) interrupts the run between two events.
        """
        while True:
            finished = self._run_batch(until, self.yield_interval)
            if finished:
                return
            await trio.lowlevel.checkpoint()

    def run_sync(self, until: SimTime | Task[Any] | None = None) -> None:
        """Run without trio (scripts, benchmarks).  Same semantics as ``run``."""
        while not self._run_batch(until, 3600.0):
            pass

    def _run_batch(self, until: SimTime | Task[Any] | None, budget: float) -> bool:
        """Run events until done (True) or the wall budget is spent (False)."""
        until_time: SimTime | None = None
        until_task: Task[Any] | None = None
        if isinstance(until, Task):
            until_task = until
            if until_task.done():
                return True
        elif until is not None:
            if until < self._now:
                raise ValueError(f"run(until={until}) is before now ({self._now})")
            until_time = until
        heap = self._heap
        pop = heapq.heappop
        push = heapq.heappush
        nxt = self._next_seq
        timer_cls = _TIMER
        deadline = _wall.perf_counter() + budget
        steps = 0
        _running.append(self)
        self._stop = False
        try:
            while heap:
                entry = heap[0]
                when = entry[0]
                if until_time is not None and when > until_time:
                    break
                pop(heap)
                self._now = when
                target = entry[3]
                if type(target) is Task:
                    if target._token != entry[4]:
                        continue  # stale: the task was cancelled since
                    self._current = target
                    target._state = TaskState.RUNNING
                    value = entry[5]
                    try:
                        if type(value) is _Throw:
                            trig = target._coro.throw(value.exc)
                        else:
                            trig = target._coro.send(value)
                    except StopIteration as stop:
                        self._current = None
                        target._finish_ok(stop.value)
                    except Cancelled as exc:
                        self._current = None
                        target._finish_error(exc, cancelled=True)
                    except BaseException as exc:  # noqa: BLE001 - re-raised by run()
                        self._current = None
                        if not target._finish_error(exc, cancelled=False):
                            self._failure = (target, exc)
                            break
                    else:
                        self._current = None
                        if type(trig) is timer_cls:
                            target._state = TaskState.WAITING
                            target._trigger = trig
                            push(heap, (when + trig.delay, PRIORITY_NORMAL, nxt(), target, target._token, trig))
                        else:
                            self._park(target, trig)
                else:
                    target(entry[4], entry[5])
                steps += 1
                if self._stop:
                    break
                if until_task is not None and until_task.done():
                    break
                if not steps & 1023 and _wall.perf_counter() > deadline:
                    self.steps += steps
                    return False
            else:
                if until_task is not None and not until_task.done():
                    self.steps += steps
                    raise SimDeadlockError(
                        f"no events left at {format_time(self._now)} but {until_task!r} has not finished"
                    )
        finally:
            _running.pop()
        self.steps += steps
        if self._failure is not None:
            task, exc = self._failure
            self._failure = None
            exc.add_note(f"(raised by sim task {task.name!r} at simulated time {format_time(self._now)} = {self._now} ps)")
            raise exc
        if until_time is not None and not self._stop and (not heap or heap[0][0] > until_time):
            self._now = until_time
        return True

    def _park(self, task: Task[Any], trig: Any) -> None:
        prime = getattr(trig, "_prime", None)
        if prime is None:
            origin = type(trig).__module__.split(".")[0]
            what = f"a {origin} object ({trig!r})" if origin in ("trio", "asyncio") else repr(trig)
            err = TypeError(f"task {task.name!r} awaited {what}, which the simulation kernel cannot schedule. {_TRIO_OR_ASYNCIO_HINT}")
            self._schedule(self._now, PRIORITY_URGENT, task, task._token, _Throw(err))
            return
        task._state = TaskState.WAITING
        task._trigger = trig
        prime(self, task, task._token)

    def pending_events(self) -> int:
        """Number of heap entries (including stale ones)."""
        return len(self._heap)


class _Callback:
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn

    def __call__(self, token: int, value: Any) -> None:
        self.fn()


# Filled in by _triggers to give the kernel its Timer fast path without a cycle.
_TIMER: type = type(None)


def _register_timer(cls: type) -> None:
    global _TIMER
    _TIMER = cls
