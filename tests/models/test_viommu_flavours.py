"""The peer VMM flavours of the virtio-iommu device: each difference from QEMU, at the device.

One test per decision of models/_viommu_flavours.py and of the cloud-hypervisor and
crosvm handlers in models/_viommu_requests.py: what the guest reads from the device
(features, config space, PROBE), what each request answers (the status the device
writes and the used length, which for cloud-hypervisor is 0 on every rejection), and
what translation allows.  The replays of the same cases through the whole stack are
in tests/test_cli_replay.py.
"""

from __future__ import annotations

import attrs
import pytest

from models import MachineConfig
from models._config import MachineConfig as ConfigClass
from models._host import HostVfio
from models._machine import realize_vfio
from models._viommu import RequestFramingError, VirtioIommu
from models._viommu_flavours import FLAVOUR_NAMES, FLAVOURS
from models._viommu_state import Domain
from models._viommu_wire import (
    F_BYPASS_CONFIG,
    F_DOMAIN_RANGE,
    F_INPUT_RANGE,
    F_MAP_UNMAP,
    F_MMIO,
    F_PROBE,
    QEMU_FEATURES,
    RESV_MEM_T_MSI,
    RESV_MEM_T_RESERVED,
    VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
    AttachReq,
    DetachReq,
    MapReq,
    ProbeReq,
    ProbeResvMem,
    ReqTail,
    Status,
    UnmapReq,
)
from models._virtqueue import DeviceQueue
from sim import ListSink, Simulator

Q35_BDFS = (0x00, 0x08, 0x10, 0x18, 0x20, 0xF8, 0xFA, 0xFB)
E1000E, NVME, AHCI = 0x10, 0x20, 0xFA
CH, CROSVM = "cloud-hypervisor", "crosvm"
MSI = ProbeResvMem.of(RESV_MEM_T_MSI, 0xFEE0_0000, 0xFEEF_FFFF).pack()


class _Transport:
    """The part of the virtio-pci transport the device asks about: the negotiated features."""

    broken = False

    def __init__(self, acked: int) -> None:
        self.acked = acked
        self.resets: list[str] = []

    def queue(self, index: int) -> DeviceQueue | None:
        return None

    def has_feature(self, bit: int) -> bool:
        return bool(self.acked >> bit & 1)

    def notify_used(self, index: int) -> None:
        pass

    def needs_reset(self, reason: str) -> None:
        self.resets.append(reason)


def make(flavor: str, vfio: bool = False, usable: list[tuple[int, int]] | None = None, **config: object
         ) -> tuple[VirtioIommu, ListSink]:
    cfg = MachineConfig(flavor=flavor, **config)  # type: ignore[arg-type]
    sink = ListSink()
    sim = Simulator(sinks=[sink])
    assigned = {}
    if vfio:
        host = HostVfio(cfg.cost, cfg.host_iommu_pgsizes)
        host.usable_iova_ranges = usable
        assigned = {NVME: realize_vfio(host, NVME)}
    return VirtioIommu(sim, cfg, endpoints=Q35_BDFS, vfio_endpoints=assigned), sink


def answer(dev: VirtioIommu, req: object, writable: int = 4, readable: bytes | None = None) -> tuple[Status | None, int]:
    """(the status the device wrote, the used length)."""
    outcome = dev.process_request(req.pack() if readable is None else readable, writable)  # type: ignore[attr-defined]
    return outcome.status, outcome.used_len


def attached_with_mapping(flavor: str, flags: int = 3) -> VirtioIommu:
    dev, _ = make(flavor)
    assert answer(dev, AttachReq(1, E1000E))[0] == Status.OK
    assert answer(dev, MapReq(1, 0x1000, 0x1FFF, 0xA000, flags))[0] == Status.OK
    return dev


# -- the table and the option -----------------------------------------------------------------
def test_the_flavor_option_offers_every_row_of_the_flavour_table():
    """--flavor's choices are the table's rows, in its order; qemu and spec share QEMU's identity."""
    field = next(f for f in ConfigClass.__attrs_attrs__ if f.name == "flavor")
    assert field.metadata["viommu_sim.option"].choices == FLAVOUR_NAMES == ("qemu", "spec", CH, CROSVM)
    assert FLAVOURS["spec"] == attrs.evolve(FLAVOURS["qemu"], name="spec")
    assert FLAVOURS["qemu"].features == QEMU_FEATURES


# -- what the guest reads: features and config space ------------------------------------------
def test_cloud_hypervisor_offers_version_1_map_unmap_probe_and_bypass_config_only():
    """Iommu::new: no EVENT_IDX, INDIRECT_DESC, DOMAIN_RANGE, MMIO; INPUT_RANGE only below 64 bits."""
    dev, _ = make(CH)
    bits = (VIRTIO_F_VERSION_1, F_MAP_UNMAP, F_PROBE, F_BYPASS_CONFIG)
    assert dev.device_features() == sum(1 << b for b in bits)
    narrow, _ = make(CH, aw_bits=48)
    assert narrow.device_features() == dev.device_features() | 1 << F_INPUT_RANGE


def test_crosvm_offers_base_features_map_unmap_input_range_mmio_and_probe():
    """Iommu::new on x86_64: VERSION_1, EVENT_IDX, SUSPEND plus MAP_UNMAP, INPUT_RANGE, MMIO, PROBE."""
    dev, _ = make(CROSVM)
    bits = (VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, 43, F_MAP_UNMAP, F_INPUT_RANGE, F_MMIO, F_PROBE)
    assert dev.device_features() == sum(1 << b for b in bits)
    features = dev.device_features()
    assert not features >> VIRTIO_RING_F_INDIRECT_DESC & 1 and not features >> F_DOMAIN_RANGE & 1
    assert not features >> F_BYPASS_CONFIG & 1


@pytest.mark.parametrize(("flavor", "aw", "expected"), [
    ("qemu", 64, (0xFFFF_FFFF_FFFF_F000, 0, 2**64 - 1, 0, 2**32 - 1, 512, 1)),
    (CH, 64, (0x20_1000, 0, 0, 0, 0, 24, 0)),
    (CH, 48, (0x20_1000, 0, 2**48 - 1, 0, 0, 24, 0)),
    (CROSVM, 64, (0xFFFF_FFFF_FFFF_F000, 0, 2**64 - 1, 0, 0, 24, 0)),
    (CROSVM, 48, (0xFFFF_FFFF_FFFF_F000, 0, 2**64 - 1, 0, 0, 24, 0)),
])
def test_config_space_values_per_flavour(flavor, aw, expected):
    """page_size_mask, input range, domain range, probe_size and bypass as each VMM presents them
    (crosvm's input range ignores aw_bits: it is the largest VFIO IOVA, or 2^64 - 1)."""
    dev, _ = make(flavor, aw_bits=aw)
    c = dev.config()
    assert (c.page_size_mask, c.input_range_start, c.input_range_end, c.domain_range_start, c.domain_range_end,
            c.probe_size, c.bypass) == expected


def test_vfio_narrows_the_page_size_mask_in_qemu_and_crosvm_but_not_cloud_hypervisor():
    """crosvm ANDs every VFIO container's mask into page_size_mask as QEMU does; cloud-hypervisor's is fixed."""
    masks = {f: make(f, vfio=True)[0].page_size_mask for f in ("qemu", CH, CROSVM)}
    assert masks == {"qemu": 0x4020_1000, CH: 0x20_1000, CROSVM: 0x4020_1000}


def test_crosvm_input_range_ends_at_the_assigned_functions_last_usable_iova():
    """iova_max_addr: VfioPciDevice::get_max_iova of the assigned NVMe, here a 48-bit host aperture."""
    usable = [(0, 0xFEDF_FFFF), (0xFEF0_0000, 2**48 - 1)]
    dev, _ = make(CROSVM, vfio=True, usable=usable)
    assert dev.input_range == (0, 2**48 - 1)


# -- reserved regions and PROBE ----------------------------------------------------------------
def test_probe_reports_the_host_reserved_ranges_in_qemu_and_only_the_msi_window_in_the_peers():
    """QEMU merges the host IOMMU's holes into the endpoint's regions; the peers report one x86 MSI property."""
    usable = [(0, 0xFEDF_FFFF), (0xFEF0_0000, 2**48 - 1)]
    qemu, _ = make("qemu", vfio=True, usable=usable)
    assert [(r.start, r.subtype) for r in qemu.devices[NVME].resv] == [
        (0xFEE0_0000, RESV_MEM_T_MSI), (2**48, RESV_MEM_T_RESERVED)]
    for flavor in (CH, CROSVM):
        dev, _ = make(flavor, vfio=True, usable=usable)
        assert [(r.start, r.subtype) for r in dev.devices[NVME].resv] == [(0xFEE0_0000, RESV_MEM_T_MSI)]
        out = dev.process_request(ProbeReq(NVME).pack(), 24 + 4)
        assert (out.status, out.reply, out.used_len) == (Status.OK, MSI + ReqTail(Status.OK).pack(), 28)


def test_cloud_hypervisor_probe_answers_any_endpoint_and_drops_a_short_buffer():
    """PROBE of an id that names no function is OK with the MSI property; a buffer with no room is used 0."""
    dev, _ = make(CH)
    assert answer(dev, ProbeReq(0x999), 28) == (Status.OK, 28)
    out = dev.process_request(ProbeReq(E1000E).pack(), 20)
    assert (out.status, out.reply, out.used_len) == (None, b"", 0)


def test_crosvm_probe_zero_fills_and_uses_the_whole_buffer_and_checks_endpoint_and_size():
    """process_probe_request: used = the writable size; NOENT for an unknown endpoint; INVAL under 24 bytes."""
    dev, _ = make(CROSVM)
    out = dev.process_request(ProbeReq(E1000E).pack(), 512 + 4)
    assert (out.status, out.used_len, out.reply[:24], set(out.reply[24:512])) == (Status.OK, 516, MSI, {0})
    assert answer(dev, ProbeReq(0x999), 28) == (Status.NOENT, 28)
    out = dev.process_request(ProbeReq(E1000E).pack(), 20)
    assert (out.status, out.reply, out.used_len) == (Status.INVAL, bytes(16) + ReqTail(Status.INVAL).pack(), 20)


# -- framing and unknown requests ----------------------------------------------------------------
@pytest.mark.parametrize("flavor", [CH, CROSVM])
def test_peers_answer_a_chain_too_short_for_its_tail_with_used_length_0_not_a_device_reset(flavor):
    """QEMU calls virtio_error; cloud-hypervisor and crosvm return the buffers unwritten."""
    with pytest.raises(RequestFramingError):
        make("qemu")[0].process_request(AttachReq(1, E1000E).pack(), 2)
    out = make(flavor)[0].process_request(AttachReq(1, E1000E).pack(), 2)
    assert (out.status, out.reply, out.used_len) == (None, b"", 0)


@pytest.mark.parametrize(("flavor", "expected"), [("qemu", (Status.UNSUPP, 4)), (CH, (None, 0)), (CROSVM, (None, 0))])
def test_unknown_request_type(flavor, expected):
    """QEMU writes UNSUPP; both peers write nothing and use 0 bytes, as the spec asks."""
    dev, _ = make(flavor)
    assert answer(dev, None, readable=bytes([9, 0, 0, 0]) + bytes(16)) == expected


def test_cloud_hypervisor_needs_the_readable_part_to_be_exactly_the_request():
    """desc_size_left != size_of::<VirtioIommuReqAttach>() is INVAL (QEMU accepts a longer one)."""
    longer = AttachReq(1, E1000E).pack() + bytes(4)
    assert answer(make("qemu")[0], None, readable=longer) == (Status.OK, 4)
    assert answer(make(CH)[0], None, readable=longer) == (Status.INVAL, 0)


def test_crosvm_answers_a_readable_part_shorter_than_the_request_with_used_length_0():
    """read_obj fails: an error, nothing written (QEMU writes INVAL)."""
    short = AttachReq(1, E1000E).pack()[:12]
    assert answer(make("qemu")[0], None, readable=short) == (Status.INVAL, 4)
    assert answer(make(CROSVM)[0], None, readable=short) == (None, 0)


def test_cloud_hypervisor_writes_the_status_of_a_rejected_request_but_uses_0_bytes():
    """request_queue: parse's error turns the used length to 0 after the tail was written."""
    dev, _ = make(CH)
    out = dev.process_request(MapReq(7, 0, 0xFFF, 0, 3).pack(), 4)
    assert (out.status, out.reply, out.used_len) == (Status.NOENT, ReqTail(Status.NOENT).pack(), 0)


# -- ATTACH / DETACH -------------------------------------------------------------------------------
@pytest.mark.parametrize(("flavor", "expected"), [("qemu", Status.NOENT), (CH, Status.OK), (CROSVM, Status.NOENT)])
def test_attach_of_an_endpoint_id_that_names_no_function(flavor, expected):
    """cloud-hypervisor records any id; the record reaches no DMA and switches no address space."""
    dev, sink = make(flavor)
    assert answer(dev, AttachReq(1, 0x999))[0] == expected
    if flavor == CH:
        assert dev.domain_of(0x999) == 1 and 0x999 not in dev.devices
        assert not any(r.event == "virtio_iommu_switch_address_space" and r.fields.get("slot") == (0x999 >> 3) & 0x1F
                       and r.fields.get("bus") == 0x999 >> 8 for r in sink.records)


@pytest.mark.parametrize(("flavor", "expected"), [("qemu", Status.OK), (CH, Status.INVAL), (CROSVM, Status.INVAL)])
def test_attach_with_nonzero_reserved(flavor, expected):
    """QEMU does not read ATTACH's reserved bytes; both peers reject them."""
    assert answer(make(flavor)[0], AttachReq(1, E1000E, 0, bytes([1, 0, 0, 0])))[0] == expected


@pytest.mark.parametrize(("flavor", "expected"), [("qemu", Status.INVAL), (CH, Status.INVAL), (CROSVM, Status.OK)])
def test_attach_with_an_unknown_flag(flavor, expected):
    """crosvm reads no ATTACH flags (its domains never bypass)."""
    assert answer(make(flavor)[0], AttachReq(1, E1000E, 2))[0] == expected


def test_crosvm_ignores_attach_f_bypass_so_the_domain_translates_and_maps():
    """ATTACH_F_BYPASS makes a bypass domain in QEMU (MAP: INVAL); in crosvm an ordinary one."""
    for flavor, expected in (("qemu", Status.INVAL), (CROSVM, Status.OK)):
        dev, _ = make(flavor)
        assert answer(dev, AttachReq(1, E1000E, 1))[0] == Status.OK
        assert answer(dev, MapReq(1, 0, 0xFFF, 0xA000, 3))[0] == expected


@pytest.mark.parametrize(("flavor", "mappings"), [("qemu", []), (CH, [(0x1000, 0x1FFF)]), (CROSVM, [])])
def test_attach_to_the_endpoints_own_domain(flavor, mappings):
    """QEMU and crosvm detach first (a sole endpoint takes the domain's mappings with it); cloud-hypervisor
    changes nothing."""
    dev = attached_with_mapping(flavor)
    assert answer(dev, AttachReq(1, E1000E)) == (Status.OK, 4)
    assert [(m.virt_start, m.virt_end) for m in dev.mappings(1)] == mappings


def test_crosvm_refuses_to_move_or_detach_an_endpoint_that_shares_its_domain():
    """detach_endpoint: refs > 1 cannot detach, so ATTACH elsewhere and DETACH are UNSUPP."""
    dev, _ = make(CROSVM)
    assert [answer(dev, r)[0] for r in (AttachReq(1, E1000E), AttachReq(1, AHCI), AttachReq(2, E1000E),
                                        DetachReq(1, E1000E))] == [Status.OK, Status.OK, Status.UNSUPP, Status.UNSUPP]
    assert (dev.domain_of(E1000E), dev.domain_of(AHCI)) == (1, 1)


def test_crosvm_never_detaches_a_vfio_endpoint():
    """VfioWrapper::supports_detach is false: moving or detaching the assigned NVMe is UNSUPP."""
    dev, _ = make(CROSVM, vfio=True)
    assert [answer(dev, r)[0] for r in (AttachReq(1, NVME), AttachReq(2, NVME), DetachReq(1, NVME))] == [
        Status.OK, Status.UNSUPP, Status.UNSUPP]
    assert dev.domain_of(NVME) == 1


@pytest.mark.parametrize(("flavor", "status", "domains"), [
    ("qemu", Status.INVAL, {1: [E1000E]}), (CH, Status.OK, {1: []}), (CROSVM, Status.OK, {}),
])
def test_detach_naming_another_domain(flavor, status, domains):
    """QEMU: INVAL.  cloud-hypervisor: the endpoint leaves, its own domain stays (with its mappings) because
    only the named domain is removed when empty.  crosvm reads no domain: the sole endpoint leaves and takes
    its domain with it."""
    dev = attached_with_mapping(flavor)
    assert answer(dev, DetachReq(2, E1000E))[0] == status
    assert {d: [e.id for e in dom.endpoints] for d, dom in dev.domains.items()} == domains
    if flavor == CH:
        assert [(m.virt_start, m.virt_end) for m in dev.mappings(1)] == [(0x1000, 0x1FFF)]


@pytest.mark.parametrize(("flavor", "expected"), [("qemu", Status.NOENT), (CH, Status.OK), (CROSVM, Status.OK)])
def test_detach_of_a_known_but_unattached_endpoint(flavor, expected):
    """QEMU has no record (NOENT); cloud-hypervisor never fails a DETACH; crosvm knows every endpoint."""
    assert answer(make(flavor)[0], DetachReq(1, E1000E))[0] == expected


def test_cloud_hypervisor_refuses_a_new_domain_past_65536_with_nomem():
    """MAX_DOMAINS: an ATTACH that would create domain 65537 is NOMEM; an existing domain still takes one."""
    dev, _ = make(CH)
    for i in range(1 << 16):
        dev.domains[1000 + i] = Domain(1000 + i, False)
    assert answer(dev, AttachReq(1, E1000E)) == (Status.NOMEM, 0)
    assert answer(dev, AttachReq(1000, E1000E)) == (Status.OK, 4)


# -- MAP / UNMAP ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("flavor", "expected"), [
    ("qemu", [Status.OK, Status.OK, Status.INVAL]),
    ("spec", [Status.RANGE, Status.RANGE, Status.INVAL]),
    (CH, [Status.RANGE, Status.RANGE, Status.RANGE]),
    (CROSVM, [Status.RANGE, Status.INVAL, Status.INVAL]),
])
def test_map_of_an_unaligned_a_one_byte_and_an_inverted_range(flavor, expected):
    """Off-granule start; virt_end == virt_start (crosvm: INVAL, "strictly greater"); virt_end < virt_start
    (cloud-hypervisor: checked_sub fails, RANGE)."""
    dev, _ = make(flavor)
    answer(dev, AttachReq(1, E1000E))
    reqs = (MapReq(1, 0x800, 0x17FF, 0x10_0000, 3), MapReq(1, 0x2000, 0x2000, 0x10_0000, 3),
            MapReq(1, 0x3000, 0x2FFF, 0x10_0000, 3))
    assert [answer(dev, r)[0] for r in reqs] == expected


@pytest.mark.parametrize(("flavor", "expected"), [("qemu", Status.OK), (CH, Status.RANGE), (CROSVM, Status.OK)])
def test_map_past_a_48_bit_input_range(flavor, expected):
    """cloud-hypervisor enforces the input range it offers; QEMU and crosvm do not check it."""
    dev, _ = make(flavor, aw_bits=48)
    answer(dev, AttachReq(1, E1000E))
    assert answer(dev, MapReq(1, 2**48, 2**48 + 0xFFF, 0x10_0000, 3))[0] == expected


@pytest.mark.parametrize(("flavor", "stored"), [
    ("qemu", [0, 1, 2, 5]), (CH, [3, 3, 3, 3]), (CROSVM, [1, 1, 3, 1]),
])
def test_map_flags_as_each_vmm_stores_them(flavor, stored):
    """cloud-hypervisor stores no permissions (read-write); crosvm maps WRITE as read-write, else read-only."""
    dev, _ = make(flavor)
    answer(dev, AttachReq(1, E1000E))
    for i, flags in enumerate((0, 1, 2, 5)):
        assert answer(dev, MapReq(1, i << 12, (i << 12) | 0xFFF, 0x10_0000 + (i << 12), flags))[0] == Status.OK
    assert [m.flags for m in dev.mappings(1)] == stored


def test_translation_permissions_follow_the_stored_flags():
    """A write to a read-only MAP faults in QEMU and crosvm, passes in cloud-hypervisor; a read of a
    write-only MAP faults only in QEMU."""
    results = {}
    for flavor in ("qemu", CH, CROSVM):
        ro = attached_with_mapping(flavor, flags=1)
        wo = attached_with_mapping(flavor, flags=2)
        results[flavor] = (ro.translate(E1000E, 0x1000, 2).ok, wo.translate(E1000E, 0x1000, 1).ok)
    assert results == {"qemu": (False, False), CH: (True, True), CROSVM: (False, True)}


@pytest.mark.parametrize("flavor", [CH, CROSVM])
def test_peers_report_no_fault_on_the_event_queue(flavor):
    """Neither peer writes its eventq: a failed translation is traced, not reported."""
    dev = attached_with_mapping(flavor)
    t = dev.translate(E1000E, 0x8000, 1)
    assert (t.ok, t.fault, dev.faults_reported, dev.faults_dropped) == (False, None, 0, 0)


@pytest.mark.parametrize(("flavor", "expected"), [
    ("qemu", [(Status.OK, 4), (Status.OK, 4)]),
    (CH, [(Status.RANGE, 0), (Status.OK, 4)]),
    (CROSVM, [(None, 0), (None, 0)]),
])
def test_unmap_of_an_inverted_range_and_of_the_last_page_of_the_address_space(flavor, expected):
    """cloud-hypervisor: checked_sub fails (RANGE, used 0).  crosvm: remove_map's size is 0 or its end
    overflows u64, an error (used 0, nothing written)."""
    dev = attached_with_mapping(flavor)
    reqs = (UnmapReq(1, 0x2000, 0x1FFF), UnmapReq(1, 2**64 - 0x1000, 2**64 - 1))
    assert [answer(dev, r) for r in reqs] == expected


@pytest.mark.parametrize(("flavor", "status", "left"), [
    ("qemu", Status.RANGE, [(0x5000, 0x9FFF)]),
    (CH, Status.RANGE, [(0x0, 0x4FFF), (0x5000, 0x9FFF)]),
    (CROSVM, Status.RANGE, [(0x0, 0x4FFF), (0x5000, 0x9FFF)]),
])
def test_unmap_splitting_a_later_mapping_is_atomic_in_both_peers(flavor, status, left):
    """QEMU removes the fully covered mapping before the split one; cloud-hypervisor and crosvm check first."""
    dev, _ = make(flavor)
    answer(dev, AttachReq(1, E1000E))
    answer(dev, MapReq(1, 0x0, 0x4FFF, 0x10_0000, 3))
    answer(dev, MapReq(1, 0x5000, 0x9FFF, 0x10_5000, 3))
    # the mapping that would be split sits below the range's end: [0x0, 0x4FFF] goes whole, [0x5000, ...] splits
    assert answer(dev, UnmapReq(1, 0x0, 0x5FFF))[0] == status
    assert [(m.virt_start, m.virt_end) for m in dev.mappings(1)] == left


# -- bypass ------------------------------------------------------------------------------------------
def test_cloud_hypervisor_bypasses_unattached_endpoints_although_config_bypass_reads_0():
    """IommuMapping::bypass starts true; a one-byte write of bypass applies only once BYPASS_CONFIG is acked."""
    dev, _ = make(CH)
    assert (dev.config().bypass, dev.translate(E1000E, 0x1234, 1).ok) == (0, True)
    dev.attached(_Transport(acked=0))
    dev.config_write(36, 1, 0)
    assert dev.translate(E1000E, 0x1234, 1).ok  # not acked: the flag is unchanged
    dev.attached(_Transport(acked=1 << F_BYPASS_CONFIG))
    dev.config_write(36, 1, 0xFE)  # bits 1..7 dropped: 0
    assert (dev.config().bypass, dev.translate(E1000E, 0x1234, 1).ok) == (0, False)
    dev.config_write(36, 4, 1)  # not a one-byte write of bypass: ignored
    assert dev.config().bypass == 0
    dev.config_write(36, 1, 3)
    assert (dev.config().bypass, dev.translate(E1000E, 0x1234, 1).ok) == (1, True)


def test_crosvm_has_no_bypass_and_ignores_config_writes():
    """No BYPASS_CONFIG and no write_config: an unattached endpoint has no access, whatever is written."""
    dev, _ = make(CROSVM)
    transport = _Transport(acked=0)
    dev.attached(transport)
    dev.config_write(36, 1, 1)
    assert (dev.config().bypass, dev.translate(E1000E, 0x1234, 1).ok, transport.resets) == (0, False, [])


def test_qemu_still_breaks_the_device_on_a_bypass_write_without_the_feature():
    """The qemu row keeps virtio_iommu_set_config's virtio_error."""
    dev, _ = make("qemu")
    transport = _Transport(acked=0)
    dev.attached(transport)
    dev.config_write(36, 1, 0)
    assert transport.resets == ["cannot set config.bypass"]
