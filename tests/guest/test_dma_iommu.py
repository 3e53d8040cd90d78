"""dma-iommu over the real machine: IOVA policy, strict vs lazy unmaps, coherent and sg mappings, device DMA."""

import pytest

from models._dma import DmaFault
from models.guest._dma_iommu import (
    DMA_BIDIRECTIONAL,
    DMA_FROM_DEVICE,
    DMA_TO_DEVICE,
    DirectDma,
    DmaApi,
    DmaMappingError,
)
from models.guest._flush_queue import FlushQueue
from sim import ms, us
from staging import StagedGuest

NVME = 0x20
PAGE = 0x1000


def requests(g: StagedGuest, since: int = 0) -> list[tuple[str, int]]:
    """The device's kicks ("kick") and MAP/UNMAP requests (by IOVA) since ``since``."""
    names = {"virtio_iommu_handle_command": "kick", "virtio_iommu_map": "MAP", "virtio_iommu_unmap": "UNMAP"}
    return [(names[r.event], r.fields.get("virt_start", 0)) for r in g.sink.records
            if r.source == "virtio-iommu" and r.event in names and r.time >= since]


def device_times(g: StagedGuest, event: str) -> list[int]:
    return [r.time for r in g.sink.records if r.source == "virtio-iommu" and r.event == event]


def test_strict_map_unmap_round_trip_kicks_each_request(staged_guest) -> None:
    """iommu.strict=1: MAP (flags 2 for DMA_FROM_DEVICE) and UNMAP each reach QEMU in their own kick."""
    g = staged_guest("nvme-dma", iommu_policy="strict")
    t0 = g.sim.now
    buf = g.page()
    iova = g.run(g.nvme.dma.map_page(0, buf + 0x10, 0x100, DMA_FROM_DEVICE))
    assert iova == 0xFFFF_F010
    g.run(g.nvme.dma.unmap_page(0, iova, 0x100, DMA_FROM_DEVICE))
    assert requests(g, t0) == [("kick", 0), ("MAP", 0xFFFF_F000), ("kick", 0), ("UNMAP", 0xFFFF_F000)]
    assert [r.fields["flags"] for r in g.sink.records if r.event == "virtio_iommu_map"] == [2]


def test_67_lazy_policy_still_unmaps_strictly_and_reuses_the_iova_on_the_same_cpu(staged_guest) -> None:
    """6.7 + "lazy mode": the UNMAP completed before unmap_page returned; the IOVA is at once
    reusable by the same CPU (rcache), while another CPU takes a fresh one."""
    g = staged_guest("nvme-dma")
    assert g.core.domain_of(g.nvme).type == "DMA"  # type: ignore[union-attr]
    buf = g.page()
    iova = g.run(g.nvme.dma.map_page(0, buf, PAGE, DMA_TO_DEVICE))
    g.run(g.nvme.dma.unmap_page(0, iova, PAGE, DMA_TO_DEVICE))
    returned = g.sim.now
    assert device_times(g, "virtio_iommu_unmap")[-1] < returned
    assert g.machine.viommu.mappings(g.core.domain_of(g.nvme).id) == []  # type: ignore[union-attr]
    assert g.run(g.nvme.dma.map_page(0, buf, PAGE, DMA_TO_DEVICE)) == iova == 0xFFFF_F000
    assert g.run(g.nvme.dma.map_page(1, buf, PAGE, DMA_TO_DEVICE)) == 0xFFFF_E000


def test_612_lazy_unmap_is_queued_and_reaches_qemu_with_the_next_maps_kick(staged_guest) -> None:
    """6.12 DMA-FQ: UNMAP added without a kick; the next MAP's iotlb_sync_map kick delivers both; the
    freed IOVA is not reused before a flush."""
    g = staged_guest("nvme-dma", guest_kernel="6.12")
    assert g.core.domain_of(g.nvme).type == "DMA-FQ"  # type: ignore[union-attr]
    buf = g.page()
    t0 = g.sim.now
    first = g.run(g.nvme.dma.map_page(0, buf, PAGE, DMA_FROM_DEVICE))
    g.run(g.nvme.dma.unmap_page(0, first, PAGE, DMA_FROM_DEVICE))
    assert requests(g, t0) == [("kick", 0), ("MAP", 0xFFFF_F000)]
    assert g.machine.viommu.mappings(g.core.domain_of(g.nvme).id) != []  # type: ignore[union-attr]
    second = g.run(g.nvme.dma.map_page(0, buf, PAGE, DMA_FROM_DEVICE))
    assert second == 0xFFFF_E000
    assert requests(g, t0) == [("kick", 0), ("MAP", 0xFFFF_F000), ("kick", 0), ("UNMAP", 0xFFFF_F000),
                              ("MAP", 0xFFFF_E000)]


def test_612_flush_queue_timer_flushes_10ms_after_the_first_queued_unmap(staged_guest) -> None:
    """Nothing else kicks: fq_flush_timeout 10 ms later kicks the UNMAP out and frees the IOVA."""
    g = staged_guest("nvme-dma", guest_kernel="6.12")
    buf = g.page()
    iova = g.run(g.nvme.dma.map_page(2, buf, PAGE, DMA_FROM_DEVICE))
    g.run(g.nvme.dma.unmap_page(2, iova, PAGE, DMA_FROM_DEVICE))
    queued = next(r.time for r in g.sink.records if r.event == "queue_iova")
    g.sim.run_sync(until=queued + ms(10) - 1)
    assert device_times(g, "virtio_iommu_unmap") == []
    g.sim.run_sync(until=queued + ms(11))
    timeout = next(r for r in g.sink.records if r.event == "fq_flush_timeout")
    assert (timeout.time - queued, timeout.fields["cpu"]) == (ms(10), 2)
    assert 0 < device_times(g, "virtio_iommu_unmap")[0] - timeout.time < us(10)
    cookie = g.core.domain_of(g.nvme).cookie  # type: ignore[union-attr]
    assert isinstance(cookie.invalidation, FlushQueue)
    assert cookie.invalidation.statistics().timer_flushes == 1
    assert g.run(g.nvme.dma.map_page(2, buf, PAGE, DMA_FROM_DEVICE)) == iova  # released into CPU 2's rcache


def test_612_a_full_flush_queue_flushes_inline(staged_guest) -> None:
    """255 entries fill a CPU's ring; the 256th unmap flushes (kick) and releases them at once."""
    g = staged_guest("nvme-dma", guest_kernel="6.12")
    buf = g.page()

    async def churn() -> None:
        for _ in range(256):
            iova = await g.nvme.dma.map_page(0, buf, PAGE, DMA_FROM_DEVICE)
            await g.nvme.dma.unmap_page(0, iova, PAGE, DMA_FROM_DEVICE)

    g.run(churn())
    fq = g.core.domain_of(g.nvme).cookie.invalidation  # type: ignore[union-attr]
    stats = fq.statistics()
    assert (stats.full_flushes, stats.timer_flushes, stats.released, len(fq.entries(0))) == (1, 0, 255, 1)
    assert g.run(g.nvme.dma.map_page(0, buf, PAGE, DMA_FROM_DEVICE)) == 0xFFF0_1000  # the last one released


def test_nvme_like_sequence_gives_the_iovas_of_linux_guest_4_5(staged_guest) -> None:
    """CQ0/SQ0, Identify map/unmap, four 4-page CQs and 16-page SQs, then fresh single pages from a
    CPU with an empty rcache: the 6th is the seed's 0xFFF7A000 (flags 2)."""
    g = staged_guest("nvme-dma")

    async def bring_up() -> list[int]:
        iovas = [(await g.nvme.dma.alloc_coherent(0, 32 * 16))[0], (await g.nvme.dma.alloc_coherent(0, 32 * 64))[0]]
        ident = g.page()
        iovas.append(await g.nvme.dma.map_page(0, ident, PAGE, DMA_FROM_DEVICE))
        await g.nvme.dma.unmap_page(0, iovas[-1], PAGE, DMA_FROM_DEVICE)
        for _ in range(4):
            iovas.append((await g.nvme.dma.alloc_coherent(0, 1024 * 16))[0])
            iovas.append((await g.nvme.dma.alloc_coherent(0, 1024 * 64))[0])
        for _ in range(6):
            iovas.append(await g.nvme.dma.map_page(1, g.page(), PAGE, DMA_FROM_DEVICE))
        return iovas

    assert [hex(i) for i in g.run(bring_up())] == [
        "0xfffff000", "0xffffe000", "0xffffd000",
        "0xffff8000", "0xfffe0000", "0xfffdc000", "0xfffc0000", "0xfffbc000", "0xfffa0000", "0xfff9c000",
        "0xfff80000", "0xfff7f000", "0xfff7e000", "0xfff7d000", "0xfff7c000", "0xfff7b000", "0xfff7a000",
    ]
    maps = [(r.fields["virt_start"], r.fields["virt_end"] - r.fields["virt_start"] + 1, r.fields["flags"])
            for r in g.sink.records if r.event == "virtio_iommu_map"]
    assert maps[:5] == [(0xFFFF_F000, PAGE, 3), (0xFFFF_E000, PAGE, 3), (0xFFFF_D000, PAGE, 2),
                        (0xFFFF_8000, 4 * PAGE, 3), (0xFFFE_0000, 16 * PAGE, 3)]
    assert maps[-1] == (0xFFF7_A000, PAGE, 2)


@pytest.mark.parametrize(("kernel_version", "kicks"), [("6.7", 3), ("6.12", 1)])
def test_coherent_buffer_of_order0_pages_maps_each_contiguous_run(staged_guest, kernel_version: str,
                                                                 kicks: int) -> None:
    """Mask 4K|2M|1G: a 4-page buffer is order-0 pages (two recycled, two fresh): three runs, three MAPs
    at ascending IOVAs; 6.7 kicks per MAP, 6.12 once per iommu_map_sg."""
    g = staged_guest("nvme-dma", guest_kernel=kernel_version)
    a, b = g.page(), g.page() + PAGE * 2
    g.kernel.mm.free_pages(a, 0)
    g.kernel.mm.free_pages(b, 0)
    t0 = g.sim.now
    iova, pages = g.run(g.nvme.dma.alloc_coherent(3, 4 * PAGE))
    fresh = pages[2]
    assert (iova, pages) == (0xFFFF_C000, [b, a, fresh, fresh + PAGE])
    maps = [(r.fields["virt_start"], r.fields["virt_end"], r.fields["phys_start"]) for r in g.sink.records
            if r.event == "virtio_iommu_map" and r.time >= t0]
    assert maps == [(0xFFFF_C000, 0xFFFF_CFFF, b), (0xFFFF_D000, 0xFFFF_DFFF, a), (0xFFFF_E000, 0xFFFF_FFFF, fresh)]
    assert len(requests(g, t0)) - len(maps) == kicks
    assert all(g.machine.memory.read(p, PAGE) == bytes(PAGE) for p in pages)


def test_coherent_orders_follow_the_remaining_count_when_every_size_is_allowed(staged_guest) -> None:
    """Mask 0xfffffffffffff000 (emulated NVMe): 23 pages are blocks of 16+4+2+1 pages (the last one a
    recycled page), mapped as 64K+16K+8K+4K at ascending IOVAs (refboot §5.3's AHCI buffers)."""
    g = staged_guest("nvme-dma", nvme="emulated")
    recycled = g.page()
    g.kernel.mm.free_pages(recycled, 0)
    t0 = g.sim.now
    iova, pages = g.run(g.nvme.dma.alloc_coherent(0, 91392))
    assert iova == 0xFFFE_0000 and len(pages) == 23 and pages[22] == recycled
    assert pages[0] % (16 * PAGE) == 0 and pages[16] % (4 * PAGE) == 0 and pages[20] % (2 * PAGE) == 0
    maps = [(r.fields["virt_start"], r.fields["virt_end"] + 1 - r.fields["virt_start"]) for r in g.sink.records
            if r.event == "virtio_iommu_map" and r.time >= t0]
    assert maps == [(0xFFFE_0000, 16 * PAGE), (0xFFFF_0000, 4 * PAGE), (0xFFFF_4000, 2 * PAGE), (0xFFFF_6000, PAGE)]
    g.run(g.nvme.dma.free_coherent(0, 91392, iova, pages))
    assert requests(g, t0)[-5:] == [("kick", 0), ("UNMAP", 0xFFFE_0000), ("UNMAP", 0xFFFF_0000),
                                   ("UNMAP", 0xFFFF_4000), ("UNMAP", 0xFFFF_6000)]


def test_map_sg_takes_one_iova_block_and_unmap_sg_one_unmap(staged_guest) -> None:
    """Two segments (one at page offset 0x200): one 8-page-aligned block, a MAP per physical run."""
    g = staged_guest("nvme-dma")
    p1, p2 = g.page(), g.kernel.mm.alloc_pages(2)
    t0 = g.sim.now
    segments = [(p1 + 0x200, 0x1000), (p2, 0x3000)]
    addrs = g.run(g.nvme.dma.map_sg(0, segments, DMA_FROM_DEVICE))
    assert addrs == [0xFFFF_8200, 0xFFFF_A000]
    g.run(g.nvme.dma.unmap_sg(0, addrs, segments, DMA_FROM_DEVICE))
    assert requests(g, t0) == [("kick", 0), ("MAP", 0xFFFF_8000), ("kick", 0), ("MAP", 0xFFFF_A000),
                              ("kick", 0), ("UNMAP", 0xFFFF_8000)]
    assert [r.fields["virt_end"] for r in g.sink.records if r.event == "virtio_iommu_unmap"] == [0xFFFF_CFFF]


@pytest.mark.parametrize("nvme", ["emulated", "vfio"])
def test_device_dma_hits_the_mapping_and_faults_after_a_strict_unmap(staged_guest, nvme: str) -> None:
    """The NVMe's DMA port translates at access time: the write lands while mapped and faults once
    unmap_page returned; behind QEMU the vIOMMU reports it and the guest logs the page fault."""
    g = staged_guest("nvme-dma", nvme=nvme, iommu_policy="strict")
    bus = g.machine.bus
    bus.config_write_sync(NVME, 4, 2, bus.config_read_sync(NVME, 4, 2) | 4)  # pci_set_master
    buf = g.page()
    iova = g.run(g.nvme.dma.map_page(1, buf, PAGE, DMA_FROM_DEVICE))
    g.machine.nvme_dma.dma_write(iova + 8, b"identify")
    assert g.machine.memory.read(buf + 8, 8) == b"identify"
    g.run(g.nvme.dma.unmap_page(1, iova, PAGE, DMA_FROM_DEVICE))
    with pytest.raises(DmaFault):
        g.machine.nvme_dma.dma_write(iova + 8, b"too late")
    g.sim.run_sync(until=g.sim.now + us(50))
    faults = [line[15:] for line in g.kernel.printk.grep("fault from")]
    assert faults == (["virtio_iommu virtio0: page fault from EP 32 at 0xfffff008 []"] if nvme == "emulated" else [])


def test_32bit_space_exhaustion_falls_back_for_good_with_a_notice(staged_guest) -> None:
    """A 2 GiB mapping fits nowhere below 4 GiB: "Using 39-bit DMA addresses", top of the 39-bit
    aperture; the device's later mappings skip the 32-bit attempt."""
    g = staged_guest("nvme-dma", nvme="emulated", aw_bits=39)
    big = g.run(g.nvme.dma.map_page(0, 0x1_0000_0000, 1 << 31, DMA_TO_DEVICE))
    assert big == (1 << 39) - (1 << 31)
    assert [line[15:] for line in g.kernel.printk.grep("DMA addresses")] == [
        "nvme 0000:00:04.0: Using 39-bit DMA addresses"]
    assert g.run(g.nvme.dma.map_page(0, g.page(), PAGE, DMA_TO_DEVICE)) == big - PAGE


def test_direct_dma_without_a_viommu_uses_physical_addresses(staged_guest) -> None:
    """viommu=none: dma-direct; coherent buffers are one contiguous zeroed block; masks are enforced."""
    g = staged_guest("nvme-dma", viommu="none")
    assert isinstance(g.nvme.dma, DirectDma)
    buf = g.page()
    assert g.run(g.nvme.dma.map_page(0, buf + 4, 16, DMA_BIDIRECTIONAL)) == buf + 4
    iova, pages = g.run(g.nvme.dma.alloc_coherent(0, 3 * PAGE))
    assert pages == [iova, iova + PAGE, iova + 2 * PAGE] and iova % (4 * PAGE) == 0
    g.run(g.nvme.dma.free_coherent(0, 3 * PAGE, iova, pages))
    g.nvme.set_dma_mask(32)
    with pytest.raises(DmaMappingError, match="32-bit DMA mask"):
        g.run(g.nvme.dma.map_page(0, buf, PAGE, DMA_TO_DEVICE))
    assert buf >= 1 << 32


def test_bad_arguments_get_clear_errors(staged_guest) -> None:
    """An invalid direction, a zero size, a CPU that does not exist, or an unmap of nothing mapped."""
    g = staged_guest("nvme-dma")
    assert isinstance(g.nvme.dma, DmaApi)
    with pytest.raises(ValueError, match="DMA direction"):
        g.run(g.nvme.dma.map_page(0, g.page(), PAGE, 3))
    with pytest.raises(ValueError, match="positive number of bytes"):
        g.run(g.nvme.dma.alloc_coherent(0, 0))
    with pytest.raises(ValueError, match="cpu must be 0..3"):
        g.run(g.nvme.dma.map_page(4, g.page(), PAGE, DMA_TO_DEVICE))
    with pytest.raises(ValueError, match="not mapped"):
        g.run(g.nvme.dma.unmap_page(0, 0xFFFF_F000, PAGE, DMA_TO_DEVICE))
    assert g.kernel.printk.grep("WARNING: CPU: 0")
