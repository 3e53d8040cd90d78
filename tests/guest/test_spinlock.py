"""The guest's test-and-set spinlock (models/guest/_spinlock.py): unfair to waiters, counted."""

from __future__ import annotations

from sim import Simulator, ns, sleep, us

from models.guest._spinlock import SpinlockStats, GuestSpinlock
from staging import run_task

HANDOFF = ns(100)


def _trial(sim: Simulator, lock: GuestSpinlock) -> list[tuple[str, int]]:
    """CPU a holds the lock 1 us, releases it and asks again at once; b and c arrive while a holds it."""
    order: list[tuple[str, int]] = []

    async def section(name: str, hold: int) -> None:
        async with lock:
            order.append((name, sim.now))
            await sleep(hold)

    async def a() -> None:
        await section("a1", us(1))
        await section("a2", us(1))

    async def late(name: str, at: int) -> None:
        await sleep(at)
        await section(name, us(1))

    async def main() -> None:
        tasks = [sim.spawn(a(), name="a"), sim.spawn(late("b", ns(200)), name="b"),
                 sim.spawn(late("c", ns(400)), name="c")]
        for t in tasks:
            await t

    run_task(sim, main())
    return order


def test_a_cpu_that_releases_and_asks_again_retakes_the_lock_before_the_waiters() -> None:
    """virt_spin_lock: a's second section starts the instant its first ends; b and c, spinning since 0.2 and
    0.4 us, see the word free only HANDOFF after each release and take it longest waiter first."""
    sim = Simulator(seed=0)
    lock = GuestSpinlock(sim, "l", HANDOFF)
    assert _trial(sim, lock) == [("a1", 0), ("a2", us(1)), ("b", us(2) + HANDOFF),
                                 ("c", us(3) + 2 * HANDOFF)]


def test_statistics_count_acquisitions_the_contended_ones_and_the_time_held() -> None:
    """Four sections of 1 us each: held 4 us in all; b and c waited, a never did."""
    sim = Simulator(seed=0)
    lock = GuestSpinlock(sim, "l", HANDOFF)
    _trial(sim, lock)
    assert lock.statistics() == SpinlockStats(acquisitions=4, contended=2, busy_ps=us(4))
    assert not lock.locked()


def test_a_section_still_held_counts_up_to_the_snapshot() -> None:
    """statistics() inside a section includes the part of it that has run."""
    sim = Simulator(seed=0)
    lock = GuestSpinlock(sim, "l", HANDOFF)

    async def main() -> SpinlockStats:
        async with lock:
            await sleep(ns(300))
            return lock.statistics()

    assert run_task(sim, main()) == SpinlockStats(acquisitions=1, contended=0, busy_ps=ns(300))


def test_releasing_a_free_lock_is_an_error() -> None:
    sim = Simulator(seed=0)
    lock = GuestSpinlock(sim, "viommu.request_lock", HANDOFF)
    try:
        lock.release()
    except RuntimeError as e:
        assert str(e) == "release() of viommu.request_lock, which is not held"
    else:  # pragma: no cover
        raise AssertionError("release() of a free lock did not raise")
