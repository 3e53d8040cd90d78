"""PROBE replies (§3) and translation faults (§4, §5.4)."""

import pytest

from models import MachineConfig
from models._host import HostVfio
from models._machine import realize_vfio
from models._viommu import VirtioIommu
from models._viommu_state import Mapping, ReservedRegion, Translation
from models._viommu_wire import (
    FAULT_F_ADDRESS,
    FAULT_F_READ,
    FAULT_F_WRITE,
    FAULT_R_DOMAIN,
    FAULT_R_MAPPING,
    FAULT_R_UNKNOWN,
    AttachReq,
    DetachReq,
    FaultEvent,
    MapReq,
    ProbeReq,
    ProbeResvMem,
    ReqTail,
    Status,
)
from sim import ListSink, Simulator

Q35_BDFS = (0x00, 0x08, 0x10, 0x18, 0x20, 0xF8, 0xFA, 0xFB)
NVME = 0x20
AHCI = 0xFA
MSI = ProbeResvMem.of(1, 0xFEE00000, 0xFEEFFFFF).pack()
READ, WRITE = 1, 2


def make(flavor: str = "qemu", **kw: object) -> tuple[VirtioIommu, ListSink]:
    sink = ListSink()
    dev = VirtioIommu(Simulator(sinks=[sink]), MachineConfig(flavor=flavor), endpoints=Q35_BDFS, **kw)
    return dev, sink


def st(dev: VirtioIommu, req: object) -> Status | None:
    return dev.process_request(req.pack(), 4).status  # type: ignore[attr-defined]


# -- PROBE ------------------------------------------------------------------------------


def test_probe_reply_is_one_msi_property_then_zeros_then_the_tail():
    """x86 endpoint: RESV_MEM MSI [0xFEE00000, 0xFEEFFFFF] at 0, zeros to 512, OK tail; used 516."""
    dev, sink = make()
    reply, used = dev.handle_request(ProbeReq(AHCI).pack(), 516)
    assert used == 516
    assert reply == MSI + bytes(512 - 24) + ReqTail(Status.OK).pack()
    assert [(r.event, r.fields) for r in sink.records if r.event == "virtio_iommu_fill_resv_property"] == [
        ("virtio_iommu_fill_resv_property", {"devid": AHCI, "subtype": 1, "start": 0xFEE00000, "end": 0xFEEFFFFF})]


def test_probe_does_not_attach_or_create_an_endpoint():
    """PROBE works on any managed BDF and leaves no endpoint record."""
    dev, _ = make()
    dev.handle_request(ProbeReq(NVME).pack(), 516)
    assert dev.endpoints == {}


def test_probe_unknown_endpoint_is_noent_with_zero_properties():
    """No IOMMU device for the BDF: NOENT, property area all zero."""
    dev, _ = make()
    assert dev.handle_request(ProbeReq(0x28).pack(), 516) == (bytes(512) + ReqTail(Status.NOENT).pack(), 516)


def test_probe_endpoint_with_high_bits_set_is_noent_in_both_flavours():
    """An endpoint id is the 16-bit requester id: 0x100FA names no function (issue #17, no alias of 0xFA)."""
    assert make()[0].process_request(ProbeReq(0x100FA).pack(), 516).status == Status.NOENT
    assert make("spec")[0].process_request(ProbeReq(0x100FA).pack(), 516).status == Status.NOENT


def test_probe_short_readable_is_inval_at_tail_offset_512():
    """Fewer than 72 readable bytes: INVAL written at offset 512 of a zeroed 516-byte reply."""
    dev, _ = make()
    assert dev.handle_request(ProbeReq(AHCI).pack()[:71], 516) == (bytes(512) + ReqTail(Status.INVAL).pack(), 516)


def test_probe_short_writable_is_deverr_at_offset_0_in_qemu():
    """QEMU >= 9.1 copies what fits, then overwrites offset 0 with a DEVERR tail; used length 4."""
    dev, _ = make()
    reply, used = dev.handle_request(ProbeReq(AHCI).pack(), 100)
    assert used == 4
    assert reply == ReqTail(Status.DEVERR).pack() + MSI[4:] + bytes(100 - 24)


def test_probe_short_writable_is_inval_without_properties_in_spec():
    """Spec: properties smaller than probe_size: no property written, INVAL in the tail."""
    dev, _ = make("spec")
    assert dev.handle_request(ProbeReq(AHCI).pack(), 100) == (bytes(96) + ReqTail(Status.INVAL).pack(), 100)


def test_probe_more_than_21_regions_is_inval_with_zero_properties():
    """22 regions need 528 bytes > probe_size: INVAL, nothing written."""
    regions = [ReservedRegion(i << 20, (i << 20) + 0xFFF, 0) for i in range(22)]
    dev, _ = make(reserved_regions=regions)
    assert dev.handle_request(ProbeReq(AHCI).pack(), 516) == (bytes(512) + ReqTail(Status.INVAL).pack(), 516)
    dev21, _ = make(reserved_regions=regions[:21])
    assert dev21.process_request(ProbeReq(AHCI).pack(), 516).status == Status.OK


def test_probe_vfio_endpoint_merges_host_reserved_ranges_under_the_msi_window():
    """Host usable IOVA ranges: their complement is RESERVED; the MSI property wins where they overlap."""
    cfg = MachineConfig()
    host = HostVfio(cfg.cost, cfg.host_iommu_pgsizes, usable_iova_ranges=[(0, 0xFEDFFFFF), (0xFEF00000, (1 << 48) - 1)])
    dev = VirtioIommu(Simulator(), cfg, endpoints=Q35_BDFS, vfio_endpoints={NVME: realize_vfio(host, NVME)})
    reply, used = dev.handle_request(ProbeReq(NVME).pack(), 516)
    assert reply[:48] == MSI + ProbeResvMem.of(0, 1 << 48, (1 << 64) - 1).pack()
    assert reply[48:] == bytes(464) + ReqTail(Status.OK).pack()
    assert dev.handle_request(ProbeReq(AHCI).pack(), 516)[0][:48] == MSI + bytes(24)


# -- translation and faults ---------------------------------------------------------------------


def attached(flavor: str = "qemu", **kw: object) -> tuple[VirtioIommu, ListSink]:
    dev, sink = make(flavor, **kw)
    assert st(dev, AttachReq(1, AHCI)) == Status.OK
    assert st(dev, MapReq(1, 0x10000, 0x10FFF, 0x7000000, 1)) == Status.OK  # read-only
    assert st(dev, MapReq(1, 0x11000, 0x11FFF, 0x8000000, 2)) == Status.OK  # write-only
    return dev, sink


def test_translate_mapped_access_returns_the_physical_address():
    """PA = VA - virt_start + phys_start; perm is the requested access."""
    dev, sink = attached()
    assert dev.translate(AHCI, 0x10123, READ) == Translation(True, 0x7000123, READ, 0xFFF,
                                                             mapping=Mapping(0x10000, 0x10FFF, 0x7000000, 1))
    assert [r.event for r in sink.records[-2:]] == ["virtio_iommu_translate", "virtio_iommu_translate_out"]


def test_translate_uses_the_mapping_containing_the_address_at_a_boundary():
    """The last byte of a mapping translates through it, not through the adjacent one."""
    dev, _ = attached()
    assert dev.translate(AHCI, 0x10FFF, READ).paddr == 0x7000FFF
    assert dev.translate(AHCI, 0x11000, WRITE).paddr == 0x8000000


def test_translate_bypassed_endpoint_is_identity_without_a_translate_call():
    """Unattached with config.bypass=1, or on no vIOMMU bus: identity, nothing traced."""
    dev, sink = attached()
    sink.records.clear()
    assert dev.translate(NVME, 0x1234, WRITE) == Translation(True, 0x1234, WRITE, 0xFFF)
    assert dev.translate(0x0100, 0x1234, WRITE).ok
    assert sink.records == []


def test_translate_bypass_domain_is_identity():
    """An endpoint in an ATTACH_F_BYPASS domain DMAs 1:1."""
    dev, _ = make()
    assert st(dev, AttachReq(5, AHCI, flags=1)) == Status.OK
    assert dev.translate(AHCI, 0xABC000, WRITE) == Translation(True, 0xABC000, WRITE, 0xFFF)


def test_fault_unmapped_address_is_r_mapping_with_address_flag():
    """No mapping covers the IOVA: R_MAPPING, F_ADDRESS, address = the access address."""
    dev, _ = attached()
    tr = dev.translate(AHCI, 0x20010, WRITE)
    assert (tr.ok, tr.perm, tr.fault_reason) == (False, 0, FAULT_R_MAPPING)
    assert tr.fault == FaultEvent(FAULT_R_MAPPING, FAULT_F_ADDRESS, AHCI, 0x20010)
    assert tr.fault.pack() == bytes.fromhex("02000000" "00010000" "fa000000" "00000000" "1000020000000000")


@pytest.mark.parametrize(
    ("iova", "access", "flags"),
    [
        (0x10000, WRITE, FAULT_F_WRITE | FAULT_F_ADDRESS),
        (0x11000, READ, FAULT_F_READ | FAULT_F_ADDRESS),
        (0x10000, READ | WRITE, FAULT_F_WRITE | FAULT_F_ADDRESS),
        (0x11000, READ | WRITE, FAULT_F_READ | FAULT_F_ADDRESS),
    ],
)
def test_fault_missing_permission_names_the_direction(iova, access, flags):
    """A mapping without READ/WRITE for the access: R_MAPPING with F_READ/F_WRITE | F_ADDRESS."""
    dev, _ = attached()
    assert dev.translate(AHCI, iova, access).fault == FaultEvent(FAULT_R_MAPPING, flags, AHCI, iova)


def test_translate_msi_window_is_identity_even_unmapped():
    """The MSI reserved region bypasses translation for an attached endpoint."""
    dev, _ = attached()
    assert dev.translate(AHCI, 0xFEE00000, WRITE) == Translation(True, 0xFEE00000, WRITE, 0xFFF)


def test_fault_reserved_region_is_r_mapping():
    """A RESERVED (subtype 0) region faults before the mapping lookup."""
    dev, _ = attached(reserved_regions=[ReservedRegion(0x10000, 0x10FFF, 0)])
    assert dev.translate(AHCI, 0x10000, READ).fault == FaultEvent(FAULT_R_MAPPING, FAULT_F_ADDRESS, AHCI, 0x10000)


def test_fault_unknown_endpoint_without_bypass_is_r_unknown():
    """boot-bypass off, no endpoint record: R_UNKNOWN; after DETACH (record deleted) too."""
    dev, _ = make(boot_bypass=False)
    assert dev.translate(AHCI, 0x1000, READ).fault == FaultEvent(FAULT_R_UNKNOWN, FAULT_F_ADDRESS, AHCI, 0x1000)
    assert st(dev, AttachReq(1, AHCI)) == Status.OK
    assert st(dev, DetachReq(1, AHCI)) == Status.OK
    assert dev.translate(AHCI, 0x1000, READ).fault_reason == FAULT_R_UNKNOWN


def test_fault_endpoint_record_without_domain_is_r_domain():
    """A record left unattached (QEMU's failed bypass-mismatch ATTACH) with bypass off: R_DOMAIN."""
    dev, _ = make(boot_bypass=False)
    assert st(dev, AttachReq(1, 0xFB)) == Status.OK
    assert st(dev, AttachReq(1, AHCI, flags=1)) == Status.INVAL
    assert dev.translate(AHCI, 0x1000, WRITE).fault == FaultEvent(FAULT_R_DOMAIN, FAULT_F_ADDRESS, AHCI, 0x1000)


def test_fault_without_an_eventq_is_dropped_and_traced():
    """No transport (no eventq buffer): the fault is counted as dropped, with a trace."""
    dev, sink = attached()
    dev.translate(AHCI, 0x30000, READ)
    dev.translate(AHCI, 0x30000, READ)
    assert (dev.faults_reported, dev.faults_dropped) == (0, 2)
    assert [r.fields for r in sink.records if r.event == "virtio_iommu_fault_dropped"][-1] == {
        "reason": FAULT_R_MAPPING, "flags": FAULT_F_ADDRESS, "endpoint": AHCI, "addr": 0x30000}
