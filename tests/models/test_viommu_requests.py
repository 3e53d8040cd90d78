"""virtio-iommu request decisions (QEMU's check order, §2.4) and config space, both flavours."""


import pytest

from models import ConfigError, MachineConfig
from models._host import HostVfio
from models._machine import realize_vfio
from models._viommu import RequestFramingError, VirtioIommu
from models._viommu_wire import (
    F_BYPASS_CONFIG,
    AttachReq,
    DetachReq,
    FaultEvent,
    MapReq,
    ProbeReq,
    ReqTail,
    Status,
    UnmapReq,
)
from models._virtq_wire import CommonCfg, DeviceStatus
from models.guest._raw_requests import encode_request, writable_size
from reference_data import refboot
from staging import BUF, Q35_BDFS, TransportGuest
from sim import ListSink, Simulator
from viommu_sim._replay_input import parse_replay

NVME = 0x20
AHCI = 0xFA
SMBUS = 0xFB


SINKS: dict[VirtioIommu, ListSink] = {}


def make(flavor: str = "qemu", **config: object) -> VirtioIommu:
    sink = ListSink()
    dev = VirtioIommu(Simulator(sinks=[sink]), MachineConfig(flavor=flavor, **config), endpoints=Q35_BDFS)
    SINKS[dev] = sink
    return dev


def status(dev: VirtioIommu, req: object) -> Status | None:
    return dev.process_request(req.pack(), 4).status  # type: ignore[attr-defined]


def events(dev: VirtioIommu) -> list[str]:
    return [r.event for r in SINKS[dev].records]


def ok_domain_with_mapping(flavor: str = "qemu") -> VirtioIommu:
    dev = make(flavor)
    assert status(dev, AttachReq(1, AHCI)) == Status.OK
    assert status(dev, MapReq(1, 0x1000, 0x1FFF, 0xA000, 3)) == Status.OK
    return dev


# -- framing -------------------------------------------------------------------------


@pytest.mark.parametrize(("readable", "writable"), [(3, 4), (4, 3), (0, 0)])
def test_framing_short_head_or_tail_is_a_framing_error(readable, writable):
    """Readable or writable part below 4 bytes: virtio_error, not a status (§2.4 step 1)."""
    dev = make()
    with pytest.raises(RequestFramingError, match="virtio-iommu bad head/tail size"):
        dev.process_request(AttachReq(1, AHCI).pack()[:readable], writable)
    assert dev.endpoints == {}


def test_unknown_type_is_unsupp_with_used_length_4_in_qemu_flavour():
    """Types 0 and 6..255 get an UNSUPP tail, used length 4."""
    dev = make()
    assert dev.handle_request(b"\x06\x00\x00\x00", 4) == (ReqTail(Status.UNSUPP).pack(), 4)
    assert dev.handle_request(b"\x00\x00\x00\x00" + bytes(32), 64) == (b"\x02\x00\x00\x00", 4)


def test_unknown_type_writes_nothing_in_spec_flavour():
    """Spec: an unrecognised type SHOULD NOT be written, used length 0."""
    assert make("spec").handle_request(b"\xff\x00\x00\x00", 4) == (b"", 0)


# -- ATTACH, in check order ------------------------------------------------------------


def test_attach_rule1_short_readable_is_inval():
    """ATTACH with fewer than 20 readable bytes is INVAL and creates nothing."""
    dev = make()
    assert dev.handle_request(AttachReq(1, AHCI).pack()[:19], 4) == (ReqTail(Status.INVAL).pack(), 4)
    assert dev.domains == {} and dev.endpoints == {}


def test_attach_rule2_unknown_flag_is_inval_before_endpoint_lookup():
    """flags & ~1 != 0 is INVAL even for an endpoint that does not exist."""
    assert status(make(), AttachReq(1, 0x1234, flags=2)) == Status.INVAL


def test_attach_rule3_unknown_endpoint_is_noent():
    """A BDF with no IOMMU device gets NOENT and no endpoint record."""
    dev = make()
    assert status(dev, AttachReq(1, 0x28)) == Status.NOENT
    assert dev.endpoints == {} and dev.domains == {}


def test_attach_rule3_endpoint_with_high_bits_set_is_noent_in_both_flavours():
    """0x100FA is not a requester id, so no function: NOENT and no record (issue #17: no alias of 0xFA)."""
    for flavor in ("qemu", "spec"):
        dev = make(flavor)
        assert status(dev, AttachReq(1, 0x100FA)) == Status.NOENT
        assert dev.endpoints == {} and dev.domains == {}


def test_attach_rule4_moves_the_endpoint_and_destroys_its_emptied_domain():
    """Attached elsewhere: implicit detach; the old domain, now empty, is destroyed with its mappings."""
    dev = ok_domain_with_mapping()
    assert status(dev, AttachReq(2, AHCI)) == Status.OK
    assert sorted(dev.domains) == [2]
    assert dev.domain_of(AHCI) == 2
    assert dev.mappings(1) == []


def test_attach_rule4_to_own_domain_recreates_it_empty_in_qemu():
    """QEMU detaches even from the same domain: a sole member's domain is destroyed and recreated."""
    dev = ok_domain_with_mapping()
    assert status(dev, AttachReq(1, AHCI)) == Status.OK
    assert dev.domain_of(AHCI) == 1
    assert dev.mappings(1) == []
    assert events(dev)[-3:] == ["virtio_iommu_get_domain", "virtio_iommu_switch_address_space",
                                "virtio_iommu_request_status"]


def test_attach_rule4_to_own_domain_is_a_no_op_in_spec():
    """Spec flavour: re-attaching to the current domain keeps it and its mappings."""
    dev = ok_domain_with_mapping("spec")
    assert status(dev, AttachReq(1, AHCI)) == Status.OK
    assert [m.virt_start for m in dev.mappings(1)] == [0x1000]


def test_attach_rule5_bypass_mismatch_is_inval_and_leaves_endpoint_detached_in_qemu():
    """QEMU detaches first, then refuses the bypass mismatch: the endpoint ends up unattached."""
    dev = ok_domain_with_mapping()
    assert status(dev, AttachReq(2, SMBUS)) == Status.OK
    assert status(dev, AttachReq(2, AHCI, flags=1)) == Status.INVAL
    assert dev.domain_of(AHCI) is None
    assert AHCI in dev.endpoints
    assert 1 not in dev.domains


def test_attach_rule5_bypass_mismatch_changes_nothing_in_spec():
    """Spec flavour: the mismatch is refused before the implicit detach."""
    dev = ok_domain_with_mapping("spec")
    assert status(dev, AttachReq(2, SMBUS)) == Status.OK
    assert status(dev, AttachReq(2, AHCI, flags=1)) == Status.INVAL
    assert dev.domain_of(AHCI) == 1
    assert [m.virt_start for m in dev.mappings(1)] == [0x1000]


def test_attach_rule5_sole_member_may_change_its_domains_bypass_type():
    """Detaching the sole member destroys the domain, so a different bypass flag recreates it."""
    for flavor in ("qemu", "spec"):
        dev = make(flavor)
        assert status(dev, AttachReq(1, AHCI)) == Status.OK
        assert status(dev, AttachReq(2, AHCI)) == Status.OK
        assert status(dev, AttachReq(1, AHCI, flags=1)) == Status.OK
        assert dev.domains[1].bypass


def test_attach_rule6_inserts_endpoint_at_head_and_switches_to_translation():
    """Most recently attached first; the function's DMA goes through the IOMMU region."""
    dev = make()
    assert status(dev, AttachReq(1, AHCI)) == Status.OK
    assert status(dev, AttachReq(1, SMBUS)) == Status.OK
    assert [ep.id for ep in dev.domains[1].endpoints] == [SMBUS, AHCI]
    assert dev.devices[AHCI].translated and not dev.devices[NVME].translated


def test_attach_reserved_field_is_ignored_in_qemu_and_inval_in_spec():
    """ATTACH reserved != 0: QEMU ignores it, the spec MUST reject with INVAL."""
    req = AttachReq(1, AHCI, 0, b"\x00\x01\x00\x00")
    assert status(make(), req) == Status.OK
    assert status(make("spec"), req) == Status.INVAL


# -- DETACH ----------------------------------------------------------------------------


def test_detach_rule1_short_readable_is_inval():
    """DETACH with fewer than 20 readable bytes is INVAL."""
    dev = ok_domain_with_mapping()
    assert dev.handle_request(DetachReq(1, AHCI).pack()[:12], 4)[0] == ReqTail(Status.INVAL).pack()
    assert dev.domain_of(AHCI) == 1


def test_detach_rule2_endpoint_without_record_is_noent():
    """Never attached or unknown BDF: NOENT (QEMU); spec: INVAL for a managed BDF, NOENT otherwise."""
    assert status(make(), DetachReq(1, AHCI)) == Status.NOENT
    assert status(make(), DetachReq(1, 0x28)) == Status.NOENT
    assert status(make("spec"), DetachReq(1, AHCI)) == Status.INVAL
    assert status(make("spec"), DetachReq(1, 0x28)) == Status.NOENT


def test_detach_rule3_wrong_domain_is_inval():
    """The endpoint is attached, but to another domain."""
    dev = ok_domain_with_mapping()
    assert status(dev, DetachReq(2, AHCI)) == Status.INVAL
    assert dev.domain_of(AHCI) == 1


def test_detach_rule4_destroys_empty_domain_and_deletes_the_record():
    """OK; the emptied domain goes, and (QEMU >= 9.1) so does the record: a second DETACH is NOENT."""
    dev = ok_domain_with_mapping()
    assert status(dev, DetachReq(1, AHCI)) == Status.OK
    assert dev.domains == {} and dev.endpoints == {}
    assert not dev.devices[AHCI].translated
    assert status(dev, DetachReq(1, AHCI)) == Status.NOENT


def test_detach_keeps_the_domain_while_it_has_endpoints():
    """Detaching one of two endpoints keeps the domain and its mappings."""
    dev = ok_domain_with_mapping()
    assert status(dev, AttachReq(1, SMBUS)) == Status.OK
    assert status(dev, DetachReq(1, AHCI)) == Status.OK
    assert [m.virt_start for m in dev.mappings(1)] == [0x1000]


# -- MAP -------------------------------------------------------------------------------


def test_map_rule1_short_readable_is_inval():
    """MAP with fewer than 36 readable bytes is INVAL."""
    dev = ok_domain_with_mapping()
    assert dev.handle_request(MapReq(1, 0x4000, 0x4FFF, 0, 3).pack()[:35], 4)[0] == ReqTail(Status.INVAL).pack()


def test_map_rule2_unknown_flag_is_inval_before_domain_lookup():
    """flags & ~7 != 0 is INVAL even when the domain does not exist."""
    assert status(make(), MapReq(9, 0, 0xFFF, 0, 8)) == Status.INVAL


def test_map_rule3_missing_domain_is_noent():
    """A domain exists only while an endpoint is attached."""
    assert status(make(), MapReq(1, 0, 0xFFF, 0, 3)) == Status.NOENT


def test_map_rule4_bypass_domain_is_inval():
    """MAP on a domain created with ATTACH_F_BYPASS."""
    dev = make()
    assert status(dev, AttachReq(1, AHCI, flags=1)) == Status.OK
    assert status(dev, MapReq(1, 0, 0xFFF, 0, 3)) == Status.INVAL


def test_map_rule5_overlap_by_one_byte_is_inval():
    """Any common byte with an existing mapping refuses the MAP and changes nothing."""
    dev = ok_domain_with_mapping()
    assert status(dev, MapReq(1, 0x1FFF, 0x2FFF, 0xB000, 3)) == Status.INVAL
    assert status(dev, MapReq(1, 0x0, 0x1000, 0xB000, 3)) == Status.INVAL
    assert [m.virt_start for m in dev.mappings(1)] == [0x1000]


def test_map_rule6_inserts_and_traces_after_validation():
    """OK: the mapping is stored and virtio_iommu_map is traced before the insert."""
    dev = ok_domain_with_mapping()
    assert status(dev, MapReq(1, 0x2000, 0x2FFF, 0xB000, 1)) == Status.OK
    assert [(m.virt_start, m.virt_end, m.phys_start, m.flags) for m in dev.mappings(1)] == [
        (0x1000, 0x1FFF, 0xA000, 3), (0x2000, 0x2FFF, 0xB000, 1)]
    assert "virtio_iommu_map" in events(dev)


def test_map_unchecked_in_qemu_alignment_input_range_reserved_and_zero_flags():
    """QEMU accepts unaligned ranges, ranges past input_range, the MSI window and flags 0."""
    dev = make(aw_bits=39)
    assert status(dev, AttachReq(1, AHCI)) == Status.OK
    assert status(dev, MapReq(1, 0, 9, 0x10, 3)) == Status.OK
    assert status(dev, MapReq(1, 1 << 40, (1 << 40) + 0xFFF, 0, 3)) == Status.OK
    assert status(dev, MapReq(1, 0xFEE00000, 0xFEE00FFF, 0, 3)) == Status.OK
    assert status(dev, MapReq(1, 0x5000, 0x5FFF, 0, 0)) == Status.OK


def test_map_spec_flavour_rejects_misaligned_out_of_range_and_reserved():
    """Spec: granule misalignment and input_range are RANGE, a RESV_MEM overlap is INVAL."""
    dev = make("spec", aw_bits=39)
    assert status(dev, AttachReq(1, AHCI)) == Status.OK
    assert status(dev, MapReq(1, 0, 9, 0, 3)) == Status.RANGE
    assert status(dev, MapReq(1, 0x1000, 0x1FFF, 0x10, 3)) == Status.RANGE
    assert status(dev, MapReq(1, 1 << 40, (1 << 40) + 0xFFF, 0, 3)) == Status.RANGE
    assert status(dev, MapReq(1, 0xFEEFF000, 0xFEF00FFF, 0, 3)) == Status.INVAL
    assert status(dev, MapReq(1, 0x1000, 0x1FFF, 0x2000, 3)) == Status.OK


def test_map_inverted_range_is_inval_in_both_flavours():
    """virt_end < virt_start is refused (QEMU would store an inverted interval)."""
    for flavor in ("qemu", "spec"):
        dev = make(flavor)
        assert status(dev, AttachReq(1, AHCI)) == Status.OK
        assert status(dev, MapReq(1, 0x2000, 0x1FFF, 0, 3)) == Status.INVAL
        assert dev.mappings(1) == []


# -- UNMAP check order (the loop itself: test_viommu_unmap.py) ---------------------------


def test_unmap_rule1_short_readable_is_inval():
    """UNMAP with fewer than 28 readable bytes is INVAL and removes nothing."""
    dev = ok_domain_with_mapping()
    assert dev.handle_request(UnmapReq(1, 0, 0xFFFF).pack()[:27], 4)[0] == ReqTail(Status.INVAL).pack()
    assert len(dev.mappings(1)) == 1


def test_unmap_rule2_missing_domain_is_noent():
    """UNMAP on a domain that does not exist."""
    assert status(make(), UnmapReq(1, 0, 0xFFF)) == Status.NOENT


def test_unmap_rule3_bypass_domain_is_inval():
    """UNMAP on a bypass domain."""
    dev = make()
    assert status(dev, AttachReq(3, AHCI, flags=1)) == Status.OK
    assert status(dev, UnmapReq(3, 0, 0xFFF)) == Status.INVAL


# -- config space ---------------------------------------------------------------------------


def test_config_is_generated_from_state():
    """page_size_mask 4K granule, input range 2^aw-1, domains 0..2^32-1, probe_size 512, bypass 1."""
    dev = make(aw_bits=39)
    assert dev.config_read(0, 4) | dev.config_read(4, 4) << 32 == 0xFFFFFFFFFFFFF000
    assert [dev.config_read(o, 4) for o in (8, 12, 16, 20, 24, 28, 32)] == [
        0, 0, 0xFFFFFFFF, 0x7F, 0, 0xFFFFFFFF, 512]
    assert dev.config_read(36, 1) == 1
    assert dev.config_read(37, 2) == 0


def test_config_read_past_40_bytes_is_all_ones():
    """Reads beyond the structure return all-ones."""
    dev = make()
    assert dev.config_read(40, 4) == 0xFFFFFFFF
    assert dev.config_read(38, 4) == 0xFFFFFFFF


def test_config_page_size_mask_is_narrowed_by_the_vfio_host():
    """Seed host (4K|2M|1G) -> 0x40201000; a host without the 4K granule is a config error."""
    cfg = MachineConfig()
    sim = Simulator()
    host = HostVfio(cfg.cost, cfg.host_iommu_pgsizes)
    dev = VirtioIommu(sim, cfg, endpoints=Q35_BDFS, vfio_endpoints={NVME: realize_vfio(host, NVME)})
    assert dev.config().page_size_mask == 0x40201000
    with pytest.raises(ConfigError, match="page size mask 0x100 incompatible with currently supported mask"):
        VirtioIommu(sim, cfg, endpoints=Q35_BDFS, vfio_endpoints={NVME: realize_vfio(HostVfio(cfg.cost, 0x100), NVME)})


def test_config_write_of_bypass_without_negotiation_breaks_the_device():
    """Changing bypass without VIRTIO_IOMMU_F_BYPASS_CONFIG negotiated is virtio_error."""
    dev = make()
    dev.config_write(36, 1, 0)
    assert dev.bypass == 1
    assert "virtio_error" in events(dev)


def test_config_write_of_other_fields_has_no_effect():
    """Writes to read-only fields are regenerated away on the next read."""
    dev = make()
    dev.config_write(32, 4, 4096)
    assert dev.config_read(32, 4) == 512
    assert "virtio_error" not in events(dev)


# -- a real guest's request stream ---------------------------------------------------------


def test_reference_boot_trace_replays_with_qemus_results():
    """QEMU 7.2's boot trace: every request OK; 30 mappings removed as unmap_done says."""
    dev = make()
    statuses = []
    for req in parse_replay(refboot("qemu-trace-lazy-smp4.log").read_text()):
        statuses.append(dev.process_request(encode_request(req), writable_size(req)).status)
    assert statuses == [Status.OK] * 95
    removed = [r for r in SINKS[dev].records if r.event == "virtio_iommu_unmap_done"]
    assert len(removed) == refboot("qemu-trace-lazy-smp4.log").read_text().count("virtio_iommu_unmap_done")
    assert sorted(dev.domains) == [0, 1, 2, 3]


# -- through the virtqueue (the glue) --------------------------------------------------------

def Guest(features_mask: int = ~0, host: HostVfio | None = None, vfio: tuple[int, ...] = ()) -> TransportGuest:
    """A minimal driver side: negotiates, enables both queues, posts chains and kicks."""
    assigned = {bdf: realize_vfio(host, bdf) for bdf in vfio} if host is not None else {}
    return TransportGuest(features_mask, vfio_endpoints=assigned)


def test_glue_answers_each_chain_in_ring_order_with_one_used_entry_each():
    """One kick drains the queue: replies written, used entries pushed in order, time charged per notification
    and per request."""
    g = Guest()
    h1, r1 = g.post(AttachReq(1, AHCI).pack(), 4)
    h2, r2 = g.post(MapReq(1, 0x1000, 0x1FFF, 0xA000, 3).pack(), 4)
    h3, r3 = g.post(ProbeReq(AHCI).pack(), 516)
    g.kick()
    assert [g.q[0].get_used() for _ in range(3)] == [(h1, 4), (h2, 4), (h3, 516)]
    assert g.mem.read(r1, 4) == g.mem.read(r2, 4) == ReqTail(Status.OK).pack()
    assert g.mem.read(r3 + 512, 4) == ReqTail(Status.OK).pack()
    cost = MachineConfig().cost
    assert g.sim.now == cost.viommu_notify_ps + 3 * cost.viommu_request_ps
    assert [r.event for r in g.sink.records if r.event in ("virtio_iommu_handle_command", "virtqueue_fill")] == [
        "virtio_iommu_handle_command", "virtqueue_fill", "virtqueue_fill", "virtqueue_fill"]
    assert g.irqs[:1] == [True]


def test_glue_malformed_framing_breaks_the_device_and_stops():
    """A chain without a writable tail: virtio_error, the chain is not used, later chains wait for reset."""
    g = Guest()
    g.post(AttachReq(1, AHCI).pack(), 0)
    g.post(AttachReq(1, AHCI).pack(), 4)
    g.kick()
    assert g.t.broken and g.t.status & DeviceStatus.NEEDS_RESET
    assert g.q[0].get_used() is None
    assert [r.fields["reason"] for r in g.sink.records if r.event == "virtio_error"] == [
        "virtio-iommu bad head/tail size"]
    assert g.dev.endpoints == {}


def test_glue_bad_descriptor_breaks_the_device():
    """A VirtqueueError from pop (descriptor outside RAM) becomes needs_reset, never a traceback."""
    g = Guest()
    g.q[0].add([(0xFEC00000, 20)], [(BUF, 4)])
    g.q[0].publish()
    g.kick()
    assert g.t.broken
    assert [r.fields["reason"] for r in g.sink.records if r.event == "virtio_error"] == [
        "virtio: bogus descriptor or out of resources"]


def test_glue_seed_map_trace_starts_at_handle_command():
    """A VFIO-backed MAP: handle_command, handle_map, map, notify_map, memory core, vfio_iommu_map_notify."""
    cfg = MachineConfig()
    host = HostVfio(cfg.cost, cfg.host_iommu_pgsizes)
    g = Guest(host=host, vfio=(NVME,))
    host.sim = g.sim
    g.post(AttachReq(1, NVME).pack(), 4)
    g.kick()
    g.sink.records.clear()
    g.post(MapReq(1, 4294422528, 4294426623, 4653244416, 2).pack(), 4)
    start = g.sim.now
    g.kick()
    chain = [r.event for r in g.sink.records if r.event.startswith(("virtio_iommu", "memory_region", "vfio_iommu"))]
    assert chain[:7] == [
        "virtio_iommu_handle_command", "virtio_iommu_handle_map", "virtio_iommu_map", "virtio_iommu_notify_map",
        "memory_region_notify_iommu", "memory_region_notify_iommu_one", "vfio_iommu_map_notify"]
    notify = next(r.fields for r in g.sink.records if r.event == "virtio_iommu_notify_map")
    assert (notify["virt_start"], notify["virt_end"], notify["paddr"], notify["flags"]) == (
        4294422528, 4294426623, 4653244416, 2)
    assert g.sim.now - start == (cfg.cost.viommu_notify_ps + cfg.cost.viommu_request_ps + cfg.cost.vfio_map_ioctl_ps
                                 + cfg.cost.vfio_map_per_page_ps)


def test_glue_fault_is_written_into_the_next_eventq_buffer():
    """A faulting DMA fills one 24-byte eventq buffer and interrupts; with none left it is dropped."""
    g = Guest()
    g.post(AttachReq(1, AHCI).pack(), 4)
    g.kick()
    g.q[0].get_used()
    head = g.q[1].add([], [(0x380000, 64)])
    g.q[1].publish()
    tr = g.dev.translate(AHCI, 0x5000, 2)
    assert g.q[1].get_used() == (head, 24)
    assert FaultEvent.unpack(g.mem.read(0x380000, 24)) == tr.fault == FaultEvent(2, 0x100, AHCI, 0x5000)
    g.dev.translate(AHCI, 0x6000, 2)
    assert (g.dev.faults_reported, g.dev.faults_dropped) == (1, 1)


def test_glue_short_eventq_buffer_breaks_the_device():
    """An eventq buffer smaller than a fault record: virtio_error("error buffer of wrong size")."""
    g = Guest()
    g.post(AttachReq(1, AHCI).pack(), 4)
    g.kick()
    g.q[1].add([], [(0x380000, 16)])
    g.q[1].publish()
    g.dev.translate(AHCI, 0x5000, 2)
    assert g.t.broken
    assert g.q[1].get_used() is None


def test_glue_config_bypass_write_with_bypass_config_negotiated():
    """With F_BYPASS_CONFIG accepted, writing bypass=0 takes effect and re-switches every function."""
    g = Guest()
    g.t.device_cfg_write(36, 1, 0)
    assert g.dev.bypass == 0 and all(d.translated for d in g.dev.devices.values())
    assert not g.t.broken
    g.t.device_cfg_write(36, 1, 2)
    assert g.t.broken and g.dev.bypass == 0


def test_glue_config_bypass_write_without_bypass_config_breaks_the_device():
    """Without F_BYPASS_CONFIG, changing bypass is virtio_error("cannot set config.bypass")."""
    g = Guest(features_mask=~(1 << F_BYPASS_CONFIG))
    g.t.device_cfg_write(36, 1, 0)
    assert g.t.broken and g.dev.bypass == 1


def test_glue_guest_reset_destroys_domains_and_keeps_bypass():
    """Writing status 0 resets the device: domains and endpoints go, config.bypass stays."""
    g = Guest()
    g.post(AttachReq(1, AHCI).pack(), 4)
    g.kick()
    g.t.common_write(CommonCfg.DEVICE_STATUS, 1, 0)
    assert g.dev.domains == {} and g.dev.endpoints == {}
    assert [r.event for r in g.sink.records if r.event in ("virtio_iommu_device_reset", "virtio_iommu_put_domain",
                                                           "virtio_iommu_put_endpoint")] == [
        "virtio_iommu_device_reset", "virtio_iommu_put_domain", "virtio_iommu_put_endpoint"]


def test_glue_kicks_from_two_vcpus_are_handled_one_after_the_other():
    """Two concurrent kicks: the first drains both chains, the second waits for it (QEMU's big lock)."""
    g = Guest()
    h1, _ = g.post(AttachReq(1, AHCI).pack(), 4)
    h2, _ = g.post(AttachReq(2, SMBUS).pack(), 4)
    works = [g.t.notify_write(0, 2, 0), g.t.notify_write(0, 2, 0)]
    tasks = [g.sim.spawn(w, name=f"vcpu{i}") for i, w in enumerate(works)]
    g.sim.run_sync()
    assert all(t.done() for t in tasks)
    assert [g.q[0].get_used(), g.q[0].get_used()] == [(h1, 4), (h2, 4)]
    cost = MachineConfig().cost
    assert g.sim.now == 2 * cost.viommu_notify_ps + 2 * cost.viommu_request_ps  # the second kick pops nothing
    assert [r.event for r in g.sink.records].count("virtio_iommu_handle_command") == 2
