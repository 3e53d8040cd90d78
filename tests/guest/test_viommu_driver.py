"""The guest virtio-iommu driver, driven through the real machine: probe, request engine, endpoints."""

from typing import Any

import attrs
import pytest

from models._virtq_wire import (
    VIRTIO_F_RING_RESET,
    VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
    CommonCfg,
)
from models._viommu_wire import AttachReq, MapReq, Status, UnmapReq
from models.guest._iova import IOMMU_RESV_MSI, IOMMU_RESV_SW_MSI, ResvRegion
from models.guest._viommu_domain import MSI_IOVA_BASE, MSI_IOVA_LENGTH, ViommuDomain, ViommuEndpoint
from models.guest._viommu_driver import VIOMMU_FEATURES, ViommuDriverStats, req_errno
from sim import ListSink, seconds

NVME, AHCI = 0x20, 0xFA


def device_events(sink: ListSink, *names: str) -> list[tuple[str, dict[str, Any]]]:
    return [(r.event, r.fields) for r in sink.records if r.source == "virtio-iommu" and r.event in names]


@pytest.mark.parametrize(("config", "bits", "mask"), [
    ({}, 64, "0x40201000"),
    ({"nvme": "emulated"}, 64, "0xfffffffffffff000"),
    ({"aw_bits": 39}, 39, "0x40201000"),
])
def test_probe_prints_input_address_and_page_mask(staged_guest, config: dict[str, Any], bits: int, mask: str) -> None:
    """viommu_probe's two lines carry order_base_2(input_range.end) and the device's page_size_mask."""
    g = staged_guest("viommu", **config)
    assert [line[15:] for line in g.kernel.printk.grep("virtio_iommu")] == [
        f"virtio_iommu virtio0: input address: {bits} bits", f"virtio_iommu virtio0: page mask: {mask}"]


def test_probe_negotiates_the_linux_feature_table_and_posts_event_buffers_without_a_kick(staged_guest) -> None:
    """Features = the driver table + ring bits the device offers; 256 event buffers, no notify of vq 1."""
    g = staged_guest("viommu")
    drv = g.viommu_driver
    ring_bits = (VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_F_RING_RESET)
    assert drv.features == VIOMMU_FEATURES | sum(1 << b for b in ring_bits)
    assert (drv.probe_size, drv.first_domain, drv.last_domain, drv.aperture) == (512, 0, 0xFFFF_FFFF, (0, 2**64 - 1))
    assert drv.eventq is not None and drv.eventq.num_free == 0
    assert [r.fields for r in g.sink.records if r.event == "virtio_queue_notify"] == []
    assert g.kernel.iommu.registered and g.kernel.iommu.ops is drv
    status = g.run(drv.regs.read("common", CommonCfg.DEVICE_STATUS, 1))
    assert status == 15


def test_add_req_queues_without_a_kick_and_sync_req_delivers_everything_in_one_kick(staged_guest) -> None:
    """Two add_req: nothing reaches the device; sync_req kicks once and QEMU handles both in that exit."""
    g = staged_guest("viommu")
    drv = g.viommu_driver
    assert g.run(drv.add_req(1, AttachReq(5, NVME).pack())) == 0
    assert g.run(drv.add_req(1, MapReq(5, 0x1000, 0x1FFF, 0x2000_0000, 3).pack())) == 0
    assert device_events(g.sink, "virtio_iommu_handle_command") == []
    kicks = drv.statistics().kicks
    assert g.run(drv.sync_req(1)) == 0
    assert drv.statistics().kicks == kicks + 1
    assert device_events(g.sink, "virtio_iommu_handle_command", "virtio_iommu_attach", "virtio_iommu_map") == [
        ("virtio_iommu_handle_command", {"vq": 0}),
        ("virtio_iommu_attach", {"domain_id": 5, "ep_id": NVME}),
        ("virtio_iommu_map", {"domain_id": 5, "virt_start": 0x1000, "virt_end": 0x1FFF,
                              "phys_start": 0x2000_0000, "flags": 3}),
    ]
    g.run(drv.sync_req(1))
    assert drv.statistics().kicks == kicks + 1  # nothing new was added: EVENT_IDX suppresses the notification


def test_send_req_sync_returns_the_errno_of_the_device_status(staged_guest) -> None:
    """ATTACH of a managed endpoint is OK; an UNMAP of an unknown domain is NOENT -> -ENOENT."""
    g = staged_guest("viommu")
    drv = g.viommu_driver
    assert g.run(drv.send_req_sync(0, AttachReq(7, AHCI).pack())) == (0, bytes(4))
    errno, reply = g.run(drv.send_req_sync(0, UnmapReq(99, 0, 0xFFF).pack()))
    assert (errno, reply) == (-2, bytes([Status.NOENT, 0, 0, 0]))


@pytest.mark.parametrize(("status", "errno"), [
    (Status.OK, 0), (Status.IOERR, -5), (Status.UNSUPP, -38), (Status.DEVERR, -5), (Status.INVAL, -22),
    (Status.RANGE, -34), (Status.NOENT, -2), (Status.FAULT, -14), (Status.NOMEM, -12), (200, -5),
])
def test_req_errno_maps_every_status(status: int, errno: int) -> None:
    """viommu_get_req_errno: the §2.2 table; unknown statuses are -EIO."""
    assert req_errno(status) == errno


def test_a_full_ring_is_synced_and_the_request_retried(staged_guest) -> None:
    """With INDIRECT_DESC each request takes one slot: the 257th add_req syncs (one kick) and succeeds."""
    g = staged_guest("viommu")
    drv = g.viommu_driver

    async def fill() -> list[int]:
        return [await drv.add_req(0, UnmapReq(1, 0x1000 * i, 0x1000 * i + 0xFFF).pack()) for i in range(257)]

    assert g.run(fill()) == [0] * 257
    assert len(device_events(g.sink, "virtio_iommu_handle_command")) == 1
    assert len(device_events(g.sink, "virtio_iommu_unmap")) == 256
    g.run(drv.sync_req(0))
    assert len(device_events(g.sink, "virtio_iommu_unmap")) == 257


def test_a_device_that_never_completes_ends_in_a_soft_lockup_and_eio(staged_guest) -> None:
    """Resetting the device behind the driver's back: the spin gives up after 22 s with the watchdog line."""
    g = staged_guest("viommu")
    drv = g.viommu_driver
    g.run(drv.regs.write("common", CommonCfg.DEVICE_STATUS, 1, 0))
    start = g.sim.now
    assert g.run(drv.send_req_sync(2, AttachReq(1, NVME).pack())) == (-5, bytes(4))
    assert seconds(22) <= g.sim.now - start < seconds(23)
    assert [line[15:] for line in g.kernel.printk.grep("watchdog")] == [
        "watchdog: BUG: soft lockup - CPU#2 stuck for 22s! [ViommuDriver.send_req_sync]"]


def test_probe_endpoint_reads_the_msi_window_and_no_software_msi_is_added(staged_guest) -> None:
    """QEMU q35's PROBE reply holds one RESV_MEM MSI property [0xFEE00000, 0xFEEFFFFF]."""
    g = staged_guest("viommu")
    drv = g.viommu_driver
    endpoint = g.run(drv.probe_device(0, g.kernel.devices[NVME]))
    assert isinstance(endpoint, ViommuEndpoint) and endpoint.ids == (NVME,)
    msi = ResvRegion(0xFEE0_0000, 0x10_0000, IOMMU_RESV_MSI)
    assert endpoint.resv_regions == [msi]
    assert drv.get_resv_regions(endpoint) == [msi]
    assert device_events(g.sink, "virtio_iommu_fill_resv_property") == [
        ("virtio_iommu_fill_resv_property", {"devid": NVME, "subtype": 1, "start": 0xFEE0_0000, "end": 0xFEEF_FFFF})]
    bare = ViommuEndpoint(g.kernel.devices[AHCI], (AHCI,))
    assert drv.get_resv_regions(bare) == [ResvRegion(MSI_IOVA_BASE, MSI_IOVA_LENGTH, IOMMU_RESV_SW_MSI)]


def test_attach_finalises_with_the_lowest_free_domain_id_and_maps_once_attached(staged_guest) -> None:
    """Domain ids follow first attach; an unfinalised domain refuses MAP (no map_flags yet); i801-style
    second endpoint gets an ATTACH and no replay."""
    g = staged_guest("viommu")
    drv = g.viommu_driver
    nvme = g.run(drv.probe_device(0, g.kernel.devices[NVME]))
    ahci = g.run(drv.probe_device(0, g.kernel.devices[AHCI]))
    smbus = g.run(drv.probe_device(0, g.kernel.devices[0xFB]))
    first, second = drv.domain_alloc(), drv.domain_alloc()
    assert g.run(drv.map_pages(0, second, 0xFFFF_F000, 0x1_2345_6000, 0x1000, 1, 3)) == -22
    assert g.run(drv.attach(0, first, nvme)) == 0
    assert g.run(drv.attach(0, second, ahci)) == 0
    assert g.run(drv.map_pages(0, second, 0xFFFF_F000, 0x1_2345_6000, 0x1000, 1, 3)) == 0
    assert g.run(drv.attach(0, second, smbus)) == 0
    assert (first.id, second.id, second.nr_endpoints) == (0, 1, 2)
    assert device_events(g.sink, "virtio_iommu_attach", "virtio_iommu_map") == [
        ("virtio_iommu_attach", {"domain_id": 0, "ep_id": NVME}),
        ("virtio_iommu_attach", {"domain_id": 1, "ep_id": AHCI}),
        ("virtio_iommu_map", {"domain_id": 1, "virt_start": 0xFFFF_F000, "virt_end": 0xFFFF_FFFF,
                              "phys_start": 0x1_2345_6000, "flags": 3}),
        ("virtio_iommu_attach", {"domain_id": 1, "ep_id": 0xFB}),
    ]


def test_del_mappings_removes_whole_mappings_and_refuses_to_split() -> None:
    """viommu_del_mappings: mappings starting inside go in full; one starting below the range stops it."""
    domain = ViommuDomain()
    domain.mappings.update({0x1000: (0x2FFF, 0, 3), 0x3000: (0x3FFF, 0, 3), 0x8000: (0x8FFF, 0, 3)})
    assert domain.del_mappings(0x2000, 0x3FFF) == 0
    assert domain.del_mappings(0x1000, 0x1FFF) == 0x2000
    assert domain.del_mappings(0x3000, 0x9FFF) == 0x2000
    assert dict(domain.mappings) == {}


@pytest.mark.parametrize(("flavor", "status", "errno"), [("qemu", Status.UNSUPP, -38), ("spec", Status.IOERR, 0)])
def test_unknown_request_status_and_the_zero_length_completion(staged_guest, flavor: str, status: int,
                                                               errno: int) -> None:
    """QEMU answers an unknown type UNSUPP; the spec device writes nothing (used length 0): the driver
    forces IOERR into its own copy, but the caller of viommu_send_req_sync reads its untouched tail."""
    g = staged_guest("viommu", flavor=flavor)
    drv = g.viommu_driver
    assert g.run(drv.send_req_sync(0, bytes([9, 0, 0, 0]) + bytes(16)))[0] == errno
    done = [r.fields for r in g.sink.records if r.event == "viommu_req_done"][-1]
    assert (done["type"], done["status"], done["used_len"]) == ("9", status, 0 if flavor == "spec" else 4)


def test_statistics_count_kicks_requests_and_the_unmap_stale_window(staged_guest) -> None:
    """PROBE, ATTACH, MAP, UNMAP and the sync that sees the UNMAP complete: one snapshot pins every counter
    (the stale window: request build 0.3 + exit 2 + notify 1.85 + request 1 + unmap ioctl 1.45 + host
    IOTLB invalidation 0.5 = 7.1 us; its percentiles are the middle of the histogram's 16 ns bucket);
    reset_stale_max starts a new maximum and distribution and leaves the rest."""
    g = staged_guest("viommu")
    drv = g.viommu_driver
    assert drv.statistics() == ViommuDriverStats(kicks=0, requests_sent=0, requests=(0, 0, 0, 0, 0),
                                                 unmaps_completed=0, stale_total_ps=0, stale_max_ps=0)
    nvme = g.run(drv.probe_device(0, g.kernel.devices[NVME]))
    domain = drv.domain_alloc()
    assert g.run(drv.attach(0, domain, nvme)) == 0
    assert g.run(drv.map_pages(0, domain, 0x1000, 0x2000_0000, 0x1000, 1, 3)) == 0
    assert g.run(drv.unmap_pages(0, domain, 0x1000, 0x1000, 1)) == 0x1000
    g.run(drv.iotlb_sync(0, domain))
    after = ViommuDriverStats(kicks=4, requests_sent=4, requests=(1, 0, 1, 1, 1), unmaps_completed=1,
                              stale_total_ps=7_100_000, stale_max_ps=7_100_000, stale_p50_ps=7_095_500,
                              stale_p99_ps=7_095_500)
    assert drv.statistics() == after
    drv.reset_stale_max()
    assert drv.statistics() == attrs.evolve(after, stale_max_ps=0, stale_p50_ps=0, stale_p99_ps=0)
