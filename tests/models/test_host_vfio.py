"""Host VFIO containers: the type1 page table, pinning, ioctl costs, and the vIOMMU -> VFIO chain."""

import errno

from models import GuestMemory, MachineConfig
from models._cost import CostModel
from models._host import HostMapping, HostVfio, HostVfioStats, VfioContainerStats
from models._machine import realize_vfio
from models._viommu import VirtioIommu
from models._viommu_wire import AttachReq, DetachReq, MapReq, Status, UnmapReq
from sim import ListSink, Simulator, ns

Q35_BDFS = (0x00, 0x08, 0x10, 0x18, 0x20, 0xF8, 0xFA, 0xFB)
NVME, AHCI = 0x20, 0xFA
PGSIZES = 0x40201000
COST = CostModel()
MAP_4K = COST.vfio_map_ioctl_ps + COST.vfio_map_per_page_ps
UNMAP = COST.vfio_unmap_ioctl_ps + COST.host_iotlb_inval_ps


def container(**kw: object):
    host = HostVfio(COST, PGSIZES, **kw)
    return host, host.add_device(NVME)


def test_dma_map_pins_pages_and_costs_ioctl_plus_per_page():
    """A 16 KiB map pins four 4 KiB pages and costs one ioctl plus four page pins."""
    host, c = container()
    assert c.dma_map(0x10000, 0x4000, 0x7000000, False) == (0, COST.vfio_map_ioctl_ps + 4 * ns(100))
    assert c.mappings() == [HostMapping(0x10000, 0x4000, 0x7000000, False)]
    assert (c.statistics().pinned_pages, host.statistics().pinned_pages, c.statistics().map_calls) == (4, 4, 1)
    assert c.lookup(0x13FFF) == c.mappings()[0] and c.lookup(0x14000) is None


def test_dma_unmap_unpins_and_costs_ioctl_plus_iotlb_invalidation():
    """Unmapping a whole mapping unpins its pages; an empty range succeeds with nothing removed."""
    _, c = container()
    c.dma_map(0x10000, 0x4000, 0x7000000, False)
    assert c.dma_unmap(0x10000, 0x4000) == (0, UNMAP)
    assert (c.mappings(), c.statistics().pinned_pages, c.statistics().unmap_calls) == ([], 0, 1)
    assert c.dma_unmap(0x10000, 0x4000) == (0, UNMAP)


def test_dma_map_errors_follow_type1():
    """Overlap is -EEXIST, misalignment or size 0 -EINVAL, the entry limit -ENOSPC; each still costs an ioctl."""
    _, c = container(dma_entry_limit=2)
    c.dma_map(0x10000, 0x2000, 0x7000000, False)
    assert c.dma_map(0x11000, 0x1000, 0x8000000, False) == (-errno.EEXIST, COST.vfio_map_ioctl_ps)
    assert c.dma_map(0x20800, 0x1000, 0x8000000, False)[0] == -errno.EINVAL
    assert c.dma_map(0x20000, 0x1000, 0x8000800, False)[0] == -errno.EINVAL
    assert c.dma_map(0x20000, 0, 0x8000000, False)[0] == -errno.EINVAL
    assert c.dma_map(0x20000, 0x1000, 0x8000000, True)[0] == 0
    assert c.dma_map(0x30000, 0x1000, 0x9000000, True)[0] == -errno.ENOSPC
    stats = c.statistics()
    assert (stats.map_calls, stats.map_errors, stats.pinned_pages) == (7, 5, 3)


def test_dma_unmap_refuses_to_bisect_a_mapping():
    """type1v2: an unmap cutting through a mapping is -EINVAL and removes nothing."""
    _, c = container()
    c.dma_map(0x10000, 0x4000, 0x7000000, False)
    c.dma_map(0x20000, 0x1000, 0x8000000, False)
    assert c.dma_unmap(0x11000, 0x1000)[0] == -errno.EINVAL
    assert c.dma_unmap(0x0, 0x21000)[0] == 0
    assert c.dma_unmap(0x10000, 0x11000) == (0, UNMAP)
    assert c.mappings() == [] and c.statistics().pinned_pages == 0


def vfio_machine(**host_kw: object) -> tuple[VirtioIommu, HostVfio, ListSink]:
    cfg = MachineConfig()
    sink = ListSink()
    sim = Simulator(sinks=[sink])
    host = HostVfio(cfg.cost, cfg.host_iommu_pgsizes, sim=sim, **host_kw)
    dev = VirtioIommu(sim, cfg, endpoints=Q35_BDFS, vfio_endpoints={NVME: realize_vfio(host, NVME)})
    return dev, host, sink


def run(dev: VirtioIommu, req: object):
    return dev.process_request(req.pack(), 4)  # type: ignore[attr-defined]


def test_seed_map_reaches_vfio_through_the_notifier_chain():
    """The seed's MAP: virtio_iommu_map -> notify_map -> memory core -> vfio_iommu_map_notify, seed numbers."""
    dev, host, sink = vfio_machine()
    assert run(dev, AttachReq(1, NVME)).status == Status.OK
    sink.records.clear()
    out = run(dev, MapReq(1, 4294422528, 4294426623, 4653244416, 2))
    assert (out.status, out.host_ps) == (Status.OK, MAP_4K)
    assert [(r.source, r.event, r.fields) for r in sink.records] == [
        ("virtio-iommu", "virtio_iommu_handle_map", {"size": 36}),
        ("virtio-iommu", "virtio_iommu_map", {"domain_id": 1, "virt_start": 4294422528, "virt_end": 4294426623,
                                              "phys_start": 4653244416, "flags": 2}),
        ("virtio-iommu", "virtio_iommu_notify_map", {"mr": "virtio-iommu-memory-region-4-32",
                                                     "virt_start": 4294422528, "virt_end": 4294426623,
                                                     "paddr": 4653244416, "flags": 2}),
        ("memory", "memory_region_notify_iommu", {"iommu_mr": "virtio-iommu-memory-region-4-32", "iommu_idx": 0,
                                                  "type": "MAP", "iova": 4294422528, "addr_mask": 0xFFF,
                                                  "translated_addr": 4653244416, "perm": 2}),
        ("memory", "memory_region_notify_iommu_one", {"notifier": "vfio-00:04.0-giommu", "type": "MAP",
                                                      "iova": 4294422528, "addr_mask": 0xFFF}),
        ("vfio", "vfio_iommu_map_notify", {"op": "MAP", "iova_start": 4294422528, "iova_end": 4294426623}),
        ("vfio", "vfio_container_dma_map", {"iova": 4294422528, "size": 4096, "paddr": 4653244416,
                                            "readonly": False, "ret": 0}),
        ("virtio-iommu", "virtio_iommu_request_status", {"type": 3, "status": 0, "used_len": 4}),
    ]
    assert host.container(NVME).mappings() == [HostMapping(0xFFF7B000, 0x1000, 0x1155AE000, False)]


def test_vfio_attach_unpins_guest_ram_once_and_detach_repins_it():
    """Boot-bypass maps all RAM 1:1; the first switch to the IOMMU costs vfio_attach_ps and unpins it."""
    mem = GuestMemory(MachineConfig().memory)
    dev, host, _ = vfio_machine(memory=mem)
    ram_pages = (64 << 30) // 4096
    assert host.statistics().pinned_pages == ram_pages
    first = run(dev, AttachReq(1, NVME))
    assert first.host_ps == COST.vfio_attach_ps + 2 * UNMAP
    assert host.statistics().pinned_pages == 0
    assert run(dev, DetachReq(1, NVME)).status == Status.OK
    assert host.statistics().pinned_pages == ram_pages
    assert run(dev, AttachReq(2, NVME)).host_ps == 2 * UNMAP


def test_vfio_map_and_unmap_use_the_same_pow2_chunks():
    """A 16 KiB MAP at 0x1000 becomes 4K+8K+4K host mappings; UNMAP removes exactly those."""
    dev, host, _ = vfio_machine()
    run(dev, AttachReq(1, NVME))
    out = run(dev, MapReq(1, 0x1000, 0x4FFF, 0x100000, 3))
    assert out.host_ps == 3 * COST.vfio_map_ioctl_ps + 4 * COST.vfio_map_per_page_ps
    c = host.container(NVME)
    assert [(m.iova, m.size) for m in c.mappings()] == [(0x1000, 0x1000), (0x2000, 0x2000), (0x4000, 0x1000)]
    assert c.statistics().pinned_pages == 4
    assert run(dev, UnmapReq(1, 0, 0xFFFFF)).host_ps == 3 * UNMAP
    assert (c.mappings(), c.statistics().pinned_pages, c.statistics().unmap_errors) == ([], 0, 0)


def test_read_only_map_becomes_a_read_only_host_mapping():
    """perm without WO maps the host range read-only."""
    dev, host, _ = vfio_machine()
    run(dev, AttachReq(1, NVME))
    run(dev, MapReq(1, 0x1000, 0x1FFF, 0x200000, 1))
    assert host.container(NVME).mappings() == [HostMapping(0x1000, 0x1000, 0x200000, True)]


def test_failed_host_map_is_logged_and_the_guest_still_sees_ok():
    """Failure injection: VFIO_IOMMU_MAP_DMA fails, QEMU logs it, MAP still returns OK."""
    dev, host, sink = vfio_machine()
    run(dev, AttachReq(1, NVME))
    host.map_fault_hooks.append(lambda *_: -errno.ENOMEM)
    out = run(dev, MapReq(1, 0x1000, 0x1FFF, 0x200000, 3))
    assert out.status == Status.OK
    assert out.host_ps == COST.vfio_map_ioctl_ps
    c = host.container(NVME)
    assert (c.mappings(), c.statistics().map_errors, c.statistics().pinned_pages) == ([], 1, 0)
    assert [r.fields["message"] for r in sink.records if r.event == "error_report"] == [
        "VFIO_MAP_DMA failed: Cannot allocate memory",
        "vfio_container_dma_map(vfio-00:04.0, 0x1000, 0x1000, 0x200000) = -12 (Cannot allocate memory)",
    ]
    assert dev.translate(NVME, 0x1000, 2).ok and c.lookup(0x1000) is None


def test_joining_a_populated_domain_maps_twice_and_vfio_logs_eexist():
    """(analysis §5.3) enabling the IOMMU region replays the domain, then ATTACH replays it again."""
    dev, host, _ = vfio_machine()
    run(dev, AttachReq(1, AHCI))
    run(dev, MapReq(1, 0x1000, 0x1FFF, 0x200000, 3))
    out = run(dev, AttachReq(1, NVME))
    assert out.status == Status.OK
    c = host.container(NVME)
    assert (len(c.mappings()), c.statistics().map_calls, c.statistics().map_errors) == (1, 2, 1)
    assert host.statistics().errors == 2


def test_map_to_non_ram_is_logged_and_skipped():
    """vfio_get_xlat_addr: a translated address outside guest RAM is an error, no ioctl."""
    mem = GuestMemory(MachineConfig().memory)
    dev, host, sink = vfio_machine(memory=mem)
    run(dev, AttachReq(1, NVME))
    assert run(dev, MapReq(1, 0x1000, 0x1FFF, 0xFEC00000, 3)).status == Status.OK
    c = host.container(NVME)
    assert (c.mappings(), c.statistics().map_calls) == ([], 2)  # the two RAM sections at boot
    assert [r.fields["message"] for r in sink.records if r.event == "error_report"] == [
        "iommu map to non memory area fec00000"]


def test_guest_reset_unmaps_vfio_and_returns_to_bypass():
    """A device reset detaches every endpoint: VFIO gets the UNMAPs and the container leaves the IOMMU."""
    dev, host, _ = vfio_machine()
    run(dev, AttachReq(1, NVME))
    run(dev, MapReq(1, 0x1000, 0x1FFF, 0x200000, 3))
    dev.reset()
    c = host.container(NVME)
    assert (dev.domains, dev.endpoints, c.mappings(), c.translated) == ({}, {}, [], False)
    assert dev.devices[NVME].mr.notifiers == []


def test_statistics_snapshot_the_container_and_the_host():
    """Two maps (one overlapping), one good and one bisecting unmap: every counter of both snapshots."""
    host, c = container()
    c.dma_map(0x10000, 0x4000, 0x7000000, False)
    c.dma_map(0x11000, 0x1000, 0x8000000, False)  # -EEXIST
    c.dma_map(0x20000, 0x2000, 0x9000000, True)
    c.dma_unmap(0x20000, 0x1000)  # -EINVAL: cuts the 8 KiB mapping
    c.dma_unmap(0x10000, 0x4000)
    assert c.statistics() == VfioContainerStats(map_calls=3, unmap_calls=2, map_errors=1, unmap_errors=1,
                                                pinned_pages=2, mappings=1)
    assert host.statistics() == HostVfioStats(errors=2, pinned_pages=2)


def test_the_host_iotlb_never_translates_through_an_unmapped_mapping():
    """Lookups are cached per page and for the last hit; an UNMAP drops them, so a page mapped
    again elsewhere translates to its new address and an unmapped one faults (None)."""
    _, c = container()
    c.dma_map(0x10000, 0x4000, 0x7000000, False)
    big = 0x4000_0000
    c.dma_map(big, 0x100000, 0x9000000, True)  # 256 pages: unmapping it drops the whole IOTLB
    assert c.lookup(0x10000).paddr == 0x7000000 and c.lookup(0x11000).paddr == 0x7000000  # cached
    assert c.lookup(big + 0x5000).readonly
    assert c.lookup(0x12000).paddr == 0x7000000  # the last hit: the mapping unmapped next
    assert c.dma_unmap(0x10000, 0x4000)[0] == 0
    assert c.lookup(0x10000) is None and c.lookup(0x11000) is None
    c.dma_map(0x10000, 0x1000, 0x8000000, True)
    assert c.lookup(0x10000) == HostMapping(0x10000, 0x1000, 0x8000000, True) and c.lookup(0x11000) is None
    assert c.dma_unmap(big, 0x100000)[0] == 0
    assert c.lookup(big + 0x5000) is None and c.lookup(0x10000).paddr == 0x8000000
