"""The guest's IOVA allocator: Linux 6.7 drivers/iommu/iova.c plus dma-iommu's use of it.

``IovaDomain`` is ``struct iova_domain``.  Allocated ranges live in a
``sortedcontainers.SortedKeyList`` ordered by ``pfn_lo`` instead of an rbtree;
``rb_prev``/``rb_next`` are index steps, so every algorithm keeps its upstream
shape and cost:

* ``alloc_iova`` = ``__alloc_and_insert_iova_range``: top-down walk starting at
  ``cached32_node`` (limit <= 4 GiB) or ``cached_node``, natural alignment to
  ``fls_long(size - 1)`` when size-aligned, the ``max32_alloc_size`` fast-fail
  memo, and one retry window above the cached node (``iova_find_limit``).  So a
  fresh allocation lands directly below the previous fresh one, and holes above
  the cached node are revisited only when the space below runs out.
* ``free_iova`` = ``remove_iova`` with ``__cached_rbnode_delete_update``.
* ``reserve_iova`` merges overlapping ranges exactly as upstream does.
* The per-CPU range caches (``iova_rcache_*``): ``IOVA_RANGE_CACHE_MAX_SIZE`` = 6
  buckets (1..32 pages), each CPU a ``loaded`` and a ``prev`` magazine of
  ``IOVA_MAG_SIZE`` = 127 pfns, a LIFO depot of full magazines trimmed by
  ``iova_depot_work_func`` every ``IOVA_DEPOT_DELAY`` = 100 ms while it holds
  more magazines than online CPUs (6.7: "Make the rcache depot scale better",
  "Manage the depot list size").  Cached ranges stay in the tree.
  ``alloc_iova_fast`` rounds sizes below 32 pages up to a power of two and pops
  the most recently freed pfn of the *current CPU* that fits the limit; that is
  why freed IOVAs are reused per CPU, LIFO.

``DmaIovaCookie`` is the IOVA half of dma-iommu's ``struct iommu_dma_cookie``:
``iommu_dma_init_domain`` (granule from the smallest page size, base pfn 1,
reservation of the PCI host-bridge MEM windows and of every reserved region but
SW_MSI -- on q35 the MSI window 0xFEE00000-0xFEEFFFFF from the PROBE reply) and
``iommu_dma_alloc_iova`` of 6.4+ (try below 4 GiB first while the device keeps
``pci_32bit_workaround``; on failure switch that device to the full limit for
good and print "Using %d-bit DMA addresses").  Unmap ordering (strict sync or
flush queue) is in ``_flush_queue.py``.

Not modelled: best-fit allocation (unused on x86), CPU hotplug (all CPUs stay
online), magazine allocation failures, the MSI-page list (unused on x86).
"""

from __future__ import annotations

from operator import attrgetter
from typing import Iterable

import attrs
from sortedcontainers import SortedKeyList

from ._kmem_consts import PAGE_SIZE

ULONG_MAX = (1 << 64) - 1
#: pfn of the anchor node, which sits above every usable address (iova.c IOVA_ANCHOR)
IOVA_ANCHOR = ULONG_MAX
#: log2 of the largest cached range size in pages, plus one (iova.c)
IOVA_RANGE_CACHE_MAX_SIZE = 6
#: pfns per magazine: 127 so that struct iova_magazine is 1024 bytes (iova.c)
IOVA_MAG_SIZE = 127
#: delay of the depot-trimming work (iova.c IOVA_DEPOT_DELAY = msecs_to_jiffies(100))
IOVA_DEPOT_DELAY_MS = 100

#: enum iommu_resv_type (include/linux/iommu.h)
IOMMU_RESV_DIRECT = 0
IOMMU_RESV_DIRECT_RELAXABLE = 1
IOMMU_RESV_RESERVED = 2
IOMMU_RESV_MSI = 3
IOMMU_RESV_SW_MSI = 4


def dma_bit_mask(n: int) -> int:
    """``DMA_BIT_MASK(n)``."""
    return ULONG_MAX if n == 64 else (1 << n) - 1


def order_base_2(n: int) -> int:
    """``order_base_2``: log2 rounded up (0 for 1)."""
    return (n - 1).bit_length()


def roundup_pow_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def bits_per(n: int) -> int:
    """``bits_per``: bits needed to represent ``n`` (1 for 0 and 1)."""
    return max(1, n.bit_length())


def _check_int(name: str, value: object, lo: int, hi: int = ULONG_MAX) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo:#x}, {hi:#x}], not {value!r}")
    return value


@attrs.define(eq=False)
class _Iova:
    """``struct iova``: an allocated (or reserved) range of pfns, inclusive.  Identity-compared."""

    pfn_lo: int
    pfn_hi: int


class _CpuRcache:
    """``struct iova_cpu_rcache``: the loaded and previous magazines of one CPU."""

    __slots__ = ("loaded", "prev")

    def __init__(self) -> None:
        self.loaded: list[int] = []
        self.prev: list[int] = []


class _Rcache:
    """``struct iova_rcache``: one size bucket; ``depot`` is a stack whose head is the last element."""

    __slots__ = ("cpus", "depot", "work_pending")

    def __init__(self, ncpus: int) -> None:
        self.cpus = [_CpuRcache() for _ in range(ncpus)]
        self.depot: list[list[int]] = []
        self.work_pending = False


@attrs.frozen
class RcacheState:
    """One size bucket of the range cache: magazine contents per CPU (push order), depot head first."""

    loaded: tuple[tuple[int, ...], ...]
    prev: tuple[tuple[int, ...], ...]
    depot: tuple[tuple[int, ...], ...]
    work_pending: bool


@attrs.frozen
class IovaState:
    """Snapshot of an ``IovaDomain``: ranges in the tree (anchor excluded), cache pointers, rcaches."""

    ranges: tuple[tuple[int, int], ...]
    cached32_pfn_lo: int | None  # None: the anchor
    cached_pfn_lo: int | None
    max32_alloc_size: int
    rcaches: tuple[RcacheState, ...]


class IovaDomain:
    """``struct iova_domain`` of one DMA domain, with per-CPU range caches for ``ncpus`` CPUs."""

    def __init__(self, granule: int, start_pfn: int, ncpus: int) -> None:
        # init_iova_domain(): BUG_ON(granule > PAGE_SIZE || !is_power_of_2(granule))
        _check_int("IOVA granule", granule, 2, PAGE_SIZE)
        if granule & (granule - 1):
            raise ValueError(f"IOVA granule must be a power of two, not {granule:#x}")
        self.granule = granule
        self.shift = granule.bit_length() - 1
        self.start_pfn = _check_int("start_pfn", start_pfn, 1, ULONG_MAX >> self.shift)
        self.ncpus = _check_int("ncpus", ncpus, 1, 4096)
        self.dma_32bit_pfn = 1 << (32 - self.shift)
        self.max32_alloc_size = self.dma_32bit_pfn
        self._anchor = _Iova(IOVA_ANCHOR, IOVA_ANCHOR)
        self._tree: SortedKeyList = SortedKeyList([self._anchor], key=attrgetter("pfn_lo"))
        self._cached_node = self._anchor
        self._cached32_node = self._anchor
        # iova_domain_init_rcaches()
        self._rcaches = [_Rcache(ncpus) for _ in range(IOVA_RANGE_CACHE_MAX_SIZE)]

    # -- tree helpers -----------------------------------------------------------------

    def _index(self, node: _Iova) -> int:
        i: int = self._tree.bisect_key_left(node.pfn_lo)
        return i

    def _next(self, node: _Iova) -> _Iova | None:
        i = self._index(node) + 1
        return self._tree[i] if i < len(self._tree) else None

    def _find(self, pfn: int) -> _Iova | None:
        """``private_find_iova``: the range containing ``pfn``."""
        i = self._tree.bisect_key_right(pfn) - 1
        if i < 0:
            return None
        node: _Iova = self._tree[i]
        return node if pfn <= node.pfn_hi and node is not self._anchor else None

    def _find_limit(self, limit_pfn: int) -> int:
        """``iova_find_limit``: index of the lowest node reaching ``limit_pfn`` (the anchor above 4 GiB)."""
        if limit_pfn > self.dma_32bit_pfn:
            return len(self._tree) - 1
        i: int = self._tree.bisect_key_right(limit_pfn) - 1
        return i if i >= 0 and self._tree[i].pfn_hi >= limit_pfn else i + 1

    def _insert_update(self, new: _Iova) -> None:
        """``__cached_rbnode_insert_update``."""
        if new.pfn_hi < self.dma_32bit_pfn:
            self._cached32_node = new
        else:
            self._cached_node = new

    def _remove(self, node: _Iova) -> None:
        """``remove_iova``: ``__cached_rbnode_delete_update`` then erase."""
        cached = self._cached32_node
        if node is cached or (node.pfn_hi < self.dma_32bit_pfn and node.pfn_lo >= cached.pfn_lo):
            self._cached32_node = self._next(node) or self._anchor
        if node.pfn_lo < self.dma_32bit_pfn:
            self.max32_alloc_size = self.dma_32bit_pfn
        if node.pfn_lo >= self._cached_node.pfn_lo:
            self._cached_node = self._next(node) or self._anchor
        self._tree.remove(node)

    # -- iova.c: the tree allocator -------------------------------------------------

    def _alloc_and_insert(self, size: int, limit_pfn: int, size_aligned: bool) -> _Iova | None:
        """``__alloc_and_insert_iova_range``; ``limit_pfn`` is exclusive here, as upstream."""
        align_mask = ULONG_MAX
        if size_aligned:
            align_mask = (align_mask << (size - 1).bit_length()) & ULONG_MAX
        high_pfn, low_pfn = limit_pfn, self.start_pfn
        if limit_pfn <= self.dma_32bit_pfn and size >= self.max32_alloc_size:
            return None  # iova32_full: known not to fit since the last failure
        tree = self._tree
        if limit_pfn <= self.dma_32bit_pfn:
            idx = self._index(self._cached32_node)
        else:
            idx = self._index(self._cached_node)
        curr: _Iova = tree[idx]
        retry_pfn = curr.pfn_hi
        retried = False
        while True:
            while True:  # walk down while the candidate overlaps the next lower range
                high_pfn = min(high_pfn, curr.pfn_lo)
                new_pfn = ((high_pfn - size) & ULONG_MAX) & align_mask
                idx -= 1
                if idx < 0:
                    break
                curr = tree[idx]
                if not (new_pfn <= curr.pfn_hi and new_pfn >= low_pfn):
                    break
            if high_pfn >= size and new_pfn >= low_pfn:
                break
            # One retry over the window above the cached node (bounded: upstream can only retry once
            # because low_pfn is raised above start_pfn).
            if not retried and low_pfn == self.start_pfn and retry_pfn < limit_pfn:
                retried = True
                high_pfn, low_pfn = limit_pfn, retry_pfn + 1
                idx = self._find_limit(limit_pfn)
                curr = tree[idx]
                continue
            self.max32_alloc_size = size
            return None
        node = _Iova(new_pfn, new_pfn + size - 1)
        tree.add(node)
        self._insert_update(node)
        return node

    def alloc_iova(self, size: int, limit_pfn: int, size_aligned: bool = True) -> int | None:
        """``alloc_iova``: ``size`` pages at or below ``limit_pfn``, top-down; the new ``pfn_lo`` or None."""
        _check_int("IOVA size (pages)", size, 1, ULONG_MAX >> self.shift)
        _check_int("limit_pfn", limit_pfn, 0, ULONG_MAX >> self.shift)
        node = self._alloc_and_insert(size, limit_pfn + 1, size_aligned)
        return None if node is None else node.pfn_lo

    def reserve_iova(self, pfn_lo: int, pfn_hi: int) -> tuple[int, int] | None:
        """``reserve_iova``: keep [pfn_lo, pfn_hi] out of allocation; overlapping ranges are merged
        the way upstream merges them.  Returns the range now holding ``pfn_hi``, or None for pfns
        beyond the address width (upstream WARNs and returns NULL)."""
        _check_int("pfn_lo", pfn_lo, 0)
        _check_int("pfn_hi", pfn_hi, 0)
        if pfn_lo > pfn_hi:
            raise ValueError(f"reserve_iova: empty range [{pfn_lo:#x}, {pfn_hi:#x}]")
        if (pfn_lo | pfn_hi) > (ULONG_MAX >> self.shift):
            return None
        tree = self._tree
        overlap = False
        i = 0
        while i < len(tree):
            node: _Iova = tree[i]
            if pfn_lo <= node.pfn_hi and pfn_hi >= node.pfn_lo:
                # __adjust_overlap_range: grow the existing range down, continue above it
                if pfn_lo < node.pfn_lo:
                    tree.remove(node)
                    node.pfn_lo = pfn_lo
                    tree.add(node)
                if pfn_hi > node.pfn_hi:
                    pfn_lo = node.pfn_hi + 1
                if pfn_lo >= node.pfn_lo and pfn_hi <= node.pfn_hi:
                    return (node.pfn_lo, node.pfn_hi)
                overlap = True
            elif overlap:
                break
            i += 1
        new = _Iova(pfn_lo, pfn_hi)
        tree.add(new)
        return (new.pfn_lo, new.pfn_hi)

    def find_iova(self, pfn: int) -> tuple[int, int] | None:
        """``find_iova``: the range (pfn_lo, pfn_hi) containing ``pfn``, or None."""
        node = self._find(pfn)
        return None if node is None else (node.pfn_lo, node.pfn_hi)

    def free_iova(self, pfn: int) -> bool:
        """``free_iova``: release the range containing ``pfn`` to the tree; False if there is none."""
        node = self._find(pfn)
        if node is None:
            return False
        self._remove(node)
        return True

    # -- iova.c: the range caches ---------------------------------------------------

    def _check_cpu(self, cpu: int) -> None:
        _check_int("cpu", cpu, 0, self.ncpus - 1)

    def _magazine_free_pfns(self, mag: list[int]) -> None:
        """``iova_magazine_free_pfns``: return every cached pfn to the tree."""
        for pfn in mag:
            node = self._find(pfn)
            if node is not None:  # upstream: WARN_ON(!iova); continue
                self._remove(node)
        mag.clear()

    def _rcache_insert(self, pfn: int, size: int, cpu: int) -> bool:
        """``iova_rcache_insert`` on ``cpu``'s magazines; False if the size is not cached."""
        log_size = order_base_2(size)
        if log_size >= IOVA_RANGE_CACHE_MAX_SIZE:
            return False
        rcache = self._rcaches[log_size]
        cpu_rcache = rcache.cpus[cpu]
        if len(cpu_rcache.loaded) < IOVA_MAG_SIZE:
            pass
        elif len(cpu_rcache.prev) < IOVA_MAG_SIZE:
            cpu_rcache.loaded, cpu_rcache.prev = cpu_rcache.prev, cpu_rcache.loaded
        else:
            rcache.depot.append(cpu_rcache.loaded)  # iova_depot_push
            rcache.work_pending = True  # schedule_delayed_work(IOVA_DEPOT_DELAY); no-op if pending
            cpu_rcache.loaded = []
        cpu_rcache.loaded.append(pfn)
        return True

    def _rcache_get(self, size: int, limit_pfn: int, cpu: int) -> int | None:
        """``iova_rcache_get``: a cached pfn of ``size`` pages ending below ``limit_pfn`` (exclusive)."""
        log_size = order_base_2(size)
        if log_size >= IOVA_RANGE_CACHE_MAX_SIZE:
            return None
        rcache = self._rcaches[log_size]
        cpu_rcache = rcache.cpus[cpu]
        if cpu_rcache.loaded:
            pass
        elif cpu_rcache.prev:
            cpu_rcache.loaded, cpu_rcache.prev = cpu_rcache.prev, cpu_rcache.loaded
        elif rcache.depot:
            cpu_rcache.loaded = rcache.depot.pop()  # iova_depot_pop
        else:
            return None
        # iova_magazine_pop(mag, limit_pfn - size): newest pfn that fits; the last entry fills its slot
        mag = cpu_rcache.loaded
        limit = limit_pfn - size
        for i in range(len(mag) - 1, -1, -1):
            if mag[i] <= limit:
                pfn = mag[i]
                mag[i] = mag[-1]
                mag.pop()
                return pfn
        return None

    def alloc_iova_fast(self, size: int, limit_pfn: int, flush_rcache: bool, cpu: int) -> int | None:
        """``alloc_iova_fast`` on ``cpu``: rcache first, then the tree; with ``flush_rcache`` a failed
        tree allocation empties every cache and retries once.  The new ``pfn_lo`` or None."""
        _check_int("IOVA size (pages)", size, 1, ULONG_MAX >> self.shift)
        _check_int("limit_pfn", limit_pfn, 0, ULONG_MAX >> self.shift)
        self._check_cpu(cpu)
        # Cacheable sizes are rounded up so a freed range always refills its own bucket.
        if size < (1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1)):
            size = roundup_pow_of_two(size)
        pfn = self._rcache_get(size, limit_pfn + 1, cpu)
        if pfn is not None:
            return pfn
        node = self._alloc_and_insert(size, limit_pfn + 1, True)
        if node is None and flush_rcache:
            for c in range(self.ncpus):
                self.free_cpu_cached_iovas(c)
            self.free_global_cached_iovas()
            node = self._alloc_and_insert(size, limit_pfn + 1, True)
        return None if node is None else node.pfn_lo

    def free_iova_fast(self, pfn: int, size: int, cpu: int) -> None:
        """``free_iova_fast`` on ``cpu``: into that CPU's magazine (sizes up to 32 pages), else the tree.
        ``size`` is the unrounded page count the caller mapped.  Freeing a pfn that is not allocated
        is a simulator bug and raises."""
        _check_int("IOVA size (pages)", size, 1, ULONG_MAX >> self.shift)
        self._check_cpu(cpu)
        node = self._find(pfn)
        if node is None or node.pfn_lo != pfn:
            raise ValueError(f"free_iova_fast: no IOVA range starts at pfn {pfn:#x}")
        if not self._rcache_insert(pfn, size, cpu):
            self._remove(node)

    def free_cpu_cached_iovas(self, cpu: int) -> None:
        """``free_cpu_cached_iovas``: return ``cpu``'s loaded and prev magazines to the tree."""
        self._check_cpu(cpu)
        for rcache in self._rcaches:
            self._magazine_free_pfns(rcache.cpus[cpu].loaded)
            self._magazine_free_pfns(rcache.cpus[cpu].prev)

    def free_global_cached_iovas(self) -> None:
        """``free_global_cached_iovas``: return every depot magazine to the tree."""
        for rcache in self._rcaches:
            while rcache.depot:
                self._magazine_free_pfns(rcache.depot.pop())

    @property
    def pending_depot_work(self) -> tuple[int, ...]:
        """Buckets whose ``iova_depot_work_func`` is scheduled (run it IOVA_DEPOT_DELAY_MS later)."""
        return tuple(i for i, r in enumerate(self._rcaches) if r.work_pending)

    def depot_work(self, bucket: int) -> bool:
        """Run bucket ``bucket``'s ``iova_depot_work_func``: while the depot holds more magazines than
        online CPUs, free one (the head) and reschedule.  Returns True when it rescheduled itself."""
        _check_int("rcache bucket", bucket, 0, IOVA_RANGE_CACHE_MAX_SIZE - 1)
        rcache = self._rcaches[bucket]
        if not rcache.work_pending:
            raise ValueError(f"iova depot work of bucket {bucket} is not scheduled")
        if len(rcache.depot) > self.ncpus:
            self._magazine_free_pfns(rcache.depot.pop())
            return True
        rcache.work_pending = False
        return False

    def state(self) -> IovaState:
        def lo(node: _Iova) -> int | None:
            return None if node is self._anchor else node.pfn_lo

        return IovaState(
            ranges=tuple((n.pfn_lo, n.pfn_hi) for n in self._tree if n is not self._anchor),
            cached32_pfn_lo=lo(self._cached32_node),
            cached_pfn_lo=lo(self._cached_node),
            max32_alloc_size=self.max32_alloc_size,
            rcaches=tuple(
                RcacheState(
                    loaded=tuple(tuple(c.loaded) for c in r.cpus),
                    prev=tuple(tuple(c.prev) for c in r.cpus),
                    depot=tuple(tuple(m) for m in reversed(r.depot)),
                    work_pending=r.work_pending,
                )
                for r in self._rcaches
            ),
        )


# -- dma-iommu ---------------------------------------------------------------------------


@attrs.frozen
class ResvRegion:
    """``struct iommu_resv_region``: [start, start + length) of type ``IOMMU_RESV_*``.

    Linux's value, which the guest's virtio-iommu driver builds from a PROBE RESV_MEM
    property; not the platform's ``ReservedRegion`` (models/_viommu_state.py, QEMU's
    inclusive [start, end] with a virtio ``RESV_MEM_T_*`` subtype, the device's side).
    """

    start: int
    length: int
    type: int

    def __attrs_post_init__(self) -> None:
        if self.length <= 0 or self.start < 0 or self.start + self.length - 1 > ULONG_MAX:
            raise ValueError(f"bad reserved region start={self.start:#x} length={self.length:#x}")
        if not IOMMU_RESV_DIRECT <= self.type <= IOMMU_RESV_SW_MSI:
            raise ValueError(f"unknown reserved-region type {self.type!r}")


@attrs.define
class DmaDevice:
    """What dma-iommu keeps per device for IOVA allocation (``struct device`` / ``struct dev_iommu``)."""

    #: iommu_dma_set_pci_32bit_workaround(): true for PCI devices unless iommu.forcedac=1
    pci_32bit_workaround: bool = True
    #: dev->bus_dma_limit (0 = none)
    bus_dma_limit: int = 0


@attrs.frozen
class IovaAllocation:
    """Result of ``iommu_dma_alloc_iova``: the IOVA (0 = failure) and a dev_notice text, if any."""

    iova: int
    notice: str | None = None


class DmaDomainError(Exception):
    """``iommu_dma_init_domain`` refused; the message is the kernel's pr_warn text."""


class DmaIovaCookie:
    """The IOVA allocator state dma-iommu attaches to one DMA domain (``struct iommu_dma_cookie``)."""

    def __init__(self, ncpus: int) -> None:
        self.ncpus = ncpus
        self._iovad: IovaDomain | None = None
        self.aperture_end = ULONG_MAX
        self.force_aperture = True

    @property
    def initialised(self) -> bool:
        return self._iovad is not None

    @property
    def iovad(self) -> IovaDomain:
        if self._iovad is None:
            raise RuntimeError("DMA domain used before iommu_dma_init_domain()")
        return self._iovad

    def init_domain(
        self,
        *,
        pgsize_bitmap: int,
        aperture_start: int = 0,
        aperture_end: int = ULONG_MAX,
        force_aperture: bool = True,
        host_bridge_windows: Iterable[tuple[int, int]] = (),
        resv_regions: Iterable[ResvRegion] = (),
    ) -> bool:
        """``iommu_dma_init_domain(domain, 0, U64_MAX, dev)`` of 6.7.

        ``host_bridge_windows`` are the host bridge's MEM windows as inclusive bus-address ranges
        (CPU address minus offset); ``resv_regions`` are ``iommu_get_resv_regions()`` (for
        virtio-iommu: the PROBE reply's RESV_MEM properties).  Returns True when this call set the
        domain up, False when it was already set up (a second device of the group: nothing is
        reserved again).  Raises DmaDomainError when the geometry does not match the first time.
        """
        _check_int("pgsize_bitmap", pgsize_bitmap, 1)
        order = (pgsize_bitmap & -pgsize_bitmap).bit_length() - 1  # __ffs
        base_pfn = 1
        if force_aperture:
            base_pfn = max(base_pfn, aperture_start >> order)
        if self._iovad is not None:
            if (1 << order) != self._iovad.granule or base_pfn != self._iovad.start_pfn:
                raise DmaDomainError("Incompatible range for DMA domain")
            return False
        iovad = IovaDomain(1 << order, base_pfn, self.ncpus)
        self.aperture_end = aperture_end
        self.force_aperture = force_aperture
        # iova_reserve_pci_windows(): every MEM window (x86 has no dma_ranges gaps)
        for start, end in host_bridge_windows:
            iovad.reserve_iova(start >> iovad.shift, end >> iovad.shift)
        # iova_reserve_iommu_regions(): every reserved region except the software MSI window
        for region in resv_regions:
            if region.type == IOMMU_RESV_SW_MSI:
                continue
            iovad.reserve_iova(region.start >> iovad.shift, (region.start + region.length - 1) >> iovad.shift)
        self._iovad = iovad
        return True

    def iova_align(self, size: int) -> int:
        """``iova_align``: ``size`` rounded up to the granule."""
        g = self.iovad.granule
        return (size + g - 1) & ~(g - 1)

    def iova_offset(self, addr: int) -> int:
        """``iova_offset``: the offset of ``addr`` within its granule."""
        return addr & (self.iovad.granule - 1)

    def alloc_iova(self, dev: DmaDevice, size: int, dma_limit: int, cpu: int) -> IovaAllocation:
        """``iommu_dma_alloc_iova`` on ``cpu``: ``size`` bytes (granule-aligned) below ``dma_limit``
        (the device's DMA mask, or coherent mask for coherent allocations)."""
        iovad = self.iovad
        _check_int("dma_limit", dma_limit, 0)
        if size <= 0 or size & (iovad.granule - 1):
            raise ValueError(f"IOVA allocation size {size:#x} is not a positive multiple of the granule")
        shift = iovad.shift
        iova_len = size >> shift
        if dev.bus_dma_limit:  # min_not_zero
            dma_limit = min(dma_limit, dev.bus_dma_limit) if dma_limit else dev.bus_dma_limit
        if self.force_aperture:
            dma_limit = min(dma_limit, self.aperture_end)
        notice = None
        # Try the 32-bit space first (6.4 "Optimise PCI SAC address trick").
        if dma_limit > dma_bit_mask(32) and dev.pci_32bit_workaround:
            pfn = iovad.alloc_iova_fast(iova_len, dma_bit_mask(32) >> shift, False, cpu)
            if pfn is not None:
                return IovaAllocation(pfn << shift)
            dev.pci_32bit_workaround = False
            notice = f"Using {bits_per(dma_limit)}-bit DMA addresses"
        pfn = iovad.alloc_iova_fast(iova_len, dma_limit >> shift, True, cpu)
        return IovaAllocation(0 if pfn is None else pfn << shift, notice)

    def free_iova_fast(self, iova: int, size: int, cpu: int) -> None:
        """``iommu_dma_free_iova`` without a flush queue: straight back to ``cpu``'s range cache."""
        iovad = self.iovad
        iovad.free_iova_fast(iova >> iovad.shift, size >> iovad.shift, cpu)
