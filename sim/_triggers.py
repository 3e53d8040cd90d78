"""Triggers: the only things a model coroutine may await (besides ``sleep``,
``Timer`` and a ``Task``, which live beside the kernel in ``_wait`` and ``_task``).

Each trigger owns its state: ``_prime(kernel, target, token)`` remembers the
waiter and calls ``kernel._wake(target, token, value)`` when the condition
holds; ``_unprime(target)`` forgets it again.  The combinators ``First`` and
``Combine`` therefore know nothing of the triggers they combine (the shape
cocotb moved to when its scheduler stopped knowing every trigger type).
Waiters are kept in insertion order (lists), so the wake order of tasks that
wait on the same trigger is FIFO and deterministic (cocotb keeps an
insertion-ordered dict for the same reason).

Names follow cocotb: ``Timer``, ``Event``, ``First``, ``Combine``,
``with_timeout``; ``Queue``/``Lock`` follow trio's naming pairs (``put`` blocks,
``put_nowait`` raises ``QueueFull``).
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any, Generic, TypeVar

from . import _kernel
from ._kernel import Simulator, SimTimeoutError
from ._task import Cancelled, Task
from ._wait import Primable, Timer, Trigger, Waiter
from ._time import SimTime, format_time

T = TypeVar("T")


class _Waiters:
    """An insertion-ordered list of (target, token) waiting for one condition."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[tuple[Waiter, int]] = []

    def add(self, target: Waiter, token: int) -> None:
        self.items.append((target, token))

    def remove(self, target: Waiter) -> None:
        """Forget every entry of ``target`` (a waiter that stopped waiting)."""
        self.items = [w for w in self.items if w[0] is not target]

    def wake_all(self, kernel: Simulator, value: Any) -> None:
        items, self.items = self.items, []
        for target, token in items:
            kernel._wake(target, token, value)

    def wake_one(self, kernel: Simulator, value: Any) -> bool:
        """Wake the first waiter that is still waiting; False if none is."""
        items = self.items
        while items:
            target, token = items.pop(0)
            if isinstance(target, Task) and (target._token != token or target.done()):
                continue
            kernel._wake(target, token, value)
            return True
        return False

    def __bool__(self) -> bool:
        return bool(self.items)


class _Park(Trigger):
    """Park on a waiter list; remembers its kernel so non-task code can wake it."""

    __slots__ = ("owner",)

    def __init__(self, owner: _WaitList) -> None:
        self.owner = owner

    def _prime(self, kernel: Simulator, target: Waiter, token: int) -> None:
        self.owner._kernel = kernel
        self.owner._waiters.add(target, token)

    def _unprime(self, target: Waiter) -> None:
        self.owner._waiters.remove(target)

    def __repr__(self) -> str:
        return f"<wait on {self.owner!r}>"


class Event:
    """A flag tasks can wait for.  ``set()`` wakes every waiter (FIFO)."""

    __slots__ = ("name", "_is_set", "_waiters", "_kernel", "data")

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self._is_set = False
        self._waiters = _Waiters()
        self._kernel: Simulator | None = None
        self.data: Any = None

    def __repr__(self) -> str:
        return f"<Event {self.name or hex(id(self))} {'set' if self._is_set else 'clear'}>"

    def is_set(self) -> bool:
        return self._is_set

    def set(self, data: Any = None) -> None:
        """Set the flag (with optional ``data``) and wake all waiters."""
        self.data = data
        if self._is_set:
            return
        self._is_set = True
        if self._waiters:
            assert self._kernel is not None
            self._waiters.wake_all(self._kernel, self)

    def clear(self) -> None:
        self._is_set = False

    def wait(self) -> _EventWait:
        """Trigger that fires when the event is set (immediately if it already is)."""
        return _EventWait(self)


class _EventWait(Trigger):
    __slots__ = ("event",)

    def __init__(self, event: Event) -> None:
        self.event = event

    def __await__(self) -> Generator[Any, Any, Event]:
        if self.event._is_set:
            return self.event
        return (yield self)  # type: ignore[no-any-return]

    def _prime(self, kernel: Simulator, target: Waiter, token: int) -> None:
        ev = self.event
        ev._kernel = kernel
        if ev._is_set:
            kernel._wake(target, token, ev)
        else:
            ev._waiters.add(target, token)

    def _unprime(self, target: Waiter) -> None:
        self.event._waiters.remove(target)

    def __repr__(self) -> str:
        return f"{self.event!r}.wait()"


class Signal:
    """A value with edge triggers, e.g. an interrupt line.

    ``set(v)`` with a different value wakes ``changed()`` waiters, and
    ``rising()``/``falling()`` waiters on a falsy→truthy / truthy→falsy change.
    """

    __slots__ = ("name", "_value", "_kernel", "_edges")

    def __init__(self, value: Any = 0, name: str | None = None) -> None:
        self.name = name
        self._value = value
        self._kernel: Simulator | None = None
        self._edges = {"changed": _Waiters(), "rising": _Waiters(), "falling": _Waiters()}

    def __repr__(self) -> str:
        return f"<Signal {self.name or hex(id(self))}={self._value!r}>"

    @property
    def value(self) -> Any:
        return self._value

    def set(self, value: Any) -> None:
        old = self._value
        if value == old:
            return
        self._value = value
        kernel = self._kernel
        if kernel is None:
            return
        edges = self._edges
        if edges["changed"]:
            edges["changed"].wake_all(kernel, self)
        if not old and value and edges["rising"]:
            edges["rising"].wake_all(kernel, self)
        if old and not value and edges["falling"]:
            edges["falling"].wake_all(kernel, self)

    def changed(self) -> _Edge:
        return _Edge(self, "changed")

    def rising(self) -> _Edge:
        return _Edge(self, "rising")

    def falling(self) -> _Edge:
        return _Edge(self, "falling")


class _Edge(Trigger):
    __slots__ = ("signal", "kind")

    def __init__(self, signal: Signal, kind: str) -> None:
        self.signal = signal
        self.kind = kind

    def _prime(self, kernel: Simulator, target: Waiter, token: int) -> None:
        self.signal._kernel = kernel
        self.signal._edges[self.kind].add(target, token)

    def _unprime(self, target: Waiter) -> None:
        self.signal._edges[self.kind].remove(target)

    def __repr__(self) -> str:
        return f"{self.signal!r}.{self.kind}()"


class QueueFull(Exception):
    """``put_nowait`` on a full Queue."""


class QueueEmpty(Exception):
    """``get_nowait`` on an empty Queue."""


class _WaitList:
    """Owner object for _Park: a named list of parked tasks."""

    __slots__ = ("name", "_waiters", "_kernel")

    def __init__(self, name: str) -> None:
        self.name = name
        self._waiters = _Waiters()
        self._kernel: Simulator | None = None

    def __repr__(self) -> str:
        return self.name

    def wake_one(self) -> bool:
        if self._kernel is None or not self._waiters:
            return False
        return self._waiters.wake_one(self._kernel, None)


class Queue(Generic[T]):
    """FIFO queue between tasks; ``maxsize=0`` means unbounded."""

    def __init__(self, maxsize: int = 0, name: str | None = None) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0, not {maxsize}")
        self.maxsize = maxsize
        self.name = name or "queue"
        self._items: collections.deque[T] = collections.deque()
        self._getters = _WaitList(f"{self.name}.get")
        self._putters = _WaitList(f"{self.name}.put")

    def __repr__(self) -> str:
        return f"<Queue {self.name} {len(self._items)}/{self.maxsize or 'inf'}>"

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return bool(self.maxsize) and len(self._items) >= self.maxsize

    def put_nowait(self, item: T) -> None:
        if self.full():
            raise QueueFull(f"{self.name} is full ({self.maxsize} items)")
        self._items.append(item)
        self._getters.wake_one()

    def get_nowait(self) -> T:
        if not self._items:
            raise QueueEmpty(f"{self.name} is empty")
        item = self._items.popleft()
        self._putters.wake_one()
        return item

    async def put(self, item: T) -> None:
        while self.full():
            try:
                await _Park(self._putters)
            except Cancelled:
                if not self.full():
                    self._putters.wake_one()
                raise
        self.put_nowait(item)

    async def get(self) -> T:
        while not self._items:
            try:
                await _Park(self._getters)
            except Cancelled:
                if self._items:
                    self._getters.wake_one()  # pass on the wake-up we may have consumed
                raise
        return self.get_nowait()


class Lock:
    """FIFO-fair mutex: ``release()`` hands the lock to the longest waiter."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or "lock"
        self._locked = False
        self._owner: Task[Any] | None = None
        self._waiters = _WaitList(f"{self.name}.acquire")

    def __repr__(self) -> str:
        return f"<Lock {self.name} {'locked' if self._locked else 'free'}>"

    def locked(self) -> bool:
        return self._locked

    async def acquire(self) -> None:
        me = _kernel.current_sim().current_task()
        if not self._locked and not self._waiters._waiters:
            self._locked = True
            self._owner = me
            return
        try:
            await _Park(self._waiters)
        except Cancelled:
            if self._owner is me:  # ownership was handed to us just before the cancel
                self.release()
            raise
        # release() transferred ownership to us
        assert self._owner is me

    def release(self) -> None:
        if not self._locked:
            raise RuntimeError(f"release() of {self.name}, which is not locked")
        waiters = self._waiters._waiters
        while waiters.items:
            target, token = waiters.items.pop(0)
            if not isinstance(target, Task):  # pragma: no cover - only tasks acquire a Lock
                continue
            if target._token != token or target.done():
                continue
            self._owner = target
            assert self._waiters._kernel is not None
            self._waiters._kernel._wake(target, token, None)
            return
        self._locked = False
        self._owner = None

    async def __aenter__(self) -> Lock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class First(Trigger):
    """Fires when the first of its triggers fires; ``await`` returns that trigger.

    Branches are primed in order and priming stops at the first one that fires
    at once (a finished Task, a set Event), so ``First(done_task, other)``
    returns ``done_task`` without ever waiting on ``other``.  When a branch
    fires, every branch primed before it is unprimed.
    """

    __slots__ = ("triggers", "_arms")

    def __init__(self, *triggers: Any) -> None:
        if not triggers:
            raise ValueError("First() needs at least one trigger")
        self.triggers: tuple[Primable, ...] = tuple(_as_trigger(t) for t in triggers)
        self._arms: list[_FirstArm] = []

    def __repr__(self) -> str:
        return f"First{self.triggers!r}"

    def _prime(self, kernel: Simulator, target: Waiter, token: int) -> None:
        arm = _FirstArm(self, kernel, target, token)
        self._arms.append(arm)
        for trig in self.triggers:
            branch = _FirstBranch(arm, trig)
            arm.branches.append(branch)
            trig._prime(kernel, branch, 0)
            if arm.fired:
                break

    def _unprime(self, target: Waiter) -> None:
        for arm in [a for a in self._arms if a.target is target]:
            arm.disarm(None)


class _FirstArm:
    """One waiter of a ``First``: its branches primed so far."""

    __slots__ = ("first", "kernel", "target", "token", "branches", "fired")

    def __init__(self, first: First, kernel: Simulator, target: Waiter, token: int) -> None:
        self.first = first
        self.kernel = kernel
        self.target = target
        self.token = token
        self.branches: list[_FirstBranch] = []
        self.fired = False

    def disarm(self, keep: _FirstBranch | None) -> None:
        """Stop waiting: unprime every primed branch but ``keep`` (the one that fired)."""
        self.fired = True
        for branch in self.branches:
            if branch is not keep:
                branch.trigger._unprime(branch)
        self.branches = []
        self.first._arms.remove(self)


class _FirstBranch:
    """The waiter a ``First`` registers with one of its triggers."""

    __slots__ = ("arm", "trigger")

    def __init__(self, arm: _FirstArm, trigger: Primable) -> None:
        self.arm = arm
        self.trigger = trigger

    def __call__(self, token: int, value: Any) -> None:
        arm = self.arm
        if arm.fired:
            return  # a branch that could not be unprimed (a Timer) firing late
        arm.disarm(self)
        arm.kernel._wake(arm.target, arm.token, self.trigger)


class Combine(Trigger):
    """Fires when all of its triggers have fired; ``await`` returns the Combine.

    Every trigger is primed, including those that fire at once; unpriming a
    Combine (it lost inside a ``First``) unprimes all of them.
    """

    __slots__ = ("triggers", "_states")

    def __init__(self, *triggers: Any) -> None:
        self.triggers: tuple[Primable, ...] = tuple(_as_trigger(t) for t in triggers)
        self._states: list[_CombineState] = []

    def __repr__(self) -> str:
        return f"Combine{self.triggers!r}"

    def __await__(self) -> Generator[Any, Any, Any]:
        if not self.triggers:
            return self
        return (yield self)

    def _prime(self, kernel: Simulator, target: Waiter, token: int) -> None:
        state = _CombineState(kernel, target, token, len(self.triggers), self)
        self._states.append(state)
        for trig in self.triggers:
            trig._prime(kernel, state, 0)

    def _unprime(self, target: Waiter) -> None:
        for state in [st for st in self._states if st.target is target]:
            self._states.remove(state)
            state.remaining = -1  # never fires now
            for trig in self.triggers:
                trig._unprime(state)


class _CombineState:
    """One waiter of a ``Combine``: how many of its triggers are still to fire."""

    __slots__ = ("kernel", "target", "token", "remaining", "combine")

    def __init__(self, kernel: Simulator, target: Waiter, token: int, n: int, combine: Combine) -> None:
        self.kernel = kernel
        self.target = target
        self.token = token
        self.remaining = n
        self.combine = combine

    def __call__(self, token: int, value: Any) -> None:
        if self.remaining <= 0:
            return
        self.remaining -= 1
        if self.remaining == 0:
            self.combine._states.remove(self)
            self.kernel._wake(self.target, self.token, self.combine)


def _as_trigger(obj: Any) -> Primable:
    if isinstance(obj, (Trigger, Task)):  # the common case, without the Protocol's slow isinstance
        return obj  # both implement Primable
    if isinstance(obj, Primable):  # a user's trigger with _prime and _unprime
        return obj
    if hasattr(obj, "send"):
        raise TypeError(
            f"{obj!r} is a coroutine, not a trigger; spawn it first (sim.spawn(coro)) and pass the Task"
        )
    raise TypeError(f"{obj!r} is not a trigger (Timer, Event.wait(), Signal edge, Task, First, Combine)")


async def with_timeout(awaitable: Awaitable[T] | Trigger | Task[T], delay: SimTime) -> Any:
    """Await ``awaitable`` but raise ``SimTimeoutError`` after ``delay`` ps of simulated time.

    A coroutine is spawned as a Task and cancelled on timeout; a trigger is
    simply no longer waited for.  Returns what awaiting ``awaitable`` returns.
    """
    timer = Timer(delay)
    task: Task[Any] | None = None
    if hasattr(awaitable, "_prime"):
        trig: Any = awaitable
    elif hasattr(awaitable, "send"):
        sim = _kernel.current_sim()
        task = sim.spawn(awaitable, name=f"with_timeout:{getattr(awaitable, '__qualname__', 'coro')}")  # type: ignore[arg-type]
        trig = task
    else:
        raise TypeError(f"with_timeout() needs a trigger, Task or coroutine, not {type(awaitable).__name__}")
    try:
        fired = await First(trig, timer)
    except Cancelled:
        if task is not None:
            task.cancel()
        raise
    if fired is timer:
        if task is not None:
            task.cancel("timed out")
        raise SimTimeoutError(f"{trig!r} did not complete within {format_time(delay)} of simulated time")
    if isinstance(trig, Task):
        return trig.result()
    return fired


def spawn(coro: Coroutine[Any, Any, T], name: str | None = None) -> Task[T]:
    """Spawn on the running simulation (cocotb's ``start_soon``)."""
    return _kernel.current_sim().spawn(coro, name=name)
