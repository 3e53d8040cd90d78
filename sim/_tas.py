"""TestAndSetLock: an unfair spin lock whose waiters retry a hand-off time after each release.

The waiting rule is that of a test-and-set spin loop (Linux x86 ``virt_spin_lock``, see
models/guest/_spinlock.py): a CPU that finds the lock held spins until it sees the lock word
change; the release reaches each waiter ``handoff_ps`` later (the cache line's way to it), and
whoever then finds the word free first takes it, the others spin on.  A holder that releases and
asks again before that takes it back.

As an explicit loop (``while held: await released.wait(); await sleep(handoff_ps)``) every release
resumes every waiter twice.  Here the lock does the same in two kernel items per release, whatever
the number of waiters: at the release it appends one item where the waiters' wake-ups would have
been appended (the end of the current slot); that item appends one retry item to the slot
``handoff_ps`` later, at the point where the waiters' retries would have been; the retry checks the
waiters in order, and hands the lock to the first that finds it free by returning that waiter's
wake-up as the next item of the slot, followed by the rest of the retry (the waiters after it),
so that what the winner does before its next wait happens before they look at the lock -- as in
the loop.  The losers wait for the next release, after those that started waiting since this one.
Same items, same order, same times as the loop; fewer resumptions.
"""

from __future__ import annotations

from typing import Any

from ._kernel import Simulator
from ._task import Task
from ._wait import PRIORITY_NORMAL, Trigger, Waiter

__all__ = ["TestAndSetLock"]

_Waiting = list[tuple[Waiter, int]]


class TestAndSetLock:
    """``try_acquire()`` or ``await wait()`` (which returns holding the lock), ``release()``."""

    __slots__ = ("name", "handoff_ps", "_held", "_waiting", "_kernel")
    #: not a test class, whatever its name says to pytest
    __test__ = False

    def __init__(self, name: str, handoff_ps: int) -> None:
        if handoff_ps < 0:
            raise ValueError(f"handoff_ps must be >= 0, not {handoff_ps}")
        self.name = name
        self.handoff_ps = handoff_ps
        self._held = False
        #: waiters of the next release, in the order they started waiting
        self._waiting: _Waiting = []
        self._kernel: Simulator | None = None

    def __repr__(self) -> str:
        return f"<TestAndSetLock {self.name} {'held' if self._held else 'free'} waiting={len(self._waiting)}>"

    def locked(self) -> bool:
        return self._held

    def try_acquire(self) -> bool:
        """Take the lock if it is free (the fast path); False if it is held."""
        if self._held:
            return False
        self._held = True
        return True

    def wait(self) -> _TasWait:
        """Trigger: spin until this waiter takes the lock (it holds it when the await returns)."""
        return _TasWait(self)

    def release(self) -> None:
        if not self._held:
            raise RuntimeError(f"release() of {self.name}, which is not held")
        self._held = False
        waiting, self._waiting = self._waiting, []
        if waiting:
            kernel = self._kernel
            assert kernel is not None
            kernel._append(kernel._now, PRIORITY_NORMAL, (self._seen, 0, waiting))

    # -- the two items of a release ---------------------------------------------------------
    def _seen(self, _token: int, waiting: _Waiting) -> None:
        """The waiters see the release: each retries ``handoff_ps`` from now."""
        kernel = self._kernel
        assert kernel is not None
        kernel._append(kernel._now + self.handoff_ps, PRIORITY_NORMAL, (self._retry, 0, waiting))

    def _retry(self, _token: int, waiting: _Waiting) -> list[tuple[Any, int, Any]] | None:
        """The waiters' retries, in order: the first to find the lock free takes it and runs next."""
        for i, (target, token) in enumerate(waiting):
            if target._token != token:  # type: ignore[union-attr]
                continue  # cancelled since it started waiting
            if self._held:
                self._waiting.append((target, token))  # spins on, for the next release
                continue
            self._held = True
            rest = waiting[i + 1:]
            return [(target, token, None), (self._retry, 0, rest)] if rest else [(target, token, None)]
        return None


class _TasWait(Trigger):
    __slots__ = ("lock",)

    def __init__(self, lock: TestAndSetLock) -> None:
        self.lock = lock

    def _prime(self, kernel: Simulator, target: Waiter, token: int) -> None:
        if not isinstance(target, Task):  # a combinator that stopped waiting would be handed the lock
            raise TypeError(f"{self!r} must be awaited by a task directly, not inside First/Combine")
        lock = self.lock
        lock._kernel = kernel
        lock._waiting.append((target, token))

    def _unprime(self, target: Waiter) -> None:
        lock = self.lock
        lock._waiting = [w for w in lock._waiting if w[0] is not target]

    def __repr__(self) -> str:
        return f"<wait for {self.lock!r}>"
