"""The guest's DMA API over the IOMMU: Linux drivers/iommu/dma-iommu.c (+ kernel/dma/mapping.c).

``DmaApi`` is a device's ``iommu_dma_ops``:

* ``map_page`` (``iommu_dma_map_page`` -> ``__iommu_dma_map``): an IOVA of
  ``iova_align(len + offset)`` (``iommu_dma_alloc_iova``: 32-bit space first, the
  "Using N-bit DMA addresses" notice when it falls back), then ``iommu_map``
  (``iommu_pgsize`` chunks, one MAP each).  Directions become IOMMU_READ/WRITE
  (``dma_info_to_prot``; x86 PCI devices are coherent, so IOMMU_CACHE too), i.e.
  MAP flags 1 (to device), 2 (from device), 3 (bidirectional).
* ``map_sg``: one IOVA for the whole list (segments padded only across the
  4 GiB segment boundary), ``iommu_map_sg``: one MAP per physically contiguous run.
* ``alloc_coherent`` (``iommu_dma_alloc`` -> ``iommu_dma_alloc_remap`` ->
  ``__iommu_dma_alloc_noncontiguous``): zeroed pages from ``__iommu_dma_alloc_pages``
  (orders allowed by the domain's ``pgsize_bitmap`` -- read through an ``unsigned
  int`` -- limited to MAX_ORDER 10 and, as the allocation proceeds, to the remaining
  count), then the IOVA (coherent mask), then ``iommu_map_sg`` of the pages.
* unmaps (``__iommu_dma_unmap``): ``iommu_unmap_fast`` (UNMAP queued), then for a
  strict domain ``iommu_iotlb_sync`` and ``free_iova_fast`` on the unmapping CPU;
  for a DMA-FQ domain ``queue_iova`` into the CPU's flush queue (the ring locked
  across an inline flush when it is full), the 10 ms ``fq_timer`` a sim task
  (``fq_flush_timeout``: ``flush_iotlb_all`` then release every ring), firing exactly
  ``IOVA_DEFAULT_FQ_TIMEOUT`` after it was armed (no jiffy rounding).

``DmaCookie`` is the domain's ``iommu_dma_cookie``: the IOVA allocator
(``_iova.DmaIovaCookie``), the unmap policy (``_flush_queue``) and the timer
tasks; ``iommu_setup_dma_ops`` is ``iommu_dma_init_domain`` + ``dev->dma_ops``.
``DirectDma`` is dma-direct for devices without an IOMMU (IOVA = physical).

Not modelled: swiotlb bouncing (untrusted devices, masks below the page
allocator's zone), DMA_ATTR_*, the non-blocking coherent pool, ``dma_map_resource``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from sim import Histogram, Lock, ms, sleep

from .._memory import PAGE_SIZE
from ._device import GuestDevice
from ._flush_queue import (
    Action,
    ArmTimer,
    FlushIotlbAll,
    FlushQueue,
    FreeIova,
    IotlbSync,
    dma_domain_policy,
    make_invalidation,
)
from ._iommu_core import IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE, IommuDomain
from ._iova import IOVA_DEPOT_DELAY_MS, DmaDevice, DmaDomainError, DmaIovaCookie, ResvRegion, dma_bit_mask
from ._mm import OutOfMemory
from ._policy_api import InvalidationPolicy
from ._printk import LOGLEVEL_WARNING

if TYPE_CHECKING:
    from ._kernel import GuestKernel

#: enum dma_data_direction (include/linux/dma-direction.h)
DMA_BIDIRECTIONAL = 0
DMA_TO_DEVICE = 1
DMA_FROM_DEVICE = 2
DMA_NONE = 3
#: MAX_ORDER (6.7) / MAX_PAGE_ORDER (6.8+) on x86: the largest buddy order
MAX_ORDER = 10
#: the PCI default DMA segment boundary (pci_device_add: dma_set_seg_boundary(dev, 0xffffffff))
PCI_SEG_BOUNDARY = 0xFFFF_FFFF
TRACE_SOURCE = "guest/dma-iommu"


class DmaMappingError(Exception):
    """A mapping returned DMA_MAPPING_ERROR (or a coherent allocation returned NULL)."""


def dma_info_to_prot(direction: int) -> int:
    """``dma_info_to_prot`` for a coherent device without attributes."""
    if direction == DMA_BIDIRECTIONAL:
        return IOMMU_CACHE | IOMMU_READ | IOMMU_WRITE
    if direction == DMA_TO_DEVICE:
        return IOMMU_CACHE | IOMMU_READ
    if direction == DMA_FROM_DEVICE:
        return IOMMU_CACHE | IOMMU_WRITE
    raise ValueError(f"DMA direction must be DMA_BIDIRECTIONAL (0), DMA_TO_DEVICE (1) or DMA_FROM_DEVICE (2), "
                     f"not {direction!r}")


def _check_size(what: str, size: object) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"{what}: size must be a positive number of bytes, not {size!r}")
    return size


def _check_cpu(kernel: GuestKernel, cpu: object) -> int:
    if not isinstance(cpu, int) or isinstance(cpu, bool) or not 0 <= cpu < kernel.ncpus:
        raise ValueError(f"cpu must be 0..{kernel.ncpus - 1}, not {cpu!r}")
    return cpu


@attrs.frozen(kw_only=True)
class IovaReleaseStats:
    """How long unmapped IOVAs waited for their invalidation (``DmaCookie.release_statistics()``).

    Per IOVA range: from its unmap (``__iommu_dma_unmap`` handing it to the policy) to the moment
    the policy frees it back to the allocator, i.e. once the IOTLB invalidation that covers it
    has completed -- the window in which the guest treats the IOTLB as possibly stale.  Strict:
    one sync; a flush queue: until the ring is flushed (its 10 ms / 1 s timer, or a full ring).
    """

    #: IOVA ranges released after their invalidation
    released: int
    #: the sum and the largest of their windows (the max since ``reset_release_max``)
    total_ps: int
    max_ps: int
    #: the windows' median and 99th percentile since ``reset_release_max`` (log-linear: within 0.2 %)
    p50_ps: int = 0
    p99_ps: int = 0


class DmaCookie:
    """``struct iommu_dma_cookie`` of one DMA domain: IOVA allocator, unmap policy, timers."""

    def __init__(self, kernel: GuestKernel, domain: IommuDomain) -> None:
        self.kernel = kernel
        self.domain = domain
        self._trace = kernel.sim.tracer(TRACE_SOURCE)
        self.iova = DmaIovaCookie(kernel.ncpus)
        self.invalidation: InvalidationPolicy | None = None
        #: fault injection (a deliberately broken guest, for the testbench): free each unmapped IOVA as soon
        #: as its UNMAP is queued, so it can be reused before the UNMAP completes; lazy domains then skip the
        #: flush queue and the UNMAP waits in the request queue for the next kick
        self.reuse_before_unmap_completes = False
        self._ring_locks: list[Lock] = []
        self._depot_scheduled: set[int] = set()
        # release windows: pfn -> when it was unmapped, and the counters of IovaReleaseStats
        self._unmapped_at: dict[int, int] = {}
        self._released = 0
        self._release_total_ps = 0
        self._release_max_ps = 0
        self._release_hist = Histogram()  # in ns

    def release_statistics(self) -> IovaReleaseStats:
        hist = self._release_hist
        return IovaReleaseStats(released=self._released, total_ps=self._release_total_ps,
                                max_ps=self._release_max_ps, p50_ps=round(hist.percentile(50) * 1000),
                                p99_ps=round(hist.percentile(99) * 1000))

    def reset_release_max(self) -> None:
        """Start a new maximum and distribution (a measurement window begins)."""
        self._release_max_ps = 0
        self._release_hist.reset()

    def init(self, resv_regions: list[ResvRegion], host_bridge_windows: list[tuple[int, int]]) -> bool:
        """``iommu_dma_init_domain(domain, 0, U64_MAX, dev)``; True when this call set the domain up."""
        domain = self.domain
        start, end = domain.aperture
        if not self.iova.init_domain(pgsize_bitmap=domain.pgsize_bitmap, aperture_start=start, aperture_end=end,
                                     force_aperture=True, host_bridge_windows=host_bridge_windows,
                                     resv_regions=resv_regions):
            return False
        config = self.kernel.config
        policy = dma_domain_policy(config.guest_kernel, config.iommu_policy, flush_queue=config.flush_queue)
        domain.type = policy.type
        self.invalidation = make_invalidation(policy, self.kernel.ncpus, config.guest_kernel)
        rings = 1 if policy.fq_options is not None and policy.fq_options.single_queue else self.kernel.ncpus
        self._ring_locks = [Lock(f"iova_fq{i}.lock") for i in range(rings)]
        self._trace("iommu_dma_init_domain", domain=domain.id, type=policy.type, reason=policy.reason)
        return True

    # -- IOVA allocation and freeing --------------------------------------------------------
    async def alloc_iova(self, cpu: int, dev: GuestDevice, dma_dev: DmaDevice, size: int, dma_limit: int) -> int:
        """``iommu_dma_alloc_iova``: the IOVA, or 0."""
        kernel = self.kernel
        await sleep(kernel.cost.iova_alloc_ps)
        alloc = self.iova.alloc_iova(dma_dev, size, dma_limit, cpu)
        if alloc.notice is not None:
            kernel.printk.dev_notice(kernel.sim.now, dev.prefix_driver, dev.name, alloc.notice)
        if kernel.sim.tracing:
            self._trace("iommu_dma_alloc_iova", cpu=cpu, bdf=dev.bdf, domain=self.domain.id, size=size,
                        dma_limit=dma_limit, iova=alloc.iova)
        return alloc.iova

    def free_iova_fast(self, cpu: int, pfn: int, pages: int) -> None:
        """``free_iova_fast`` on ``cpu`` (and the depot work it may schedule)."""
        iovad = self.iova.iovad
        iovad.free_iova_fast(pfn, pages, cpu)
        if self.kernel.sim.tracing:
            self._trace("free_iova_fast", cpu=cpu, domain=self.domain.id, iova=pfn << iovad.shift, pages=pages)
        for bucket in iovad.pending_depot_work:
            if bucket not in self._depot_scheduled:
                self._schedule_depot_work(bucket)

    def _schedule_depot_work(self, bucket: int) -> None:
        """``schedule_delayed_work(IOVA_DEPOT_DELAY)`` of ``iova_depot_work_func`` (no sleeping: a callback)."""
        self._depot_scheduled.add(bucket)
        sim = self.kernel.sim

        def work() -> None:
            self._depot_scheduled.discard(bucket)
            if self.iova.iovad.depot_work(bucket):
                self._schedule_depot_work(bucket)

        sim.call_at(sim.now + ms(IOVA_DEPOT_DELAY_MS), work)

    # -- unmap ordering ---------------------------------------------------------------------
    async def _perform(self, cpu: int, actions: list[Action], free: bool = True) -> None:
        """Carry out the policy's actions in order; an invalidation returns the rest of them."""
        core = self.kernel.iommu
        inv = self.invalidation
        assert inv is not None
        while actions:
            action = actions.pop(0)
            if isinstance(action, FreeIova):
                if free:
                    since = self._unmapped_at.pop(action.pfn, None)
                    if since is not None:
                        window = self.kernel.sim.now - since
                        self._released += 1
                        self._release_total_ps += window
                        if window > self._release_max_ps:
                            self._release_max_ps = window
                        self._release_hist.add(window // 1000)
                    self.free_iova_fast(action.cpu, action.pfn, action.pages)
            elif isinstance(action, IotlbSync):
                await core.iotlb_sync(cpu, self.domain)
                actions = inv.flush_done(action.token, self.kernel.sim.now) + actions
            elif isinstance(action, FlushIotlbAll):
                self._trace("fq_flush_iotlb", cpu=cpu, domain=self.domain.id)
                await core.flush_iotlb_all(cpu, self.domain)
                actions = inv.flush_done(action.token, self.kernel.sim.now) + actions
            elif isinstance(action, ArmTimer):  # mod_timer(fq_timer): the handler runs as a task then
                self._arm_timer(action.deadline_ps, action.cpu)

    def _arm_timer(self, deadline_ps: int, cpu: int) -> None:
        sim = self.kernel.sim

        def expire() -> None:
            sim.spawn(self._fq_timeout(cpu), name="fq_flush_timeout")

        sim.call_at(deadline_ps, expire)

    async def sync_and_free(self, cpu: int, iova: int, size: int) -> None:
        """The end of ``__iommu_dma_unmap``: strict, ``iommu_iotlb_sync`` then ``free_iova_fast``;
        DMA-FQ, ``queue_iova`` (``iommu_dma_free_iova`` with a queued gather)."""
        inv = self.invalidation
        assert inv is not None
        shift = self.iova.iovad.shift
        pfn, pages = iova >> shift, size >> shift
        if self.reuse_before_unmap_completes:
            self.free_iova_fast(cpu, pfn, pages)
            self._released += 1  # released at once: a window of 0
            if not isinstance(inv, FlushQueue):
                await self._perform(cpu, inv.unmap(cpu, pfn, pages, self.kernel.sim.now), free=False)
            return
        self._unmapped_at[pfn] = self.kernel.sim.now
        if isinstance(inv, FlushQueue):
            ring = 0 if inv.options.single_queue else cpu
            async with self._ring_locks[ring]:  # fq->lock, held across an inline flush of a full ring
                if self.kernel.sim.tracing:
                    self._trace("queue_iova", cpu=cpu, domain=self.domain.id, iova=iova, pages=pages,
                                entries=len(inv.entries(cpu)))
                await self._perform(cpu, inv.queue_iova(cpu, pfn, pages, self.kernel.sim.now))
        else:
            await self._perform(cpu, inv.unmap(cpu, pfn, pages, self.kernel.sim.now))

    async def _fq_timeout(self, cpu: int) -> None:
        """``fq_flush_timeout`` on the CPU that armed ``fq_timer``."""
        inv = self.invalidation
        assert inv is not None
        self._trace("fq_flush_timeout", cpu=cpu, domain=self.domain.id)
        await self._perform(cpu, inv.timer_expired(self.kernel.sim.now))


def iommu_setup_dma_ops(kernel: GuestKernel, dev: GuestDevice, domain: IommuDomain, dma_dev: DmaDevice,
                        resv_regions: list[ResvRegion], host_bridge_windows: list[tuple[int, int]]) -> None:
    """``iommu_setup_dma_ops``: set the domain up for DMA, then ``dev.dma`` is its ``DmaApi``; on an
    incompatible domain, warn and keep direct DMA, as Linux does."""
    if domain.cookie is None:
        domain.cookie = DmaCookie(kernel, domain)  # iommu_get_dma_cookie at default-domain allocation
    try:
        domain.cookie.init(resv_regions, host_bridge_windows)
    except DmaDomainError:
        kernel.printk.log(kernel.sim.now, f"Failed to set up IOMMU for device {dev.name}; retaining platform DMA ops",
                          LOGLEVEL_WARNING)
        dev.dma = DirectDma(kernel, dev)
        return
    dev.dma = DmaApi(kernel, dev, domain, dma_dev)


class DmaApi:
    """``iommu_dma_ops`` for one device of a DMA domain (``dev.dma``)."""

    def __init__(self, kernel: GuestKernel, dev: GuestDevice, domain: IommuDomain, dma_dev: DmaDevice | None = None
                 ) -> None:
        if domain.cookie is None or not domain.cookie.iova.initialised:
            raise RuntimeError(f"DMA API for {dev.name} on a domain iommu_dma_init_domain has not set up")
        self.kernel = kernel
        self.dev = dev
        self.domain = domain
        self._trace = kernel.sim.tracer(TRACE_SOURCE, bdf=dev.bdf)
        self.cookie: DmaCookie = domain.cookie
        self.dma_dev = dma_dev if dma_dev is not None else DmaDevice()

    def __repr__(self) -> str:
        return f"<DmaApi {self.dev.name} domain {self.domain.id}>"

    # -- the common map and unmap -------------------------------------------------------------
    async def _map(self, cpu: int, phys: int, size: int, prot: int, dma_mask: int) -> int:
        """``__iommu_dma_map``: the DMA address (IOVA + offset) or DmaMappingError."""
        cookie = self.cookie
        off = cookie.iova.iova_offset(phys)
        size = cookie.iova.iova_align(size + off)
        iova = await cookie.alloc_iova(cpu, self.dev, self.dma_dev, size, dma_mask)
        if not iova:
            raise DmaMappingError(f"{self.dev.name}: no IOVA space for {size:#x} bytes below {dma_mask:#x}")
        ret = await self.kernel.iommu.map(cpu, self.domain, iova, phys - off, size, prot)
        if ret:
            cookie.free_iova_fast(cpu, iova >> cookie.iova.iovad.shift, size >> cookie.iova.iovad.shift)
            raise DmaMappingError(f"{self.dev.name}: iommu_map of {size:#x} bytes at IOVA {iova:#x} failed ({ret})")
        return iova + off

    async def _unmap(self, cpu: int, dma_addr: int, size: int) -> None:
        """``__iommu_dma_unmap``: unmap, then sync-and-free or queue the IOVA."""
        cookie = self.cookie
        off = cookie.iova.iova_offset(dma_addr)
        dma_addr -= off
        size = cookie.iova.iova_align(size + off)
        unmapped = await self.kernel.iommu.unmap_fast(cpu, self.domain, dma_addr, size)
        if unmapped != size:
            self.kernel.printk.log(self.kernel.sim.now, f"WARNING: CPU: {cpu} at drivers/iommu/dma-iommu.c "
                                   f"__iommu_dma_unmap: unmapped {unmapped:#x} of {size:#x} at {dma_addr:#x}",
                                   LOGLEVEL_WARNING)
            if not unmapped:
                raise ValueError(f"{self.dev.name}: unmap of IOVA {dma_addr:#x} (+{size:#x}), which is not mapped")
        await cookie.sync_and_free(cpu, dma_addr, size)

    # -- streaming mappings -------------------------------------------------------------------
    async def map_page(self, cpu: int, paddr: int, size: int, direction: int) -> int:
        """``dma_map_page``: the DMA address of ``size`` bytes at guest-physical ``paddr``."""
        _check_cpu(self.kernel, cpu)
        _check_size("dma_map_page", size)
        prot = dma_info_to_prot(direction)
        iova = await self._map(cpu, paddr, size, prot, dma_bit_mask(self.dev.dma_mask_bits))
        if self._trace.enabled:
            self._trace("iommu_dma_map_page", cpu=cpu, paddr=paddr, size=size, dir=direction, iova=iova)
        return iova

    async def unmap_page(self, cpu: int, iova: int, size: int, direction: int) -> None:
        """``dma_unmap_page``."""
        _check_cpu(self.kernel, cpu)
        _check_size("dma_unmap_page", size)
        dma_info_to_prot(direction)
        if self._trace.enabled:
            self._trace("iommu_dma_unmap_page", cpu=cpu, iova=iova, size=size, dir=direction)
        await self._unmap(cpu, iova, size)

    async def map_sg(self, cpu: int, segments: list[tuple[int, int]], direction: int) -> list[int]:
        """``dma_map_sg``: one IOVA block for all (paddr, length) segments; their DMA addresses."""
        _check_cpu(self.kernel, cpu)
        if not segments:
            raise ValueError("dma_map_sg: empty scatterlist")
        prot = dma_info_to_prot(direction)
        ioc = self.cookie.iova
        mask = PCI_SEG_BOUNDARY
        entries: list[list[int]] = []  # [phys, padded length, offset]
        iova_len = 0
        for paddr, length in segments:
            _check_size("dma_map_sg segment", length)
            off = ioc.iova_offset(paddr)
            s_len = ioc.iova_align(length + off)
            pad = (mask - iova_len + 1) & mask
            if pad and pad < s_len - 1:  # keep a segment from crossing the boundary
                entries[-1][1] += pad
                iova_len += pad
            entries.append([paddr - off, s_len, off])
            iova_len += s_len
        iova = await self.cookie.alloc_iova(cpu, self.dev, self.dma_dev, iova_len,
                                            dma_bit_mask(self.dev.dma_mask_bits))
        if not iova:
            raise DmaMappingError(f"{self.dev.name}: no IOVA space for a {iova_len:#x}-byte scatterlist")
        mapped = await self.kernel.iommu.map_sg(cpu, self.domain, iova, [(p, n) for p, n, _ in entries], prot)
        if mapped < iova_len:
            self.cookie.free_iova_fast(cpu, iova >> ioc.iovad.shift, iova_len >> ioc.iovad.shift)
            raise DmaMappingError(f"{self.dev.name}: iommu_map_sg at IOVA {iova:#x} failed ({mapped})")
        addrs = []
        pos = iova
        for _, n, off in entries:  # __finalise_sg
            addrs.append(pos + off)
            pos += n
        self._trace("iommu_dma_map_sg", cpu=cpu, nents=len(segments), dir=direction, iova=iova, size=iova_len)
        return addrs

    async def unmap_sg(self, cpu: int, iovas: list[int], segments: list[tuple[int, int]], direction: int) -> None:
        """``dma_unmap_sg``: one unmap from the first segment's address to the end of the last."""
        _check_cpu(self.kernel, cpu)
        dma_info_to_prot(direction)
        if not segments or len(iovas) != len(segments):
            raise ValueError(f"dma_unmap_sg: {len(iovas)} DMA addresses for {len(segments)} segments")
        start, end = iovas[0], iovas[-1] + segments[-1][1]
        self._trace("iommu_dma_unmap_sg", cpu=cpu, iova=start, size=end - start, dir=direction)
        await self._unmap(cpu, start, end - start)

    # -- coherent allocations -------------------------------------------------------------------
    def _alloc_pages(self, count: int, order_mask: int) -> list[int]:
        """``__iommu_dma_alloc_pages``: ``count`` pages, each block the largest allowed order that fits
        the rest; a failed order is dropped for the rest of the allocation.  Raises DmaMappingError."""
        mm = self.kernel.mm
        order_mask &= (1 << (MAX_ORDER + 1)) - 1
        pages: list[int] = []
        while count:
            order_mask &= (1 << count.bit_length()) - 1  # GENMASK(__fls(count), 0)
            block = None
            while order_mask:
                order = order_mask.bit_length() - 1
                try:
                    block = mm.alloc_pages(order)
                    break
                except OutOfMemory:
                    order_mask &= ~(1 << order)
            if block is None:
                for page in pages:
                    mm.free_pages(page, 0)
                raise DmaMappingError(f"{self.dev.name}: no pages for a coherent allocation")
            n = 1 << order
            pages += [block + i * PAGE_SIZE for i in range(n)]  # split_page
            count -= n
        return pages

    async def alloc_coherent(self, cpu: int, size: int) -> tuple[int, list[int]]:
        """``dma_alloc_coherent`` (GFP_KERNEL): (IOVA, the zeroed physical pages in IOVA order)."""
        _check_cpu(self.kernel, cpu)
        _check_size("dma_alloc_coherent", size)
        ioc = self.cookie.iova
        alloc_sizes = self.domain.pgsize_bitmap & 0xFFFF_FFFF  # "unsigned int alloc_sizes"
        min_size = alloc_sizes & -alloc_sizes
        if min_size < PAGE_SIZE:
            alloc_sizes |= PAGE_SIZE
        else:
            size = -(-size // min_size) * min_size
        count = -(-size // PAGE_SIZE)
        pages = self._alloc_pages(count, alloc_sizes >> 12)
        memory = self.kernel.machine.memory
        for page in pages:  # __GFP_ZERO
            memory.fill(page, PAGE_SIZE)
        iova_size = ioc.iova_align(size)
        iova = await self.cookie.alloc_iova(cpu, self.dev, self.dma_dev, iova_size,
                                            dma_bit_mask(self.dev.coherent_dma_mask_bits))
        if not iova:
            for page in pages:
                self.kernel.mm.free_pages(page, 0)
            raise DmaMappingError(f"{self.dev.name}: no IOVA space for a {iova_size:#x}-byte coherent buffer")
        prot = dma_info_to_prot(DMA_BIDIRECTIONAL)
        mapped = await self.kernel.iommu.map_sg(cpu, self.domain, iova, [(p, PAGE_SIZE) for p in pages], prot)
        if mapped < iova_size:
            self.cookie.free_iova_fast(cpu, iova >> ioc.iovad.shift, iova_size >> ioc.iovad.shift)
            for page in pages:
                self.kernel.mm.free_pages(page, 0)
            raise DmaMappingError(f"{self.dev.name}: iommu_map_sg of a coherent buffer failed ({mapped})")
        self._trace("iommu_dma_alloc", cpu=cpu, size=size, iova=iova, pages=len(pages))
        return iova, pages

    async def free_coherent(self, cpu: int, size: int, iova: int, pages: list[int]) -> None:
        """``dma_free_coherent``: unmap, then free every page."""
        _check_cpu(self.kernel, cpu)
        _check_size("dma_free_coherent", size)
        if len(pages) != -(-size // PAGE_SIZE):
            raise ValueError(f"dma_free_coherent: {len(pages)} pages for {size} bytes")
        self._trace("iommu_dma_free", cpu=cpu, size=size, iova=iova)
        await self._unmap(cpu, iova, size)
        for page in pages:
            self.kernel.mm.free_pages(page, 0)


class DirectDma:
    """dma-direct (kernel/dma/direct.c) for a device without an IOMMU: DMA address = physical.

    Only the page allocator's one zone exists, so a buffer beyond the device's mask is refused
    (Linux would bounce it through swiotlb or allocate from ZONE_DMA32)."""

    def __init__(self, kernel: GuestKernel, dev: GuestDevice) -> None:
        self.kernel = kernel
        self.dev = dev

    def __repr__(self) -> str:
        return f"<DirectDma {self.dev.name}>"

    def _check_mask(self, addr: int, size: int, bits: int) -> None:
        if addr + size - 1 > dma_bit_mask(bits):
            raise DmaMappingError(f"{self.dev.name}: [{addr:#x}, +{size:#x}) is beyond its {bits}-bit DMA mask "
                                  f"(swiotlb bouncing is not modelled)")

    async def map_page(self, cpu: int, paddr: int, size: int, direction: int) -> int:
        _check_cpu(self.kernel, cpu)
        _check_size("dma_map_page", size)
        dma_info_to_prot(direction)
        self._check_mask(paddr, size, self.dev.dma_mask_bits)
        return paddr

    async def unmap_page(self, cpu: int, iova: int, size: int, direction: int) -> None:
        _check_cpu(self.kernel, cpu)
        _check_size("dma_unmap_page", size)
        dma_info_to_prot(direction)

    async def map_sg(self, cpu: int, segments: list[tuple[int, int]], direction: int) -> list[int]:
        _check_cpu(self.kernel, cpu)
        dma_info_to_prot(direction)
        if not segments:
            raise ValueError("dma_map_sg: empty scatterlist")
        for paddr, length in segments:
            _check_size("dma_map_sg segment", length)
            self._check_mask(paddr, length, self.dev.dma_mask_bits)
        return [paddr for paddr, _ in segments]

    async def unmap_sg(self, cpu: int, iovas: list[int], segments: list[tuple[int, int]], direction: int) -> None:
        _check_cpu(self.kernel, cpu)
        dma_info_to_prot(direction)
        if not segments or len(iovas) != len(segments):
            raise ValueError(f"dma_unmap_sg: {len(iovas)} DMA addresses for {len(segments)} segments")

    async def alloc_coherent(self, cpu: int, size: int) -> tuple[int, list[int]]:
        """``dma_direct_alloc``: one physically contiguous, zeroed block."""
        _check_cpu(self.kernel, cpu)
        _check_size("dma_alloc_coherent", size)
        count = -(-size // PAGE_SIZE)
        order = (count - 1).bit_length()
        try:
            base = self.kernel.mm.alloc_pages(order)
        except (OutOfMemory, ValueError) as e:
            raise DmaMappingError(f"{self.dev.name}: dma_direct_alloc of {size} bytes failed: {e}") from None
        try:
            self._check_mask(base, size, self.dev.coherent_dma_mask_bits)
        except DmaMappingError:
            self.kernel.mm.free_pages(base, order)
            raise
        self.kernel.machine.memory.fill(base, count * PAGE_SIZE)
        return base, [base + i * PAGE_SIZE for i in range(count)]

    async def free_coherent(self, cpu: int, size: int, iova: int, pages: list[int]) -> None:
        _check_cpu(self.kernel, cpu)
        _check_size("dma_free_coherent", size)
        count = -(-size // PAGE_SIZE)
        if len(pages) != count or pages[0] != iova:
            raise ValueError(f"dma_free_coherent: {len(pages)} pages at {iova:#x} do not match {size} bytes")
        self.kernel.mm.free_pages(iova, (count - 1).bit_length())
