"""dma-iommu unmap invalidation: strict syncs, lazy flush queues, and which kernel gets which."""

import pytest

from models.guest._flush_queue import (
    IOVA_DEFAULT_FQ_SIZE,
    ArmTimer,
    DomainPolicy,
    FlushIotlbAll,
    FlushQueue,
    FlushQueueOptions,
    FreeIova,
    IotlbSync,
    InvalidationStats,
    StrictInvalidation,
    dma_domain_policy,
    make_invalidation,
    virtio_iommu_deferred_flush,
)
from models.guest._iova import IovaDomain
from sim import ms, us


def test_policy_67_virtio_iommu_domains_are_strict_even_in_lazy_mode():
    """6.7 lacks IOMMU_CAP_DEFERRED_FLUSH, so DMA_FQ falls back to DMA; strict stays strict."""
    lazy = dma_domain_policy("6.7", "lazy")
    assert (lazy.requested_type, lazy.type, lazy.fq_options) == ("DMA-FQ", "DMA", None)
    assert "IOMMU_CAP_DEFERRED_FLUSH" in lazy.reason
    assert dma_domain_policy("6.12", "strict") == DomainPolicy("DMA", "DMA", None, "strict policy")
    assert isinstance(make_invalidation(lazy, 4), StrictInvalidation)
    assert [virtio_iommu_deferred_flush(k) for k in ("6.7", "6.8", "6.12", "7.0")] == [False, True, True, True]


def test_policy_612_lazy_uses_per_cpu_queues_and_s390_shadowing_a_single_queue():
    """6.8+ lazy domains are DMA-FQ: 256 entries / 10 ms per CPU, or 32768 / 1000 ms single queue."""
    per_cpu = dma_domain_policy("6.12", "lazy")
    assert per_cpu.type == "DMA-FQ"
    assert per_cpu.fq_options == FlushQueueOptions(single_queue=False, size=256, timeout_ps=ms(10))
    single = dma_domain_policy("6.12", "lazy", shadow_on_flush=True)
    assert single.fq_options == FlushQueueOptions(single_queue=True, size=32768, timeout_ps=ms(1000))
    assert isinstance(make_invalidation(per_cpu, 4), FlushQueue)
    with pytest.raises(ValueError, match="'lazy' or 'strict'"):
        dma_domain_policy("6.12", "deferred")
    with pytest.raises(ValueError, match="look like '6.7'"):
        dma_domain_policy("six", "lazy")


def test_strict_unmap_syncs_before_freeing_on_the_unmapping_cpu():
    """Strict: one IOTLB sync per unmap, then free_iova_fast on that CPU; stale window = sync latency."""
    strict = StrictInvalidation(4)
    assert strict.unmap(2, 0xFFFFD, 1, us(10)) == [IotlbSync(1)]
    assert strict.unmap(3, 0xFFF80, 16, us(11)) == [IotlbSync(2)]
    assert strict.flush_done(2, us(14)) == [FreeIova(3, 0xFFF80, 16)]
    assert strict.flush_done(1, us(15)) == [FreeIova(2, 0xFFFFD, 1)]
    assert strict.statistics() == InvalidationStats(
        unmaps=2, invalidations_started=2, invalidations_finished=2, timer_flushes=0, full_flushes=0,
        released=2, max_entries=0, stale_max_ps=us(5), stale_total_ps=us(8),
    )
    with pytest.raises(ValueError, match="token 1"):
        strict.flush_done(1, us(16))


def test_fq_first_queueing_arms_the_timer_once():
    """queue_iova arms fq_timer only when it is not already on; nothing is freed before a flush."""
    fq = FlushQueue(FlushQueueOptions(), 4)
    assert fq.queue_iova(1, 0x100, 1, us(5)) == [ArmTimer(us(5) + ms(10), 1)]
    assert fq.queue_iova(2, 0x200, 1, us(6)) == []
    assert fq.queue_iova(1, 0x101, 1, us(7)) == []
    assert fq.entries(1) == ((0x100, 1, 0), (0x101, 1, 0))
    assert (fq.timer_on, fq.timer_cpu, fq.timer_deadline_ps) == (True, 1, us(5) + ms(10))


def test_fq_timer_flushes_once_and_releases_every_ring_into_the_timer_cpu():
    """fq_flush_timeout: one flush_iotlb_all, then all CPUs' rings in CPU order, freed on the timer's CPU."""
    fq = FlushQueue(FlushQueueOptions(), 4)
    fq.queue_iova(2, 0x300, 1, us(1))
    fq.queue_iova(0, 0x100, 4, us(2))
    fq.queue_iova(2, 0x301, 1, us(3))
    assert fq.timer_expired(ms(10) + us(1)) == [FlushIotlbAll(1)]
    assert fq.timer_on is False
    assert fq.flush_done(1, ms(10) + us(21)) == [FreeIova(2, 0x100, 4), FreeIova(2, 0x300, 1), FreeIova(2, 0x301, 1)]
    stats = fq.statistics()
    assert (stats.timer_flushes, stats.released, stats.max_entries) == (1, 3, 2)
    assert stats.stale_max_ps == ms(10) + us(20)
    with pytest.raises(RuntimeError, match="not armed"):
        fq.timer_expired(ms(30))


def test_fq_entries_queued_during_a_flush_wait_for_the_next_one():
    """An IOVA queued after a flush started is not released by it (start/finish counters)."""
    fq = FlushQueue(FlushQueueOptions(), 2)
    fq.queue_iova(0, 0x100, 1, 0)
    assert fq.timer_expired(ms(10)) == [FlushIotlbAll(1)]
    # CPU 1 unmaps while the flush is in the device: tagged with start_cnt 1, and re-arms the timer
    assert fq.queue_iova(1, 0x200, 1, ms(10) + us(1)) == [ArmTimer(ms(20) + us(1), 1)]
    assert fq.flush_done(1, ms(10) + us(5)) == [FreeIova(0, 0x100, 1)]
    assert fq.entries(1) == ((0x200, 1, 1),)
    assert fq.queue_iova(1, 0x201, 1, ms(11)) == []  # finish_cnt 1 does not cover counter 1
    assert fq.timer_expired(ms(20) + us(1)) == [FlushIotlbAll(2)]
    assert fq.flush_done(2, ms(20) + us(9)) == [FreeIova(1, 0x200, 1), FreeIova(1, 0x201, 1)]


def test_fq_queueing_first_releases_what_another_cpus_flush_covered():
    """An inline flush on CPU 1 covers CPU 0's entry too; CPU 0 releases it at its next queue_iova."""
    fq = FlushQueue(FlushQueueOptions(size=4), 2)
    assert fq.queue_iova(0, 0x100, 1, 0) == [ArmTimer(ms(10), 0)]
    for i in range(3):  # a 4-slot ring is full at 3 entries
        assert fq.queue_iova(1, 0x200 + i, 1, 1 + i) == []
    assert fq.queue_iova(1, 0x2FF, 1, 10) == [FlushIotlbAll(1)]
    assert fq.flush_done(1, 20) == [FreeIova(1, 0x200, 1), FreeIova(1, 0x201, 1), FreeIova(1, 0x202, 1)]
    assert fq.entries(0) == ((0x100, 1, 0),)
    assert fq.queue_iova(0, 0x101, 1, 30) == [FreeIova(0, 0x100, 1)]
    assert fq.entries(0) == ((0x101, 1, 1),)
    assert fq.statistics().stale_max_ps == 20


def test_fq_full_ring_flushes_inline_then_queues():
    """The 256-slot ring holds 255 entries; the next queue_iova flushes, releases them, then adds itself."""
    fq = FlushQueue(FlushQueueOptions(), 1)
    for i in range(IOVA_DEFAULT_FQ_SIZE - 1):
        assert fq.queue_iova(0, 0x1000 + i, 1, i) == ([ArmTimer(ms(10), 0)] if i == 0 else [])
    assert fq.queue_iova(0, 0x2000, 2, us(1)) == [FlushIotlbAll(1)]
    with pytest.raises(RuntimeError, match="locked by an inline flush"):
        fq.queue_iova(0, 0x3000, 1, us(2))
    assert fq.timer_expired(ms(10)) == [FlushIotlbAll(2)]
    assert fq.flush_done(2, ms(10) + 5) == []  # the locked ring is its owner's to release
    done = fq.flush_done(1, ms(10) + 10)
    assert done == [FreeIova(0, 0x1000 + i, 1) for i in range(255)] + [ArmTimer(ms(20) + 10, 0)]
    assert fq.entries(0) == ((0x2000, 2, 2),)
    stats = fq.statistics()
    assert (stats.full_flushes, stats.timer_flushes, stats.max_entries, stats.released) == (1, 1, 255, 255)
    assert (stats.invalidations_started, stats.invalidations_finished) == (2, 2)


def test_fq_single_queue_is_shared_by_all_cpus():
    """Single-queue mode (s390 shadowing) has one ring; releases still go to the releasing CPU."""
    fq = FlushQueue(FlushQueueOptions.for_device(shadow_on_flush=True), 4)
    assert fq.queue_iova(3, 0x10, 1, 0) == [ArmTimer(ms(1000), 3)]
    fq.queue_iova(1, 0x11, 1, 1)
    assert fq.entries(0) == ((0x10, 1, 0), (0x11, 1, 0))
    assert fq.timer_expired(ms(1000)) == [FlushIotlbAll(1)]
    assert fq.flush_done(1, ms(1000) + 1) == [FreeIova(3, 0x10, 1), FreeIova(3, 0x11, 1)]


def test_fq_lazy_reuse_waits_for_the_flush_then_pops_in_reverse_queue_order():
    """6.12 lazy (refboot lazy-smp4): admin pages are reused only after the timer flush, 0xFFFF9 first."""
    iovad = IovaDomain(4096, 1, 4)
    fq = FlushQueue(FlushQueueOptions(), 4)
    irq_cpu, now = 3, 0
    for _ in range(5):  # admin buffers completed and unmapped on the IRQ CPU
        pfn = iovad.alloc_iova_fast(1, 0xFFFFF, False, irq_cpu)
        fq.queue_iova(irq_cpu, pfn, 1, now)
        now += us(100)
    assert iovad.alloc_iova_fast(1, 0xFFFFF, False, irq_cpu) == 0xFFFFA  # nothing reusable yet
    (flush,) = fq.timer_expired(ms(10))
    assert isinstance(flush, FlushIotlbAll)
    for action in fq.flush_done(flush.token, ms(10) + us(30)):
        assert isinstance(action, FreeIova)
        iovad.free_iova_fast(action.pfn, action.pages, action.cpu)
    reused = [iovad.alloc_iova_fast(1, 0xFFFFF, False, irq_cpu) for _ in range(5)]
    assert reused == [0xFFFFB, 0xFFFFC, 0xFFFFD, 0xFFFFE, 0xFFFFF]


def test_fq_rejects_bad_input():
    """Unknown CPUs, empty unmaps, bad options and unknown tokens are refused with messages."""
    fq = FlushQueue(FlushQueueOptions(), 2)
    with pytest.raises(ValueError, match="cpu 2"):
        fq.queue_iova(2, 0, 1, 0)
    with pytest.raises(ValueError, match="at least one page"):
        fq.queue_iova(0, 0, 0, 0)
    with pytest.raises(ValueError, match="token 9"):
        fq.flush_done(9, 0)
    with pytest.raises(ValueError, match="power of two"):
        FlushQueueOptions(size=100)


def test_the_built_ins_follow_the_public_invalidation_policy_protocol():
    """StrictInvalidation and both flush queues are InvalidationPolicy objects of API version 1 and declare
    their bound: strict syncs at the unmap, a flush queue waits at most one timer period."""
    from models.guest import POLICY_API_VERSION, InvalidationPolicy

    per_cpu = FlushQueue(FlushQueueOptions(), 4)
    single = FlushQueue(FlushQueueOptions.for_device(shadow_on_flush=True), 4)
    strict = StrictInvalidation(4)
    assert POLICY_API_VERSION == 1
    assert all(isinstance(p, InvalidationPolicy) for p in (strict, per_cpu, single))
    assert [(p.api_version, p.stale_bound_ps, p.deferred_flush) for p in (strict, per_cpu, single)] == [
        (1, 0, False), (1, ms(10), True), (1, ms(1000), True)]
    with pytest.raises(RuntimeError, match="strict domain arms no timer"):
        strict.timer_expired(us(1))


def test_a_referenced_policy_gets_a_dma_fq_domain_on_6_12_and_falls_back_to_strict_on_6_7(tmp_path):
    """A class that defers flushes needs flush_iotlb_all: 6.12 gives it DMA-FQ, 6.7 a strict DMA domain."""
    from pathlib import Path

    ref = f"{Path(__file__).resolve().parents[2]}/examples/policies/deferred.py:Deferred1ms"
    on_612 = dma_domain_policy("6.12", ref)
    assert (on_612.type, on_612.fq_options, on_612.ref) == ("DMA-FQ", None, ref)
    made = make_invalidation(on_612, 4, "6.12")
    assert type(made).__name__ == "Deferred1ms" and made.stale_bound_ps == ms(1)
    assert made.unmap(1, 0xFFFFD, 1, us(10)) == [ArmTimer(us(10) + ms(1), 1)]
    assert made.unmap(2, 0xFFFFC, 1, us(20)) == []
    assert made.timer_expired(us(1010)) == [FlushIotlbAll(1)]
    # queued during the flush: not covered by it, the next flush is due at its own deadline
    assert made.unmap(3, 0xFFFFB, 1, us(1012)) == [ArmTimer(us(1012) + ms(1), 3)]
    assert made.flush_done(1, us(1017)) == [FreeIova(1, 0xFFFFD, 1), FreeIova(2, 0xFFFFC, 1)]
    on_67 = dma_domain_policy("6.7", ref)
    assert (on_67.type, on_67.ref) == ("DMA", None) and "policy" in on_67.reason
    assert isinstance(make_invalidation(on_67, 4, "6.7"), StrictInvalidation)
