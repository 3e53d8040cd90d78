"""The IOVA allocator (Linux 6.7 iova.c) and dma-iommu's use of it, against the reference boots."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.guest._iova import (
    IOMMU_RESV_MSI,
    IOMMU_RESV_SW_MSI,
    IOVA_MAG_SIZE,
    DmaDevice,
    DmaDomainError,
    DmaIovaCookie,
    IovaAllocation,
    IovaDomain,
    ResvRegion,
    dma_bit_mask,
)

PAGE = 4096
MASK64 = dma_bit_mask(64)
#: q35 with 64 GiB: 32-bit PCI windows around MMCONFIG and a 64-bit window (bus addresses, inclusive)
Q35_WINDOWS = [(0x8000_0000, 0xAFFF_FFFF), (0xC000_0000, 0xFEBF_FFFF), (0x10_8000_0000, 0x18_7FFF_FFFF)]
#: what every QEMU x86 PROBE reply reserves
MSI_REGION = ResvRegion(0xFEE0_0000, 0x10_0000, IOMMU_RESV_MSI)


def q35_domain(ncpus: int = 4, pgsize_bitmap: int = 0x40201000) -> DmaIovaCookie:
    cookie = DmaIovaCookie(ncpus)
    assert cookie.init_domain(pgsize_bitmap=pgsize_bitmap, host_bridge_windows=Q35_WINDOWS, resv_regions=[MSI_REGION])
    return cookie


class Driver:
    """Maps and unmaps like dma-iommu in strict mode, recording M<pfn>[+pages] / U<pfn> as the reference does."""

    def __init__(self, cookie: DmaIovaCookie) -> None:
        self.cookie = cookie
        self.dev = DmaDevice()
        self.log: list[str] = []

    def map(self, pages: int, cpu: int, tag: str = "") -> int:
        alloc = self.cookie.alloc_iova(self.dev, pages * PAGE, MASK64, cpu)
        assert alloc.notice is None
        self.log.append(f"M{alloc.iova >> 12:x}" + (f"+{pages:x}" if pages > 1 else "") + tag)
        return alloc.iova

    def unmap(self, iova: int, pages: int, cpu: int) -> None:
        self.cookie.free_iova_fast(iova, pages * PAGE, cpu)
        self.log.append(f"U{iova >> 12:x}")


def test_iova_domain_init_reserves_pci_windows_and_msi_region():
    """iommu_dma_init_domain: granule from the smallest page size, base pfn 1, windows and MSI reserved."""
    cookie = q35_domain()
    iovad = cookie.iovad
    assert (iovad.granule, iovad.start_pfn, iovad.dma_32bit_pfn) == (4096, 1, 0x100000)
    assert iovad.state().ranges == (
        (0x80000, 0xAFFFF), (0xC0000, 0xFEBFF), (0xFEE00, 0xFEEFF), (0x1080000, 0x187FFFF),
    )
    sw_msi = DmaIovaCookie(1)
    sw_msi.init_domain(pgsize_bitmap=0x1000, resv_regions=[ResvRegion(0x800_0000, 0x10_0000, IOMMU_RESV_SW_MSI)])
    assert sw_msi.iovad.state().ranges == ()


def test_iova_nvme_bringup_reproduces_refboot_strict_sequence():
    """The emulated NVMe's MAP/UNMAP pfns of refboot strict-smp4, incl. the seed's 0xFFF7A000 (6th fresh page)."""
    drv = Driver(q35_domain())
    submit, admin_irq, scan = 0, 2, 1
    drv.map(1, submit)  # admin CQ
    drv.map(1, submit)  # admin SQ
    for _ in range(5):  # Identify, Get Log, 2 Set Features, SMART: completed (and unmapped) on the IRQ CPU
        drv.unmap(drv.map(1, submit), 1, admin_irq)
    drv.map(1, submit)  # doorbell-buffer pages
    drv.map(1, submit)
    for _ in range(4):  # nvme_create_io_queues allocates every pair first
        drv.map(4, submit)
        drv.map(16, submit)
    for _ in range(6):  # scan_work identifies on the workqueue CPU, completions on the IRQ CPU
        drv.unmap(drv.map(1, scan), 1, admin_irq)
    for _ in range(3):  # partition reads on an I/O queue of the IRQ CPU: local completion, LIFO reuse
        drv.unmap(drv.map(1, admin_irq), 1, admin_irq)
    assert " ".join(drv.log) == (
        "Mfffff Mffffe Mffffd Uffffd Mffffc Uffffc Mffffb Uffffb Mffffa Uffffa Mffff9 Uffff9 "
        "Mffff8 Mffff7 Mffff0+4 Mfffe0+10 Mfffdc+4 Mfffc0+10 Mfffbc+4 Mfffa0+10 Mfff9c+4 Mfff80+10 "
        "Mfff7f Ufff7f Mfff7e Ufff7e Mfff7d Ufff7d Mfff7c Ufff7c Mfff7b Ufff7b Mfff7a Ufff7a "
        "Mfff7a Ufff7a Mfff7a Ufff7a Mfff7a Ufff7a"
    )


def test_iova_pm173x_queue_layout_matches_reference_prediction():
    """linux-guest.md §4.5: without DBBUF and one Identify page, CQ1 is 0xFFFF8000 and SQ1..4 are 64K-aligned."""
    drv = Driver(q35_domain())
    cq0, sq0 = drv.map(1, 0), drv.map(1, 0)
    ident = drv.map(1, 0)
    drv.unmap(ident, 1, 3)
    queues = [(drv.map(4, 0), drv.map(16, 0)) for _ in range(4)]
    assert (cq0, sq0, ident) == (0xFFFFF000, 0xFFFFE000, 0xFFFFD000)
    assert queues == [
        (0xFFFF8000, 0xFFFE0000), (0xFFFDC000, 0xFFFC0000), (0xFFFBC000, 0xFFFA0000), (0xFFF9C000, 0xFFF80000),
    ]
    assert [drv.map(1, 1) for _ in range(6)][-1] == 0xFFF7A000


def test_iova_ahci_blocks_are_rounded_to_power_of_two_and_naturally_aligned():
    """refboot lazy-smp4 ahci: 23-page buffers take 128K blocks, 5-page sg lists 8-page blocks, when nothing is reused."""
    drv = Driver(q35_domain())
    ports = [drv.map(23, 0) for _ in range(6)]
    singles = [drv.map(1, 1) for _ in range(3)]
    sg_lists = [drv.map(5, 1) for _ in range(5)]
    assert ports == [0xFFFE0000, 0xFFFC0000, 0xFFFA0000, 0xFFF80000, 0xFFF60000, 0xFFF40000]
    assert singles == [0xFFF3F000, 0xFFF3E000, 0xFFF3D000]
    assert sg_lists == [0xFFF30000, 0xFFF28000, 0xFFF20000, 0xFFF18000, 0xFFF10000]
    assert drv.cookie.iovad.find_iova(0xFFFE0) == (0xFFFE0, 0xFFFFF)  # 23 pages hold a 32-page range


def test_iova_sizes_from_32_pages_are_aligned_but_not_rounded():
    """alloc_iova_fast rounds only sizes below 32 pages; alignment is always to the next power of two."""
    iovad = IovaDomain(4096, 1, 1)
    assert iovad.alloc_iova_fast(1, 0xFFFFF, False, 0) == 0xFFFFF
    assert iovad.alloc_iova_fast(3, 0xFFFFF, False, 0) == 0xFFFF8
    assert iovad.alloc_iova_fast(33, 0xFFFFF, False, 0) == 0xFFFC0
    assert iovad.state().ranges == ((0xFFFC0, 0xFFFE0), (0xFFFF8, 0xFFFFB), (0xFFFFF, 0xFFFFF))
    assert iovad.alloc_iova(3, 0xFFFBF, size_aligned=False) == 0xFFFBD  # plain alloc_iova keeps the size


def test_iova_rcache_reuse_is_per_cpu_and_lifo():
    """A freed IOVA returns first to the next allocation of its bucket on the freeing CPU, newest first."""
    iovad = IovaDomain(4096, 1, 2)
    a, b, c = (iovad.alloc_iova_fast(1, 0xFFFFF, False, 0) for _ in range(3))
    for pfn in (a, b, c):
        iovad.free_iova_fast(pfn, 1, 0)
    assert iovad.alloc_iova_fast(1, 0xFFFFF, False, 1) == 0xFFFFC  # CPU 1's magazines are empty
    assert [iovad.alloc_iova_fast(1, 0xFFFFF, False, 0) for _ in range(3)] == [c, b, a]
    assert iovad.alloc_iova_fast(2, 0xFFFFF, False, 0) == 0xFFFFA  # other bucket: fresh, aligned to 2
    iovad.free_iova_fast(0xFFFFA, 2, 0)
    assert iovad.state().rcaches[1].loaded == ((0xFFFFA,), ())


def test_iova_rcache_pop_takes_newest_pfn_under_the_limit_and_fills_its_slot():
    """iova_magazine_pop skips cached pfns above the limit and moves the last entry into the hole."""
    iovad = IovaDomain(4096, 1, 1)
    high1 = iovad.alloc_iova_fast(1, 0xFFFFFFFF, False, 0)
    low = iovad.alloc_iova_fast(1, 0xFFFFF, False, 0)
    high2 = iovad.alloc_iova_fast(1, 0xFFFFFFFF, False, 0)
    assert (high1, low, high2) == (0xFFFFFFFF, 0xFFFFF, 0xFFFFFFFE)
    high3 = iovad.alloc_iova_fast(1, 0xFFFFFFFF, False, 0)
    for pfn in (high1, low, high2, high3):
        iovad.free_iova_fast(pfn, 1, 0)
    assert iovad.state().rcaches[0].loaded == ((0xFFFFFFFF, 0xFFFFF, 0xFFFFFFFE, 0xFFFFFFFD),)
    assert iovad.alloc_iova_fast(1, 0xFFFFF, False, 0) == 0xFFFFF
    assert iovad.state().rcaches[0].loaded == ((0xFFFFFFFF, 0xFFFFFFFD, 0xFFFFFFFE),)


def test_iova_32bit_space_skips_reserved_windows_and_msi_region():
    """Below 4 GiB the free blocks are 0xFEF00000-0xFFFFFFFF and the MMCONFIG hole; 16 MiB fits in each once."""
    cookie, dev = q35_domain(), DmaDevice()
    first = cookie.alloc_iova(dev, 16 << 20, MASK64, 0)
    second = cookie.alloc_iova(dev, 16 << 20, MASK64, 0)
    assert (first, second) == (IovaAllocation(0xFF000000), IovaAllocation(0xBF000000))


def test_iova_32bit_first_falls_back_to_the_full_limit_once_per_device():
    """When 32-bit space is full the device switches to its whole mask for good, with one notice."""
    cookie, dev, other = q35_domain(), DmaDevice(), DmaDevice()
    cookie.iovad.reserve_iova(1, 0xFFFFF)
    assert cookie.alloc_iova(dev, PAGE, MASK64, 0) == IovaAllocation(0xFFFFFFFFFFFFF000, "Using 64-bit DMA addresses")
    assert dev.pci_32bit_workaround is False
    assert cookie.alloc_iova(dev, PAGE, MASK64, 0) == IovaAllocation(0xFFFFFFFFFFFFE000)
    assert cookie.alloc_iova(other, PAGE, dma_bit_mask(48), 0) == IovaAllocation(
        0xFFFFFFFFF000, "Using 48-bit DMA addresses")
    assert cookie.alloc_iova(DmaDevice(), PAGE, dma_bit_mask(32), 0) == IovaAllocation(0)  # 32-bit mask: no fallback


def test_iova_aperture_end_caps_the_dma_limit():
    """With a 39-bit input range (QEMU 9 aw-bits default) the 64-bit fallback tops out below 2^39."""
    cookie, dev = DmaIovaCookie(1), DmaDevice(pci_32bit_workaround=False)
    cookie.init_domain(pgsize_bitmap=0x1000, aperture_end=(1 << 39) - 1)
    assert cookie.alloc_iova(dev, 2 * PAGE, MASK64, 0) == IovaAllocation((1 << 39) - 2 * PAGE)
    dev32 = DmaDevice(bus_dma_limit=dma_bit_mask(32) + (1 << 20))
    assert cookie.alloc_iova(dev32, PAGE, MASK64, 0) == IovaAllocation(0xFFFFF000)


def test_iova_retry_reuses_hole_above_cached_node_only_when_space_below_is_exhausted():
    """Alignment padding above cached32_node is found through the retry window (iova_find_limit)."""
    iovad = IovaDomain(4096, 1, 1)
    assert iovad.alloc_iova(1, 0xFFFFF) == 0xFFFFF
    assert iovad.alloc_iova(16, 0xFFFFF) == 0xFFFE0  # leaves 0xFFFF0-0xFFFFE free above the cached node
    assert iovad.alloc_iova(1, 0xFFFFF) == 0xFFFDF  # normally: straight below
    iovad.reserve_iova(1, 0xFFFDE)
    assert iovad.alloc_iova(1, 0xFFFFF) == 0xFFFFE
    assert iovad.alloc_iova(8, 0xFFFFF) == 0xFFFF0
    assert iovad.alloc_iova(8, 0xFFFFF) is None
    assert iovad.state().max32_alloc_size == 8


def test_iova_max32_memo_fails_fast_until_a_32bit_range_is_freed():
    """After a failure, sizes >= max32_alloc_size fail without a walk until a free below 4 GiB resets it."""
    iovad = IovaDomain(4096, 1, 1)
    iovad.reserve_iova(1, 0xFFFEF)
    big = iovad.alloc_iova(16, 0xFFFFF)
    assert big == 0xFFFF0
    assert iovad.alloc_iova(4, 0xFFFFF) is None
    assert iovad.state().max32_alloc_size == 4
    assert iovad.alloc_iova(2, 0xFFFFF) is None  # walked and failed: memo lowers to 2
    assert iovad.state().max32_alloc_size == 2
    assert iovad.free_iova(big)
    assert iovad.state().max32_alloc_size == 0x100000
    assert iovad.alloc_iova(4, 0xFFFFF) == 0xFFFFC


def test_iova_failed_allocation_flushes_all_rcaches_and_retries_once():
    """alloc_iova_fast(flush_rcache=True) returns other CPUs' cached ranges to the tree before giving up."""
    iovad = IovaDomain(4096, 1, 2)
    pfns = [iovad.alloc_iova_fast(1, 4, False, 0) for _ in range(4)]
    assert pfns == [4, 3, 2, 1]
    for pfn in pfns:
        iovad.free_iova_fast(pfn, 1, 1)
    assert iovad.alloc_iova_fast(1, 4, False, 0) is None
    assert iovad.alloc_iova_fast(1, 4, True, 0) == 4
    assert iovad.state().rcaches[0].loaded == ((), ())
    assert iovad.state().ranges == ((4, 4),)


def test_iova_full_magazines_spill_to_the_depot_which_depot_work_trims():
    """Beyond 2x127 cached pfns a CPU pushes full magazines to the depot; the work frees the head past ncpus."""
    iovad = IovaDomain(4096, 1, 1)
    pfns = [iovad.alloc_iova_fast(1, 0xFFFFF, False, 0) for _ in range(3 * IOVA_MAG_SIZE + 1)]
    for pfn in pfns:
        iovad.free_iova_fast(pfn, 1, 0)
    state = iovad.state().rcaches[0]
    assert [len(m) for m in state.depot] == [IOVA_MAG_SIZE, IOVA_MAG_SIZE]
    assert (len(state.loaded[0]), len(state.prev[0])) == (1, IOVA_MAG_SIZE)
    assert iovad.pending_depot_work == (0,)
    assert iovad.depot_work(0) is True  # depot_size 2 > 1 online CPU: free the head magazine
    assert iovad.find_iova(pfns[2 * IOVA_MAG_SIZE]) is None
    assert iovad.find_iova(pfns[2 * IOVA_MAG_SIZE - 1]) is not None
    assert iovad.depot_work(0) is False
    assert iovad.pending_depot_work == ()
    with pytest.raises(ValueError, match="not scheduled"):
        iovad.depot_work(0)
    # allocations drain loaded, then prev (newest first), then take the depot's remaining magazine
    drained = [iovad.alloc_iova_fast(1, 0xFFFFF, False, 0) for _ in range(1 + IOVA_MAG_SIZE)]
    assert drained == [pfns[3 * IOVA_MAG_SIZE]] + pfns[IOVA_MAG_SIZE - 1::-1]
    assert iovad.alloc_iova_fast(1, 0xFFFFF, False, 0) == pfns[2 * IOVA_MAG_SIZE - 1]
    assert iovad.state().rcaches[0].depot == ()


def test_iova_reserve_merges_overlaps_like_upstream():
    """reserve_iova grows the first overlapped range down and inserts only what is left above."""
    iovad = IovaDomain(4096, 1, 1)
    assert iovad.reserve_iova(0x100, 0x1FF) == (0x100, 0x1FF)
    assert iovad.reserve_iova(0x180, 0x1A0) == (0x100, 0x1FF)
    assert iovad.reserve_iova(0x80, 0x2FF) == (0x200, 0x2FF)
    assert iovad.state().ranges == ((0x80, 0x1FF), (0x200, 0x2FF))
    assert iovad.reserve_iova(1, 1 << 60) is None  # beyond the address width


def test_dma_domain_second_init_keeps_state_and_rejects_other_geometry():
    """A second device of the group re-runs init without re-reserving; a different granule is refused."""
    cookie = q35_domain()
    cookie.alloc_iova(DmaDevice(), PAGE, MASK64, 0)
    assert cookie.init_domain(pgsize_bitmap=0x40201000) is False
    assert cookie.iovad.find_iova(0xFFFFF) == (0xFFFFF, 0xFFFFF)
    with pytest.raises(DmaDomainError, match="Incompatible range for DMA domain"):
        cookie.init_domain(pgsize_bitmap=0x2000)


def test_iova_bad_requests_get_clear_errors():
    """Zero sizes, unaligned sizes, foreign CPUs, double frees and unusable granules raise ValueError."""
    cookie = q35_domain(ncpus=2)
    iovad = cookie.iovad
    with pytest.raises(ValueError, match="size"):
        iovad.alloc_iova_fast(0, 0xFFFFF, False, 0)
    with pytest.raises(ValueError, match="cpu"):
        iovad.alloc_iova_fast(1, 0xFFFFF, False, 2)
    with pytest.raises(ValueError, match="multiple of the granule"):
        cookie.alloc_iova(DmaDevice(), 100, MASK64, 0)
    pfn = iovad.alloc_iova_fast(1, 0xFFFFF, False, 0)
    with pytest.raises(ValueError, match="no IOVA range starts"):
        iovad.free_iova_fast(pfn - 1, 1, 0)
    assert iovad.free_iova(0x1234) is False
    with pytest.raises(ValueError, match="granule"):
        IovaDomain(8192, 1, 1)
    with pytest.raises(RuntimeError, match="before iommu_dma_init_domain"):
        DmaIovaCookie(1).alloc_iova(DmaDevice(), PAGE, MASK64, 0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 1), st.booleans()), max_size=60))
def test_iova_allocations_stay_disjoint_aligned_and_below_the_limit(ops):
    """Any alloc/free mix keeps ranges disjoint, naturally aligned, below 4 GiB and above start_pfn."""
    iovad = IovaDomain(4096, 1, 2)
    live: list[tuple[int, int]] = []
    for pages, cpu, free in ops:
        if free and live:
            pfn, n = live.pop(0)
            iovad.free_iova_fast(pfn, n, cpu)
            continue
        pfn = iovad.alloc_iova_fast(pages, 0xFFFFF, False, cpu)
        assert pfn is not None
        rounded = 1 << (pages - 1).bit_length()
        assert pfn % rounded == 0 and 1 <= pfn and pfn + pages - 1 <= 0xFFFFF
        assert all(pfn + pages - 1 < p or p + n - 1 < pfn for p, n in live)
        live.append((pfn, pages))
    ranges = iovad.state().ranges
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:]))
