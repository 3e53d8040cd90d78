"""A correct custom invalidation policy: deferred invalidation with a 1 ms deadline.

Like dma-iommu's flush queue (drivers/iommu/dma-iommu.c ``queue_iova`` / ``fq_flush_timeout``),
but one domain-wide list and a 1 ms timer instead of per-CPU rings and 10 ms: an unmapped IOVA
waits in the list; the first unmap into an empty list arms the timer; when it fires, one
``flush_iotlb_all`` invalidates the whole domain, and every IOVA queued before that flush *began*
is freed when it returns.  IOVAs unmapped while a flush is in flight wait for the next one (the
flush may already have passed them), due at the oldest one's deadline; so no IOVA is reused
before the device has seen its UNMAP, and none waits more than 1 ms for its flush to begin.

Use it with ``--iommu-policy examples/policies/deferred.py:Deferred1ms`` (see README.md).
"""

from __future__ import annotations

from models.guest import (
    POLICY_API_VERSION,
    Action,
    ArmTimer,
    FlushIotlbAll,
    FreeIova,
    InvalidationCounters,
    InvalidationStats,
    PolicyContext,
)
from sim import ms


class Deferred1ms:
    """Queue every unmapped IOVA; flush the domain 1 ms after the first one, free what the flush covered."""

    api_version = POLICY_API_VERSION
    #: an IOVA waits at most this long for the flush that covers it to begin
    stale_bound_ps = ms(1)
    #: uses FlushIotlbAll: a DMA-FQ domain (virtio-iommu from Linux 6.8)
    deferred_flush = True

    def __init__(self, ctx: PolicyContext) -> None:
        self.ncpus = ctx.ncpus
        #: (cpu, pfn, pages, unmap time) waiting for a flush, in unmap order
        self.queued: list[tuple[int, int, int, int]] = []
        #: flush token -> the entries that flush covers (those queued before it began)
        self.flushing: dict[int, list[tuple[int, int, int, int]]] = {}
        self.timer_armed = False
        self.next_token = 1
        self.counters = InvalidationCounters()

    def unmap(self, cpu: int, pfn: int, pages: int, now_ps: int) -> list[Action]:
        self.counters.unmaps += 1
        self.queued.append((cpu, pfn, pages, now_ps))
        self.counters.max_entries = max(self.counters.max_entries, len(self.queued))
        return self._arm()

    def _arm(self) -> list[Action]:
        """Arm the timer, if it is not, for the oldest queued IOVA's deadline on the CPU that unmapped it."""
        if self.timer_armed or not self.queued:
            return []
        self.timer_armed = True
        cpu, _, _, unmapped = self.queued[0]
        return [ArmTimer(unmapped + self.stale_bound_ps, cpu)]

    def timer_expired(self, now_ps: int) -> list[Action]:
        self.timer_armed = False
        if not self.queued:
            return []
        token, self.next_token = self.next_token, self.next_token + 1
        self.flushing[token], self.queued = self.queued, []
        self.counters.started += 1
        self.counters.timer_flushes += 1
        return [FlushIotlbAll(token)]

    def flush_done(self, token: int, now_ps: int) -> list[Action]:
        covered = self.flushing.pop(token)
        self.counters.finished += 1
        actions: list[Action] = []
        for cpu, pfn, pages, unmapped in covered:
            self.counters.release(now_ps - unmapped)
            actions.append(FreeIova(cpu, pfn, pages))
        # what was unmapped during the flush has armed the timer for the next one (timer_expired cleared it)
        return actions

    def statistics(self) -> InvalidationStats:
        return self.counters.snapshot()
