"""DMA-safety regressions: use-after-unmap, IOVA reuse and MAP/UNMAP ordering on the booted machine.

Each test boots the real machine (``platform``), drives NVMe I/O through the guest's
NVMe driver and DMA API, and lets ``DmaSafetyScoreboard``/``OrderingScoreboard``
watch the trace: every scoreboard a test creates is checked when the test returns.
"""

from __future__ import annotations

from typing import Any

import pytest

import testbench
from models._dma import DmaFault
from models._nvme_wire import IO_READ, IO_WRITE
from models.guest._dma_iommu import DMA_TO_DEVICE
from testbench import Monitor, ScoreboardError, Timer, format_time, ms, ns, us
from testbench._safety import DmaSafetyScoreboard, OrderingScoreboard

PAGE = 4096
#: dma-iommu's flush-queue timer (IOVA_DEFAULT_FQ_TIMEOUT) and what one flush may add to it
FQ_TIMEOUT = ms(10)
FLUSH_SLACK = us(100)


async def _io(p: Any, buf: int, count: int, cpu: int = 0) -> None:
    """``count`` 4 KiB writes and reads alternately at LBA 0 from ``buf``, each one successful."""
    for i in range(count):
        assert await p.nvme_driver.submit_io(cpu, IO_READ if i % 2 else IO_WRITE, 1, 0, 8, buf) == 0


def _mapped_iovas(monitor: Monitor) -> list[int]:
    return [r.fields["iova"] for r in monitor.records]


async def _reuse_workload(sim: Any, platform: Any, guest_kernel: str, policy: str,
                          break_reuse: bool = False) -> tuple[OrderingScoreboard, Monitor]:
    """I/O, a pause longer than the flush-queue timer, more I/O: the IOVAs of the first burst come back.

    Returns the ordering scoreboard and a monitor of the I/O's MAP/UNMAP events (guest and device)."""
    ordering = OrderingScoreboard(sim)
    DmaSafetyScoreboard(sim)
    p = await platform(guest_kernel=guest_kernel, iommu_policy=policy, nvme="emulated")
    p.nvme_driver.dma.cookie.reuse_before_unmap_completes = break_reuse
    events = Monitor(sim, event=("iommu_dma_map_page", "viommu_map_pages", "viommu_unmap_pages",
                                 "virtio_iommu_unmap_done"))
    buf = p.kernel.mm.alloc_pages(0)
    await _io(p, buf, 4)
    await Timer(FQ_TIMEOUT + ms(1))
    await _io(p, buf, 4)
    return ordering, events


def _of(events: Monitor, event: str) -> list[Any]:
    return [r for r in events.records if r.event == event]


@testbench.test(timeout=testbench.seconds(2000))
@testbench.parametrize(nvme=["emulated", "vfio"], detail=["full", "fast"])
async def test_strict_never_lets_a_dma_through_after_unmap_returns(sim, platform, nvme, detail):
    """Strict: once the read's unmap returned, the controller replaying its PRP faults and is reported
    -- at either level of detail (the fast one hands queue entries over, the data DMA is the same)."""
    safety = DmaSafetyScoreboard(sim)
    p = await platform(iommu_policy="strict", nvme=nvme, detail=detail)
    maps = Monitor(sim, event="iommu_dma_map_page")
    buf = p.kernel.mm.alloc_pages(0)
    assert await p.nvme_driver.submit_io(0, IO_READ, 1, 0, 8, buf) == 0  # returns after dma_unmap_page
    (stale,) = _mapped_iovas(maps)
    (_, iova, _, unmap_done) = safety.stale_windows[-1]
    assert iova == stale
    assert safety.errors == []
    with pytest.raises(DmaFault, match=f"device read at IOVA 0x{stale:x} faulted"):
        p.machine.nvme.dma.dma_read(stale, PAGE)  # the controller's DMA engine reusing the old PRP1
    with pytest.raises(ScoreboardError) as err:
        safety.check()
    (violation,) = safety.violations
    assert violation.startswith(
        f"use-after-unmap: DMA read of IOVA 0x{stale:x} (+4096) by nvme@00:04.0 at t={format_time(sim.now)} "
        f"after UNMAP of [0x{stale:x}-0x{stale + PAGE - 1:x}] in domain 1 completed at t={format_time(unmap_done)}; "
        "it faulted")
    assert violation in str(err.value)


@testbench.test(timeout=testbench.seconds(2000))
@testbench.parametrize(guest_kernel=["6.7", "6.12"], policy=["strict", "lazy"])
async def test_no_iova_is_reused_before_its_unmap_completes(sim, platform, guest_kernel, policy):
    """Across a flush-queue timeout the IOVAs are reused, each only after the device completed its UNMAP."""
    ordering, events = await _reuse_workload(sim, platform, guest_kernel, policy)
    iovas = [r.fields["iova"] for r in _of(events, "iommu_dma_map_page")]
    assert len(iovas) == 8 and len(set(iovas)) < 8  # some IOVA really was mapped twice
    assert ordering.errors == []


@testbench.test(timeout=testbench.seconds(2000))
async def test_a_guest_that_reuses_an_iova_before_the_unmap_completes_fails_the_reuse_check(sim, platform):
    """With DmaCookie.reuse_before_unmap_completes the reuse regression fails, naming the MAP and the UNMAP."""
    ordering, events = await _reuse_workload(sim, platform, "6.12", "lazy", break_reuse=True)
    with pytest.raises(ScoreboardError) as err:
        ordering.check()
    # the first I/O's IOVA is freed at once and the second I/O maps it while the first UNMAP is still queued
    unmap, remap = _of(events, "viommu_unmap_pages")[0], _of(events, "viommu_map_pages")[1]
    done = _of(events, "virtio_iommu_unmap_done")[0]
    iova = unmap.fields["iova"]
    assert remap.fields["iova"] == iova and unmap.time < remap.time < done.time
    assert ordering.errors[0] == (
        f"IOVA reused before UNMAP completed: MAP of IOVA [0x{iova:x}-0x{iova + PAGE - 1:x}] in domain 1 at "
        f"t={format_time(remap.time)}, but its UNMAP (queued at t={format_time(unmap.time)}) completed only at "
        f"t={format_time(done.time)}")
    assert ordering.errors[0] in str(err.value)


@testbench.test(timeout=testbench.seconds(2000))
@testbench.parametrize(guest_kernel=["6.7", "6.12"], nvme=["emulated", "vfio"])
async def test_a_map_is_visible_to_the_device_before_the_driver_sees_its_status(sim, platform, guest_kernel, nvme):
    """Every OK MAP the guest reads was completed by the device (and, for VFIO, notified to the host) first."""
    ordering = OrderingScoreboard(sim)
    p = await platform(guest_kernel=guest_kernel, nvme=nvme)
    await _io(p, p.kernel.mm.alloc_pages(0), 2)
    assert len(ordering.map_orders) >= 10
    for device_map, notified, guest_ok in ordering.map_orders:
        assert device_map <= guest_ok
        assert notified is None or device_map <= notified <= guest_ok
    vfio_maps = [o for o in ordering.map_orders if o[1] is not None]
    assert bool(vfio_maps) == (nvme == "vfio")


@testbench.test(timeout=testbench.seconds(2000))
async def test_linux_6_7_lazy_mode_unmaps_strictly_through_virtio_iommu(sim, platform):
    """6.7 prints "lazy mode", yet the UNMAP has completed at the device before dma_unmap_page returns."""
    safety = DmaSafetyScoreboard(sim)
    p = await platform(guest_kernel="6.7", iommu_policy="lazy")
    assert "iommu: DMA domain TLB invalidation policy: lazy mode" in p.dmesg()
    dma = p.nvme_driver.dma
    buf = p.kernel.mm.alloc_pages(0)
    for _ in range(3):
        iova = await dma.map_page(0, buf, PAGE, DMA_TO_DEVICE)
        await dma.unmap_page(0, iova, PAGE, DMA_TO_DEVICE)
        returned = sim.now
        (_, _, unmapped, done) = safety.stale_windows[-1]
        assert safety.stale_windows[-1][1] == iova
        assert unmapped <= done <= returned


@testbench.test(timeout=testbench.seconds(2000))
async def test_linux_6_12_lazy_bounds_the_stale_window_by_the_flush_queue_timeout(sim, platform, record_property):
    """6.12 lazy: an unmapped IOVA stays mapped at the device up to the 10 ms flush-queue timer, never longer."""
    safety = DmaSafetyScoreboard(sim)
    p = await platform(guest_kernel="6.12", iommu_policy="lazy")
    assert "iommu: DMA domain TLB invalidation policy: lazy mode" in p.dmesg()
    buf = p.kernel.mm.alloc_pages(0)
    before = len(safety.stale_windows)
    await _io(p, buf, 6, cpu=1)
    await Timer(FQ_TIMEOUT + ms(1))
    windows = safety.stale_windows[before:]
    worst = max(done - unmapped for _, _, unmapped, done in windows)
    record_property("max_stale_window_ps", worst)
    record_property("max_stale_window", format_time(worst))
    assert len(windows) == 6
    assert ms(5) < worst <= FQ_TIMEOUT + FLUSH_SLACK, f"max stale window {format_time(worst)}"



@testbench.test(timeout=testbench.seconds(2000))
async def test_linux_6_12_lazy_lets_a_stale_dma_through_until_the_flush_queue_timer(sim, platform):
    """6.12 lazy: right after the read returns its buffer is still reachable; after the 10 ms flush it faults."""
    safety = DmaSafetyScoreboard(sim)
    p = await platform(guest_kernel="6.12", iommu_policy="lazy", nvme="emulated")
    maps = Monitor(sim, event="iommu_dma_map_page")
    buf = p.kernel.mm.alloc_pages(0)
    p.machine.memory.write(buf, b"secret")
    assert await p.nvme_driver.submit_io(0, IO_WRITE, 1, 0, 8, buf) == 0
    (stale,) = _mapped_iovas(maps)
    assert p.machine.nvme.dma.dma_read(stale, 6) == b"secret"  # the UNMAP still waits in the request queue
    assert safety.errors == []
    await Timer(FQ_TIMEOUT + FLUSH_SLACK)
    with pytest.raises(DmaFault):
        p.machine.nvme.dma.dma_read(stale, 6)
    with pytest.raises(ScoreboardError):
        safety.check()
    assert len(safety.violations) == 1 and "it faulted" in safety.violations[0]

# -- the scoreboards' other verdicts, on hand-made trace records ---------------------------------------------


def _attach(sim: Any) -> None:
    sim.trace("virtio-iommu", "virtio_iommu_attach", domain_id=1, ep_id=0x20)


@testbench.test
async def test_ordering_reports_a_dma_before_its_map_completed(sim):
    """A DMA to an IOVA whose MAP the guest queued but the device has not done names both times."""
    ordering = OrderingScoreboard(sim)
    _attach(sim)
    sim.trace("guest/virtio_iommu", "viommu_map_pages", cpu=0, domain=1, iova=0x1000, paddr=0x9000, size=PAGE,
              flags=1)
    await Timer(ns(5))
    sim.trace("dma", "dma_access", initiator="nvme@00:04.0", bdf=0x20, iova=0x1010, size=4, access="read",
              fault="virtio-iommu fault: page not mapped (VIRTIO_IOMMU_FAULT_R_MAPPING, flags ADDRESS)")
    with pytest.raises(ScoreboardError):
        ordering.check()
    assert ordering.errors == [
        "DMA before MAP completed: DMA read of IOVA 0x1010 by nvme@00:04.0 at t=5 ns, but the MAP of "
        "[0x1000-0x1fff] in domain 1 (queued at t=0 ps) had not completed at the device"
    ]


@testbench.test
async def test_ordering_reports_a_map_status_read_before_the_host_was_notified(sim):
    """A MAP that notified a VFIO notifier but never reached vfio_iommu_map_notify fails when the guest reads OK."""
    ordering = OrderingScoreboard(sim)
    _attach(sim)
    sim.trace("virtio-iommu", "virtio_iommu_map", domain_id=1, virt_start=0x1000, virt_end=0x1FFF,
              phys_start=0x9000, flags=3)
    sim.trace("virtio-iommu", "virtio_iommu_notify_map", mr="mr", virt_start=0x1000, virt_end=0x1FFF,
              paddr=0x9000, flags=3)
    sim.trace("virtio-iommu", "virtio_iommu_request_status", type=3, status=0, used_len=4)
    await Timer(ns(7))
    sim.trace("guest/virtio_iommu", "viommu_req_done", cpu=0, type="MAP", head=0, used_len=4, status=0)
    with pytest.raises(ScoreboardError):
        ordering.check()
    assert ordering.errors == [
        "host notify after MAP status: the guest read OK for the MAP of [0x1000-0x1fff] in domain 1 at t=7 ns "
        "(device MAP at t=0 ps), but vfio_iommu_map_notify never ran for it"
    ]


@testbench.test
async def test_dma_safety_reports_an_unblocked_dma_to_the_unmapped_part_of_a_range(sim):
    """After UNMAP of two pages and a new MAP of the first, only a DMA to the second page is use-after-unmap."""
    safety = DmaSafetyScoreboard(sim)
    _attach(sim)
    sim.trace("virtio-iommu", "virtio_iommu_unmap_done", domain_id=1, virt_start=0x1000, virt_end=0x2FFF)
    await Timer(ns(3))
    sim.trace("virtio-iommu", "virtio_iommu_map", domain_id=1, virt_start=0x1000, virt_end=0x1FFF,
              phys_start=0x9000, flags=3)
    for iova in (0x1800, 0x2800):
        sim.trace("dma", "dma_access", initiator="nvme@00:04.0", bdf=0x20, iova=iova, size=8, access="write",
                  paddr=0x5000)
    sim.trace("dma", "dma_access", initiator="nvme@00:04.0", bdf=0x21, iova=0x2800, size=8, access="write",
              paddr=0x5000)  # another endpoint, not attached to domain 1
    with pytest.raises(ScoreboardError):
        safety.check()
    assert safety.violations == [
        "use-after-unmap: DMA write of IOVA 0x2800 (+8) by nvme@00:04.0 at t=3 ns after UNMAP of [0x2000-0x2fff] "
        "in domain 1 completed at t=0 ps; it was NOT blocked (reached guest-physical 0x5000)"
    ]
