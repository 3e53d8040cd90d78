"""The guest's spinlock in a KVM guest without paravirtual spinlocks: a test-and-set lock.

Linux x86 (arch/x86/include/asm/qspinlock.h ``virt_spin_lock``): on a hypervisor
(X86_FEATURE_HYPERVISOR) ``native_pv_lock_init`` leaves ``virt_spin_lock_key`` on, and a
``spin_lock`` that misses the fast path falls back to a test-and-set loop (re-read the word,
``cmpxchg`` 0 -> locked, ``cpu_relax``) instead of the fair MCS queue, "because fair locks have
horrible lock 'holder' preemption issues".  KVM's ``kvm_spinlock_init`` turns the key off only
when it installs the paravirtual queued lock (the host offers KVM_FEATURE_PV_UNHALT), or with
KVM_HINTS_REALTIME, one CPU, or ``nopvspin``.  QEMU does not offer ``kvm-pv-unhalt`` by default
(it is not among ``kvm_default_props``), so a guest on QEMU's default CPU models takes the
test-and-set path.

Such a lock is not fair: a CPU that releases it and asks again at once (``viommu_add_req`` then
``viommu_sync_req``: two lock sections a few instructions apart) finds the word 0 in its own
cache and takes it back, while the waiters still have to see the release (the cache line moves
to them, ``spinlock_handoff_ps``) before their ``cmpxchg`` can succeed.  So a CPU's sync follows
its own add before another CPU's kick can carry the request.  Among waiters the one that has
waited longest is modelled as winning the race (the model's one deterministic choice; on the
machine it is whichever core's ``cmpxchg`` lands first).

``statistics()`` gives the time the lock was held and how many acquisitions had to wait.
"""

from __future__ import annotations

import attrs

from sim import Simulator, TestAndSetLock

__all__ = ["SpinlockStats", "GuestSpinlock"]


@attrs.frozen(kw_only=True)
class SpinlockStats:
    """A spinlock's counters at one instant (``GuestSpinlock.statistics()``)."""

    #: acquisitions, in all
    acquisitions: int
    #: acquisitions that found the lock held and spun
    contended: int
    #: simulated time the lock was held, in ps (up to the instant of the snapshot)
    busy_ps: int


class GuestSpinlock:
    """``spin_lock``/``spin_unlock`` on the test-and-set path: ``async with lock:``.

    A waiter is woken by the release and tries again ``handoff_ps`` later (the cache line's way to
    it); whoever finds the word free first takes it, the others wait for the next release.
    """

    def __init__(self, sim: Simulator, name: str, handoff_ps: int) -> None:
        self.sim = sim
        self.name = name
        self.handoff_ps = handoff_ps
        #: the lock word and its spinners (sim.TestAndSetLock: the loop below in two items per release)
        self._word = TestAndSetLock(name, handoff_ps)
        self._since = 0
        self._busy_ps = 0
        self._acquisitions = 0
        self._contended = 0

    def __repr__(self) -> str:
        return f"<GuestSpinlock {self.name} {'held' if self._word.locked() else 'free'}>"

    def locked(self) -> bool:
        return self._word.locked()

    async def acquire(self) -> None:
        """``spin_lock``: take the word, or spin -- ``while held: wait for a release, then retry
        handoff_ps later`` -- until a retry finds it free (``TestAndSetLock.wait``)."""
        self._acquisitions += 1
        if not self._word.try_acquire():
            self._contended += 1
            await self._word.wait()
        self._since = self.sim.now

    def release(self) -> None:
        if not self._word.locked():
            raise RuntimeError(f"release() of {self.name}, which is not held")
        self._busy_ps += self.sim.now - self._since
        self._word.release()

    async def __aenter__(self) -> GuestSpinlock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def statistics(self) -> SpinlockStats:
        """A snapshot of the counters (a section still held counts up to now)."""
        busy = self._busy_ps + (self.sim.now - self._since if self._word.locked() else 0)
        return SpinlockStats(acquisitions=self._acquisitions, contended=self._contended, busy_ps=busy)
