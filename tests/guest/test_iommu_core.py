"""The guest IOMMU core through the real machine: policy lines, device probe, groups, domains, iommu_map."""

from typing import Any

import pytest

from models._errno import EPROBE_DEFER
from models.guest._dma_iommu import DirectDma, DmaApi
from models.guest._iommu_core import (
    IOMMU_READ,
    IOMMU_WRITE,
    iommu_pgsize,
    q35_host_bridge_windows,
)
from models.guest._pci_scan import enumerate_bus
from sim import ListSink

SEED_ORDER = ((0xFA, "ahci"), (0x20, "nvme"), (0x10, "e1000e"), (0xFB, "i801_smbus"), (0x00, "agpgart-intel"))
MASK_4K_2M_1G = 0x4020_1000


def device_events(sink: ListSink, *names: str) -> list[tuple[str, dict[str, Any]]]:
    return [(r.event, r.fields) for r in sink.records if r.source == "virtio-iommu" and r.event in names]


@pytest.mark.parametrize(("policy", "line"), [
    ("lazy", "iommu: DMA domain TLB invalidation policy: lazy mode"),
    ("strict", "iommu: DMA domain TLB invalidation policy: strict mode (set via kernel command line)"),
])
def test_subsys_init_prints_the_default_domain_and_policy_lines(staged_guest, policy: str, line: str) -> None:
    """iommu_subsys_init: "Translated" either way; strict comes from iommu.strict=1 on the command line."""
    g = staged_guest("iommu", iommu_policy=policy)
    assert [r.text for r in g.kernel.printk.records] == ["iommu: Default domain type: Translated", line]


def test_probe_device_defers_until_the_virtio_iommu_registers(staged_guest) -> None:
    """VIOT has no registered IOMMU yet: -EPROBE_DEFER, no group, no request."""
    g = staged_guest("iommu")
    assert g.dma_configure(0x00, "agpgart-intel") == -EPROBE_DEFER == -517
    assert g.kernel.devices[0x00].iommu_group is None and g.kernel.devices[0x00].dma is None
    assert device_events(g.sink, "virtio_iommu_handle_probe", "virtio_iommu_attach") == []
    g = g.advance("viommu")  # the virtio-iommu driver probes on CPU 0 and registers
    assert g.viommu_driver is not None
    assert g.dma_configure(0x00, "agpgart-intel") == 0
    assert g.kernel.printk.records[-1].text == "agpgart-intel 0000:00:00.0: Adding to iommu group 0"


def test_seed_driver_order_gives_groups_0_1_2_0_3_and_probe_then_attach_per_endpoint(staged_guest) -> None:
    """ahci, nvme, e1000e, i801 (joins ahci's group and domain, no new domain), agpgart-intel."""
    g = staged_guest("viommu")
    sink, kernel, core = g.sink, g.kernel, g.core
    assert [g.dma_configure(bdf, name) for bdf, name in SEED_ORDER] == [0] * 5
    groups = [kernel.devices[bdf].iommu_group for bdf, _ in SEED_ORDER]
    domains = [core.domain_of(kernel.devices[bdf]).id for bdf, _ in SEED_ORDER]  # type: ignore[union-attr]
    assert (groups, domains) == ([0, 1, 2, 0, 3], [0, 1, 2, 0, 3])
    assert core.domain_of(kernel.devices[0xFB]) is core.domain_of(kernel.devices[0xFA])
    assert [r.text for r in kernel.printk.records if "iommu group" in r.text] == [
        "ahci 0000:00:1f.2: Adding to iommu group 0",
        "nvme 0000:00:04.0: Adding to iommu group 1",
        "e1000e 0000:00:02.0: Adding to iommu group 2",
        "i801_smbus 0000:00:1f.3: Adding to iommu group 0",
        "agpgart-intel 0000:00:00.0: Adding to iommu group 3",
    ]
    seen = [(e, f.get("devid", f.get("ep_id")), f.get("domain_id"))
            for e, f in device_events(sink, "virtio_iommu_fill_resv_property", "virtio_iommu_attach")]
    assert seen == [
        ("virtio_iommu_fill_resv_property", 0xFA, None), ("virtio_iommu_attach", 0xFA, 0),
        ("virtio_iommu_fill_resv_property", 0x20, None), ("virtio_iommu_attach", 0x20, 1),
        ("virtio_iommu_fill_resv_property", 0x10, None), ("virtio_iommu_attach", 0x10, 2),
        ("virtio_iommu_fill_resv_property", 0xFB, None), ("virtio_iommu_attach", 0xFB, 0),
        ("virtio_iommu_fill_resv_property", 0x00, None), ("virtio_iommu_attach", 0x00, 3),
    ]
    assert device_events(sink, "virtio_iommu_map") == []  # i801 joined a domain with endpoints: no replay
    assert all(isinstance(kernel.devices[bdf].dma, DmaApi) for bdf, _ in SEED_ORDER)
    assert g.dma_configure(0xFA, "ahci") == 0  # a rebind finds the device in its group: no request
    assert len(device_events(sink, "virtio_iommu_attach")) == 5


@pytest.mark.parametrize(("kernel_version", "policy", "domain_type"), [
    ("6.7", "lazy", "DMA"), ("6.7", "strict", "DMA"), ("6.12", "lazy", "DMA-FQ"), ("6.12", "strict", "DMA"),
])
def test_default_domain_type_after_dma_init(staged_guest, kernel_version: str, policy: str, domain_type: str) -> None:
    """6.7 virtio-iommu lacks deferred flush, so its lazy DMA-FQ domains become DMA; 6.12 keeps DMA-FQ."""
    g = staged_guest("viommu", guest_kernel=kernel_version, iommu_policy=policy)
    g.dma_configure(0x20, "nvme")
    assert g.core.domain_of(g.kernel.devices[0x20]).type == domain_type  # type: ignore[union-attr]


def test_the_virtio_iommu_itself_and_a_machine_without_viommu_keep_direct_dma(staged_guest) -> None:
    """VIOT: "we're not translating ourself"; without a vIOMMU there is no VIOT and no IOMMU at all."""
    g = staged_guest("iommu")
    assert g.dma_configure(0x18, "virtio-pci") == 0
    assert isinstance(g.kernel.devices[0x18].dma, DirectDma) and g.kernel.devices[0x18].iommu_group is None
    g = staged_guest("viommu", viommu="none")
    assert g.viommu_driver is None and not g.core.registered
    nvme = next(bdf for bdf, d in g.kernel.devices.items() if d.info.class_code == 0x010802)  # 00:03.0 here
    assert g.dma_configure(nvme, "nvme") == 0
    assert isinstance(g.kernel.devices[nvme].dma, DirectDma)


def test_host_bridge_windows_follow_qemu_q35_crs(staged_guest) -> None:
    """VGA window, low RAM end..0xFEBFFFFF minus MMCONFIG, and the 64-bit hole around the firmware's BARs."""
    g = staged_guest("iommu")
    assert g.core.host_bridge_windows() == g.kernel.host_bridge_windows == [
        (0xA0000, 0xBFFFF), (0x8000_0000, 0xAFFF_FFFF), (0xC000_0000, 0xFEBF_FFFF),
        (0x3800_0000_0000, 0x3807_FFFF_FFFF),
    ]
    machine = staged_guest("machine", memory="2560M").machine
    infos = enumerate_bus(machine.bus, machine.memory)
    assert q35_host_bridge_windows(machine.memory, infos) == [
        (0xA0000, 0xBFFFF), (0xA000_0000, 0xAFFF_FFFF), (0xC000_0000, 0xFEBF_FFFF),
        (0x1_0000_0000, 0x8_FFFF_FFFF),
    ]


@pytest.mark.parametrize(("iova", "paddr", "size", "chunk"), [
    (0xFFFE_0000, 0x1_1000_1000, 0x17000, (0x1000, 23)),   # < 2 MiB: one map_pages call
    (0x10_0000, 0x30_0000, 0x40_0000, (0x1000, 256)),      # 4K pages up to the 2 MiB boundary
    (0x20_0000, 0x40_0000, 0x30_0000, (0x20_0000, 1)),     # then a 2 MiB page
    (0x10_0000, 0x31_0000, 0x40_0000, (0x1000, 1024)),     # iova/paddr not congruent mod 2 MiB
])
def test_iommu_pgsize_picks_the_chunk_of_the_next_map_pages(iova: int, paddr: int, size: int,
                                                            chunk: tuple[int, int]) -> None:
    """iommu_pgsize over 4K|2M|1G: largest size the alignment allows, cut at the next larger boundary."""
    assert iommu_pgsize(MASK_4K_2M_1G, iova, paddr, size) == chunk


def test_iommu_map_and_unmap_send_one_request_per_chunk(staged_guest) -> None:
    """A 4 MiB run at IOVA 1 MiB: MAPs of 1 MiB (4K pages), 2 MiB, 1 MiB; iommu_unmap walks the same
    chunks, each unmap_pages removing one mapping with one UNMAP."""
    g = staged_guest("viommu")
    g.dma_configure(0x20, "nvme")
    core, sink = g.core, g.sink
    domain = core.domain_of(g.kernel.devices[0x20])
    assert g.run(core.map(0, domain, 0x10_0000, 0x1_4010_0000, 0x40_0000, IOMMU_READ | IOMMU_WRITE)) == 0
    assert [(f["virt_start"], f["virt_end"], f["phys_start"]) for _, f in device_events(sink, "virtio_iommu_map")] == [
        (0x10_0000, 0x1F_FFFF, 0x1_4010_0000), (0x20_0000, 0x3F_FFFF, 0x1_4020_0000),
        (0x40_0000, 0x4F_FFFF, 0x1_4040_0000)]
    assert g.run(core.unmap(0, domain, 0x10_0000, 0x40_0000)) == 0x40_0000
    assert [(f["virt_start"], f["virt_end"]) for _, f in device_events(sink, "virtio_iommu_unmap")] == [
        (0x10_0000, 0x1F_FFFF), (0x20_0000, 0x3F_FFFF), (0x40_0000, 0x4F_FFFF)]


@pytest.mark.parametrize(("kernel_version", "ret", "tree"), [("6.7", -22, 0), ("6.12", 0, 1)])
def test_a_refused_map_fails_in_67_and_goes_unnoticed_in_612(staged_guest, kernel_version: str, ret: int,
                                                             tree: int) -> None:
    """MAP over an existing mapping is INVAL: 6.7's synchronous MAP returns it (and rolls back); 6.12
    queues the MAP and never reads its status."""
    g = staged_guest("viommu", guest_kernel=kernel_version)
    g.dma_configure(0x20, "nvme")
    core, sink = g.core, g.sink
    domain = core.domain_of(g.kernel.devices[0x20])
    assert g.run(core.map(0, domain, 0x1000, 0x1_5000_0000, 0x1000, IOMMU_READ)) == 0
    assert g.run(core.map(0, domain, 0x1000, 0x1_5000_1000, 0x1000, IOMMU_READ)) == ret
    assert len(domain.priv.mappings) == tree  # type: ignore[union-attr]
    statuses = [f["status"] for e, f in device_events(sink, "virtio_iommu_request_status") if f["type"] == 3]
    assert statuses == [0, 4]
