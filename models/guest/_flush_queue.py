"""dma-iommu's IOTLB invalidation policies after an unmap: strict, and lazy flush queues.

What each kernel does for a DMA domain behind virtio-iommu (drivers/iommu/dma-iommu.c
``iommu_dma_init_domain``, drivers/iommu/virtio-iommu.c ``viommu_capable``):

* The global policy line ("DMA domain TLB invalidation policy: lazy mode") only says
  which type the core *asks* for: DMA_FQ when lazy (the x86 default), DMA when strict.
* **6.7**: virtio-iommu has no ``flush_iotlb_all`` and does not report
  ``IOMMU_CAP_DEFERRED_FLUSH``, so ``iommu_dma_init_domain`` turns every DMA_FQ
  domain into DMA: strict, whatever the policy line says (sysfs type "DMA").
* **6.8 and later (6.12)**: "iommu/virtio: Add ops->flush_iotlb_all and enable
  deferred flush" -- lazy domains stay DMA_FQ with per-CPU queues.  Only s390 sets
  ``shadow_on_flush`` (single queue); mainline virtio-iommu never does.

Strict (``__iommu_dma_unmap`` with ``gather.queued`` false): ``iommu_iotlb_sync``
right after the unmap, then ``free_iova_fast`` -- the IOVA is reusable once the
sync returns.

Lazy (``queue_iova``): the range goes into a ring (per-CPU: ``IOVA_DEFAULT_FQ_SIZE``
256 slots, 10 ms timer; single: ``IOVA_SINGLE_FQ_SIZE`` 32768 slots, 1000 ms) tagged
with ``fq_flush_start_cnt``.  Entries are released (``free_iova_fast`` into the
*releasing* CPU's rcache) once ``fq_flush_finish_cnt`` has passed their tag, i.e.
after a ``flush_iotlb_all`` that started after they were queued has finished.  A
ring is full at 255 entries (tail + 1 == head): the queuing CPU then flushes
inline.  The first queueing arms ``fq_timer``; ``fq_flush_timeout`` flushes once
and releases every CPU's ring.

The classes here are decision objects written against the public protocol of ``_policy_api``
(``models.guest.InvalidationPolicy``), as a user's policy class is: they never sleep.  ``unmap()`` (and, for the
flush queue, ``queue_iova()``/``timer_expired()``) return a list of actions for the
caller to perform in order.  An action that invalidates (``IotlbSync``,
``FlushIotlbAll``) ends the list: the caller performs it -- taking simulated time,
for virtio-iommu a kick and a wait for the used ring -- and then calls
``flush_done(token, now)`` for the rest.  So the flush counters move exactly when
the kernel's would: ``start`` when the flush is issued, ``finish`` when it returns,
and a concurrent ``queue_iova`` on another CPU sees the flush as still in progress.

The timer deadline is ``now + timeout`` in simulated time; jiffy and timer-wheel
rounding are left to the caller.
"""

from __future__ import annotations

from typing import Any

import attrs

from sim import ms

from .._policy_ref import POLICY_API_VERSION, is_policy_reference, load_policy_class
from ._policy_api import (
    Action,
    ArmTimer,
    FlushIotlbAll,
    FreeIova,
    InvalidationCounters,
    InvalidationPolicy,
    InvalidationStats,
    IotlbSync,
    PolicyContext,
)

__all__ = ["Action", "ArmTimer", "FlushIotlbAll", "FreeIova", "InvalidationStats", "IotlbSync"]  # re-exported

#: dma-iommu.c flush-queue constants (unchanged from 6.7 to 6.12)
IOVA_DEFAULT_FQ_SIZE = 256
IOVA_DEFAULT_FQ_TIMEOUT_MS = 10
IOVA_SINGLE_FQ_SIZE = 32768
IOVA_SINGLE_FQ_TIMEOUT_MS = 1000

DOMAIN_TYPE_DMA = "DMA"
DOMAIN_TYPE_DMA_FQ = "DMA-FQ"


# -- the per-domain policy ---------------------------------------------------------------


@attrs.frozen
class FlushQueueOptions:
    """``struct iommu_dma_options``: queue kind, ring size and timer period."""

    single_queue: bool = False
    size: int = IOVA_DEFAULT_FQ_SIZE
    timeout_ps: int = ms(IOVA_DEFAULT_FQ_TIMEOUT_MS)

    def __attrs_post_init__(self) -> None:
        if self.size < 2 or self.size & (self.size - 1):
            raise ValueError(f"flush queue size must be a power of two >= 2, not {self.size!r}")
        if self.timeout_ps <= 0:
            raise ValueError(f"flush queue timeout must be positive, not {self.timeout_ps!r} ps")

    @classmethod
    def for_device(cls, shadow_on_flush: bool = False) -> FlushQueueOptions:
        """``iommu_dma_init_options``: one big queue for shadowing IOMMUs (s390), else per-CPU."""
        if shadow_on_flush:
            return cls(single_queue=True, size=IOVA_SINGLE_FQ_SIZE, timeout_ps=ms(IOVA_SINGLE_FQ_TIMEOUT_MS))
        return cls()


@attrs.frozen
class DomainPolicy:
    """The type a virtio-iommu DMA domain really gets, and why."""

    requested_type: str  # from the global policy: "DMA-FQ" (lazy) or "DMA" (strict)
    type: str  # what iommu_dma_init_domain leaves (sysfs iommu_groups/N/type)
    fq_options: FlushQueueOptions | None  # None: strict (or a policy class's own)
    reason: str
    #: the ``iommu_policy`` reference of a user policy class (``models.guest.InvalidationPolicy``), else None
    ref: str | None = None


def _kernel_version(guest_kernel: str) -> tuple[int, int]:
    try:
        major, minor = guest_kernel.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        raise ValueError(f"guest kernel version must look like '6.7', not {guest_kernel!r}") from None


def virtio_iommu_deferred_flush(guest_kernel: str, flush_queue: str = "auto") -> bool:
    """Does this kernel's virtio-iommu report IOMMU_CAP_DEFERRED_FLUSH (has ``flush_iotlb_all``)?
    From 6.8 it does; ``MachineConfig.flush_queue`` other than "auto" gives it to any kernel."""
    return flush_queue != "auto" or _kernel_version(guest_kernel) >= (6, 8)


def virtio_iommu_map_batching(guest_kernel: str, map_batching: str = "auto") -> bool:
    """Does this virtio-iommu queue MAPs and sync once per map operation (``iotlb_sync_map``, 6.8+)?
    ``MachineConfig.map_batching`` "on"/"off" overrides the kernel version."""
    if map_batching != "auto":
        return map_batching == "on"
    return _kernel_version(guest_kernel) >= (6, 8)


def dma_domain_policy(guest_kernel: str, iommu_policy: str, shadow_on_flush: bool = False,
                      flush_queue: str = "auto") -> DomainPolicy:
    """Domain type and flush-queue options of a virtio-iommu DMA domain (``iommu_dma_init_domain``);
    ``flush_queue`` is ``MachineConfig.flush_queue`` ("single" sets ``shadow_on_flush``)."""
    if flush_queue not in ("percpu", "single", "auto"):
        raise ValueError(f"flush queue must be 'percpu', 'single' or 'auto', not {flush_queue!r}")
    if is_policy_reference(iommu_policy):
        return _referenced_policy(guest_kernel, iommu_policy, flush_queue)
    if iommu_policy not in ("lazy", "strict"):
        raise ValueError(f"iommu policy must be 'lazy' or 'strict', not {iommu_policy!r}")
    shadow_on_flush = shadow_on_flush or flush_queue == "single"
    if iommu_policy == "strict":
        return DomainPolicy(DOMAIN_TYPE_DMA, DOMAIN_TYPE_DMA, None, "strict policy")
    if not virtio_iommu_deferred_flush(guest_kernel, flush_queue):
        return DomainPolicy(
            DOMAIN_TYPE_DMA_FQ, DOMAIN_TYPE_DMA, None,
            f"Linux {guest_kernel}: virtio-iommu lacks IOMMU_CAP_DEFERRED_FLUSH, DMA_FQ falls back to DMA",
        )
    options = FlushQueueOptions.for_device(shadow_on_flush)
    kind = "single flush queue" if options.single_queue else "per-CPU flush queues"
    return DomainPolicy(DOMAIN_TYPE_DMA_FQ, DOMAIN_TYPE_DMA_FQ, options, f"Linux {guest_kernel}: {kind}")


def _referenced_policy(guest_kernel: str, ref: str, flush_queue: str) -> DomainPolicy:
    """A user policy class's domain: DMA-FQ if it defers flushes and the IOMMU can flush all (else,
    as for lazy, DMA with strict invalidation), DMA if it does not defer."""
    cls = load_policy_class(ref)
    if not cls.deferred_flush:
        return DomainPolicy(DOMAIN_TYPE_DMA, DOMAIN_TYPE_DMA, None, f"policy {ref}", ref)
    if not virtio_iommu_deferred_flush(guest_kernel, flush_queue):
        return DomainPolicy(
            DOMAIN_TYPE_DMA_FQ, DOMAIN_TYPE_DMA, None,
            f"Linux {guest_kernel}: virtio-iommu lacks IOMMU_CAP_DEFERRED_FLUSH, DMA_FQ falls back to DMA "
            f"(policy {ref} not used)")
    return DomainPolicy(DOMAIN_TYPE_DMA_FQ, DOMAIN_TYPE_DMA_FQ, None, f"Linux {guest_kernel}: policy {ref}", ref)




def _check_nonneg(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, not {value!r}")


def _check_unmap(ncpus: int, cpu: int, pfn: int, pages: int, now_ps: int) -> None:
    """The arguments of an unmap, as both policies take them."""
    if not 0 <= cpu < ncpus:
        raise ValueError(f"cpu {cpu!r} out of range 0..{ncpus - 1}")
    _check_nonneg("pfn", pfn)
    _check_nonneg("now_ps", now_ps)
    if pages < 1:
        raise ValueError(f"an unmap covers at least one page, not {pages!r}")


# -- strict ------------------------------------------------------------------------------


class StrictInvalidation:
    """Strict DMA domain: every unmap is synced before its IOVA is freed on the unmapping CPU."""

    api_version = POLICY_API_VERSION
    #: the sync starts at the unmap
    stale_bound_ps: int | None = 0
    deferred_flush = False

    def __init__(self, ncpus: int) -> None:
        if ncpus < 1:
            raise ValueError(f"ncpus must be >= 1, not {ncpus!r}")
        self.ncpus = ncpus
        self._pending: dict[int, tuple[int, int, int, int]] = {}  # token -> (cpu, pfn, pages, t_unmap)
        self._next_token = 1
        self._c = InvalidationCounters()

    def unmap(self, cpu: int, pfn: int, pages: int, now_ps: int) -> list[Action]:
        """``__iommu_dma_unmap`` after ``iommu_unmap_fast``: sync the IOTLB, then free."""
        _check_unmap(self.ncpus, cpu, pfn, pages, now_ps)
        token = self._next_token
        self._next_token += 1
        self._pending[token] = (cpu, pfn, pages, now_ps)
        self._c.unmaps += 1
        self._c.started += 1
        return [IotlbSync(token)]

    def flush_done(self, token: int, now_ps: int) -> list[Action]:
        """The sync ``token`` returned: free the IOVA on the CPU that unmapped it."""
        entry = self._pending.pop(token, None)
        if entry is None:
            raise ValueError(f"no IOTLB sync with token {token!r} is in progress")
        cpu, pfn, pages, t_unmap = entry
        self._c.finished += 1
        self._c.release(now_ps - t_unmap)
        return [FreeIova(cpu, pfn, pages)]

    def timer_expired(self, now_ps: int) -> list[Action]:
        """A strict domain arms no timer."""
        raise RuntimeError("a strict domain arms no timer, yet one expired")

    def statistics(self) -> InvalidationStats:
        return self._c.snapshot()


# -- lazy: flush queues ------------------------------------------------------------------


@attrs.frozen
class _Entry:
    """``struct iova_fq_entry`` (plus the unmap time, for statistics)."""

    pfn: int
    pages: int
    counter: int
    queued_ps: int


class _Ring:
    """``struct iova_fq``: ``size`` slots, full at ``size - 1`` entries; ``locked`` while its
    owner flushes inline (the kernel holds ``fq->lock`` across that flush)."""

    __slots__ = ("entries", "locked")

    def __init__(self) -> None:
        self.entries: list[_Entry] = []
        self.locked = False


@attrs.frozen
class _Pending:
    """What to do when flush ``token`` completes: a queue_iova continuation or the timer's release."""

    cpu: int
    entry: tuple[int, int, int] | None  # (pfn, pages, queued_ps) still to add, or None for the timer


class FlushQueue:
    """A DMA_FQ domain's flush queue(s) and flush counters (``struct iommu_dma_cookie``)."""

    api_version = POLICY_API_VERSION
    deferred_flush = True

    def __init__(self, options: FlushQueueOptions, ncpus: int) -> None:
        if ncpus < 1:
            raise ValueError(f"ncpus must be >= 1, not {ncpus!r}")
        self.options = options
        self.ncpus = ncpus
        #: an entry waits at most one timer period for the flush that covers it (a ring that fills
        #: flushes sooner; one queued during a flush re-arms the timer)
        self.stale_bound_ps: int | None = options.timeout_ps
        self._rings = [_Ring() for _ in range(1 if options.single_queue else ncpus)]
        self.flush_start_cnt = 0
        self.flush_finish_cnt = 0
        #: finish time of each completed flush, by finish count (entry.counter indexes it)
        self._finish_times: list[int] = []
        self.timer_on = False
        self.timer_cpu: int | None = None
        self.timer_deadline_ps: int | None = None
        self._pending: dict[int, _Pending] = {}
        self._next_token = 1
        self._c = InvalidationCounters()

    # -- internals --

    def _ring(self, cpu: int) -> _Ring:
        return self._rings[0 if self.options.single_queue else cpu]

    def _ring_free(self, ring: _Ring, cpu: int) -> list[Action]:
        """``fq_ring_free_locked``: release, in queue order, the entries a finished flush covers."""
        actions: list[Action] = []
        n = 0
        for e in ring.entries:
            if e.counter >= self.flush_finish_cnt:
                break
            # the flush that first lifted finish_cnt above e.counter ended the stale window
            self._c.release(self._finish_times[e.counter] - e.queued_ps)
            actions.append(FreeIova(cpu, e.pfn, e.pages))
            n += 1
        del ring.entries[:n]
        return actions

    def _start_flush(self, pending: _Pending) -> FlushIotlbAll:
        """``fq_flush_iotlb`` up to the driver call: start_cnt++."""
        self.flush_start_cnt += 1
        self._c.started += 1
        token = self._next_token
        self._next_token += 1
        self._pending[token] = pending
        return FlushIotlbAll(token)

    def _add(self, cpu: int, pfn: int, pages: int, queued_ps: int, now_ps: int) -> list[Action]:
        """``fq_ring_add`` + the timer arming at the end of ``queue_iova``."""
        ring = self._ring(cpu)
        ring.entries.append(_Entry(pfn, pages, self.flush_start_cnt, queued_ps))
        self._c.max_entries = max(self._c.max_entries, len(ring.entries))
        if self.timer_on:
            return []
        self.timer_on = True
        self.timer_cpu = cpu
        self.timer_deadline_ps = now_ps + self.options.timeout_ps
        return [ArmTimer(self.timer_deadline_ps, cpu)]

    # -- the decisions --

    def queue_iova(self, cpu: int, pfn: int, pages: int, now_ps: int) -> list[Action]:
        """``queue_iova`` on ``cpu`` after ``iommu_unmap_fast`` (no sync).  Callers must serialise
        calls for one ring (the kernel's ``fq->lock``); a ring busy with an inline flush raises."""
        _check_unmap(self.ncpus, cpu, pfn, pages, now_ps)
        ring = self._ring(cpu)
        if ring.locked:
            raise RuntimeError(f"flush queue of cpu {cpu} is locked by an inline flush; serialise queue_iova")
        self._c.unmaps += 1
        actions = self._ring_free(ring, cpu)
        if len(ring.entries) + 1 >= self.options.size:  # fq_full(): (tail + 1) & mask == head
            ring.locked = True
            self._c.full_flushes += 1
            actions.append(self._start_flush(_Pending(cpu, (pfn, pages, now_ps))))
            return actions
        return actions + self._add(cpu, pfn, pages, now_ps, now_ps)

    # the common entry point of both policies
    unmap = queue_iova

    def timer_expired(self, now_ps: int) -> list[Action]:
        """``fq_flush_timeout`` on the CPU that armed the timer: clear ``fq_timer_on`` and flush."""
        if not self.timer_on or self.timer_cpu is None:
            raise RuntimeError("flush-queue timer expired but it was not armed")
        _check_nonneg("now_ps", now_ps)
        cpu = self.timer_cpu
        self.timer_on = False
        self.timer_cpu = None
        self.timer_deadline_ps = None
        self._c.timer_flushes += 1
        return [self._start_flush(_Pending(cpu, None))]

    def flush_done(self, token: int, now_ps: int) -> list[Action]:
        """Flush ``token`` returned (finish_cnt++): release what it covers and finish its caller."""
        pending = self._pending.pop(token, None)
        if pending is None:
            raise ValueError(f"no flush with token {token!r} is in progress")
        _check_nonneg("now_ps", now_ps)
        self.flush_finish_cnt += 1
        self._finish_times.append(now_ps)
        self._c.finished += 1
        if pending.entry is None:
            # fq_flush_timeout: release every ring (rings locked by an inline flush are released
            # by their owner when that flush returns) into the timer CPU's rcache
            actions: list[Action] = []
            for ring in self._rings:
                if not ring.locked:
                    actions += self._ring_free(ring, pending.cpu)
            return actions
        ring = self._ring(pending.cpu)
        ring.locked = False
        actions = self._ring_free(ring, pending.cpu)
        pfn, pages, queued_ps = pending.entry
        return actions + self._add(pending.cpu, pfn, pages, queued_ps, now_ps)

    def entries(self, cpu: int) -> tuple[tuple[int, int, int], ...]:
        """(pfn, pages, counter) of the entries waiting in ``cpu``'s ring (the single ring if single)."""
        return tuple((e.pfn, e.pages, e.counter) for e in self._ring(cpu).entries)

    def statistics(self) -> InvalidationStats:
        return self._c.snapshot()


def make_invalidation(policy: DomainPolicy, ncpus: int, guest_kernel: str = "") -> InvalidationPolicy:
    """The unmap policy object for a domain of type ``policy``: a built-in, or the class ``policy.ref``
    names, made with ``PolicyContext(ncpus, guest_kernel, policy.type)``."""
    if policy.ref is not None:
        cls: Any = load_policy_class(policy.ref)
        made = cls(PolicyContext(ncpus, guest_kernel, policy.type))
        if not isinstance(made, InvalidationPolicy):
            raise TypeError(f"policy {policy.ref}: {type(made).__name__}(...) does not implement InvalidationPolicy")
        return made
    if policy.fq_options is None:
        return StrictInvalidation(ncpus)
    return FlushQueue(policy.fq_options, ncpus)
