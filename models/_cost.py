"""The cost model: every simulated duration comes from a named parameter here.

Models never hard-code a latency; they read ``machine.cost.<name>`` (integer
picoseconds, or bytes/s for bandwidths).  Each parameter documents its unit and
where its default comes from.  Defaults are first estimates from public figures
(see each comment); four of them (``viommu_notify_ps``, ``vfio_map_ioctl_ps``,
``vfio_unmap_ioctl_ps``, ``host_iotlb_inval_ps``) are fitted so that
``benchmarks/calibration.py`` reproduces the published strict/lazy bandwidth
table on the default 4-vCPU machine (viommu_sim/_calibration.py says how).  A scenario file may override any of
them by name.

Every parameter is checked where it enters (a scenario file's ``[cost]`` table, ``evolve``): an
integer, not a bool; a duration from 0 to ``MAX_DURATION_PS`` (an hour), a bandwidth from 1 to
``MAX_BANDWIDTH`` bytes/s (the NVMe divides by it).  A bad value raises ``ValueError`` naming it.
"""

from __future__ import annotations

from typing import Any

import attrs

from sim import ms, ns, us

#: the longest simulated duration a parameter may take: one hour
MAX_DURATION_PS = 3600 * 10**12
#: the fastest bandwidth a parameter may take: 1 PiB/s (a bandwidth is a divisor: at least 1 byte/s)
MAX_BANDWIDTH = 1 << 50


def _check_param(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    bandwidth = attribute.name.endswith("_bytes_per_s")
    lo, hi, unit = (1, MAX_BANDWIDTH, "bytes/s") if bandwidth else (0, MAX_DURATION_PS, "ps")
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{attribute.name}: invalid value {shown(value)} (an integer from {lo} to {hi} {unit})")


def shown(value: object, limit: int = 40) -> str:
    """``repr(value)`` for an error message, at most ``limit`` characters (an int of thousands of
    digits is named by its size: its repr alone would raise past Python's 4300-digit limit)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _param(default: int, doc: str) -> Any:
    return attrs.field(default=default, validator=_check_param, metadata={"doc": doc})


def _count(default: int, doc: str, lo: int, hi: int, unit: str) -> Any:
    """A count or a size (not a duration or a bandwidth), an integer from ``lo`` to ``hi``."""
    def check(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise ValueError(f"{attribute.name}: invalid value {shown(value)} (an integer from {lo} to {hi} {unit})")
    return attrs.field(default=default, validator=check, metadata={"doc": doc})


@attrs.frozen(kw_only=True)
class CostModel:
    """Named timing parameters (ps unless the name says otherwise)."""

    # -- CPU / virtualisation ---------------------------------------------------
    vmexit_mmio_ps: int = _param(
        us(2), "round trip of a trapped MMIO access (KVM exit to QEMU and back); ~2 us on a modern host")
    mmio_read_passthrough_ps: int = _param(
        ns(500), "uncached MMIO read of a passed-through BAR (no exit), one PCIe round trip")
    mmio_write_passthrough_ps: int = _param(
        ns(100), "posted MMIO write to a passed-through BAR (no exit)")
    config_access_ps: int = _param(
        us(1), "PCI config-space access through CF8/CFC or MMCONFIG (always an exit)")
    irq_delivery_ps: int = _param(
        us(1), "interrupt injection into the guest and handler entry")
    # -- virtio-iommu device (QEMU) -----------------------------------------------
    viommu_request_ps: int = _param(
        us(1), "QEMU decoding and handling one request (excluding notifier/host work)")
    viommu_notify_ps: int = _param(
        ns(1850), "QEMU's work per request-queue notification, around its requests: virtio_queue_notify's "
        "dispatch, the ring reads that find the available chains, the used-index update and interrupt decision; "
        "fitted by benchmarks/calibration.py on 4 vCPUs (with the 2 us exit, a kick costs 3.85 us before any "
        "request, the per-kick serial cost the published strict and strict+map rows imply)")
    # -- host (VFIO type1 / host IOMMU) -------------------------------------------
    vfio_map_ioctl_ps: int = _param(
        ns(1600), "VFIO_IOMMU_MAP_DMA ioctl: pin pages + program host IOMMU, per call; fitted by "
        "benchmarks/calibration.py on 4 vCPUs (Amit et al., USENIX ATC 2011: ~6,900 cycles for a bare-metal "
        "map+unmap)")
    vfio_map_per_page_ps: int = _param(
        ns(100), "extra per 4 KiB page pinned by a map ioctl")
    vfio_unmap_ioctl_ps: int = _param(
        ns(1450), "VFIO_IOMMU_UNMAP_DMA ioctl: unpin and unmap, per call (the invalidation is host_iotlb_inval_ps); "
        "fitted by benchmarks/calibration.py on 4 vCPUs")
    host_iotlb_inval_ps: int = _param(
        ns(500), "host IOMMU IOTLB invalidation with its wait descriptor, once per unmap ioctl; fitted by "
        "benchmarks/calibration.py (kept when the calibration moved to 4 vCPUs)")
    vfio_attach_ps: int = _param(
        ms(450), "first attach of a VFIO-backed endpoint (container setup, replay, pinning); seed: ~450 ms")
    # -- guest kernel ----------------------------------------------------------------
    iova_alloc_ps: int = _param(ns(200), "dma-iommu IOVA allocation (rcache hit or tree walk)")
    insmod_ps: int = _param(
        ms(20), "one insmod of a module from the initramfs up to its init function (read, decompress, relocate, "
        "load_module); estimate for a KVM guest (the TCG reference boot's module inits are ~0.1-0.2 s apart "
        "beyond its init script's 0.3 s pauses)")
    initramfs_module_pause_ps: int = _param(
        ms(300), "the pause of the initramfs's init script after each insmod (the reference's scripts/init "
        "'sleep 0.3')")
    guest_request_build_ps: int = _param(ns(300), "virtio-iommu driver building one request")
    spinlock_handoff_ps: int = _param(
        ns(100), "a released guest spinlock reaching a CPU spinning on it (the lock word's cache line moving "
        "between cores: core-to-core latency on Intel client parts is ~50-100 ns); the releasing CPU, which "
        "still holds the line, re-takes a test-and-set lock before that (models/guest/_spinlock.py)")
    guest_io_submit_ps: int = _param(
        us(1), "CPU time to submit one block request: io_submit syscall, blk-mq, nvme_queue_rq (libaio on one "
        "core reaches a few hundred thousand IOPS: a few us per I/O for submit and complete together)")
    guest_io_complete_ps: int = _param(
        us(1), "CPU time to complete one block request: nvme_irq, blk_mq_end_request, waking io_getevents")
    # -- PCIe / NVMe -------------------------------------------------------------------
    pcie_latency_ps: int = _param(ns(500), "one PCIe transaction latency for device DMA")
    nvme_cmd_service_ps: int = _param(
        us(10), "controller firmware time of one command (decode, FTL lookup, completion), before any media "
        "time: admin commands, Write Zeroes and Dataset Management cost only this; estimate")
    # -- NVMe media of a physical SSD (models/_nvme_media.py; defaults: Samsung PM1733 3.84 TB, datasheet
    #    "PM1733 NVMe SSD" product brief: sequential read 7,000 MB/s, sequential write 3,800 MB/s,
    #    random read 1,500K IOPS, random write 135K IOPS (steady state, not modelled: no GC))
    nvme_flash_channels: int = _count(
        8, "flash channels (buses) of the controller; estimate (enterprise controllers have 8-16)", 1, 1024,
        "channels")
    nvme_flash_dies_per_channel: int = _count(
        8, "NAND dies per channel: 64 dies, ~3.84 TB of 512 Gb V-NAND dies (60) rounded up for "
        "over-provisioning; estimate", 1, 1024, "dies")
    nvme_flash_page_bytes: int = _count(
        16384, "flash page = striping unit over the dies (16 KiB TLC V-NAND page); estimate", 512, 1 << 22,
        "bytes")
    nvme_flash_read_ps: int = _param(
        us(40), "minimum sense time tR of one flash page; estimate: 1,500K random-read IOPS over 64 dies "
        "allows <= 42.7 us per read per die (datasheet), 40 us base + 8 us tail mean = 48 us")
    nvme_flash_read_tail_ps: int = _param(
        us(8), "mean of the exponential tail added to each sense (read-retry, ECC); estimate")
    nvme_flash_channel_bytes_per_s: int = _param(
        875_000_000, "one channel's transfer rate: the datasheet's 7,000 MB/s sequential read over 8 channels")
    nvme_flash_program_bytes_per_s: int = _param(
        3_800_000_000, "rate the write cache drains to flash: the datasheet's 3,800 MB/s sequential write")
    nvme_write_cache_bytes: int = _count(
        64 << 20, "write cache (power-loss-protected DRAM buffer; Identify VWC 0: not volatile) capacity; "
        "estimate", 0, 1 << 40, "bytes")
    nvme_cache_write_ps: int = _param(
        us(6), "minimum time to insert one write into the cache; estimate (QD1 4 KiB write ~20 us class with "
        "the 10 us firmware time and the tail)")
    nvme_cache_write_tail_ps: int = _param(
        us(3), "mean of the exponential tail added to each cache insert; estimate")
    # -- NVMe media of QEMU's emulated NVMe on an image file (cache=writeback, aio=threads): the host's page
    #    cache via QEMU's thread pool (util/thread-pool.c: at most 64 worker threads)
    qemu_nvme_aio_workers: int = _count(
        64, "worker threads serving the image's preadv/pwritev (QEMU thread pool max_threads = 64)", 1, 4096,
        "workers")
    qemu_nvme_aio_read_ps: int = _param(
        us(4), "minimum preadv of a page-cache-resident range plus the thread-pool hand-off; estimate")
    qemu_nvme_aio_read_tail_ps: int = _param(
        us(4), "mean exponential tail of a read (worker wake-up, host scheduling); estimate")
    qemu_nvme_aio_write_ps: int = _param(
        us(5), "minimum pwritev into the host page cache (page allocation, copy, dirtying); estimate")
    qemu_nvme_aio_write_tail_ps: int = _param(
        us(4), "mean exponential tail of a write; estimate")
    qemu_nvme_copy_bytes_per_s: int = _param(
        8 << 30, "one worker's copy rate between the page cache and QEMU's bounce buffer; estimate (memcpy "
        "on one host core)")
    qemu_nvme_writeback_bytes_per_s: int = _param(
        1 << 30, "host writeback rate of the image's dirty pages (the host disk under the image); estimate")
    qemu_nvme_dirty_bytes: int = _count(
        1 << 30, "dirty page-cache bytes the host allows before a write blocks (balance_dirty_pages); "
        "estimate", 0, 1 << 44, "bytes")
    nvme_admin_firmware_ps: int = _param(
        us(800), "extra firmware time of one admin command on a physical SSD (Identify, Create I/O queue, ...: "
        "hundreds of us to ms); QEMU's emulated controller answers admin commands at once")
    nvme_bandwidth_bytes_per_s: int = _param(
        int(2.5 * (1 << 30)), "sustained media bandwidth: 2.5 GiB/s (the calibration disk's maximum)")
    nvme_enable_ps: int = _param(ms(1), "CC.EN=1 to CSTS.RDY=1")
    nvme_disable_ps: int = _param(ms(1), "CC.EN=0 to CSTS.RDY=0")
    nvme_shutdown_ps: int = _param(ms(2), "CC.SHN to CSTS.SHST complete")

    def describe(self) -> list[tuple[str, int, str]]:
        """(name, value, doc) for every parameter, in declaration order."""
        return [(a.name, getattr(self, a.name), a.metadata["doc"]) for a in attrs.fields(type(self))]

    def evolve(self, **changes: int) -> CostModel:
        names = {a.name for a in attrs.fields(type(self))}
        for key in changes:
            if key not in names:
                raise ValueError(f"unknown cost parameter {key!r}")
        return attrs.evolve(self, **changes)
