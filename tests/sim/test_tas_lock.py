"""sim.TestAndSetLock replays the explicit test-and-set spin loop item for item, in fewer resumptions."""

from __future__ import annotations

from typing import Any

import pytest

from sim import Event, Simulator, TestAndSetLock, sleep


class _LoopLock:
    """The loop TestAndSetLock stands for: wait for a release, retry handoff_ps later, until free."""

    def __init__(self, handoff_ps: int) -> None:
        self.handoff_ps = handoff_ps
        self.held = False
        self.released = Event()

    async def acquire(self) -> None:
        while self.held:
            await self.released.wait()
            await sleep(self.handoff_ps)
        self.held = True

    def release(self) -> None:
        self.held = False
        released, self.released = self.released, Event()
        released.set()


class _TasAdapter:
    def __init__(self, handoff_ps: int) -> None:
        self.lock = TestAndSetLock("t", handoff_ps)

    async def acquire(self) -> None:
        if not self.lock.try_acquire():
            await self.lock.wait()

    def release(self) -> None:
        self.lock.release()


def _history(make: Any, handoff: int, seed: int) -> tuple[list[tuple[int, str, int]], int]:
    """Who held the lock when, for CPUs with seeded hold/think times, some taking it back at once
    after releasing (as viommu_add_req then viommu_sync_req do), one releasing without waiting."""
    sim = Simulator(seed=seed)
    lock = make(handoff)
    log: list[tuple[int, str, int]] = []

    async def cpu(i: int) -> None:
        rng = sim.rng(f"cpu{i}")
        for n in range(40):
            await sleep(rng.choice([0, 1, 2, 5, 10]))
            await lock.acquire()
            log.append((sim.now, f"cpu{i}", n))
            hold = rng.choice([0, 0, 1, 3, 7])
            if hold:
                await sleep(hold)
            lock.release()
            if rng.random() < 0.5:  # asks again at once: finds the word free before the spinners see it
                await lock.acquire()
                log.append((sim.now, f"cpu{i}+", n))
                await sleep(rng.choice([1, 2]))
                lock.release()

    tasks = [sim.spawn(cpu(i), name=f"cpu{i}") for i in range(5)]
    sim.run_sync()
    assert all(t.done() for t in tasks)
    return log, sim.now


@pytest.mark.parametrize("handoff", [0, 1, 3])
@pytest.mark.parametrize("seed", range(6))
def test_the_lock_gives_the_loops_acquisition_order_and_times(handoff: int, seed: int) -> None:
    assert _history(_TasAdapter, handoff, seed) == _history(_LoopLock, handoff, seed)


def test_a_cancelled_spinner_never_gets_the_lock() -> None:
    sim = Simulator()
    lock = TestAndSetLock("t", 5)
    order: list[str] = []

    async def holder() -> None:
        assert lock.try_acquire()
        await sleep(10)
        lock.release()

    async def spinner(name: str) -> None:
        await lock.wait()
        order.append(name)
        lock.release()

    sim.spawn(holder(), name="holder")
    victim = sim.spawn(spinner("victim"), name="victim")
    sim.spawn(spinner("other"), name="other")

    async def cancel_it() -> None:
        await sleep(12)  # after the release, before the retry 5 ps later
        victim.cancel()

    sim.spawn(cancel_it(), name="canceller")
    sim.run_sync()
    assert order == ["other"] and not lock.locked()
