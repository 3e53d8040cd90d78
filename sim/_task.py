"""Tasks: model coroutines run by the kernel, their life cycle and cancellation.

A ``Task`` is also a trigger (``First(task, Timer(...))``): awaiting it waits for its
outcome.  ``Cancelled`` is delivered inside the task at its current await, as trio
and asyncio deliver theirs.
"""

from __future__ import annotations

import enum
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._time import format_time
from ._wait import PRIORITY_NORMAL, Timer, Waiter

if TYPE_CHECKING:
    from ._kernel import Simulator

T = TypeVar("T")


class Cancelled(BaseException):
    """Delivered inside a task by ``Task.cancel()``.

    A ``BaseException`` (like trio's ``Cancelled`` and asyncio's
    ``CancelledError``) so that ``except Exception`` in model code does not
    swallow it.  Catch it only to clean up, then re-raise.
    """


class _Throw:
    """Item payload meaning "throw this exception into the coroutine"."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class TaskState(enum.Enum):
    """Life cycle of a Task."""

    PENDING = "scheduled, not yet started"
    WAITING = "started, parked on a trigger or sleeping"
    RUNNING = "being resumed by the kernel right now"
    DONE = "returned a value"
    FAILED = "raised an exception"
    CANCELLED = "ended by Task.cancel()"


_FINISHED = (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED)
_ALIVE = TaskState.PENDING


class Task(Generic[T]):
    """A model coroutine run by the kernel.  Created by ``Simulator.spawn``.

    Await it to get its result (or its exception); ``cancel()`` delivers
    ``Cancelled`` inside it at its current await.  A Task is also a trigger,
    so ``First(task, Timer(...))`` works.
    """

    __slots__ = ("name", "_coro", "_kernel", "_token", "_state", "_outcome", "_joiners", "_trigger", "_wake_key")

    # Invariants:
    # - _state is PENDING while the task is alive (RUNNING/WAITING are derived),
    #   else DONE/FAILED/CANCELLED; _outcome is then the result or exception.
    # - _token changes only on cancel(); a trigger wake-up whose token differs
    #   is stale and ignored.
    # - while the task sleeps (int or Timer), exactly one live item for it sits
    #   in slot _wake_key; cancel() replaces that item with a tombstone.

    def __init__(self, kernel: Simulator, coro: Coroutine[Any, Any, T], name: str) -> None:
        self.name = name
        self._coro = coro
        self._kernel = kernel
        self._token = 0
        self._state = _ALIVE
        self._outcome: Any = None
        self._joiners: list[tuple[Waiter, int]] | None = None
        self._trigger: Any = None
        self._wake_key = -1

    def __repr__(self) -> str:
        state = self.state
        if state is TaskState.WAITING:
            trig = self._trigger
            what = f"sleep({format_time(trig)})" if type(trig) is int else repr(trig)
            return f"<Task {self.name!r} waiting on {what}>"
        return f"<Task {self.name!r} {state.name.lower()}>"

    # -- queries -------------------------------------------------------
    def done(self) -> bool:
        """True once the task returned, raised or was cancelled."""
        return self._state is not _ALIVE

    def cancelled(self) -> bool:
        return self._state is TaskState.CANCELLED

    @property
    def state(self) -> TaskState:
        state = self._state
        if state is not _ALIVE:
            return state
        if self._kernel._current is self:
            return TaskState.RUNNING
        return TaskState.PENDING if self._trigger is None else TaskState.WAITING

    def result(self) -> T:
        """The return value; re-raises the task's exception; ``Cancelled`` if cancelled."""
        state = self._state
        if state is TaskState.DONE:
            return self._outcome  # type: ignore[no-any-return]
        if state is not _ALIVE:
            raise self._outcome
        raise RuntimeError(f"task {self.name!r} has not finished ({self.state.name.lower()}); await it first")

    def exception(self) -> BaseException | None:
        """The exception the task ended with, or None if it returned."""
        if self._state is _ALIVE:
            raise RuntimeError(f"task {self.name!r} has not finished; await it first")
        if self._state is TaskState.DONE:
            return None
        outcome: BaseException = self._outcome
        return outcome

    # -- control -------------------------------------------------------
    def cancel(self, msg: str | None = None) -> bool:
        """Deliver ``Cancelled`` inside the task at its current await.

        Returns False if the task had already finished.  The task's cleanup
        (``finally`` blocks, ``except Cancelled``) runs when the kernel next
        resumes it, at the current simulated time, after the items already
        scheduled for this instant.
        """
        if self._state is not _ALIVE:
            return False
        kernel = self._kernel
        if kernel._current is self:
            raise RuntimeError(f"task {self.name!r} cannot cancel itself; return or raise instead")
        exc = Cancelled(msg or f"task {self.name!r} cancelled at {format_time(kernel._now)}")
        self._token += 1
        if self._trigger is None:  # never started: close it without running it
            kernel._tombstone(self)
            self._coro.close()
            self._finish_error(exc, cancelled=True)
            return True
        if type(self._trigger) is int or type(self._trigger) is Timer:
            kernel._tombstone(self)
        kernel._schedule(kernel._now, PRIORITY_NORMAL, self, self._token, _Throw(exc))
        return True

    # -- trigger protocol ----------------------------------------------
    def _prime(self, kernel: Simulator, target: Waiter, token: int) -> None:
        if self._state is not _ALIVE:
            kernel._wake(target, token, self)
        elif self._joiners is None:
            self._joiners = [(target, token)]
        else:
            self._joiners.append((target, token))

    def _unprime(self, target: Waiter) -> None:
        joiners = self._joiners
        if joiners:
            self._joiners = [j for j in joiners if j[0] is not target] or None

    def __await__(self) -> Generator[Any, Any, T]:
        if self._state is _ALIVE:
            yield self
        return self.result()

    # -- completion ----------------------------------------------------
    def _finish_ok(self, value: Any) -> None:
        self._state = TaskState.DONE
        self._outcome = value
        self._notify_joiners()

    def _finish_error(self, exc: BaseException, cancelled: bool) -> bool:
        """Record failure; returns True if somebody is waiting to receive it."""
        self._state = TaskState.CANCELLED if cancelled else TaskState.FAILED
        self._outcome = exc
        handled = bool(self._joiners)
        self._notify_joiners()
        return handled

    def _notify_joiners(self) -> None:
        self._trigger = None
        joiners, self._joiners = self._joiners, None
        if joiners:
            wake = self._kernel._wake
            for target, token in joiners:
                wake(target, token, self)
