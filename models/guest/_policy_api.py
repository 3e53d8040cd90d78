"""The public invalidation-policy protocol of dma-iommu's unmap path (version ``POLICY_API_VERSION``).

What happens after ``__iommu_dma_unmap`` has called ``iommu_unmap_fast`` (drivers/iommu/dma-iommu.c)
is a policy: strict domains ``iommu_iotlb_sync`` and ``free_iova_fast`` at once, DMA-FQ domains
``queue_iova`` into a flush queue that a timer or a full ring flushes with ``flush_iotlb_all``.
A policy here is a *decision object*: it never sleeps and never touches the machine.  Each of
its three entry points returns a list of actions that dma-iommu (``DmaCookie._perform``) carries
out in order:

* ``unmap(cpu, pfn, pages, now_ps)`` -- an IOVA range was just unmapped on ``cpu``;
* ``timer_expired(now_ps)`` -- a timer an ``ArmTimer`` action asked for has fired (once per
  ``ArmTimer``; there is no cancelling, a policy ignores a timer it no longer needs);
* ``flush_done(token, now_ps)`` -- the ``IotlbSync``/``FlushIotlbAll`` carrying ``token`` returned.

The actions: ``FreeIova`` (``free_iova_fast`` into that CPU's rcache: the IOVA may be reused at
once), ``IotlbSync`` (``iommu_iotlb_sync``: for virtio-iommu a kick and a wait until every queued
request completed), ``FlushIotlbAll`` (``ops->flush_iotlb_all``, the same on virtio-iommu; needs
``deferred_flush``) and ``ArmTimer``.  An action that invalidates ends the list it is in: the
caller performs it (simulated time passes, other CPUs run and may call the policy) and then calls
``flush_done(token)``, whose actions it performs next.  So a policy sees the invalidation begin and
end when the kernel would, and must free an IOVA only from a ``flush_done`` whose invalidation
began after that IOVA's unmap: freeing earlier lets the IOVA be mapped again while the device may
still use the old translation (use-after-unmap, which ``viommu-sim check-policy`` reports).

A policy class is constructed as ``Class(PolicyContext)`` for each DMA domain and declares, as
class attributes: ``api_version`` (this module's ``POLICY_API_VERSION``; another value is refused),
``stale_bound_ps`` (the longest time from an unmap to the *start* of the invalidation that covers
it, what the conformance suite holds it to; None: no bound) and ``deferred_flush`` (True if it
uses ``FlushIotlbAll``: Linux then makes the domain DMA-FQ, which virtio-iommu allows from 6.8;
on 6.7 it falls back to a strict domain, as ``iommu_dma_init_domain`` does for lazy).
``statistics()`` returns an ``InvalidationStats`` snapshot; ``InvalidationCounters`` keeps one.
The built-ins, ``StrictInvalidation`` and ``FlushQueue`` (per-CPU or single ring), are written
against this protocol in ``_flush_queue``.
"""

from __future__ import annotations

from typing import Protocol, Union, runtime_checkable

import attrs

from .._policy_ref import POLICY_API_VERSION as POLICY_API_VERSION


# -- actions -----------------------------------------------------------------------------


@attrs.frozen
class FreeIova:
    """``free_iova_fast(pfn, pages)`` executed on ``cpu`` (the IOVA goes to that CPU's rcache)."""

    cpu: int
    pfn: int
    pages: int


@attrs.frozen
class IotlbSync:
    """Strict mode: ``iommu_iotlb_sync`` for the range just unmapped; then call ``flush_done(token)``."""

    token: int


@attrs.frozen
class FlushIotlbAll:
    """Lazy mode: ``ops->flush_iotlb_all`` of the whole domain; then call ``flush_done(token)``."""

    token: int


@attrs.frozen
class ArmTimer:
    """Arm a timer on ``cpu`` that calls ``timer_expired`` at ``deadline_ps``."""

    deadline_ps: int
    cpu: int


Action = Union[FreeIova, IotlbSync, FlushIotlbAll, ArmTimer]


# -- statistics ----------------------------------------------------------------------------


@attrs.frozen
class InvalidationStats:
    """Counters of one domain's unmap invalidations.

    ``stale_*`` measure, per released IOVA, the time from its unmap to the end of the
    invalidation that covers it (the window in which the device may still hit a stale
    IOTLB entry).  ``max_entries`` is the largest ring occupancy seen (0 when strict).
    A snapshot, from a policy's ``statistics()``.
    """

    #: unmapped IOVA ranges handed to the policy
    unmaps: int
    #: IOTLB invalidations (``iommu_iotlb_sync`` / flush-queue flushes) begun and completed
    invalidations_started: int
    invalidations_finished: int
    #: flush-queue flushes run by the timer, and inline flushes because a ring was full
    timer_flushes: int
    full_flushes: int
    #: IOVA ranges freed back to the allocator after their invalidation
    released: int
    max_entries: int
    stale_max_ps: int
    stale_total_ps: int


class InvalidationCounters:
    """The mutable counters behind ``InvalidationStats`` (a policy bumps them, ``snapshot()`` reads)."""

    def __init__(self) -> None:
        self.unmaps = 0
        self.started = 0
        self.finished = 0
        self.timer_flushes = 0
        self.full_flushes = 0
        self.released = 0
        self.max_entries = 0
        self.stale_max = 0
        self.stale_total = 0

    def release(self, stale_ps: int) -> None:
        """One IOVA range freed ``stale_ps`` after its unmap."""
        self.released += 1
        self.stale_max = max(self.stale_max, stale_ps)
        self.stale_total += stale_ps

    def snapshot(self) -> InvalidationStats:
        return InvalidationStats(
            self.unmaps, self.started, self.finished, self.timer_flushes, self.full_flushes,
            self.released, self.max_entries, self.stale_max, self.stale_total,
        )


# -- the protocol -----------------------------------------------------------------------------


@attrs.frozen
class PolicyContext:
    """What a policy is told about its domain when it is made: the guest's CPUs and kernel."""

    ncpus: int
    guest_kernel: str
    #: the domain's type as ``iommu_dma_init_domain`` leaves it: "DMA-FQ" or "DMA"
    domain_type: str


@runtime_checkable
class InvalidationPolicy(Protocol):
    """One DMA domain's unmap policy (see the module docstring for the rules)."""

    @property
    def api_version(self) -> int:
        """The protocol version the policy is written for (``POLICY_API_VERSION``)."""

    @property
    def stale_bound_ps(self) -> int | None:
        """The longest time from an unmap to the start of the invalidation covering it; None: unbounded."""

    @property
    def deferred_flush(self) -> bool:
        """Does the policy use ``FlushIotlbAll`` (a DMA-FQ domain)?"""

    def unmap(self, cpu: int, pfn: int, pages: int, now_ps: int) -> list[Action]: ...

    def timer_expired(self, now_ps: int) -> list[Action]: ...

    def flush_done(self, token: int, now_ps: int) -> list[Action]: ...

    def statistics(self) -> InvalidationStats: ...
