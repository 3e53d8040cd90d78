"""What a model coroutine hands the kernel when it waits, and the trigger protocol.

A coroutine yields an ``int`` (``sleep``), a ``Timer``, or another trigger; the
kernel resumes the first two itself (its fast path, which is why they are defined
here beside it rather than among the other triggers) and asks any other trigger to
``_prime(kernel, target, token)``.  The priorities order items within an instant.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, Union, runtime_checkable

from ._time import Number, SimTime, format_time, to_ps

if TYPE_CHECKING:
    from ._kernel import Simulator
    from ._task import Task

#: Priorities within one instant: lower runs first.  Models use NORMAL;
#: URGENT and LATE let a testbench observe an instant before or after them.
PRIORITY_URGENT = 0
PRIORITY_NORMAL = 1
PRIORITY_LATE = 2
_PRIO_BITS = 2

#: What a trigger wakes: a Task (resumed later, in schedule order) or a
#: combinator's callback ``fn(token, value)`` (run at once).
Waiter: TypeAlias = Union["Task[Any]", Callable[[int, Any], None]]


def check_delay(delay: object) -> int:
    """``delay`` as a wait in ps: an ``int >= 0``; else the error both ``sleep`` and ``Timer`` raise."""
    if delay.__class__ is not int:
        if isinstance(delay, bool) or not isinstance(delay, int):
            raise TypeError(
                f"a delay must be an int number of ps, not {type(delay).__name__} ({delay!r}); "
                "convert with sim.ns()/us()/ms(), which refuse to round"
            )
    if delay < 0:
        raise ValueError(f"negative delay {delay} ps: simulated time only moves forward")
    return delay


@runtime_checkable
class Primable(Protocol):
    """What ``First``/``Combine``/the kernel can wait on: a ``Trigger`` or a ``Task``."""

    def _prime(self, kernel: Simulator, target: Waiter, token: int) -> None: ...

    def _unprime(self, target: Waiter) -> None: ...


class Trigger:
    """Base class of what a model coroutine awaits.

    A trigger owns its waiters: ``_prime(kernel, target, token)`` remembers
    ``target`` and later calls ``kernel._wake(target, token, value)`` when the
    condition holds (at once if it already does); ``_unprime(target)`` forgets
    ``target`` if it is still remembered.  Awaiting yields the trigger itself.
    """

    __slots__ = ()

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self)

    def _prime(self, kernel: Simulator, target: Waiter, token: int) -> None:  # pragma: no cover
        raise NotImplementedError

    def _unprime(self, target: Waiter) -> None:
        """Forget ``target``.  The default suits triggers whose late wake-up is
        harmless because the target ignores it (a ``Timer``: its item stays
        scheduled, as a SimPy ``Timeout`` inside ``AnyOf`` does)."""


class Timer(Trigger):
    """Fires ``delay`` after it is awaited.  ``await Timer(0)`` yields to every other
    task scheduled for the current instant.

    As cocotb 2's ``Timer(time, unit)``: ``unit`` is ``"fs"``, ``"ps"``, ``"ns"``, ``"us"``,
    ``"ms"``, ``"sec"`` or ``"step"`` (the default: the kernel's precision, 1 ps, so
    ``Timer(10)`` is 10 ps); a time that is not a whole number of ps is refused, never
    rounded (cocotb's ``round_mode="error"``).  cocotb 1.x's ``units=`` still works, with a
    ``DeprecationWarning``.  ``delay`` is always the wait in ps.
    """

    __slots__ = ("delay",)

    def __init__(self, delay: SimTime | Number, unit: str = "step", *, units: str | None = None) -> None:
        if units is not None:
            warnings.warn("Timer(units=...) is cocotb 1.x's spelling; use unit=...", DeprecationWarning,
                          stacklevel=2)
            unit = units
        if unit == "step" or unit == "ps":
            self.delay = check_delay(delay)
        else:
            self.delay = check_delay(to_ps(delay, unit))

    def __repr__(self) -> str:
        return f"Timer({format_time(self.delay)})"

    def __await__(self) -> Generator[Any, Any, Timer]:
        yield self
        return self

    def _prime(self, kernel: Simulator, target: Waiter, token: int) -> None:
        kernel._schedule(kernel._now + self.delay, PRIORITY_NORMAL, target, token, self)


@types.coroutine
def sleep(delay: SimTime) -> Generator[int, None, None]:
    """Wait ``delay`` picoseconds: the kernel's cheapest wait (no trigger object).

    Equivalent to ``await Timer(delay)`` but composes with nothing; use Timer
    inside ``First``/``Combine``/``with_timeout``.  A negative or non-int delay
    raises the same error as ``Timer``, in the caller.
    """
    if delay.__class__ is not int:
        check_delay(delay)
    yield delay  # a negative int is refused by the kernel, with check_delay's message
